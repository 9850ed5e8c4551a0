"""bench/predictor_accuracy.py: its commands are ones `python -m latency_model` accepts, and its
summary reads the files those commands write (built here with the commands' own report types;
running the commands is the benchmark's job, minutes to hours, and each is tested on its own)."""

from __future__ import annotations

import json

import numpy as np

from bench.predictor_accuracy import DATA, LAYERS, NETWORKS, parse_args, plan, report_lines, summarize
from latency_model.cli import build_parser
from latency_model.evaluate import EvaluationReport
from latency_model.metrics import compute_metrics
from latency_model.validate import ValidationReport
from runner.timing import TimingProtocol


def test_every_stage_is_a_command_the_cli_accepts_with_one_model_size_and_class_count(tmp_path):
    args = parse_args(["--input-size", "64", "--classes", "12", "--samples", "3", "-o", str(tmp_path)])
    stages = plan(args)
    assert [s.name for s in stages] == ["collect", "train", "evaluate", "validate"]
    parsed = {s.name: build_parser().parse_args(list(s.args)) for s in stages}
    for name in ("collect", "validate"):
        assert (parsed[name].input_size, parsed[name].classes, parsed[name].tracker) == (64, 12, None)
    assert parsed["collect"].out == parsed["train"].data == parsed["evaluate"].data == tmp_path / DATA
    assert parsed["evaluate"].predictor == parsed["validate"].predictor == parsed["train"].out
    assert parsed["validate"].seed != parsed["collect"].seed  # networks the collection did not sample
    with_phone = plan(parse_args(["--tracker", "10.0.0.2:9190", "--key", "s21", "-o", str(tmp_path)]))
    assert str(build_parser().parse_args(list(with_phone[3].args)).tracker) == "10.0.0.2:9190"


def _write_stage_files(out, measured_networks, predicted_networks):
    layers = np.array([0.1, 0.2, 0.4, 0.8])
    metrics = compute_metrics(layers * 1.02, layers)
    flops_line = compute_metrics(layers * 1.5, layers)
    evaluation = EvaluationReport("host-cpu", "host", metrics, {"linear": metrics}, flops_line,
                                  {"linear": flops_line}, "fitted on 16 separate configs")
    (out / LAYERS).mkdir(parents=True)
    (out / LAYERS / "evaluation.json").write_text(json.dumps(evaluation.to_dict()))
    measured = np.array(measured_networks)
    predicted = np.array(predicted_networks)
    validation = ValidationReport(
        names=tuple(f"v{i:02d}" for i in range(measured.size)), measured_ms=tuple(measured),
        layer_sum_ms=tuple(predicted - 1), predicted_ms=tuple(predicted), overhead_ms=1.0,
        database_hits=(1.0,) * measured.size, metrics=compute_metrics(predicted, measured),
        layer_sum_metrics=compute_metrics(predicted - 1, measured), flops_predicted_ms=tuple(measured * 2),
        flops_metrics=compute_metrics(measured * 2, measured), setting={"protocol": TimingProtocol().to_dict()})
    (out / NETWORKS).mkdir()
    (out / NETWORKS / "validation.json").write_text(json.dumps(validation.to_dict()))
    (out / NETWORKS / "measurements.jsonl").write_text(
        "".join(json.dumps({"utc_time": f"2026-12-07T01:0{i}:00+00:00"}) + "\n" for i in range(3)))
    (out / DATA).write_text("".join(json.dumps({"utc_time": f"2026-12-07T00:{i:02d}:00+00:00", "noisy": i == 1}) + "\n"
                                    for i in range(7)))


def test_the_summary_puts_the_flops_line_beside_both_levels_and_checks_the_goals(tmp_path):
    _write_stage_files(tmp_path, [10.0, 12.0, 14.0], [10.2, 12.1, 14.3])
    result = summarize(tmp_path)
    assert result["layers"]["predictor"]["within_10"] == 1.0 and result["layers"]["flops_line"]["within_10"] == 0.0
    assert result["networks"]["flops_line"]["within_10"] == 0.0 and result["networks"]["variants"] == 3
    assert result["networks"]["overhead_share_of_median_variant"] == 1.0 / 12.0
    assert result["collection"] == {"records": 7, "noisy": 1, "measurements_per_hour": 60.0}
    assert result["validation_measurements_per_hour"] == 60.0
    met = result["goals"]["met"]
    assert met["layers_within_10"] and met["networks_within_10"] and met["networks_spearman"]
    assert not met["variants"]  # 3 networks, the goal asks for 20
    text = "\n".join(report_lines(result))
    assert "FLOPs line" in text and "8.3% of the median network" in text


def test_a_spearman_the_networks_cannot_give_fails_its_goal(tmp_path):
    _write_stage_files(tmp_path, [10.0, 10.0, 10.0], [10.0, 10.0, 10.0])  # no spread: no rank correlation
    result = summarize(tmp_path)
    assert result["networks"]["predictor"]["spearman"] is None
    assert result["goals"]["met"]["networks_spearman"] is False
    assert "Spearman n/a" in "\n".join(report_lines(result))
