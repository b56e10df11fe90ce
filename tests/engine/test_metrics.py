"""Seed 002's caching metrics."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from conversations.engine.metrics import (
    COST_REDUCTION_TARGET,
    HIT_RATE_TARGET,
    LATENCY_REDUCTION_TARGET,
    cache_metrics,
    latency_gap,
)
from conversations.engine.pricing import Cost


def _cost(total: str) -> Cost:
    zero = Decimal(0)
    return Cost(
        input_uncached=Decimal(total), input_cached=zero, input_cache_write=zero, output=zero
    )


@dataclass
class Metered:
    prompt_tokens: int
    cached_tokens: int
    cost: Cost | None = None
    cost_no_cache: Cost | None = None
    latency_ms: int | None = None

    @property
    def cache_eligible(self) -> bool:
        return self.prompt_tokens >= 1024


def test_it_weighs_hit_rate_by_eligible_requests_and_by_tokens() -> None:
    calls = [
        Metered(500, 0),  # not eligible: never counts against the hit rate
        Metered(2000, 0),
        Metered(2000, 1920),
        Metered(4000, 3968),
    ]
    metrics = cache_metrics(calls)
    assert (metrics.eligible_calls, metrics.hit_calls) == (3, 2)
    assert metrics.request_hit_rate == pytest.approx(2 / 3)
    assert metrics.token_hit_rate == pytest.approx((1920 + 3968) / 8500)
    assert metrics.cached_tokens_per_request == pytest.approx((1920 + 3968) / 4)


def test_it_measures_cost_and_latency_reduction() -> None:
    calls = [
        Metered(2000, 0, _cost("4"), _cost("4"), latency_ms=1000),
        Metered(2000, 1920, _cost("1"), _cost("4"), latency_ms=300),
        Metered(2000, 1920, None, None, latency_ms=None),  # unpriced, no latency
    ]
    metrics = cache_metrics(calls)
    assert metrics.cost == Decimal(5) and metrics.cost_no_cache == Decimal(8)
    assert metrics.cost_reduction == pytest.approx(3 / 8)
    assert metrics.latency_reduction == pytest.approx(0.7)


def test_it_says_none_when_a_metric_cannot_be_computed() -> None:
    metrics = cache_metrics([Metered(100, 0)])
    assert metrics.request_hit_rate is None
    assert metrics.cost_reduction is None and metrics.latency_reduction is None
    empty = cache_metrics([])
    assert empty.token_hit_rate is None and empty.cached_tokens_per_request is None


def test_it_says_which_latencies_are_missing_for_a_reduction() -> None:
    """Latencies of short prompts only (a new chat's) are recorded but not compared: the
    pages said "no latencies recorded" beside turns showing theirs."""
    short = cache_metrics([Metered(300, 0, latency_ms=80), Metered(400, 0, latency_ms=95)])
    assert latency_gap(short.latency_hit_ms, short.latency_miss_ms) == (
        "no eligible call has a recorded latency"
    )
    misses = cache_metrics([Metered(2000, 0, latency_ms=900)])
    assert latency_gap(misses.latency_hit_ms, misses.latency_miss_ms) == (
        "no eligible call that hit the cache has a recorded latency"
    )
    hits = cache_metrics([Metered(2000, 1920, latency_ms=300)])
    assert latency_gap(hits.latency_hit_ms, hits.latency_miss_ms) == (
        "no eligible call that missed the cache has a recorded latency"
    )
    both = cache_metrics([Metered(2000, 0, latency_ms=900), Metered(2000, 1920, latency_ms=300)])
    assert latency_gap(both.latency_hit_ms, both.latency_miss_ms) is None


def test_it_keeps_seed_002s_reference_targets() -> None:
    assert HIT_RATE_TARGET == 0.70
    assert COST_REDUCTION_TARGET == (0.50, 0.75)
    assert LATENCY_REDUCTION_TARGET == (0.60, 0.80)
