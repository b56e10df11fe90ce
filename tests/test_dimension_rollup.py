"""Breakdowns read the rollups (issue 14 item 6): by source, prompt_cache_key, end user, API
key, project and tag from DimensionDay, by conversation from ConversationDay, by model, day,
week and month from CacheDay (or DimensionDay under one filter), with days, weeks and months
in the organization's time zone. Each gives the rows the raw usage gives, and DimensionDay
stays exact through every write path (the drift check compares it with the raw rows)."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations import breakdowns
from conversations.breakdowns import Slice
from conversations.engine.types import Transcript
from conversations.models import (
    Conversation,
    DimensionDay,
    Organization,
    UsageRecord,
)
from conversations.services import deletion, dimension_rollups, rollups, transcripts
from conversations.services.tags import conversation_tags_set
from conversations.services.transcripts import transcripts_store
from pricing.services import costs_recompute

from .factories import MembershipFactory, ModelPriceFactory, OrganizationFactory
from .test_rollups import T0, _transcripts

pytestmark = pytest.mark.django_db

KEYS = ["support-v1", "support-v2", None]
USERS = ["alice", "bob", "carol", None]
TEAMS = ["search", "billing"]


def _dimensioned(rng: random.Random, count: int) -> list[Transcript]:
    """test_rollups' conversations with keys, end users, API keys, projects and tags, some
    of each missing (a conversation without a `team` tag, a call without a key)."""
    result = []
    for transcript in _transcripts(rng, count):
        for call in transcript.calls or []:
            call.prompt_cache_key = rng.choice(KEYS)
            call.end_user = rng.choice(USERS)
            call.api_key = rng.choice(["key-ops", "key-web", None])
            call.project = rng.choice(["proj_a", None])
        tags = {}
        if rng.random() < 0.6:
            tags["team"] = rng.choice(TEAMS)
        if rng.random() < 0.3:
            tags["env"] = "prod"
        transcript.tags = tags
        result.append(transcript)
    return result


def _filled(time_zone: str, monkeypatch: pytest.MonkeyPatch) -> Organization:
    organization = OrganizationFactory.create(time_zone=time_zone)
    # Small chunks: later chunks add to DimensionDay keys earlier ones created.
    monkeypatch.setattr(transcripts, "CHUNK", 9)
    transcripts_store(organization=organization, transcripts=_dimensioned(random.Random(3), 70))
    assert rollups.organization_drift(organization=organization) == []
    return organization


def _local(organization: Organization, days: int) -> date:
    return T0.astimezone(ZoneInfo(organization.time_zone)).date() + timedelta(days=days)


FILTERS: list[dict[str, str]] = [
    {},
    {"model": "gpt-4o"},
    {"source": "api_log"},
    {"prompt_cache_key": "support-v1"},
    {"prompt_cache_key": ""},
    {"end_user": "alice", "model": "gpt-4.1"},
    {"tag_key": "team", "tag_value": "search"},
]
ROLLED_DIMENSIONS = [
    "model", "day", "week", "month", "conversation", "source", "key", "user", "api_key",
    "project", "tag:team", "tag:env",
]  # fmt: skip


def _slices(organization: Organization) -> list[Slice]:
    zone = organization.time_zone
    periods = [(None, None), (_local(organization, 1), _local(organization, 6))]
    return [
        Slice.of_dates(first, last, zone=zone, **filters)
        for first, last in periods
        for filters in FILTERS
    ]


def _reads_raw_rows(read: object) -> bool:
    with CaptureQueriesContext(connection) as queries:
        assert callable(read)
        read()
    return any("conversations_usagerecord" in q["sql"] for q in queries.captured_queries)


def _expect_rollup(slice_: Slice, name: str) -> bool:
    """Where the rollups hold the slice: at most one filter besides period and model, and
    for a dimension of DimensionDay, only a filter of its own kind; by conversation, none."""
    others = [
        kind
        for kind, on in (
            ("source", bool(slice_.source)),
            ("key", slice_.prompt_cache_key is not None),
            ("user", slice_.end_user is not None),
            (f"tag:{slice_.tag_key}", bool(slice_.tag_key)),
        )
        if on
    ]
    if name in ("model", "day", "week", "month"):
        return len(others) <= 1
    if name == "conversation":
        return not others
    return others in ([], [name])


@pytest.mark.parametrize("time_zone", ["UTC", "America/Los_Angeles"])
def test_every_breakdown_reads_the_same_rows_from_the_rollups_as_from_raw_rows(
    time_zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    organization = _filled(time_zone, monkeypatch)
    # The data has every kind of group: keys, no key, tagged and untagged, unpriced calls.
    whole = Slice.of_dates(None, None, zone=time_zone)
    keys = {
        r.key for r in breakdowns.raw_breakdown(organization, whole, breakdowns.DIMENSIONS["key"])
    }
    assert keys == {"support-v1", "support-v2", ""}
    team = breakdowns.dimension_get("tag:team")
    assert team is not None
    teams = breakdowns.raw_breakdown(organization, whole, team)
    assert {r.key for r in teams} == {"search", "billing", None}
    assert any(
        r.cost is None
        for r in breakdowns.raw_breakdown(organization, whole, breakdowns.DIMENSIONS["model"])
    )
    compared = 0
    for slice_ in _slices(organization):
        assert breakdowns.slice_totals(organization, slice_) == breakdowns.raw_slice_totals(
            organization, slice_
        )
        for name in ROLLED_DIMENSIONS:
            dimension = breakdowns.dimension_get(name)
            assert dimension is not None
            for sort, limit in [("cost", 200), ("calls", 2), ("lost", 2), ("key", 2)]:
                rolled = breakdowns.rollup_breakdown(
                    organization, slice_, dimension, sort=sort, limit=limit
                )
                assert (rolled is not None) == _expect_rollup(slice_, name), (slice_, name)
                raw = breakdowns.raw_breakdown(
                    organization, slice_, dimension, sort=sort, limit=limit
                )
                if rolled is not None:
                    assert rolled == raw, (slice_, name, sort, limit)
                    compared += len(raw)
            if _expect_rollup(slice_, name):
                assert not _reads_raw_rows(
                    lambda s=slice_, d=dimension: breakdowns.breakdown(organization, s, d)
                )
    assert compared > 500


@pytest.mark.parametrize("time_zone", ["UTC", "America/Los_Angeles"])
def test_the_whole_period_by_conversation_reads_one_totals_row_per_conversation(
    time_zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    organization = _filled(time_zone, monkeypatch)
    whole = Slice(zone=time_zone)
    dimension = breakdowns.DIMENSIONS["conversation"]
    raw_all = breakdowns.raw_breakdown(organization, whole, dimension, limit=10_000)
    # Unpriced conversations and ties on calls: the order's tie-breaker is exercised.
    assert any(r.cost is None for r in raw_all) and any(r.cost for r in raw_all)
    assert len({r.calls for r in raw_all}) < len(raw_all)
    for sort in breakdowns.SORTS:
        for limit in (200, 3):
            with CaptureQueriesContext(connection) as queries:
                rolled = breakdowns.rollup_breakdown(
                    organization, whole, dimension, sort=sort, limit=limit
                )
            raw = breakdowns.raw_breakdown(organization, whole, dimension, sort=sort, limit=limit)
            assert rolled == raw, (sort, limit)
            (query,) = queries.captured_queries
            assert "conversations_conversationtotals" in query["sql"]
            assert "conversations_conversationday" not in query["sql"]


def test_days_weeks_and_months_are_the_organization_s() -> None:
    """A call early on 3 October UTC is on 2 October in Los Angeles; the week and month
    start on its local Monday and first day."""
    organization = OrganizationFactory.create(time_zone="America/Los_Angeles")
    transcripts_store(organization=organization, transcripts=_transcripts(random.Random(9), 1))
    record = UsageRecord.objects.get(organization=organization, is_billing=True, turn__index=0)
    assert record.occurred_at.date() == date(2026, 10, 3)
    assert record.occurred_at.astimezone(ZoneInfo("America/Los_Angeles")).date() == date(
        2026, 10, 2
    )
    slice_ = Slice.of_dates(date(2026, 10, 2), date(2026, 10, 2), zone="America/Los_Angeles")
    for name, first in (("day", "2026-10-02"), ("week", "2026-09-28"), ("month", "2026-10-01")):
        for read in (breakdowns.breakdown, breakdowns.raw_breakdown):
            rows = read(organization, slice_, breakdowns.DIMENSIONS[name])
            assert rows[0].label == first, (name, read)
            assert rows[0].calls >= 1
    # Under UTC days the same call is on 3 October.
    utc = Slice.of_dates(date(2026, 10, 3), date(2026, 10, 3))
    assert breakdowns.breakdown(organization, utc, breakdowns.DIMENSIONS["day"])[0].label == (
        "2026-10-03"
    )


def test_a_comparison_keeps_whole_local_days_across_daylight_saving() -> None:
    # 1-7 November 2026 in Los Angeles holds the change back to standard time.
    slice_ = Slice.of_dates(date(2026, 11, 1), date(2026, 11, 7), zone="America/Los_Angeles")
    previous = slice_.previous()
    assert previous is not None and previous.end == slice_.start
    assert previous.start == breakdowns.day_start(date(2026, 10, 25), "America/Los_Angeles")


def test_the_rollup_follows_every_write_path(monkeypatch: pytest.MonkeyPatch) -> None:
    organization = _filled("America/Los_Angeles", monkeypatch)
    assert DimensionDay.objects.filter(organization=organization, kind="tag:team").exists()
    # Re-pricing: an unknown model gets a price.
    ModelPriceFactory.create(model="llama-local", organization=organization)
    costs_recompute(organization=organization)
    assert rollups.organization_drift(organization=organization) == []
    # A tag edit moves the conversation's calls to another group, in the rollup too.
    conversation = Conversation.objects.filter(organization=organization, tags={}).first()
    assert conversation is not None
    conversation_tags_set(conversation=conversation, tags={"team": "newcomers"})
    assert rollups.organization_drift(organization=organization) == []
    team = breakdowns.dimension_get("tag:team")
    assert team is not None
    rows = breakdowns.breakdown(organization, Slice(zone="America/Los_Angeles"), team)
    newcomers = next(r for r in rows if r.key == "newcomers")
    assert (
        newcomers.calls
        == UsageRecord.objects.filter(conversation=conversation, is_billing=True).count()
    )
    # Deletes.
    for victim in Conversation.objects.filter(organization=organization).order_by("pk")[:5]:
        deletion.conversation_delete(conversation=victim)
    assert rollups.organization_drift(organization=organization) == []


def test_drift_in_the_rollup_is_found_and_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    organization = _filled("UTC", monkeypatch)
    row = DimensionDay.objects.filter(organization=organization, kind="key").order_by("pk").first()
    assert row is not None
    DimensionDay.objects.filter(pk=row.pk).update(calls=row.calls + 1, lost=Decimal("1"))
    drift = rollups.organization_drift(organization=organization)
    assert len(drift) == 1 and drift[0].startswith("dimensionday ('key',") and "calls" in drift[0]
    rollups.organization_rebuild(organization=organization)
    assert rollups.organization_drift(organization=organization) == []
    dimension_rollups.organization_forget(organization=organization)
    assert any("missing" in line for line in rollups.organization_drift(organization=organization))


def test_the_breakdown_page_by_key_reads_no_usage_row(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    organization = _filled("America/Los_Angeles", monkeypatch)
    membership = MembershipFactory.create(organization=organization)
    client.force_login(membership.user)
    url = reverse("breakdown_page", args=[organization.slug])
    first = _local(organization, 1).isoformat()
    for query in (
        {"by": "key", "date_from": first, "compare": "on"},
        {"by": "tag:team", "model": "gpt-4o"},
        {"by": "day", "user": "alice"},
        {"by": "week"},
        {"by": "conversation", "date_from": first},
    ):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, query)
        assert response.status_code == 200
        reads = [q["sql"] for q in queries.captured_queries]
        assert not any("conversations_usagerecord" in sql for sql in reads), query


# --- prefix breakers from BreakerDay ------------------------------------------------------


def _breaking_traffic(rng: random.Random) -> list[Transcript]:
    """Conversations over four days, two models: a third with a timestamp in the system
    prompt, some whose tools come in another order, several calls each."""
    from conversations.engine.types import Call

    from .test_cache_page import STATIC

    tools = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        for name in ("lookup_order", "refund", "escalate")
    ]
    result = []
    for n in range(45):
        at = T0 + timedelta(minutes=130 * n)
        system = f"Now: {at:%Y-%m-%dT%H:%M:%S}Z. {STATIC}" if n % 3 == 0 else STATIC
        model = "gpt-4.1" if n % 2 else "gpt-4o"
        messages: list[dict[str, str]] = [{"role": "system", "content": system}]
        calls = []
        for k in range(rng.randint(1, 3)):
            messages.append({"role": "user", "content": f"Where is order {n}-{k}?"})
            messages.append({"role": "assistant", "content": "It ships today."})
            order = tools if (n + k) % 5 else list(reversed(tools))
            calls.append(
                Call(
                    request=list(range(len(messages) - 1)),
                    response=len(messages) - 1,
                    model=model,
                    started_at=at + timedelta(minutes=k),
                    tools=order,
                )
            )
        result.append(Transcript(messages=messages, calls=calls, title=f"t {n}", model=model))
    return result


def test_prefix_breakers_read_the_same_groups_from_the_rollup_as_from_raw_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conversations import cache_report
    from conversations.models import BreakerDay

    organization = OrganizationFactory.create(time_zone="America/Los_Angeles")
    monkeypatch.setattr(transcripts, "CHUNK", 7)
    transcripts_store(organization=organization, transcripts=_breaking_traffic(random.Random(5)))
    assert rollups.organization_drift(organization=organization) == []
    whole = Slice(zone=organization.time_zone)
    raw = cache_report.raw_prefix_breakers(organization, whole, limit=50)
    # Breakers in the system prompt and in the tools (message None), and a conversation
    # with two calls at one place: calls and conversations differ.
    assert {b.message for b in raw} == {0, None}
    assert any(b.calls > b.conversations for b in raw)
    assert BreakerDay.objects.filter(organization=organization).count() > len(raw)
    zone = organization.time_zone
    slices = [
        whole,
        Slice(zone=zone, model="gpt-4.1"),
        Slice.of_dates(_local(organization, 1), _local(organization, 2), zone=zone),
        Slice.of_dates(_local(organization, 1), None, zone=zone, model="gpt-4o"),
    ]
    for slice_ in slices:
        for limit in (50, 1):
            expected = cache_report.raw_prefix_breakers(organization, slice_, limit=limit)
            shown = cache_report.prefix_breakers(organization, slice_, limit=limit, explain=0)
            assert shown == expected, (slice_, limit)
        assert not _reads_raw_rows(
            lambda s=slice_: cache_report.prefix_breakers(organization, s, explain=0)
        )
    # A key filter has no BreakerDay column: the raw rows, the same groups.
    keyed = Slice(zone=zone, prompt_cache_key="")
    assert _reads_raw_rows(lambda: cache_report.prefix_breakers(organization, keyed, explain=0))
    # Calls added to a conversation later (as a live call adds them) combine with its row:
    # counts add, the first and last token and turn are the least and greatest.
    dimension_rollups.organization_forget(organization=organization)
    records = UsageRecord.objects.filter(organization=organization, is_billing=True)
    dimension_rollups.records_added(
        organization=organization, records=records.filter(turn__index=0)
    )
    dimension_rollups.records_added(
        organization=organization, records=records.filter(turn__index__gt=0)
    )
    assert rollups.organization_drift(organization=organization) == []
    for victim in Conversation.objects.filter(organization=organization).order_by("pk")[:4]:
        deletion.conversation_delete(conversation=victim)
    assert rollups.organization_drift(organization=organization) == []
    assert cache_report.prefix_breakers(organization, whole, explain=0) == (
        cache_report.raw_prefix_breakers(organization, whole)
    )


def test_tags_named_like_numbers_are_members_not_array_indexes() -> None:
    """Tag names "1" and "-1" read as array indexes gave NULL on PostgreSQL and made SQLite
    refuse the import (JSON path `$[-1]`): they are members' names, like any other."""
    organization = OrganizationFactory.create()
    stored = _dimensioned(random.Random(5), 4)
    for n, transcript in enumerate(stored):
        transcript.tags = {"1": f"one-{n % 2}", "-1": "minus"}
    transcripts_store(organization=organization, transcripts=stored)
    assert rollups.organization_drift(organization=organization) == []
    billed = UsageRecord.objects.filter(organization=organization, is_billing=True).count()
    whole = Slice(zone="UTC")
    for name, keys in (("tag:1", {"one-0", "one-1"}), ("tag:-1", {"minus"})):
        dimension = breakdowns.dimension_get(name)
        assert dimension is not None
        rolled = breakdowns.rollup_breakdown(organization, whole, dimension, sort="key", limit=9)
        raw = breakdowns.raw_breakdown(organization, whole, dimension, sort="key", limit=9)
        assert rolled == raw
        assert {r.key for r in raw} == keys  # no "(none)" group: every call is tagged
        assert sum(r.calls for r in raw) == billed
