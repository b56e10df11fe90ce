from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from pytest_django import DjangoCaptureOnCommitCallbacks

from conversations.engine.pricing import buckets_from_usage, price_buckets, usage_from_dict
from pricing.admin import ModelPriceForm
from pricing.book import PriceBook, rates_for
from pricing.book import _specificity as book_specificity
from pricing.models import CostRecompute, ModelPrice

from .factories import ModelPriceFactory, OrganizationFactory, price_cells

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def resolved(book: PriceBook, model: str, at: datetime) -> ModelPrice:
    row = book.resolve(model, at)
    assert row is not None, f"no price row for {model} at {at}"
    return row


def test_it_prices_cached_tokens_at_the_cached_rate_without_double_counting() -> None:
    row = PriceBook.for_organization(None).resolve("gpt-4o", NOW)
    assert row is not None and row.input_per_1m == Decimal("2.5")
    usage = usage_from_dict(
        {
            "prompt_tokens": 1_000_000,
            "completion_tokens": 0,
            "total_tokens": 1_000_000,
            "prompt_tokens_details": {"cached_tokens": 900_000},
        }
    )
    buckets = buckets_from_usage(usage)
    assert (buckets.input_uncached, buckets.input_cached) == (100_000, 900_000)
    cost = price_buckets(
        buckets, rates_for(row, service_tier=None, batch=False, prompt_tokens=10**6)
    )
    # 100k uncached at $2.50 + 900k cached at $1.25 = $0.25 + $1.125, not $2.50 + $1.125.
    assert cost.input == Decimal("1.375")
    assert cost.total == Decimal("1.375")


def test_it_prices_reasoning_inside_output_unless_the_row_has_a_reasoning_rate() -> None:
    usage = usage_from_dict(
        {
            "prompt_tokens": 0,
            "completion_tokens": 1_000_000,
            "completion_tokens_details": {"reasoning_tokens": 400_000},
        }
    )
    row = ModelPriceFactory.create(model="r-model", output_per_1m=Decimal("8"))
    rates = rates_for(row, service_tier=None, batch=False, prompt_tokens=0)
    assert price_buckets(buckets_from_usage(usage), rates).output == Decimal("8")
    row.reasoning_per_1m = Decimal("20")
    rates = rates_for(row, service_tier=None, batch=False, prompt_tokens=0)
    assert price_buckets(buckets_from_usage(usage), rates).output == Decimal("4.8") + Decimal("8")


def test_it_resolves_prices_by_date() -> None:
    ModelPriceFactory.create(
        model="dated", effective_from=datetime(2025, 1, 1, tzinfo=UTC), input_per_1m=1
    )
    ModelPriceFactory.create(
        model="dated", effective_from=datetime(2025, 6, 1, tzinfo=UTC), input_per_1m=2
    )
    book = PriceBook.for_organization(None)
    assert book.resolve("dated", datetime(2024, 12, 31, tzinfo=UTC)) is None
    assert resolved(book, "dated", datetime(2025, 1, 1, tzinfo=UTC)).input_per_1m == 1
    assert resolved(book, "dated", datetime(2025, 5, 31, 23, 59, tzinfo=UTC)).input_per_1m == 1
    assert resolved(book, "dated", datetime(2025, 6, 1, tzinfo=UTC)).input_per_1m == 2


def test_it_prefers_the_organization_row_and_hides_it_from_other_organizations() -> None:
    acme, other = OrganizationFactory.create(), OrganizationFactory.create()
    ModelPriceFactory.create(model="scoped", input_per_1m=10)
    ModelPriceFactory.create(model="scoped", organization=acme, input_per_1m=7)
    assert resolved(PriceBook.for_organization(acme), "scoped", NOW).input_per_1m == 7
    assert resolved(PriceBook.for_organization(other), "scoped", NOW).input_per_1m == 10


def test_it_prefers_exact_names_over_snapshot_fallback_over_patterns() -> None:
    book = PriceBook.for_organization(None)
    assert resolved(book, "gpt-4o-2024-08-06", NOW).model == "gpt-4o"
    assert resolved(book, "gpt-4o-mini-2024-07-18", NOW).model == "gpt-4o-mini"
    assert resolved(book, "gpt-4-0314", NOW).model == "gpt-4"
    ModelPriceFactory.create(model="ft:gpt-4o*", input_per_1m=Decimal("3.75"))
    ModelPriceFactory.create(model="ft:*", input_per_1m=Decimal("99"))
    assert book.resolve("ft:gpt-4o:acme::abc", NOW) is None  # the book was loaded before
    book = PriceBook.for_organization(None)
    assert resolved(book, "ft:gpt-4o:acme::abc", NOW).input_per_1m == Decimal("3.75")
    ModelPriceFactory.create(model="gpt-4o-2024-08-06", input_per_1m=Decimal("5"))
    book = PriceBook.for_organization(None)
    assert resolved(book, "gpt-4o-2024-08-06", NOW).input_per_1m == Decimal("5")


