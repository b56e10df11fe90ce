"""The cache page, prefix breakers and the fix list on known traffic, checked by hand
arithmetic (issue 14). Prices: gpt-4.1 at $2.00 input and $0.50 cached per 1M tokens, so
every cacheable token a miss did not cache lost $1.50 / 1M."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db.models import Sum
from django.test import Client
from django.urls import reverse

from conversations import fix_list as fix_list_module
from conversations.breakdowns import Slice
from conversations.cache_report import (
    cache_summary,
    key_problems,
    lost_by_reason,
    prefix_breakers,
)
from conversations.engine.cache import STEP
from conversations.engine.fixes import key_rates
from conversations.engine.types import Call, Transcript
from conversations.fix_list import Busy, FixList, TooLarge, fix_list
from conversations.models import Membership, Organization, UsageRecord
from conversations.services.transcripts import transcripts_store
from conversations.templatetags.costlab import usd

from .factories import MembershipFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
MODEL = "gpt-4.1"
LOST_PER_TOKEN = Decimal("1.50") / 1_000_000  # input - cached rate of gpt-4.1
# A system prompt well above the 1024-token minimum, the same for every conversation.
STATIC = "You are the support assistant of Acme. " + " ".join(
    f"Rule {i}: answer politely and cite the manual." for i in range(160)
)


def conversation(
    system: str, at: datetime, *, key: str | None = None, n: int = 0, model: str = MODEL
) -> Transcript:
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "It ships today."},
    ]
    call = Call(request=[0, 1], response=2, model=model, started_at=at, prompt_cache_key=key)
    return Transcript(messages=messages, calls=[call], title=f"chat {n}", model=model)


def cacheable(prompt_tokens: int) -> int:
    return prompt_tokens // STEP * STEP


@pytest.fixture
def member() -> Membership:
    return MembershipFactory.create()


def timestamped_traffic(organization: Organization) -> None:
    """100 one-call conversations 5 s apart: 60 with the static system prompt, then 40
    whose system prompt opens with the time it was sent."""
    transcripts = []
    for n in range(100):
        at = T0 + timedelta(seconds=5 * n)
        system = STATIC if n < 60 else f"Now: {at:%Y-%m-%dT%H:%M:%S}Z. {STATIC}"
        transcripts.append(conversation(system, at, n=n))
    transcripts_store(organization=organization, transcripts=transcripts)


def test_it_finds_one_prefix_breaker_for_a_timestamp_in_40_of_100_system_prompts(
    member: Membership,
) -> None:
    organization = member.organization
    timestamped_traffic(organization)
    records = UsageRecord.objects.filter(organization=organization, is_billing=True)
    stamped = records.filter(conversation__title__in=[f"chat {n}" for n in range(60, 100)])
    prompts = set(stamped.values_list("prompt_tokens", flat=True))
    assert len(prompts) == 1  # the same timestamp format counts alike
    prompt = prompts.pop()
    assert prompt >= 1024 + STEP

    breakers = prefix_breakers(organization, Slice())

    assert len(breakers) == 1
    breaker = breakers[0]
    assert (breaker.calls, breaker.conversations, breaker.message) == (40, 40, 0)
    # Each diverged in its first tokens: nothing cached, the whole cacheable prompt lost.
    assert breaker.lost == 40 * cacheable(prompt) * LOST_PER_TOKEN
    assert breaker.divergence is not None
    assert breaker.divergence.causes[0] == "volatile_system"
    left, right = breaker.divergence.left, breaker.divergence.right
    assert left.differing != right.differing
    assert "Now" in left.before + left.differing


def test_it_prices_each_miss_reason_on_the_cache_page(client: Client, member: Membership) -> None:
    organization = member.organization
    timestamped_traffic(organization)
    static_prompt = (
        UsageRecord.objects.filter(organization=organization, conversation__title="chat 0")
        .get()
        .prompt_tokens
    )
    stamped_prompt = (
        UsageRecord.objects.filter(organization=organization, conversation__title="chat 99")
        .get()
        .prompt_tokens
    )

    by_reason = {row.reason: row for row in lost_by_reason(organization, Slice())}

    # The first static call is cold, the first sight of its prefix: no cache could have
    # held it, so it lost nothing. The other 59 read its whole cacheable prefix.
    assert set(by_reason) == {"prefix_changed"}
    assert by_reason["prefix_changed"].calls == 40
    assert by_reason["prefix_changed"].missed_tokens == 40 * cacheable(stamped_prompt)
    summary = cache_summary(organization, Slice())
    assert (summary.calls, summary.eligible, summary.hits) == (100, 100, 59)
    assert summary.hit_rate_requests == pytest.approx(0.59)
    assert summary.hit_rate_met is False  # below the seed's 70 % line
    assert summary.cached_per_request == pytest.approx(59 * cacheable(static_prompt) / 100)
    assert summary.lost == 40 * cacheable(stamped_prompt) * LOST_PER_TOKEN

    client.force_login(member.user)
    page = client.get(reverse("cache_page", args=[organization.slug])).content.decode()
    assert 'data-reason="prefix_changed"' in page
    assert "timestamp or id in the system prompt" in page
    assert "target &gt; 70.0%" in page
    # The fix list arrives by HTMX into its one placeholder; the full page must not also render
    # the list's empty state (it did, below the export link, beside a list that had fixes).
    assert page.count('id="fixes"') == 1
    assert "No fix would have saved" not in page


def test_it_counts_calls_that_cannot_hit_apart(member: Membership) -> None:
    organization = member.organization
    short = Transcript(
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        calls=[Call(request=[0], response=1, model=MODEL, started_at=T0)],
        model=MODEL,
    )
    old = Transcript(
        messages=[{"role": "system", "content": STATIC}, {"role": "assistant", "content": "ok"}],
        calls=[Call(request=[0], response=1, model="gpt-4", started_at=T0)],
        model="gpt-4",
    )
    transcripts_store(organization=organization, transcripts=[short, old])

    summary = cache_summary(organization, Slice())

    assert (summary.eligible, summary.below_minimum, summary.not_supported) == (0, 1, 1)
    assert summary.hit_rate_requests is None  # no eligible call: no rate, not 0 %
    assert summary.lost == 0  # nothing cacheable, nothing lost
    assert lost_by_reason(organization, Slice()) == []


def test_it_recommends_moving_the_timestamp_and_prices_the_fix(member: Membership) -> None:
    organization = member.organization
    timestamped_traffic(organization)

    found = fix_list(organization, Slice())

    assert isinstance(found, FixList)
    fixes = {item.name: item for item in found.items}
    assert "move_volatile" in fixes
    item = fixes["move_volatile"]
    assert item.calls == 40
    assert len(item.conversations) == 20  # links shown, each to its call
    assert item.saving > 0
    assert item.cost_before is not None and item.cost_after is not None
    assert item.saving == item.cost_before - item.cost_after
    # Beside the simulated "before", the same calls as recorded (their billing rows).
    billing = UsageRecord.objects.filter(organization=organization, is_billing=True)
    assert found.recorded_cost == billing.aggregate(s=Sum("cost_total"))["s"]
    assert found.simulated_cost == item.cost_before


def test_the_fix_list_says_what_the_calls_cost_as_recorded(
    client: Client, member: Membership
) -> None:
    organization = member.organization
    timestamped_traffic(organization)
    client.force_login(member.user)
    html = client.get(reverse("cache_fixes", args=[organization.slug])).content.decode()
    found = fix_list(organization, Slice())
    assert isinstance(found, FixList) and found.recorded_cost and found.simulated_cost
    said = " ".join(html.split("data-baseline>", 1)[1].split("</p>", 1)[0].split())
    assert said.startswith(
        f"As recorded, these calls cost {usd(found.recorded_cost)}; the simulator puts them "
        f"at {usd(found.simulated_cost)}"
    ), said


def test_an_unpriced_call_leaves_the_recorded_cost_unknown(member: Membership) -> None:
    organization = member.organization
    timestamped_traffic(organization)
    unknown = conversation(STATIC, T0 + timedelta(minutes=30), n=100, model="no-price-model")
    transcripts_store(organization=organization, transcripts=[unknown])
    found = fix_list(organization, Slice())
    assert isinstance(found, FixList)
    assert found.recorded_cost is None


def test_it_shows_a_key_at_30_rpm_overflowing_and_what_sharding_it_saves(
    member: Membership,
) -> None:
    """60 identical calls on one key, one every 2 s (30 a minute) for 2 minutes. The cache
    machine serves 15 a minute: the calls at 0-28 s and 60-88 s; the 30 others overflow to
    cold machines. Split in two keys (alternate conversations), each key sees 15 a minute:
    every call is served, and only each key's first call is cold."""
    organization = member.organization
    transcripts = [
        conversation(STATIC, T0 + timedelta(seconds=2 * n), key="support", n=n) for n in range(60)
    ]
    transcripts_store(organization=organization, transcripts=transcripts)
    prompt = UsageRecord.objects.filter(organization=organization).first()
    assert prompt is not None
    tokens = cacheable(prompt.prompt_tokens)

    by_reason = {row.reason: row for row in lost_by_reason(organization, Slice())}
    assert by_reason["overflow"].calls == 30
    assert by_reason["overflow"].lost == 30 * tokens * LOST_PER_TOKEN
    assert "cold" not in by_reason  # the first call: nothing it could have read

    rates = key_rates(transcripts)
    assert (rates[0].key, rates[0].peak_rpm) == ("support", 30)

    found = fix_list(organization, Slice())
    assert isinstance(found, FixList)
    fixes = {item.name: item for item in found.items}
    overflow = fixes["key_overflow"]
    assert overflow.details == ["support on gpt-4.1: 30 requests/minute at peak"]
    # Before: 31 misses (30 overflow + 1 cold); after: 2 cold, one per key. 29 calls more
    # read `tokens` cached tokens each, at $1.50 / 1M less.
    assert overflow.saving == 29 * tokens * LOST_PER_TOKEN
    assert overflow.calls == 60


