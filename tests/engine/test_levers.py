"""The cache levers of issue 9 item 5, compared on the same calls."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

from conversations.engine.analysis import RatesFor
from conversations.engine.cache_policy import BREAKPOINTS, PREFIX_128
from conversations.engine.levers import LEVERS, Lever, LeverResult, compare_levers
from conversations.engine.pricing import Rates
from conversations.engine.profiles import default_profile

from .conftest import conversation

GPT_56 = Rates(
    input=Decimal("4"), output=Decimal("20"), cached_input=Decimal("0.4"), cache_write=Decimal("5")
)


def _by_name(results: list[LeverResult]) -> dict[str, LeverResult]:
    return {r.lever.name: r for r in results}


def test_it_shows_the_overflow_of_one_key_for_many_simultaneous_conversations(
    rates_for: RatesFor,
) -> None:
    # 30 conversations sharing a system prompt, all started in the same minute.
    transcripts = []
    for number in range(30):
        t = conversation(3, seed=1, gap_seconds=20.0)
        shift = timedelta(seconds=number)
        times = [time + shift if time else None for time in t.message_times or []]
        transcripts.append(dataclasses.replace(t, message_times=times, external_id=f"c{number}"))
    levers = [Lever("org", key="org"), Lever("per conversation", key="conversation")]
    org, per_conversation = compare_levers(
        transcripts,
        levers,
        profile_for=default_profile,
        rates_for=rates_for,
        retention_seconds=600,
        policy_for=lambda model: PREFIX_128,
    )
    assert org.request_hit_rate is not None and per_conversation.request_hit_rate is not None
    # One key: above 15 requests a minute on one prefix, requests overflow to cold machines.
    assert org.request_hit_rate < 0.5
    # A key per conversation: each conversation is cold once, then hits.
    assert per_conversation.request_hit_rate == 2 / 3
    assert per_conversation.cost is not None and org.cost is not None
    assert per_conversation.cost < org.cost


def test_it_prices_extended_retention_where_the_model_offers_it(rates_for: RatesFor) -> None:
    transcript = conversation(3, gap_seconds=2 * 3600)
    offered = dataclasses.replace(PREFIX_128, extended_retention=True)
    results = _by_name(
        compare_levers(
            [transcript],
            profile_for=default_profile,
            rates_for=rates_for,
            retention_seconds=600,
            policy_for=lambda model: offered,
        )
    )
    recorded, extended = results["as recorded"], results["extended retention (24h)"]
    assert recorded.cached_tokens == 0
    assert extended.cached_tokens > 0
    assert extended.cost is not None and recorded.cost is not None
    assert extended.cost < recorded.cost


def test_it_compares_explicit_and_implicit_breakpoints_with_their_writes() -> None:
    transcript = dataclasses.replace(conversation(4, model="gpt-5.6", system_words=1500))
    results = _by_name(
        compare_levers(
            [transcript],
            profile_for=default_profile,
            rates_for=lambda call, tokens: GPT_56,
            retention_seconds=600,
            policy_for=lambda model: BREAKPOINTS,
        )
    )
    implicit = results["prompt_cache_key per conversation"]
    explicit = results["explicit breakpoint after the system prompt"]
    # Implicit: every request writes up to its latest user message; explicit: only the
    # system prompt, once, then reads it.
    assert implicit.write_tokens > explicit.write_tokens > 0
    assert implicit.cached_tokens > explicit.cached_tokens > 0
    assert all(r.lever in LEVERS for r in results.values())


def test_it_offers_only_the_levers_that_can_change_something() -> None:
    from conversations.engine.cache_policy import NO_CACHE
    from conversations.engine.levers import applicable_levers

    assert [lever.name for lever in applicable_levers(NO_CACHE)] == ["as recorded"]
    prefix = [lever.name for lever in applicable_levers(PREFIX_128)]
    assert "explicit breakpoint after the system prompt" not in prefix
    assert "extended retention (24h)" not in prefix  # not offered by this policy copy
    offered = dataclasses.replace(PREFIX_128, extended_retention=True)
    assert "extended retention (24h)" in [lever.name for lever in applicable_levers(offered)]
    assert len(applicable_levers(BREAKPOINTS)) == len(LEVERS) - 1  # no 24h unless offered
