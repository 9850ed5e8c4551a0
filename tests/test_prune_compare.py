"""The main job's closing table, from what prune, compile and runner really write (tiny scale)."""

from __future__ import annotations

import json
import shutil

import pytest

from prune.compare import load_row, main, write_comparison
from prune.settings import PruneSettings
from runner.errors import ArtifactError

DEFAULTS = PruneSettings(method="dense")  # the pipeline passes prune's own lr and weight decay


@pytest.fixture(scope="module")
def networks(pipeline_run):
    """The folder of the tiny pipeline run: `unpruned/` (dense) and `pruned/` (bilevel from its
    weights, benched in turns with it), each compiled and benched. Read only: tests copy."""
    return pipeline_run.out


def test_table_compares_the_pruned_network_with_the_dense_reference(networks, capsys, tmp_path):
    assert main([str(networks / "unpruned"), str(networks / "pruned"), "-o", str(tmp_path / "report")]) == 0
    table = capsys.readouterr().out
    assert "unpruned" in table and "pruned" in table and "speed-up" in table
    # what each row was trained with, under the table: the pruned network's dense start counts
    lr, decay = DEFAULTS.lr, DEFAULTS.weight_decay
    dense = f"dense 3 steps (1 x (2 training + 1 fine-tuning), lr {lr}, weight decay {decay})"
    assert f"  unpruned: {dense} (3 steps in all)" in table
    assert (f"  pruned: {dense}, then bilevel 3 steps (1 x (2 search + 1 fine-tuning), lr {lr}, weight decay "
            f"{decay}) (6 steps in all)") in table
    assert "trained for different numbers of steps" in table
    report = json.loads((tmp_path / "report" / "comparison.json").read_text())
    unpruned, pruned = report["rows"]
    assert unpruned["method"] == "dense" and unpruned["budget_ms"] is None and unpruned["measured_speedup"] == 1.0
    # the row's prediction is the layers' sum; the budget is whole-network ms, which the run aimed at
    # through its latency scale (network over layers): compared unscaled, a scale under 1 failed this once
    scale = json.loads((networks / "pruned" / "pruning.json").read_text())["latency_scale"]
    assert pruned["method"] == "bilevel" and pruned["predicted_ms"] * scale <= pruned["budget_ms"] * (1 + 1e-9)
    assert (unpruned["steps"], pruned["steps"]) == (3, 6)
    assert pruned["predicted_speedup"] == pytest.approx(unpruned["predicted_ms"] / pruned["predicted_ms"])
    ratio = json.loads((networks / "pruned" / "bench.json").read_text())["baseline"]["ratio"]
    assert pruned["speedup_in_turns"] and pruned["measured_speedup"] == pytest.approx(1 / ratio)
    assert pruned["fps"] == pytest.approx(1000.0 / pruned["measured_ms"]) and unpruned["runs"] == 3
    assert pruned["runs"] == 10  # one median per turn (TURNS) in turns with the reference
    assert (tmp_path / "report" / "comparison.png").stat().st_size > 0


def test_a_row_timed_in_turns_with_the_reference_takes_its_speed_up_from_that_ratio(networks, tmp_path):
    from prune.compare import comparison

    in_turns = tmp_path / "pruned"
    shutil.copytree(networks / "pruned", in_turns)
    bench = json.loads((in_turns / "bench.json").read_text())
    bench["baseline"] = {"artifact": str(networks / "unpruned" / "artifact"), "ratio": 0.4}
    (in_turns / "bench.json").write_text(json.dumps(bench))
    reference = load_row(networks / "unpruned")
    row = comparison([reference, load_row(in_turns)])["rows"][1]
    assert row["speedup_in_turns"] and row["measured_speedup"] == pytest.approx(2.5)
    bench["baseline"]["artifact"] = str(tmp_path / "elsewhere")  # in turns with another network: not the reference
    (in_turns / "bench.json").write_text(json.dumps(bench))
    row = comparison([reference, load_row(in_turns)])["rows"][1]
    assert not row["speedup_in_turns"] and row["measured_speedup"] == pytest.approx(reference.measured_ms / row["measured_ms"])


def test_a_folder_without_its_benchmark_names_the_command_that_makes_it(networks, tmp_path):
    broken = tmp_path / "pruned"
    shutil.copytree(networks / "pruned", broken)
    (broken / "bench.json").unlink()
    with pytest.raises(ArtifactError, match="bench.json is missing") as error:
        load_row(broken)
    assert "python -m runner bench" in error.value.fix
    (broken / "bench.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        write_comparison([networks / "unpruned", broken], tmp_path / "report")


def test_training_stages_of_a_start_of_unknown_training_and_of_a_run_before_weight_decay_was_a_setting():
    from prune.compare import training_stages

    old = {"method": "bilevel", "settings": {"method": "bilevel", "epochs": 2, "search_steps": 40, "finetune_steps": 40,
                                             "lr": 0.01, "weights": "/elsewhere/ckpt.safetensors"}}
    stages, steps = training_stages(old)
    assert steps is None and stages[0] == "weights /elsewhere/ckpt.safetensors (training unknown)"
    assert stages[1] == ("bilevel 160 steps (2 x (40 search + 40 fine-tuning), lr 0.01, weight decay 0.0001, "
                         "search weight decay 0.001)")
