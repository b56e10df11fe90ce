"""One cache policy per model (design.md 2.6): no caching, prefix_128, breakpoints."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from conversations.engine.analysis import Analysis, RatesFor, analyze, turns_from_messages
from conversations.engine.cache_policy import (
    BREAKPOINTS,
    NO_CACHE,
    PREFIX_128,
    CachePolicy,
    default_policy,
)
from conversations.engine.metrics import cache_metrics
from conversations.engine.pricing import Rates
from conversations.engine.profiles import default_profile
from conversations.engine.render import priming_tokens
from conversations.engine.types import ChatMessage, Transcript

from .conftest import conversation

# gpt-5.6, USD per 1M tokens: writes at 1.25x input, reads at 0.1x.
GPT_56 = Rates(
    input=Decimal("4"), output=Decimal("20"), cached_input=Decimal("0.4"), cache_write=Decimal("5")
)


def run(
    transcript: Transcript, policy: CachePolicy, rates: RatesFor, retention: int = 600
) -> Analysis:
    return analyze(
        [transcript],
        profile_for=default_profile,
        rates_for=rates,
        retention_seconds=retention,
        policy_for=lambda model: policy,
    )


def test_it_knows_each_family_by_name() -> None:
    for model in ("gpt-4", "gpt-4-0613", "gpt-4-turbo", "gpt-3.5-turbo", "gpt-4o-2024-05-13",
                  "chatgpt-4o-latest", "gpt-4-1106-preview"):  # fmt: skip
        assert default_policy(model) == NO_CACHE, model
    for model in ("gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-mini", "o3-mini", "gpt-4.1-nano",
                  "gpt-5", "gpt-5.5", "ft:gpt-4o-mini:acme::x"):  # fmt: skip
        assert default_policy(model) == PREFIX_128, model
    for model in ("gpt-5.6", "gpt-5.6-sol", "gpt-6.1-terra"):
        assert default_policy(model) == BREAKPOINTS, model


def test_it_never_caches_a_model_without_caching(rates_for: RatesFor) -> None:
    transcript = conversation(20, model="gpt-4", system_words=2000)
    analysis = run(transcript, NO_CACHE, rates_for)
    calls = analysis.conversations[0].calls
    assert len(calls) == 20 and all(c.prompt_tokens > 1024 for c in calls)
    assert all(c.simulated_cached_tokens == 0 for c in calls)
    assert {c.miss_reason.kind for c in calls if c.miss_reason} == {"not_supported"}
    assert calls[0].miss_reason is not None
    assert calls[0].miss_reason.describe() == "gpt-4 has no prompt caching"
    # Not a missed opportunity: such calls are not eligible for hit rates.
    metrics = cache_metrics(calls)
    assert (metrics.eligible_calls, metrics.request_hit_rate) == (0, None)


def test_it_keeps_prefix_128_rules(rates_for: RatesFor) -> None:
    calls = run(conversation(6), PREFIX_128, rates_for).conversations[0].calls
    assert calls[0].simulated_cached_tokens == 0
    assert all(c.simulated_cached_tokens % 128 == 0 for c in calls)
    assert all(c.simulated_cached_tokens >= 1024 for c in calls[1:])
    assert all(c.simulated_write_tokens == 0 for c in calls)  # writes are free, unreported


def _breakpoint_chat(turns: int, key: str | None = "conv-1") -> Transcript:
    transcript = conversation(turns, model="gpt-5.6", system_words=1500)
    calls = turns_from_messages(transcript.messages)
    for call in calls:
        call.prompt_cache_key = key
        call.model = "gpt-5.6"
    times = transcript.message_times or []
    for call in calls:
        call.started_at = times[call.request[-1]]
    return dataclasses.replace(transcript, calls=calls)


def test_it_writes_a_breakpoint_prefix_once_then_reads_it_exactly() -> None:
    transcript = _breakpoint_chat(4)
    analysis = run(transcript, BREAKPOINTS, lambda call, tokens: GPT_56)
    calls = analysis.conversations[0].calls
    first, second = calls[0], calls[1]
    # First sight: nothing read; the prompt up to the end of the user message is written.
    assert first.simulated_cached_tokens == 0
    assert 1024 <= first.simulated_write_tokens <= first.prompt_tokens
    assert first.buckets.input_cache_write == first.simulated_write_tokens
    # The next request reads exactly what the first wrote: no 128-token rounding.
    assert second.simulated_cached_tokens == first.simulated_write_tokens
    assert second.simulated_cached_tokens % 128 != 0 or second.simulated_cached_tokens == 0
    # ...and writes only what lies beyond it, up to its own latest user message.
    priming = len(priming_tokens(default_profile("gpt-5.6")))
    assert second.simulated_write_tokens == (
        second.prompt_tokens - priming - second.simulated_cached_tokens
    )
    # Writes pay the write rate, reads the cached rate.
    assert first.cost is not None and second.cost is not None
    assert first.cost.input_cache_write == (
        Decimal(5) * first.simulated_write_tokens / 1_000_000
    ).quantize(Decimal("0.000000000001"))
    assert second.cost.input_cached == (
        Decimal("0.4") * second.simulated_cached_tokens / 1_000_000
    ).quantize(Decimal("0.000000000001"))
    # With no cache at all, written and read tokens would be plain input.
    assert second.cost_no_cache is not None
    assert second.cost_no_cache.input == (Decimal(4) * second.prompt_tokens / 1_000_000).quantize(
        Decimal("0.000000000001")
    )


def test_it_flags_breakpoint_requests_without_a_cache_key() -> None:
    analysis = run(_breakpoint_chat(2, key=None), BREAKPOINTS, lambda call, tokens: GPT_56)
    call = analysis.conversations[0].calls[0]
    assert any("prompt_cache_key" in w for w in call.warnings)
    keyed = run(_breakpoint_chat(2), BREAKPOINTS, lambda call, tokens: GPT_56)
    assert not any("prompt_cache_key" in w for w in keyed.conversations[0].calls[0].warnings)


def test_it_writes_only_marked_prefixes_in_explicit_mode() -> None:
    transcript = _breakpoint_chat(3)
    assert transcript.calls is not None
    for call in transcript.calls:
        call.cache_options = {"mode": "explicit"}
    unmarked = run(transcript, BREAKPOINTS, lambda call, tokens: GPT_56).conversations[0].calls
    assert all(c.simulated_write_tokens == 0 for c in unmarked)
    assert all(c.simulated_cached_tokens == 0 for c in unmarked)
    # Mark the system prompt: it is written once and read by every later request.
    system = transcript.messages[0]
    marked_messages: list[ChatMessage] = [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": system["content"], "prompt_cache_breakpoint": True}
            ],
        },
        *transcript.messages[1:],
    ]
    marked = dataclasses.replace(transcript, messages=marked_messages)
    calls = run(marked, BREAKPOINTS, lambda call, tokens: GPT_56).conversations[0].calls
    assert calls[0].simulated_write_tokens > 1024
    assert [c.simulated_cached_tokens for c in calls[1:]] == [calls[0].simulated_write_tokens] * 2
    assert all(c.simulated_write_tokens == 0 for c in calls[1:])


def test_it_keeps_entries_24h_where_extended_retention_is_asked_and_offered(
    rates_for: RatesFor,
) -> None:
    transcript = conversation(3, gap_seconds=2 * 3600)  # two hours between messages
    calls = turns_from_messages(transcript.messages)
    times = transcript.message_times or []
    for call in calls:
        call.model, call.cache_retention = "gpt-4.1", "24h"
        call.started_at = times[call.request[-1]]
    asked = dataclasses.replace(transcript, calls=calls)
    offered = dataclasses.replace(PREFIX_128, extended_retention=True)
    hits = run(asked, offered, rates_for).conversations[0].calls
    assert all(c.simulated_cached_tokens > 0 for c in hits[1:])
    expired = run(asked, PREFIX_128, rates_for).conversations[0].calls  # not offered
    assert all(c.simulated_cached_tokens == 0 for c in expired[1:])
    assert {c.miss_reason.kind for c in expired[1:] if c.miss_reason} == {"expired"}
