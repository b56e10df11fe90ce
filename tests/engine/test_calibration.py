"""Estimated vs reported, per model: the calibration figures."""

from __future__ import annotations

import pytest

from conversations.engine.calibration import Pair, calibrate


def test_it_measures_the_gap_per_model() -> None:
    pairs = [
        Pair("gpt-4o", 100, 100, 0, 0),
        Pair("gpt-4o", 110, 100, 1024, 1024),
        Pair("gpt-4o", 90, 100, 1152, 0),
        Pair("gpt-4o", 100, 100, 0, 1280),
        Pair("gpt-4", 50, 40, 0, 0),
    ]
    rows = calibrate(pairs)
    assert [r.model for r in rows] == ["gpt-4o", "gpt-4"]
    gpt4o = rows[0]
    assert gpt4o.calls == 4
    assert gpt4o.exact_share == 0.5
    assert gpt4o.mean_gap == pytest.approx(0.0)  # +10 % and -10 % cancel out
    assert gpt4o.p95_abs_gap == pytest.approx(0.1)
    assert gpt4o.cached_exact_share == 0.5  # first two agree
    assert gpt4o.hit_agreement == 0.5  # the last two disagree on hit vs miss
    assert (gpt4o.simulated_cached, gpt4o.reported_cached) == (2176, 2304)
    assert rows[1].mean_gap == pytest.approx(0.25)


def test_it_handles_no_pairs_and_zero_prompts() -> None:
    assert calibrate([]) == []
    (row,) = calibrate([Pair("", 0, 0, 0, 0)])
    assert row.model == "(no model)" and row.exact_share == 1.0 and row.mean_gap == 0.0