def test_it_prices_misses_a_changing_or_missing_key_caused(member: Membership) -> None:
    """Conversation 0 warms the prefix under key a; conversation 1 sends the same prefix
    under key b 5 s later: a cold miss that names key a. Conversations 2 and 3 send it with
    no key: the first misses (the prefix was last cached under key b: the key changed, to
    none), the second hits. The two lenses overlap on conversation 2."""
    organization = member.organization
    keys = ["a", "b", None, None]
    transcripts = [
        conversation(STATIC, T0 + timedelta(seconds=5 * n), key=key, n=n)
        for n, key in enumerate(keys)
    ]
    transcripts_store(organization=organization, transcripts=transcripts)
    prompt = UsageRecord.objects.filter(organization=organization).first()
    assert prompt is not None
    each = cacheable(prompt.prompt_tokens) * LOST_PER_TOKEN

    problems = {p.name: p for p in key_problems(organization, Slice())}

    assert (problems["changing_key"].calls, problems["changing_key"].lost) == (2, 2 * each)
    assert (problems["missing_key"].calls, problems["missing_key"].lost) == (1, each)


def test_it_bounds_the_fix_list(member: Membership, monkeypatch: pytest.MonkeyPatch) -> None:
    organization = member.organization
    timestamped_traffic(organization)
    monkeypatch.setattr(fix_list_module, "MAX_CALLS", 99)
    assert fix_list(organization, Slice()) == TooLarge(calls=100, limit=99)
    monkeypatch.setattr(fix_list_module, "MAX_CALLS", 100)
    # Another request holds the lock: this one says so instead of computing it twice.
    monkeypatch.setattr(cache, "add", lambda *args, **kwargs: False)
    assert fix_list(organization, Slice()) == Busy()


