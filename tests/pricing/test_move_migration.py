"""The price book moved from `conversations` to `pricing`: a database of the old schema,
holding priced usage, migrates forward with every price row and every usage link intact."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from conversations.models import UsageRecord
from pricing.models import ModelPrice

OLD = [("conversations", "0003_cost_recompute")]
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


def _old_schema_data(executor: MigrationExecutor) -> dict[str, object]:
    """Rows written through the OLD models (conversations.ModelPrice), as a database
    created before the move holds them; the old catalogue row included."""
    apps = executor.loader.project_state(OLD).apps
    Organization = apps.get_model("conversations", "Organization")
    ModelPriceOld = apps.get_model("conversations", "ModelPrice")
    CostRecomputeOld = apps.get_model("conversations", "CostRecompute")
    Conversation = apps.get_model("conversations", "Conversation")
    Turn = apps.get_model("conversations", "Turn")
    Usage = apps.get_model("conversations", "UsageRecord")
    org = Organization.objects.create(name="Acme", slug="acme-move")
    catalogue = ModelPriceOld.objects.create(
        model="gpt-4o",
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        source="catalogue",
        input_per_1m=Decimal("2.50"),
        output_per_1m=Decimal("10"),
    )
    negotiated = ModelPriceOld.objects.create(
        organization=org,
        model="gpt-4o",
        effective_from=T0,
        input_per_1m=Decimal("2.00"),
        cached_input_per_1m=Decimal("1.00"),
        output_per_1m=Decimal("8"),
    )
    conversation = Conversation.objects.create(organization=org, title="moved")
    ids = []
    for index, row in enumerate([catalogue, negotiated]):
        turn = Turn.objects.create(conversation=conversation, index=index, request_ranges=[[0, 1]])
        ids.append(
            Usage.objects.create(
                turn=turn,
                organization=org,
                conversation=conversation,
                occurred_at=T0,
                model="gpt-4o",
                source="reported",
                is_billing=True,
                prompt_tokens=1000,
                input_uncached=1000,
                price=row,
                cost_total=Decimal("0.0025"),
            ).pk
        )
    CostRecomputeOld.objects.create(organization=org, records=2, changed=1)
    return {"org": org.pk, "rows": {catalogue.pk, negotiated.pk}, "usage": ids}


@pytest.mark.django_db(transaction=True)
def test_it_keeps_every_price_row_and_usage_link_across_the_move() -> None:
    executor = _migrate(OLD)
    try:
        before = _old_schema_data(executor)
        rows_before = set(
            ModelPrice.objects.values_list("pk", "model", "organization_id", "input_per_1m")
        )
        links_before = dict(UsageRecord.objects.values_list("pk", "price_id"))
        executor = _migrate(executor.loader.graph.leaf_nodes())
        rows_after = set(
            ModelPrice.objects.values_list("pk", "model", "organization_id", "input_per_1m")
        )
        # Every old row survives with its id, and pricing 0002 sees that the old catalogue
        # migration ran (a catalogue row exists): it adds no second copy. Later catalogue
        # migrations add models the old catalogue lacked, never a second row of one it had.
        assert rows_before <= rows_after
        assert ModelPrice.objects.filter(model="gpt-4o", organization=None).count() == 1
        old_models = {model for _, model, _, _ in rows_before}
        assert not {model for _, model, _, _ in rows_after - rows_before} & old_models
        assert dict(UsageRecord.objects.values_list("pk", "price_id")) == links_before
        for pk in before["usage"]:  # type: ignore[attr-defined]
            record = UsageRecord.objects.select_related("price").get(pk=pk)
            assert record.price is not None and record.price.pk in before["rows"]  # type: ignore[operator]
        from pricing.models import CostRecompute

        assert CostRecompute.objects.get().organization_id == before["org"]
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