def test_a_lookup_by_the_rows_matching_the_model_picks_what_scanning_every_row_picks() -> None:
    """resolve() walks only the rows whose name matches (kept per model): at every time, for
    exact names, snapshots, patterns and an organization's own rows, the row a scan of
    every row in force ranks first."""
    acme = OrganizationFactory.create()
    for model, start, organization in [
        ("gpt-4o", datetime(2030, 1, 1, tzinfo=UTC), None),
        ("gpt-4o", datetime(2030, 6, 1, tzinfo=UTC), acme),
        ("ft:gpt-4o*", datetime(2025, 1, 1, tzinfo=UTC), None),
        ("ft:*", datetime(2024, 1, 1, tzinfo=UTC), acme),
    ]:
        ModelPriceFactory.create(model=model, effective_from=start, organization=organization)
    book = PriceBook.for_organization(acme)

    def scanned(model: str, at: datetime) -> ModelPrice | None:
        ranked = [
            ((1 if row.organization_id else 0, *spec, row.effective_from), row)
            for row in book.rows
            if row.effective_from <= at and (spec := book_specificity(row, model)) is not None
        ]
        return max(ranked, key=lambda item: item[0])[1] if ranked else None

    models = ["gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-mini", "ft:gpt-4o:acme::x", "ft:other", "x"]
    times = [
        datetime(year, month, 1, tzinfo=UTC) for year in (2023, 2025, 2030) for month in (1, 7)
    ]
    for model in models:
        for at in times:
            assert book.resolve(model, at) is scanned(model, at), (model, at)
    assert resolved(book, "gpt-4o", datetime(2030, 7, 1, tzinfo=UTC)).organization == acme
    assert resolved(book, "ft:gpt-4o:acme::x", NOW).model == "ft:*"  # the organization's


def test_it_leaves_unknown_models_unpriced_not_free() -> None:
    book = PriceBook.for_organization(None)
    priced = book.price(
        model="my-local-llama",
        at=NOW,
        buckets=buckets_from_usage(usage_from_dict({"prompt_tokens": 10, "completion_tokens": 5})),
        service_tier=None,
        batch=False,
    )
    assert priced.row is None and priced.cost is None and priced.cost_uncached is None


def test_it_uses_the_response_service_tier_and_gives_batch_no_cache_discount() -> None:
    row = resolved(PriceBook.for_organization(None), "gpt-4o", NOW)
    usage = buckets_from_usage(
        usage_from_dict(
            {
                "prompt_tokens": 2_000_000,
                "completion_tokens": 0,
                "prompt_tokens_details": {"cached_tokens": 1_000_000},
            }
        )
    )
    priority = price_buckets(
        usage, rates_for(row, service_tier="priority", batch=False, prompt_tokens=0)
    )
    assert priority.input == Decimal("4.25") + Decimal("2.125")
    batch = price_buckets(usage, rates_for(row, service_tier=None, batch=True, prompt_tokens=0))
    assert batch.input == Decimal("1.25") * 2  # cached tokens pay the full batch rate


def test_it_applies_the_long_context_tier_to_the_whole_request() -> None:
    row = ModelPriceFactory.create(
        model="long",
        input_per_1m=Decimal("1"),
        output_per_1m=Decimal("2"),
        long_context_threshold=200_000,
    )
    price_cells(row, {("input", "standard", "above"): "2", ("output", "standard", "above"): "4"})
    short = rates_for(row, service_tier=None, batch=False, prompt_tokens=200_000)
    long = rates_for(row, service_tier=None, batch=False, prompt_tokens=200_001)
    assert (short.input, short.output) == (Decimal("1"), Decimal("2"))
    assert (long.input, long.output) == (Decimal("2"), Decimal("4"))


