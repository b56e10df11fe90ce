"""Comparing rollup rows with the sums of their raw rows: what `rollups_verify` reports.

Shared by services/rollups.py and services/dimension_rollups.py (which rollups.py imports,
so neither can take it from the other)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def normal(value: Any) -> Any:
    """Sums to the rollup columns' 12 places (SQLite sums decimals as floats and carries
    more), without trailing zeros: Decimal('1.500') and Decimal('1.5') are one value."""
    if isinstance(value, float | Decimal):
        return Decimal(str(value)).quantize(Decimal("1e-12")).normalize()
    return value


def compare(
    name: str,
    stored: dict[tuple[Any, ...], dict[str, Any]],
    raw: dict[tuple[Any, ...], dict[str, Any]],
) -> list[str]:
    """One line per key whose stored figures differ from the raw rows' (or exist on one
    side only); empty when they agree."""
    drift = []
    for key in sorted(set(stored) | set(raw), key=repr):
        mine, truth = stored.get(key), raw.get(key)
        if mine is None:
            drift.append(f"{name} {key}: missing (raw rows sum to {truth})")
        elif truth is None:
            drift.append(f"{name} {key}: {mine} but no raw rows")
        else:
            differ = {c: (mine[c], truth[c]) for c in truth if mine.get(c) != truth[c]}
            if differ:
                shown = ", ".join(f"{c} {a} != {b}" for c, (a, b) in differ.items())
                drift.append(f"{name} {key}: {shown} (rollup != raw)")
    return drift