def _chat(turns: int, *, pause_before: int | None = None) -> Transcript:
    """One conversation re-sending its history, a turn every 20 s (2 hours before turn
    `pause_before`): each turn adds a 300-odd token question."""
    messages: list[dict[str, str]] = [{"role": "system", "content": STATIC}]
    calls = []
    at = T0
    for n in range(turns):
        at += timedelta(hours=2) if n == pause_before else timedelta(seconds=20)
        question = f"Question {n}: " + " ".join(f"detail {n}-{i} of the order" for i in range(60))
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": "ok"}]
        last = len(messages) - 1
        calls.append(
            Call(
                request=list(range(last)),
                response=last,
                model=MODEL,
                started_at=at,
                prompt_cache_key="chat",
            )
        )
    return Transcript(messages=messages, calls=calls, title="growing chat", model=MODEL)


def _billing(organization: Organization) -> list[tuple[int, int]]:
    records = UsageRecord.objects.filter(organization=organization, is_billing=True)
    return list(records.order_by("turn__index").values_list("prompt_tokens", "input_cached"))


def test_a_well_cached_chat_loses_nothing_to_its_new_tokens(member: Membership) -> None:
    """Each turn of a chat reads all the turn before it left in the cache; the rest of its
    prompt (its new question, the last reply) was never sent, so no cache could have held
    it. Counted as lost (its prompt to the step, less what it read), 4 partial hits lost
    money a kept prefix could never have saved."""
    organization = member.organization
    transcripts_store(organization=organization, transcripts=[_chat(5)])
    calls = _billing(organization)
    assert calls[0][1] == 0 and all(cached > 0 for _, cached in calls[1:])  # partial hits
    assert all(cacheable(prompt) > cached for prompt, cached in calls[1:])

    assert lost_by_reason(organization, Slice()) == []
    assert cache_summary(organization, Slice()).lost == 0


