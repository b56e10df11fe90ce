"""The prompt-cache simulator against seed 002's rules."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from conversations.engine.cache import (
    CacheSimulator,
    MissReason,
    PromptBlocks,
    block_hashes,
    parse_retention,
)

from .conftest import T0


def tokens(count: int, start: int = 0) -> list[int]:
    return list(range(start, start + count))


def test_it_reports_1920_for_a_2006_token_prompt_repeated_within_retention() -> None:
    cache = CacheSimulator(retention_seconds=300)
    prompt = tokens(2006)
    first = cache.process_tokens(prompt, at=T0)
    again = cache.process_tokens(prompt, at=T0 + timedelta(seconds=60))
    assert (first.cached_tokens, first.reason) == (0, MissReason("cold"))
    assert (again.cached_tokens, again.reason) == (1920, None)


def test_it_never_hits_below_1024_tokens() -> None:
    cache = CacheSimulator(retention_seconds=300)
    for _ in range(5):
        result = cache.process_tokens(tokens(1023), at=T0)
        assert result.cached_tokens == 0
        assert result.reason is not None and result.reason.kind == "below_minimum"
        assert "below the 1,024 minimum" in result.reason.describe()
    assert cache.process_tokens(tokens(1024), at=T0).cached_tokens == 0  # first sight
    assert cache.process_tokens(tokens(1024), at=T0).cached_tokens == 1024


def test_it_hits_in_128_token_steps_of_the_common_prefix() -> None:
    cache = CacheSimulator(retention_seconds=300)
    cache.process_tokens(tokens(3000), at=T0)
    # 1300 shared tokens, then different ones: 1280 is the largest step not above 1300
    changed = tokens(1300) + tokens(700, start=10_000)
    result = cache.process_tokens(changed, at=T0)
    assert result.cached_tokens == 1280
    assert result.reason == MissReason("prefix_changed", token=1300, message=None)


def test_it_names_the_message_where_the_prefix_changed() -> None:
    cache = CacheSimulator(retention_seconds=300)
    boundaries = [0, 900, 1500]  # three messages
    cache.process_tokens(tokens(2000), boundaries=boundaries, at=T0)
    edited = tokens(2000)
    edited[1555] = -7
    result = cache.process_tokens(edited, boundaries=boundaries, at=T0)
    assert result.cached_tokens == 1536
    assert result.reason is not None
    assert (result.reason.kind, result.reason.token, result.reason.message) == (
        "prefix_changed",
        1555,
        2,
    )
    assert result.reason.describe() == "prefix changed at token 1,555 (message 2)"


def test_it_expires_entries_after_an_idle_gap_and_says_how_long() -> None:
    cache = CacheSimulator(retention_seconds=parse_retention("5m"))
    cache.process_tokens(tokens(2006), at=T0)
    refreshed = cache.process_tokens(tokens(2006), at=T0 + timedelta(seconds=290))
    assert refreshed.cached_tokens == 1920  # a hit refreshes the entry...
    late = cache.process_tokens(tokens(2006), at=T0 + timedelta(seconds=290 + 301))
    assert late.cached_tokens == 0  # ...and 301 s of idleness ends it
    assert late.reason == MissReason("expired", idle_seconds=301.0)
    assert late.reason.describe() == "expired after 5m 01s idle"


def test_it_never_shares_a_cache_between_organizations() -> None:
    cache = CacheSimulator(retention_seconds=300)
    cache.process_tokens(tokens(2006), org="acme", at=T0)
    other = cache.process_tokens(tokens(2006), org="globex", at=T0)
    same = cache.process_tokens(tokens(2006), org="acme", at=T0)
    assert other.cached_tokens == 0 and other.reason == MissReason("cold")
    assert same.cached_tokens == 1920


def test_it_overflows_beyond_15_requests_a_minute_on_one_key() -> None:
    cache = CacheSimulator(retention_seconds=300)
    results = [
        cache.process_tokens(tokens(2006), at=T0 + timedelta(seconds=3 * i)) for i in range(20)
    ]
    assert results[0].cached_tokens == 0
    assert [r.cached_tokens for r in results[1:15]] == [1920] * 14
    assert [r.cached_tokens for r in results[15:]] == [0] * 5
    assert [r.reason.rpm for r in results[15:] if r.reason] == [16, 17, 18, 19, 20]
    assert results[15].reason is not None
    assert results[15].reason.describe() == "overflow: 16 requests/minute on this prefix and key"
    # a minute later the window has drained and the primary machine still holds the prefix
    later = cache.process_tokens(tokens(2006), at=T0 + timedelta(seconds=3 * 19 + 61))
    assert later.cached_tokens == 1920


def test_it_keeps_serving_the_limit_under_a_sustained_overload() -> None:
    # 30 requests a minute for 3 minutes: the machine still serves ~15 a minute, the rest
    # overflow; it does not give up on the route altogether
    cache = CacheSimulator(retention_seconds=300)
    results = [
        cache.process_tokens(tokens(2006), at=T0 + timedelta(seconds=2 * i)) for i in range(90)
    ]
    last_minute = results[60:]
    hits = sum(r.cached_tokens == 1920 for r in last_minute)
    overflows = [r.reason.rpm for r in last_minute if r.reason and r.reason.kind == "overflow"]
    assert hits == 15 and len(overflows) == 15
    assert set(overflows) == {30}


def test_it_spreads_the_rate_limit_over_prompt_cache_keys() -> None:
    cache = CacheSimulator(retention_seconds=300)
    for i in range(20):
        key = f"user-{i % 2}"
        result = cache.process_tokens(tokens(2006), prompt_cache_key=key, at=T0)
        assert result.reason is None or result.reason.kind != "overflow"


def test_it_routes_by_prompt_cache_key() -> None:
    cache = CacheSimulator(retention_seconds=300)
    cache.process_tokens(tokens(2006), prompt_cache_key="a", at=T0)
    other_key = cache.process_tokens(tokens(2006), prompt_cache_key="b", at=T0)
    assert other_key.cached_tokens == 0
    assert other_key.reason == MissReason("cold", other_key="a", other_key_seen=True)
    assert "prompt_cache_key 'a'" in other_key.reason.describe()
    assert cache.process_tokens(tokens(2006), prompt_cache_key="a", at=T0).cached_tokens == 1920
    assert cache.process_tokens(tokens(2006), at=T0).cached_tokens == 0  # no key is a key too


def test_it_treats_missing_timestamps_as_one_continuous_session() -> None:
    cache = CacheSimulator(retention_seconds=300)
    assert not cache.timestamps_missing
    results = [cache.process_tokens(tokens(2006)) for _ in range(40)]
    assert cache.timestamps_missing
    assert [r.cached_tokens for r in results[1:]] == [1920] * 39  # no expiry, no overflow


def test_it_accepts_block_hashes_without_tokens() -> None:
    cache = CacheSimulator(retention_seconds=300)
    blocks = block_hashes(tokens(3000))
    cache.process(PromptBlocks(3000, blocks), at=T0)
    changed = block_hashes(tokens(1300) + tokens(1700, start=9000))
    result = cache.process(PromptBlocks(3000, changed), at=T0)
    assert result.cached_tokens == 1280
    # without tokens the divergence is known to its block only
    assert result.reason == MissReason("prefix_changed", token=1280, approximate=True)
    assert result.reason.describe().startswith("prefix changed at about token 1,280")


def test_it_parses_retention_scenarios() -> None:
    assert [parse_retention(s) for s in ("5m", "10m", "1h", "24h", "90s", "300")] == [
        300,
        600,
        3600,
        86_400,
        90,
        300,
    ]
    with pytest.raises(ValueError, match="retention"):
        parse_retention("soon")


def test_it_rejects_thresholds_off_the_block_grid() -> None:
    with pytest.raises(ValueError):
        CacheSimulator(retention_seconds=300, minimum=1000)


def _reference_cached(
    history: dict[tuple[int, ...], float], prompt: list[int], now: float, retention: float
) -> int:
    """Seed 002's rule, naively: the longest live common prefix with any stored prompt."""
    best = 0
    for stored, last_used in history.items():
        if now - last_used > retention:
            continue
        common = 0
        for a, b in zip(stored, prompt, strict=False):
            if a != b:
                break
            common += 1
        best = max(best, common)
    best = min(best, len(prompt)) // 128 * 128
    return best if best >= 1024 else 0


