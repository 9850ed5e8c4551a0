"""bench/bilevel_step_cost.py runs the real search step end to end (a smoke run: tiny input,
two runs; the figures themselves are the benchmark's, never asserted here)."""

from __future__ import annotations

import json

from bench.bilevel_step_cost import main


def test_the_step_cost_bench_times_every_step_of_the_real_search(tmp_path, capsys):
    out = tmp_path / "cost.json"
    assert main(["--size", "64", "--runs", "2", "--warmup", "0", "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["steps_ms"]) == {"plain", "masked", "inner", "outer", "threshold", "equal"}
    assert all(len(report["steps_ms"][name]) == 5 and report["steps_ms"][name]["min"] > 0
               for name in report["steps_ms"])
    assert report["setup"]["model"] == "segformer-b0" and report["setup"]["hard_mask"] == "projection"
    assert report["setup"]["groups"] >= 10  # segformer-b0's gated groups
    assert report["ratio_per_step"] == report["ratios"]["bilevel_per_step"]["median"]
    assert "goal <= 1.6x" in capsys.readouterr().out
