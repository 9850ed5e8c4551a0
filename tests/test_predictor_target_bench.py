"""bench/predictor_target.py on the measurements it was written for (main-job run 20's collection,
three networks projected from one search, their layers measured alone; in bench/results)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import predictor_target

DATA = Path(__file__).resolve().parents[1] / "bench" / "results" / "predictor_target" / "run20_family"
NETWORKS = ("a2566", "a2.410", "a2.261")


def test_the_baseline_moves_the_predicted_layer_sums_as_far_as_the_measured_ones(tmp_path, monkeypatch, capsys):
    out = tmp_path / "result.json"
    monkeypatch.setattr(sys, "argv", ["predictor_target", str(DATA / "collection.jsonl"), "--pruned-layers",
                                      str(DATA / "layers.jsonl"), "--pruned", *(str(DATA / n) for n in NETWORKS),
                                      "--splits", "1", "--rounds", "200", "-o", str(out)])
    predictor_target.main()
    result = json.loads(out.read_text())["targets"]
    assert set(result) == {"over_baseline", "log_ms"}
    spans = {}
    for target, row in result.items():
        assert len(row["held_out_layers"]["within_10_per_split"]) == 1
        predicted = [p["predicted_layers_ms"] for p in row["pruned"]]
        measured = [p["measured_layers_ms"] for p in row["pruned"]]
        assert predicted == sorted(predicted, reverse=True) and measured == sorted(measured, reverse=True)
        spans[target] = predicted[0] / predicted[-1]
    span_measured = measured[0] / measured[-1]  # 3.336 / 2.194 ms
    # the trees alone were flat between sampled widths (a span of 1.14); over the baseline 1.32
    assert spans["log_ms"] < spans["over_baseline"] <= span_measured
    assert "over_baseline" in capsys.readouterr().out
