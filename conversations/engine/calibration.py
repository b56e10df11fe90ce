"""How far to trust costlab's estimates on one's own traffic (issue "Exact on real logs", 8).

Owns: the gap between estimated and reported prompt tokens, and between simulated and reported
cached tokens, per model, over calls that have both.

A pair is (model, estimated prompt, reported prompt, simulated cached, reported cached). The
figures: share of calls whose estimate is exact, mean and 95th-percentile relative gap, and how
often the simulator agreed with the API on cached tokens (exactly, and on hit vs miss).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pair:
    model: str
    estimated_prompt: int
    reported_prompt: int
    simulated_cached: int
    reported_cached: int


@dataclass(frozen=True, slots=True)
class ModelCalibration:
    model: str
    calls: int
    exact_share: float  # estimated prompt == reported prompt
    mean_gap: float  # mean of (estimated - reported) / reported, signed
    p95_abs_gap: float  # 95th percentile of |estimated - reported| / reported
    cached_exact_share: float  # simulated cached == reported cached
    hit_agreement: float  # simulated and reported agree on hit (> 0) vs miss
    simulated_cached: int
    reported_cached: int


def _percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return 0.0
    rank = max(math.ceil(share * len(values)) - 1, 0)
    return values[rank]


def calibrate(pairs: Iterable[Pair]) -> list[ModelCalibration]:
    """Per model, most calls first; a model's row needs only its pairs (linear, one pass)."""
    by_model: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        by_model[pair.model or "(no model)"].append(pair)
    rows = []
    for model, items in by_model.items():
        gaps = [
            (p.estimated_prompt - p.reported_prompt) / p.reported_prompt
            for p in items
            if p.reported_prompt
        ]
        calls = len(items)
        rows.append(
            ModelCalibration(
                model=model,
                calls=calls,
                exact_share=sum(p.estimated_prompt == p.reported_prompt for p in items) / calls,
                mean_gap=sum(gaps) / len(gaps) if gaps else 0.0,
                p95_abs_gap=_percentile(sorted(abs(g) for g in gaps), 0.95),
                cached_exact_share=sum(p.simulated_cached == p.reported_cached for p in items)
                / calls,
                hit_agreement=sum(
                    (p.simulated_cached > 0) == (p.reported_cached > 0) for p in items
                )
                / calls,
                simulated_cached=sum(p.simulated_cached for p in items),
                reported_cached=sum(p.reported_cached for p in items),
            )
        )
    return sorted(rows, key=lambda r: (-r.calls, r.model))
