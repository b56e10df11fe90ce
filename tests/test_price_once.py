"""An import prices a call once: the usage record whose buckets the analysis priced takes
the analysis's cost when the price row is provably the same (services/usage.py), and
prices again when it is not. The price book looks rows up by time without isoformat."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from zoneinfo import ZoneInfo

import pytest

from conversations.engine.analysis import analyze
from conversations.engine.types import Transcript
from conversations.models import UsageRecord
from conversations.services.transcripts import transcripts_store
from conversations.services.usage import turn_usage_fields
from pricing.book import PriceBook

from .factories import ModelPriceFactory, OrganizationFactory
from .test_rollups import _transcripts

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_it_stores_the_same_records_whether_it_reuses_the_analysis_price_or_not() -> None:
    book = PriceBook.for_organization(None)
    transcripts = _transcripts(random.Random(4), 30)
    # Calls without a time of their own too: the analysis priced those at NOW.
    for transcript in transcripts[:10]:
        for call in transcript.calls or []:
            call.started_at = None
    analysis = analyze(
        transcripts,
        profile_for=book.profile,
        policy_for=book.policy,
        rates_for=partial(book.call_rates, now=NOW),
        retention_seconds=600,
    )
    reused = 0
    for transcript, conversation in zip(transcripts, analysis.conversations, strict=True):
        for result in conversation.calls:
            model = result.model or transcript.model or ""
            at = result.call.started_at or NOW
            once = turn_usage_fields(model=model, result=result, book=book, at=at, analysed_at=NOW)
            twice = turn_usage_fields(model=model, result=result, book=book, at=at)
            assert once == twice
            # The very Decimal the analysis computed: not priced a second time.
            reused += sum(
                result.cost is not None and record["cost_total"] is result.cost.total
                for record in once
            )
    assert reused > 50


def test_it_prices_again_when_the_record_is_priced_at_another_time() -> None:
    """A conversation dated before a price change, its calls undated: the analysis priced
    them at the import's time (the new row), the records at the conversation's (the old)."""
    ModelPriceFactory.create(
        model="ft-model", input_per_1m=Decimal(1), effective_from=datetime(2020, 1, 1, tzinfo=UTC)
    )
    ModelPriceFactory.create(
        model="ft-model", input_per_1m=Decimal(9), effective_from=datetime(2026, 1, 1, tzinfo=UTC)
    )
    org = OrganizationFactory.create()
    transcript = Transcript(
        messages=[
            {"role": "user", "content": "hello " * 1000},
            {"role": "assistant", "content": ""},
        ],
        model="ft-model",
        created_at=datetime(2024, 6, 1, tzinfo=UTC),
    )
    transcripts_store(organization=org, transcripts=[transcript])
    record = UsageRecord.objects.get(organization=org)
    assert record.price is not None and record.price.input_per_1m == Decimal(1)
    assert record.cost_input_uncached == Decimal(record.input_uncached) / 1_000_000


def test_it_looks_up_the_two_instants_of_one_wall_time_apart() -> None:
    """02:30 on 2026-10-25 happens twice in Paris (00:30 and 01:30 UTC): equal as datetimes
    of one zone, priced by different rows when a row starts between them."""
    ModelPriceFactory.create(
        model="dst-model", input_per_1m=Decimal(1), effective_from=datetime(2020, 1, 1, tzinfo=UTC)
    )
    later = ModelPriceFactory.create(
        model="dst-model",
        input_per_1m=Decimal(2),
        effective_from=datetime(2026, 10, 25, 1, tzinfo=UTC),
    )
    first = datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Paris"))
    second = first.replace(fold=1)
    assert first == second and second - first == timedelta(0)
    book = PriceBook.for_organization(None)
    assert book.resolve("dst-model", first) != later
    assert book.resolve("dst-model", second) == later