def test_it_warns_when_a_rate_looks_a_million_times_off() -> None:
    data = {
        "model": "x",
        "effective_from": "2026-01-01 00:00",
        "source": "admin",
        "input_per_1m": "0.0000025",
        "output_per_1m": "10",
        "encoding": "o200k_base",
        "tokens_per_message": 3,
        "tokens_per_name": 1,
        "reply_priming": 3,
    }
    form = ModelPriceForm(data=data)
    assert not form.is_valid()
    assert "looks like a price per token" in str(form.errors)
    # Confirmed, a tiny rate is kept if it fits the 6 places of a per-1M rate...
    assert ModelPriceForm(
        data={**data, "input_per_1m": "0.000003", "confirm_units": "on"}
    ).is_valid()
    # ...and a per-token price with more places can never be stored, confirmed or not.
    assert not ModelPriceForm(data={**data, "confirm_units": "on"}).is_valid()
    assert ModelPriceForm(data={**data, "input_per_1m": "2.5"}).is_valid()


def test_it_ships_a_default_catalogue() -> None:
    models = set(ModelPrice.objects.filter(organization=None).values_list("model", flat=True))
    expected = {
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-4",
        "gpt-3.5-turbo",
    }
    assert expected <= models
    nano = ModelPrice.objects.get(model="gpt-4.1-nano")
    assert (nano.cached_input_per_1m, nano.context_window, nano.encoding) == (
        Decimal("0.025"),
        1047576,
        "o200k_base",
    )
    assert ModelPrice.objects.get(model="gpt-4").encoding == "cl100k_base"