def test_it_agrees_with_a_naive_simulation_on_random_traffic() -> None:
    rng = random.Random(11)
    cache = CacheSimulator(retention_seconds=300, rpm_limit=10_000)
    history: dict[tuple[int, ...], float] = {}  # every stored prefix (full blocks) -> last use
    trunks = [tokens(rng.randint(1100, 3000), start=100_000 * n) for n in range(3)]
    now = 0.0
    for _ in range(400):
        now += rng.choice([1, 5, 30, 120, 301, 400])
        base = list(rng.choice(trunks))
        cut = rng.randint(0, len(base))
        prompt = base[:cut] + tokens(rng.randint(0, 600), start=rng.randint(1, 50) * 1000)
        expected = _reference_cached(history, prompt, now, 300)
        result = cache.process_tokens(prompt, at=now)
        assert result.cached_tokens == expected
        if len(prompt) >= 1024:
            full = tuple(prompt[: len(prompt) // 128 * 128])
            # a request refreshes every stored prefix of itself, and stores its own
            for stored in [s for s in history if full[: len(s)] == s]:
                history[stored] = now
            history[full] = now


def test_the_route_rate_counts_the_minute_up_to_each_call_in_any_order() -> None:
    from conversations.engine.cache import _Rate

    rate = _Rate()
    assert all(rate.admit(1000.0 + n, limit=3) for n in range(3))
    assert not rate.admit(1003.0, limit=3)  # a fourth in the same minute overflows
    # An older call (a later chunk of a file) is judged on its own minute: nothing before it.
    assert rate.admit(950.0, limit=3)
    assert rate.rpm(950.0) == 1
    assert rate.rpm(1003.0) == 5
