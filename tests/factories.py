"""Factories typed by their model: `XFactory.create(...)` is an X to mypy (a plain
`XFactory(...)` call creates the same row but type-checks as the factory itself)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from factory.declarations import Sequence, SubFactory
from factory.django import DjangoModelFactory, Password

from conversations.models import Membership, Organization, Role
from pricing.models import ModelPrice, PriceRate


class UserFactory(DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()

    username = Sequence(lambda n: f"user{n}")
    password = Password("pw-123456")


class OrganizationFactory(DjangoModelFactory[Organization]):
    class Meta:
        model = Organization

    name = Sequence(lambda n: f"Org {n}")
    slug = Sequence(lambda n: f"org-{n}")


class MembershipFactory(DjangoModelFactory[Membership]):
    class Meta:
        model = Membership

    user = SubFactory(UserFactory)
    organization = SubFactory(OrganizationFactory)
    role = Role.ANALYST


class ModelPriceFactory(DjangoModelFactory[ModelPrice]):
    class Meta:
        model = ModelPrice

    model = "test-model"
    organization = None
    effective_from = datetime(2024, 1, 1, tzinfo=UTC)
    input_per_1m = Decimal("2.50")
    cached_input_per_1m = Decimal("1.25")
    output_per_1m = Decimal("10.00")


def price_cells(row: ModelPrice, cells: dict[tuple[str, ...], Decimal | str]) -> ModelPrice:
    """Matrix cells beyond the row's plain columns: {(bucket, tier, band): rate}, default
    retention; a 4-tuple key names the retention too."""
    for key, rate in cells.items():
        bucket, tier, band = key[:3]
        rest = list(key[3:])
        PriceRate.objects.create(
            price=row,
            bucket=bucket,
            tier=tier,
            band=band,
            retention=rest[0] if rest else "default",
            rate_per_1m=Decimal(rate),
        )
    return row