def test_a_chat_resumed_after_the_cache_expired_loses_its_prefix(member: Membership) -> None:
    """The same chat with 2 hours before its last turn: that turn's cache had expired, and
    it loses what a live cache would have served (its prompt to the step, at most)."""
    organization = member.organization
    transcripts_store(organization=organization, transcripts=[_chat(5, pause_before=4)])
    prompt, cached = _billing(organization)[4]
    assert cached == 0

    by_reason = {row.reason: row for row in lost_by_reason(organization, Slice())}
    assert set(by_reason) == {"expired"}
    assert by_reason["expired"].lost == cacheable(prompt) * LOST_PER_TOKEN
    assert cache_summary(organization, Slice()).lost == cacheable(prompt) * LOST_PER_TOKEN


def test_a_call_the_api_cached_less_than_predicted_is_traced_to_its_turn(
    client: Client, member: Membership
) -> None:
    """The second call of a chat reports no cached token where the simulator had the cache
    serve what the first left: that difference is lost ("Cached less than predicted"), the
    turn says so on the conversation page, and the calls export carries it per call."""
    from conversations.engine.pricing import usage_from_dict

    organization = member.organization
    chat = _chat(3)
    assert chat.calls is not None
    chat.calls[1].usage = usage_from_dict(
        {
            "prompt_tokens": 2500,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
    )
    transcripts_store(organization=organization, transcripts=[chat])
    second = UsageRecord.objects.get(organization=organization, is_billing=True, turn__index=1)
    predicted = second.turn.simulated_cached_tokens
    assert predicted > 0 and second.input_cached == 0 and second.turn.miss_reason == ""

    (row,) = lost_by_reason(organization, Slice())
    assert (row.label, row.calls, row.missed_tokens) == ("Cached less than predicted", 1, predicted)
    assert row.lost == predicted * LOST_PER_TOKEN

    client.force_login(member.user)
    page = client.get(
        reverse("conversation_detail", args=[organization.slug, second.conversation.code])
    ).content.decode()
    assert page.count("data-cached-short") == 1
    assert f"the API cached {predicted:,} tokens fewer" in page
    export = client.get(
        reverse("usage_export", args=[organization.slug]), {"table": "turns", "format": "jsonl"}
    )
    import json

    from django.http import StreamingHttpResponse

    assert isinstance(export, StreamingHttpResponse)
    calls = [json.loads(line) for line in b"".join(export.streaming_content).splitlines()]
    lost = {call["turn"]: call["money_lost_to_misses"] for call in calls}
    assert Decimal(lost[2]) == row.lost and Decimal(lost[1]) == Decimal(lost[3]) == 0


def test_a_reduction_above_its_band_reads_as_better_not_as_outside() -> None:
    from conversations.cache_report import band_place

    band = (0.6, 0.8)
    assert [band_place(v, band) for v in (None, 0.2, 0.6, 0.7, 0.8, 0.839)] == [
        None,
        "below",
        "inside",
        "inside",
        "inside",
        "above",
    ]
