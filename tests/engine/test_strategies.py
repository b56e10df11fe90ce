"""Context strategies compared on one long conversation (design.md 2.7)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conversations.engine.pricing import Rates
from conversations.engine.profiles import ModelProfile, default_profile
from conversations.engine.strategies import (
    Strategy,
    compare_strategies,
    parse_strategy,
    plan_strategy,
)
from conversations.engine.types import Call

from .conftest import conversation

ProfileFor = Callable[[str | None], ModelProfile]
RatesFor = Callable[[Call, int], Rates | None]


def test_it_parses_strategies() -> None:
    assert parse_strategy("full") == Strategy("full")
    assert parse_strategy("window:8") == Strategy("window", 8)
    assert parse_strategy("trim:6000").label == "trim:6000"
    assert parse_strategy("summarize:8000") == Strategy("summarize", 8000, 500)
    assert parse_strategy("summarize:8000:300").summary_tokens == 300
    for bad in ("window", "full:3", "trim:0", "shrink:5", "window:4:2"):
        with pytest.raises(ValueError):
            parse_strategy(bad)


def test_it_keeps_system_messages_and_the_last_k_in_a_window() -> None:
    transcript = conversation(6)
    plan = plan_strategy(transcript, Strategy("window", 3), profile_for=default_profile)
    assert plan.transcript.calls is not None
    assert [c.request for c in plan.transcript.calls][-1] == [0, 9, 10, 11]
    assert plan.transcript.calls[0].request == [0, 1]


def test_it_trims_the_oldest_messages_to_fit_the_budget(profile_for: ProfileFor) -> None:
    transcript = conversation(20)
    plan = plan_strategy(transcript, Strategy("trim", 4000), profile_for=profile_for)
    assert plan.transcript.calls is not None
    for call in plan.transcript.calls:
        assert call.request[0] == 0  # the system prompt stays
        assert call.request[1:] == sorted(call.request[1:])
    assert plan.transcript.calls[-1].request[-1] == 39


def test_it_orders_strategies_by_cost_on_a_long_conversation(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    transcript = conversation(60, reply_words=(200, 400))
    results = compare_strategies(
        transcript,
        ["full", "window:6", "trim:6000", "summarize:8000"],
        profile_for=profile_for,
        rates_for=rates_for,
        retention_seconds=300,
    )
    by_label = {r.strategy.label: r for r in results}
    full, window, trim, summarize = (
        by_label[k] for k in ("full", "window:6", "trim:6000", "summarize:8000")
    )
    assert full.cost and window.cost and trim.cost and summarize.cost
    assert full.cost > window.cost and full.cost > trim.cost and full.cost > summarize.cost
    assert full.peak_prompt_tokens > summarize.peak_prompt_tokens
    assert trim.peak_prompt_tokens <= 6000
    # summarize pays for its own summary calls, and they are in its totals
    assert summarize.summary_calls > 0
    assert summarize.calls == full.calls + summarize.summary_calls
    summary_cost = sum(
        c.cost.total
        for c in summarize.analysis.calls
        if c.cost is not None
        and c.call.response is not None
        and summarize.analysis.transcript.messages[c.call.response].get("role") == "system"
    )
    assert summary_cost > 0
    assert summarize.cost == sum(c.cost.total for c in summarize.analysis.calls if c.cost)
    # full history keeps its prefix, so it caches the largest share of its prompt
    assert full.cached_share is not None and window.cached_share is not None
    assert full.cached_share > window.cached_share


def test_it_sends_system_summary_and_recent_messages_after_a_fold(
    profile_for: ProfileFor,
) -> None:
    transcript = conversation(30)
    plan = plan_strategy(transcript, Strategy("summarize", 5000, 400), profile_for=profile_for)
    calls = plan.transcript.calls
    assert calls is not None and plan.summary_calls
    first = min(plan.summary_calls)
    summary_index = calls[first].response
    assert summary_index is not None and summary_index >= len(transcript.messages)
    following = calls[first + 1]
    assert following.request[:2] == [0, summary_index]
    assert following.request[2:] == [following.request[-1]]  # just the new user message
    assert calls[first].request[0] != 0  # the summary's input is the folded messages
    # ... and a request for the summary, after them
    ask = plan.transcript.messages[calls[first].request[-1]]
    assert ask["role"] == "user" and "Summarize the conversation above" in str(ask["content"])
    assert calls[first].request[-1] == summary_index - 1


def test_a_strategy_keeps_the_reported_output_of_each_reply(
    profile_for: ProfileFor, rates_for: RatesFor
) -> None:
    """A reasoning model bills far more output than its reply's text (an o4-mini call of
    the corpus: 2,589 output tokens): a strategy changes what is sent, not what comes
    back, so its figures keep the reported output. Estimated from the text, "full" cost
    about a quarter of the conversation's real cost."""
    import dataclasses

    from conversations.engine.analysis import analyze
    from conversations.engine.levers import LEVERS, compare_levers
    from conversations.engine.types import Usage

    transcript = conversation(3, system_words=50, reply_words=(10, 20))
    reported = analyze(
        [transcript], profile_for=profile_for, rates_for=rates_for, retention_seconds=300
    )
    assert transcript.calls is None or transcript.calls == []
    calls = []
    for call in reported.conversations[0].calls:
        usage = Usage(
            prompt_tokens=call.estimated_prompt_tokens,
            completion_tokens=2_589,
            total_tokens=call.estimated_prompt_tokens + 2_589,
            reasoning_tokens=2_496,
        )
        calls.append(dataclasses.replace(call.call, usage=usage))
    recorded = dataclasses.replace(transcript, calls=calls)
    as_reported = analyze(
        [recorded], profile_for=profile_for, rates_for=rates_for, retention_seconds=300
    ).conversations[0]
    (full,) = compare_strategies(
        recorded, ["full"], profile_for=profile_for, rates_for=rates_for, retention_seconds=300
    )
    # Short prompts (below the caching minimum): the simulated prompt side is the reported
    # one, so "full" is the conversation as it was billed, to the digit.
    assert full.cost == as_reported.totals.cost
    assert all(c.completion_tokens == 2_589 for c in full.analysis.calls)
    assert all(c.buckets.reasoning == 2_496 for c in full.analysis.calls)
    as_recorded = compare_levers(
        [recorded], LEVERS[:1], profile_for=profile_for, rates_for=rates_for, retention_seconds=300
    )[0]
    assert as_recorded.cost == as_reported.totals.cost
