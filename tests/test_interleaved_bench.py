"""bench/interleaved.py: engines timed in turns, and the statistics every benchmark table prints."""

from __future__ import annotations

import pytest

from bench.interleaved import time_in_rounds, timing_row
from runner.timing import Timing


def test_rounds_run_every_engine_in_turn_and_keep_each_engines_samples():
    calls = []
    engines = {name: (lambda name=name: calls.append(name) or [float(len(calls))]) for name in ("tvm", "ort")}
    samples = time_in_rounds(engines, rounds=3)
    assert calls == ["tvm", "ort"] * 3
    assert {name: timing.samples_ms for name, timing in samples.items()} == {"tvm": (1.0, 3.0, 5.0),
                                                                             "ort": (2.0, 4.0, 6.0)}


def test_timing_row_gives_median_extremes_and_the_protocols_spread():
    row = timing_row(Timing((4.0, 1.0, 2.0, 3.0, 10.0)))
    # linear quartiles, as runner.timing.Timing.spread: q1 = 2, q3 = 4
    assert row == {"median_ms": 3.0, "min_ms": 1.0, "max_ms": 10.0,
                   "iqr_over_median": pytest.approx((4.0 - 2.0) / 3.0, abs=1e-4), "runs": 5}  # fmt: skip
    assert timing_row(Timing((2.0,)))["iqr_over_median"] == 0.0
