from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from conversations.models import Membership, Organization, Role
from pricing.models import ModelPrice, PriceRate


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-123456")


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Role.ANALYST


class ModelPriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelPrice

    model = "test-model"
    organization = None
    effective_from = datetime(2024, 1, 1, tzinfo=UTC)
    input_per_1m = Decimal("2.50")
    cached_input_per_1m = Decimal("1.25")
    output_per_1m = Decimal("10.00")


def price_cells(row: ModelPrice, cells: dict[tuple[str, str, str], Decimal | str]) -> ModelPrice:
    """Matrix cells beyond the row's plain columns: {(bucket, tier, band): rate}, default
    retention; a 4-tuple key names the retention too."""
    for key, rate in cells.items():
        bucket, tier, band, *rest = key
        PriceRate.objects.create(
            price=row,
            bucket=bucket,
            tier=tier,
            band=band,
            retention=rest[0] if rest else "default",
            rate_per_1m=Decimal(rate),
        )
    return row
