"""Prompt-caching metrics of seed 002's table (design.md 2.8), over any set of calls.

Owns: hit rates, cost and latency reduction over a set of calls, and their targets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from .pricing import Cost

# Seed 002's reference targets, drawn as reference lines on the charts.
HIT_RATE_TARGET = 0.70
COST_REDUCTION_TARGET = (0.50, 0.75)
LATENCY_REDUCTION_TARGET = (0.60, 0.80)
CACHE_MINIMUM_TOKENS = 1024


class MeteredCall(Protocol):
    @property
    def prompt_tokens(self) -> int: ...

    @property
    def cached_tokens(self) -> int: ...

    @property
    def cost(self) -> Cost | None: ...

    @property
    def cost_no_cache(self) -> Cost | None: ...

    @property
    def latency_ms(self) -> int | None: ...

    @property
    def cache_eligible(self) -> bool:
        """Whether the call could hit: its model caches and its prompt reaches the minimum."""
        ...


@dataclass(frozen=True, slots=True)
class CacheMetrics:
    calls: int
    eligible_calls: int  # prompt >= 1024 tokens: the only ones that can hit
    hit_calls: int
    prompt_tokens: int
    cached_tokens: int
    request_hit_rate: float | None  # hit_calls / eligible_calls
    token_hit_rate: float | None  # cached_tokens / prompt_tokens
    cached_tokens_per_request: float | None
    cost: Decimal | None  # priced calls only
    cost_no_cache: Decimal | None  # the same calls with every prompt token uncached
    cost_reduction: float | None
    latency_hit_ms: float | None
    latency_miss_ms: float | None
    latency_reduction: float | None


def _ratio(part: float | Decimal, whole: float | Decimal) -> float | None:
    return float(part) / float(whole) if whole else None


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def cache_metrics(
    calls: Iterable[MeteredCall], *, minimum: int = CACHE_MINIMUM_TOKENS
) -> CacheMetrics:
    count = eligible = hits = prompt = cached = 0
    cost = no_cache = Decimal(0)
    priced = 0
    hit_latency: list[int] = []
    miss_latency: list[int] = []
    for call in calls:
        count += 1
        prompt += call.prompt_tokens
        cached += call.cached_tokens
        if call.cost is not None and call.cost_no_cache is not None:
            priced += 1
            cost += call.cost.total
            no_cache += call.cost_no_cache.total
        if not call.cache_eligible:
            continue
        eligible += 1
        hits += call.cached_tokens > 0
        # Latency is compared among eligible calls only: short prompts never hit and are
        # faster anyway, which would credit the cache with their speed.
        if call.latency_ms is not None:
            (hit_latency if call.cached_tokens > 0 else miss_latency).append(call.latency_ms)
    hit_ms, miss_ms = _mean(hit_latency), _mean(miss_latency)
    latency_reduction = 1 - hit_ms / miss_ms if hit_ms is not None and miss_ms else None
    reduction = _ratio(no_cache - cost, no_cache) if priced else None
    return CacheMetrics(
        calls=count,
        eligible_calls=eligible,
        hit_calls=hits,
        prompt_tokens=prompt,
        cached_tokens=cached,
        request_hit_rate=_ratio(hits, eligible),
        token_hit_rate=_ratio(cached, prompt),
        cached_tokens_per_request=_ratio(cached, count),
        cost=cost if priced else None,
        cost_no_cache=no_cache if priced else None,
        cost_reduction=reduction,
        latency_hit_ms=hit_ms,
        latency_miss_ms=miss_ms,
        latency_reduction=latency_reduction,
    )


def latency_gap(hit_ms: float | None, miss_ms: float | None) -> str | None:
    """Why no latency reduction can be given, in a page's words; None when it can. Only
    cache-eligible calls are compared (see cache_metrics): a log full of latencies of short
    prompts still has none to compare, and saying "none recorded" misled."""
    if hit_ms is not None and miss_ms:
        return None
    if hit_ms is None and not miss_ms:
        return "no eligible call has a recorded latency"
    if hit_ms is None:
        return "no eligible call that hit the cache has a recorded latency"
    return "no eligible call that missed the cache has a recorded latency"
