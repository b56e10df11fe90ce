"""The fix list's engine (engine/fixes.py): which fixes apply and what each would save,
by running the simulator again with the fix applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from conversations.engine.cache_policy import NO_CACHE, PREFIX_128, CachePolicy
from conversations.engine.fixes import Simulation, find_fixes, key_rates, simulated
from conversations.engine.pricing import Rates
from conversations.engine.profiles import default_profile
from conversations.engine.types import Call, Transcript

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
RATES = Rates(input=Decimal("2"), cached_input=Decimal("0.5"), output=Decimal("8"))
EXTENDED = CachePolicy("prefix_128", "prefix", extended_retention=True)
SYSTEM = "You are the assistant of Acme. " + " ".join(f"Rule {i}: be kind." for i in range(300))


def simulation(policy: CachePolicy = PREFIX_128) -> Simulation:
    return Simulation(
        profile_for=default_profile,
        rates_for=lambda call, tokens: RATES,
        retention_seconds=600,
        policy_for=lambda model: policy,
    )


def chat(turns: int, gap: timedelta, key: str | None = "k") -> Transcript:
    """A growing conversation: one call per user question, `gap` apart."""
    messages = [{"role": "system", "content": SYSTEM}]
    calls = []
    for n in range(turns):
        messages.append({"role": "user", "content": f"Question {n}?"})
        calls.append(
            Call(
                request=list(range(len(messages))),
                response=len(messages),
                model="gpt-4.1",
                started_at=T0 + n * gap,
                prompt_cache_key=key,
            )
        )
        messages.append({"role": "assistant", "content": f"Answer {n}."})
    return Transcript(messages=messages, calls=calls, model="gpt-4.1")


def test_it_offers_extended_retention_where_calls_expired() -> None:
    """Calls 20 minutes apart outlive a 10-minute cache: every call after the first expires.
    With 24 h retention each one reads the previous call's prefix."""
    transcripts = [chat(4, timedelta(minutes=20))]
    baseline = simulation(EXTENDED).run(simulated(transcripts))
    reasons = [
        c.miss_reason.kind if c.miss_reason else None for c in baseline.conversations[0].calls
    ]
    assert reasons == ["cold", "expired", "expired", "expired"]

    fixes = {f.name: f for f in find_fixes(transcripts, simulation(EXTENDED))}

    fix = fixes["extended_retention"]
    assert fix.calls == [(0, 1), (0, 2), (0, 3)]
    assert fix.saving is not None and fix.saving > 0
    # Without the offer on the model, extended retention is not a fix.
    assert "extended_retention" not in {f.name for f in find_fixes(transcripts, simulation())}


def test_it_offers_a_context_strategy_for_long_conversations() -> None:
    """On a model without caching every call pays its whole history: past 30 calls, keeping
    the system prompt and the last 20 messages is cheaper. (With caching, the re-sent history
    is mostly cached and a sliding window, which breaks the prefix, may cost more: then it
    is not listed.)"""
    transcripts = [chat(40, timedelta(seconds=30))]

    fixes = {f.name: f for f in find_fixes(transcripts, simulation(NO_CACHE))}

    fix = fixes["context_strategy"]
    assert len(fix.calls) == 40
    assert fix.cost_before is not None and fix.cost_after is not None
    assert fix.cost_after < fix.cost_before
    assert "context_strategy" not in {
        f.name for f in find_fixes([chat(10, timedelta(seconds=30))], simulation(NO_CACHE))
    }


def test_it_lists_no_fix_that_saves_nothing() -> None:
    """One well-behaved conversation: a stable key, calls within retention, short."""
    assert find_fixes([chat(5, timedelta(seconds=30))], simulation()) == []


def test_it_measures_each_keys_busiest_minute() -> None:
    transcripts = [chat(1, timedelta(0)) for _ in range(3)]
    for n, transcript in enumerate(transcripts):
        assert transcript.calls is not None
        transcript.calls[0].started_at = T0 + timedelta(seconds=30 * n)  # 0, 30, 60 s
    rates = key_rates(transcripts)
    # (now - 60 s, now]: the call at 60 s does not see the one at 0 s.
    assert [(r.key, r.peak_rpm) for r in rates] == [("k", 2)]