def test_it_imports_litellm_prices_as_new_dated_rows_without_rewriting(
    oracles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = oracles / "litellm_model_prices_and_context_window.json"
    before = ModelPrice.objects.get(model="gpt-4o", organization=None)
    call_command("import_prices", str(path), "--effective-from", "2026-11-01")
    rows = ModelPrice.objects.filter(model="gpt-4o", organization=None).order_by("effective_from")
    # Same rates as the catalogue: nothing new for gpt-4o, and the old row is untouched.
    assert [r.pk for r in rows] == [before.pk]
    assert rows[0].input_per_1m == before.input_per_1m
    # A snapshot the catalogue prices through its base row gets a row of its own.
    imported = ModelPrice.objects.get(model="gpt-4o-2024-11-20", source="litellm")
    data = json.loads(path.read_text())["gpt-4o-2024-11-20"]
    assert imported.input_per_1m == Decimal(repr(data["input_cost_per_token"])) * 1_000_000
    count = ModelPrice.objects.count()
    call_command("import_prices", str(path), "--effective-from", "2026-11-01")
    assert ModelPrice.objects.count() == count
    out = capsys.readouterr().out
    assert "0 new rows" in out


def test_it_reprices_history_only_when_asked_and_logs_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from django.core.management import call_command as run

    from conversations.engine.types import Call, Transcript
    from conversations.models import UsageRecord
    from conversations.services.transcripts import transcripts_store

    org = OrganizationFactory.create()
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    call = Call(
        request=[0],
        response=1,
        model="llama-local",
        started_at=NOW,
        usage=usage_from_dict({"prompt_tokens": 1_000_000, "completion_tokens": 0}),
    )
    transcripts_store(
        organization=org,
        transcripts=[Transcript(messages=messages, model="llama-local", calls=[call])],
    )
    billing = UsageRecord.objects.get(organization=org, is_billing=True)
    assert billing.cost_total is None
    row = ModelPriceFactory.create(
        model="llama-local", organization=org, input_per_1m=Decimal("0.20")
    )
    billing.refresh_from_db()
    assert billing.cost_total is None  # a new price does not rewrite history by itself
    run("recompute_costs", "--org", org.slug)
    billing.refresh_from_db()
    assert billing.cost_total == Decimal("0.2") and billing.price == row
    log = CostRecompute.objects.get()
    # Both records (reported and estimated) were unpriced and are priced now; the log's
    # totals are the billing (reported) cost, as pages show it.
    assert (log.records, log.changed, log.cost_before) == (2, 2, Decimal(0))
    assert log.cost_after == Decimal("0.2")
    assert "2 usage records re-priced, 2 changed" in capsys.readouterr().out
    run("recompute_costs", "--org", org.slug)
    assert CostRecompute.objects.latest("id").changed == 0


def test_it_queues_a_recompute_from_the_admin_action(
    client: Client, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    from costlab.celery import app as celery_app

    from .factories import UserFactory

    admin_user = UserFactory.create(is_staff=True, is_superuser=True)
    org = OrganizationFactory.create()
    client.force_login(admin_user)
    celery_app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                "/admin/conversations/organization/",
                {"action": "recompute_costs", "_selected_action": [org.pk]},
            )
    finally:
        celery_app.conf.task_always_eager = False
    assert response.status_code == 302
    log = CostRecompute.objects.get()
    assert log.organization == org and log.requested_by == admin_user and log.finished


def test_it_chooses_the_tier_before_the_long_context_rates() -> None:
    row = ModelPriceFactory.create(
        model="tiered",
        input_per_1m=Decimal("1"),
        cached_input_per_1m=Decimal("0.1"),
        output_per_1m=Decimal("2"),
        long_context_threshold=200_000,
    )
    price_cells(
        row,
        {
            ("input", "batch", "base"): "0.5",
            ("output", "batch", "base"): "1",
            ("input", "flex", "base"): "0.5",
            ("input", "standard", "above"): "2",
            ("cached_input", "standard", "above"): "0.2",
            ("output", "standard", "above"): "4",
        },
    )
    # Batch has no band of its own above the threshold: its base band, not standard's.
    # Cached tokens pay the batch input rate: no batch cached rate, no caching discount.
    batch = rates_for(row, service_tier=None, batch=True, prompt_tokens=300_000)
    assert (batch.input, batch.cached_input, batch.output) == (
        Decimal("0.5"),
        Decimal("0.5"),
        Decimal("1"),
    )
    flex = rates_for(row, service_tier="flex", batch=False, prompt_tokens=10)
    # No flex cached rate on the row: the standard cached rate, not the flex input rate.
    assert (flex.input, flex.cached_input) == (Decimal("0.5"), Decimal("0.1"))
    long = rates_for(row, service_tier="default", batch=False, prompt_tokens=300_000)
    assert (long.input, long.cached_input, long.output) == (
        Decimal("2"),
        Decimal("0.2"),
        Decimal("4"),
    )


def test_it_prices_audio_tokens_at_the_audio_rate_when_the_row_has_one() -> None:
    usage = usage_from_dict(
        {
            "prompt_tokens": 1_000_000,
            "completion_tokens": 1_000_000,
            "prompt_tokens_details": {"audio_tokens": 400_000},
            "completion_tokens_details": {"audio_tokens": 500_000},
        }
    )
    buckets = buckets_from_usage(usage)
    assert (buckets.audio_input, buckets.audio_output) == (400_000, 500_000)
    row = ModelPriceFactory.create(
        model="audio",
        input_per_1m=Decimal("2.5"),
        output_per_1m=Decimal("10"),
        audio_input_per_1m=Decimal("40"),
        audio_output_per_1m=Decimal("80"),
    )
    cost = price_buckets(buckets, rates_for(row, service_tier=None, batch=False, prompt_tokens=0))
    assert cost.input == Decimal("0.6") * Decimal("2.5") + Decimal("0.4") * 40
    assert cost.output == Decimal("0.5") * 10 + Decimal("0.5") * 80
    row.audio_input_per_1m = row.audio_output_per_1m = None
    text_only = price_buckets(
        buckets, rates_for(row, service_tier=None, batch=False, prompt_tokens=0)
    )
    assert (text_only.input, text_only.output) == (Decimal("2.5"), Decimal("10"))


def test_it_imports_every_litellm_long_context_threshold() -> None:
    from pricing import litellm

    data = {
        "m": {
            "mode": "chat",
            "litellm_provider": "openai",
            "input_cost_per_token": 2.5e-06,
            "output_cost_per_token": 1.5e-05,
            "input_cost_per_token_above_272k_tokens": 5e-06,
            "output_cost_per_token_above_272k_tokens": 2.25e-05,
        }
    }
    (entry,) = litellm.entries(data, providers={"openai"})
    assert entry.fields["long_context_threshold"] == 272_000
    assert entry.cells[("input", "standard", "above", "default")] == Decimal("5")
    assert entry.cells[("output", "standard", "above", "default")] == Decimal("22.5")


def test_it_freezes_a_price_row_in_the_admin_once_it_priced_usage(
    client: Client, fixtures: Path
) -> None:
    from django.core.management import call_command as run

    from .factories import UserFactory

    admin_user = UserFactory.create(is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    org = OrganizationFactory.create()
    row = ModelPrice.objects.get(model="gpt-4o", organization=None)
    url = f"/admin/pricing/modelprice/{row.pk}/change/"
    assert b'name="input_per_1m"' in client.get(url).content
    run("import_transcripts", str(fixtures / "chat_small.json"), "--org", org.slug)
    assert b'name="input_per_1m"' not in client.get(url).content  # read-only now
