"""The cache page reads the CacheDay rollup (services/rollups.py) and gets the figures the raw
usage rows give (issue 14 item 6): the summary, money lost by reason, by day and by model,
for whole days of the organization, with and without a model filter; a slice the rollup
cannot answer (a bound inside a day, a filter it has no column for) reads the raw rows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import breakdowns, cache_report
from conversations.breakdowns import Slice
from conversations.demo import demo_transcripts
from conversations.models import CacheDay, Organization
from conversations.services import rollups
from conversations.services.transcripts import transcripts_store

from .factories import OrganizationFactory
from .test_rollups import T0, _transcripts

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def _filled(time_zone: str) -> Organization:
    organization = OrganizationFactory.create(time_zone=time_zone)
    transcripts_store(organization=organization, transcripts=_transcripts(random.Random(11), 60))
    transcripts_store(organization=organization, transcripts=demo_transcripts(T0 + 3 * DAY))
    assert rollups.organization_drift(organization=organization) == []
    return organization


def _midnight(organization: Organization, days: int) -> datetime:
    """The organization's midnight `days` after T0's local day, as a UTC instant."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(organization.time_zone)
    local = T0.astimezone(zone).date() + days * DAY
    return datetime(local.year, local.month, local.day, tzinfo=zone).astimezone(UTC)


def _slices(organization: Organization) -> list[Slice]:
    return [
        Slice(),
        Slice(model="gpt-4o"),
        Slice(start=_midnight(organization, 2)),
        Slice(end=_midnight(organization, 5)),
        Slice(start=_midnight(organization, 1), end=_midnight(organization, 6), model="gpt-4.1"),
        Slice(start=_midnight(organization, 3), end=_midnight(organization, 3)),  # empty
    ]


def _reads_raw_rows(read: object) -> bool:
    with CaptureQueriesContext(connection) as queries:
        assert callable(read)
        read()
    return any("conversations_usagerecord" in q["sql"] for q in queries.captured_queries)


def _assert_same(organization: Organization, slice_: Slice, *, by_day: bool) -> None:
    summary = cache_report.cache_summary(organization, slice_)
    raw = cache_report.raw_cache_summary(organization, slice_)
    for name in ("latency_hit_ms", "latency_miss_ms"):
        expected = getattr(raw, name)
        assert getattr(summary, name) == (
            pytest.approx(expected) if expected is not None else None
        ), name
    assert {**summary.__dict__, "latency_hit_ms": 0, "latency_miss_ms": 0} == {
        **raw.__dict__,
        "latency_hit_ms": 0,
        "latency_miss_ms": 0,
    }
    assert cache_report.lost_by_reason(organization, slice_) == cache_report.raw_lost_by_reason(
        organization, slice_
    )
    assert cache_report.lost_by_model(organization, slice_) == cache_report.raw_lost_by_model(
        organization, slice_
    )
    assert cache_report.key_problems(organization, slice_) == cache_report.raw_key_problems(
        organization, slice_
    )
    if by_day:
        assert cache_report.lost_by_day(organization, slice_) == cache_report.raw_lost_by_day(
            organization, slice_
        )


@pytest.mark.parametrize("time_zone", ["UTC", "America/Los_Angeles"])
def test_the_cache_page_reads_the_same_figures_from_the_rollup_as_from_raw_rows(
    time_zone: str,
) -> None:
    organization = _filled(time_zone)
    whole = cache_report.raw_cache_summary(organization, Slice())
    # The data has what every figure needs: misses that cost, hits, calls that cannot hit.
    assert whole.lost and whole.lost > 0 and whole.hits > 0 and whole.not_eligible > 0
    assert whole.unpriced > 0 and whole.latency_hit_ms is not None
    reasons = {r.reason for r in cache_report.raw_lost_by_reason(organization, Slice())}
    assert len(reasons) >= 2
    assert [p.name for p in cache_report.raw_key_problems(organization, Slice())] == ["missing_key"]
    assert CacheDay.objects.filter(organization=organization, missed_calls__gt=0).exists()
    utc = time_zone == "UTC"
    for slice_ in _slices(organization):
        assert breakdowns.cache_days(organization, slice_) is not None
        _assert_same(organization, slice_, by_day=True)
        # The rollup path touches no usage row; lost_by_day needs the days to be UTC's.
        assert not _reads_raw_rows(lambda s=slice_: cache_report.cache_summary(organization, s))
        assert not _reads_raw_rows(lambda s=slice_: cache_report.lost_by_reason(organization, s))
        assert not _reads_raw_rows(lambda s=slice_: cache_report.key_problems(organization, s))
        assert _reads_raw_rows(lambda s=slice_: cache_report.lost_by_day(organization, s)) != utc


def test_a_slice_the_rollup_cannot_answer_reads_the_raw_rows() -> None:
    organization = _filled("America/Los_Angeles")
    inside_a_day = Slice(start=_midnight(organization, 2) + timedelta(hours=5))
    by_source = Slice(source="import")
    by_key = Slice(prompt_cache_key="")
    for slice_ in (inside_a_day, by_source, by_key):
        assert breakdowns.cache_days(organization, slice_) is None
        assert _reads_raw_rows(lambda s=slice_: cache_report.cache_summary(organization, s))
    # A UTC midnight is not Los Angeles': the raw rows, and still the same figures.
    utc_day = Slice(start=datetime(2026, 10, 5, tzinfo=UTC))
    assert breakdowns.cache_days(organization, utc_day) is None
    assert cache_report.cache_summary(organization, utc_day).calls > 0


@pytest.mark.parametrize("time_zone", ["UTC", "America/Los_Angeles"])
def test_breakdowns_by_model_and_period_read_the_same_rows_from_the_rollup(
    time_zone: str,
) -> None:
    organization = _filled(time_zone)
    utc = time_zone == "UTC"
    for slice_ in _slices(organization):
        assert breakdowns.slice_totals(organization, slice_) == breakdowns.raw_slice_totals(
            organization, slice_
        )
        for name in ("model", "day", "week", "month"):
            dimension = breakdowns.DIMENSIONS[name]
            for sort in breakdowns.SORTS:
                for limit in (200, 2):
                    rolled = breakdowns.rollup_breakdown(
                        organization, slice_, dimension, sort=sort, limit=limit
                    )
                    # Days from the rollup only where the organization's days are UTC's.
                    assert (rolled is not None) == (utc or name == "model")
                    raw = breakdowns.raw_breakdown(
                        organization, slice_, dimension, sort=sort, limit=limit
                    )
                    assert (
                        breakdowns.breakdown(
                            organization, slice_, dimension, sort=sort, limit=limit
                        )
                        == raw
                    ), (name, sort, limit)
                    if rolled is not None:
                        assert rolled == raw
    # Every dimension had groups to compare, unpriced ones among them.
    rows = breakdowns.raw_breakdown(organization, Slice(), breakdowns.DIMENSIONS["model"])
    assert len(rows) >= 4 and any(r.cost is None for r in rows)
