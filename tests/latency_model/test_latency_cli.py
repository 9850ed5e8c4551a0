"""`python -m latency_model`: train and evaluate on records, refusals, a light --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latency_cases import make_record
from latency_model.cli import main
from latency_model.records import MeasurementLog
from prune.describe import describe_model
from runner.errors import EdgesegError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [["--help"], ["collect", "--help"], ["evaluate", "--help"],
                                  ["validate", "--help"]])
def test_help_imports_neither_torch_nor_tvm(argv):
    code = ("import sys\nfrom latency_model.cli import main\ntry:\n    main(%r)\nexcept "
            "SystemExit:\n    pass\nprint(sorted(m for m in ('tvm', 'torch', 'xgboost', 'numpy')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code % argv], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    assert "usage:" in out and out.strip().splitlines()[-1] == "[]"


@pytest.fixture(scope="module")
def data_and_predictor(synthetic_records, tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    MeasurementLog(work / "data.jsonl").extend(synthetic_records)
    assert main(["train", str(work / "data.jsonl"), "-o", str(work / "predictor")]) == 0
    return work


def test_train_writes_a_predictor_for_the_records_device(data_and_predictor, capsys):
    manifest = json.loads((data_and_predictor / "predictor" / "predictor.json").read_text())
    assert manifest["device_key"] == "host-cpu" and manifest["target_preset"] == "host"
    assert (data_and_predictor / "predictor" / "training_report.json").exists()


def test_evaluate_prints_the_table_on_held_out_configs_and_writes_the_plot(data_and_predictor,
                                                                          capsys):
    work = data_and_predictor
    plot = work / "eval" / "scatter-cli.png"
    assert main(["evaluate", str(work / "predictor"), str(work / "data.jsonl"), "--plot",
                 str(plot), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    held = json.loads((work / "predictor" / "training_report.json").read_text())["n_test"]
    assert report["predictor"]["overall"]["n"] == held
    assert plot.stat().st_size > 10_000 and report["plot"] == str(plot)
    assert "separate configs" in report["flops_baseline"]["fit"]


def test_evaluate_table_has_a_row_per_layer_type(data_and_predictor, capsys):
    work = data_and_predictor
    assert main(["evaluate", str(work / "predictor"), str(work / "data.jsonl"), "--all"]) == 0
    out = capsys.readouterr().out
    assert "mix_ffn" in out and "FLOPs +-10%" in out and out.count("\n") > 10


def test_a_predictor_of_another_device_is_refused(data_and_predictor, synthetic_records,
                                                  tmp_path, capsys):
    other = tmp_path / "phone.jsonl"
    MeasurementLog(other).extend(make_record(r.config, device_key="s21")
                                 for r in synthetic_records)
    assert main(["evaluate", str(data_and_predictor / "predictor"), str(other), "--all"]) != 0
    err = capsys.readouterr().err
    assert "trained for device key 'host-cpu'" in err and "fix:" in err


def test_collect_looks_the_model_description_up_by_name(tmp_path, capsys):
    description = describe_model("segformer-b0", 64)
    assert description.groups and description.slots
    with pytest.raises(EdgesegError, match="segformer-b9"):
        describe_model("segformer-b9", 64)
    assert main(["collect", "--model", "segformer-b9", "-o", str(tmp_path / "d.jsonl")]) != 0
    assert "segformer-b9" in capsys.readouterr().err


def test_key_without_tracker_is_refused(tmp_path, capsys):
    assert main(["collect", "--model", "segformer-b0", "--key", "s21"]) != 0
    assert "--tracker" in capsys.readouterr().err


def test_collect_for_a_phone_preset_measures_its_target_and_names_unknown_presets(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    assert main(["collect", "--model", "segformer-b0", "--device", "pixel-99", "-o", str(tmp_path / "d.jsonl")]) != 0
    assert "Unknown device preset 'pixel-99'" in capsys.readouterr().err
    described = describe_model("segformer-b0", 64, num_classes=4)  # --classes sizes the classifier measured
    assert described.slots != describe_model("segformer-b0", 64).slots


def test_collect_pruned_reads_a_pruning_run_and_refuses_another_models(tmp_path, capsys):
    from prune.variants import pruned_kept

    description = describe_model("segformer-b0", 64, num_classes=8)
    group = description.groups[0]
    run = tmp_path / "run"
    run.mkdir()
    report = {"model": "segformer-b0", "input_size": 64, "num_classes": 8,
              "kept_counts": {group.name: group.grid[0], "a.group.the.description.does.not.price": 3}}
    (run / "pruning.json").write_text(json.dumps(report))
    kept = pruned_kept(run, description, "segformer-b0", 64, 8)
    assert kept[group.name] == group.grid[0] and len(kept) == len(description.groups)  # the rest: full
    with pytest.raises(EdgesegError, match="not of"):
        pruned_kept(run, description, "segformer-b0", 128, 8)
    (run / "pruning.json").write_text("{torn")
    assert main(["collect", "--model", "segformer-b0", "--input-size", "64", "--classes", "8",
                 "--pruned", str(run), "-o", str(tmp_path / "d.jsonl")]) != 0
    assert "is not a pruning report" in capsys.readouterr().err
