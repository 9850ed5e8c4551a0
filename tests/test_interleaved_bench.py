"""bench/interleaved.py: engines timed in turns, and the statistics every benchmark table prints."""

from __future__ import annotations

import pytest

from bench.interleaved import sample_stats, time_in_rounds


def test_rounds_run_every_engine_in_turn_and_keep_each_engines_samples():
    calls = []
    engines = {name: (lambda name=name: calls.append(name) or [float(len(calls))]) for name in ("tvm", "ort")}
    samples = time_in_rounds(engines, rounds=3)
    assert calls == ["tvm", "ort"] * 3
    assert samples == {"tvm": [1.0, 3.0, 5.0], "ort": [2.0, 4.0, 6.0]}


def test_sample_stats_give_median_extremes_and_relative_spread():
    stats = sample_stats([4.0, 1.0, 2.0, 3.0, 10.0])
    assert stats == {"median_ms": 3.0, "min_ms": 1.0, "max_ms": 10.0,
                     "iqr_over_median": pytest.approx((7.0 - 1.5) / 3.0, abs=1e-4), "runs": 5}  # fmt: skip
    assert sample_stats([2.0])["iqr_over_median"] == 0.0
