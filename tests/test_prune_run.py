"""`python -m prune` end to end on a tiny problem: segformer-b0 at 32 px, a few steps, the FLOPs budget."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from prune import search
from prune.cli import main
from prune.settings import PruneSettings
from prune.shared_training import SharedTraining
from prune.train import check_predictor_fits, run_pruning
from runner.errors import EdgesegError

TINY = PruneSettings(budget_ms=0.04, input_size=32, epochs=2, search_steps=2, finetune_steps=1, batch_size=2,
                     train_scenes=8, val_scenes=2, num_classes=4)
TINY_ARGS = ["--input-size", "32", "--epochs", "2", "--search-steps", "2", "--finetune-steps", "1",
             "--batch-size", "2", "--train-scenes", "8", "--val-scenes", "2", "--classes", "4", "--no-progress"]


class Crash(Exception):
    pass


def test_interrupted_run_resumes_from_its_checkpoint_through_the_cli(tmp_path, caplog, capsys):
    out = tmp_path / "run"

    def crash_at(where):
        def hook(phase, epoch):
            if f"{phase} {epoch}" == where:
                raise Crash(where)
        return hook

    with pytest.raises(Crash, match="search 0"):
        run_pruning(TINY, out, progress=False, on_epoch_end=crash_at("search 0"))
    assert (out / "checkpoint.pt").exists() and not (out / "pruning.json").exists()
    caplog.set_level(logging.INFO, logger="prune.train")
    with pytest.raises(Crash, match="finetune 0"):  # resumes the search, shrinks, crashes fine-tuning
        run_pruning(TINY, out, progress=False, on_epoch_end=crash_at("finetune 0"))
    assert "resuming from" in caplog.text and "search epoch 2/2" in caplog.text
    assert "search epoch 1/2" not in caplog.text  # the first epoch was not run again
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # half-way through a cosine decay to zero
    assert state["lr_schedule"]["last_epoch"] == 1
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(TINY.lr / 2)
    caplog.clear()

    assert main(["--budget-ms", "0.04", *TINY_ARGS, "-o", str(out)]) == 0  # resumes the shrunk network
    assert "finetune epoch 2/2" in caplog.text
    assert "search epoch" not in caplog.text and "finetune epoch 1/2" not in caplog.text

    report = json.loads((out / "pruning.json").read_text())
    assert report["predicted_ms"] <= report["budget_ms"] == 0.04 < report["unpruned_predicted_ms"]
    assert [(e["phase"], e["epoch"]) for e in report["epochs"]] == [
        ("search", 0), ("search", 1), ("finetune", 0), ("finetune", 1)]
    assert 0.0 <= report["miou"] <= 1.0 and report["method"] == "bilevel" and report["seed"] == 0
    assert set(report["kept_counts"]) == set(report["kept_units"]) == set(report["full_counts"])
    assert any(report["kept_counts"][g] < report["full_counts"][g] for g in report["full_counts"])
    onnx.checker.check_model(str(out / "model.onnx"))
    assert (out / "curves.png").stat().st_size > 0
    assert "predicted" in capsys.readouterr().out

    # the twice-interrupted run ends where an uninterrupted run of the same settings ends
    straight = run_pruning(TINY, tmp_path / "straight", progress=False).report
    assert report["kept_units"] == straight["kept_units"]
    assert [(e["phase"], e["epoch"]) for e in report["epochs"]] == [(e["phase"], e["epoch"]) for e in straight["epochs"]]
    for resumed, uninterrupted in zip(report["epochs"], straight["epochs"]):
        assert resumed["loss"] == pytest.approx(uninterrupted["loss"], rel=1e-5)
        assert resumed["miou"] == pytest.approx(uninterrupted["miou"], abs=1e-6)
    assert_same_weights(out / "model.onnx", tmp_path / "straight" / "model.onnx")

    # another run's settings in the same folder: refused, nothing touched
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["--budget-ms", "0.04", *TINY_ARGS, "--seed", "1", "-o", str(out)]) != 0
    assert "seed: 0 there, 1 now" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def assert_same_weights(first: Path, second: Path) -> None:
    """The two ONNX files carry the same initializers (names, shapes, values within float tolerance)."""
    from onnx import numpy_helper

    def weights(path):
        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}

    a, b = weights(first), weights(second)
    assert a.keys() == b.keys() and a
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert np.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), name


def test_infeasible_budget_names_the_smallest_reachable_latency(tmp_path, capsys):
    with pytest.raises(EdgesegError, match=r"below the smallest reachable latency \d"):
        run_pruning(dataclasses.replace(TINY, budget_ms=1e-4), tmp_path / "lib", progress=False)
    assert main(["--budget-ms", "0.0001", *TINY_ARGS, "-o", str(tmp_path / "cli")]) != 0
    assert "Pass a budget of at least" in capsys.readouterr().err
    assert not (tmp_path / "lib").exists() and not (tmp_path / "cli").exists()


@pytest.mark.parametrize("method, search_steps", [("uniform", 1), ("magnitude", 1), ("magnitude", 0)])
def test_baselines_meet_the_budget(tmp_path, method, search_steps):
    """(--search-steps 0: the plan is made from the start weights, no plain training first.)"""
    settings = dataclasses.replace(TINY, method=method, epochs=1, search_steps=search_steps)
    report = run_pruning(settings, tmp_path, progress=False).report
    assert report["method"] == method and report["predicted_ms"] <= report["budget_ms"]
    assert report["dropped_to_fit"] == 0
    counts, full = report["kept_counts"], report["full_counts"]
    if method == "uniform":  # one fraction r for every group: kept units = ceil(r * units)
        units = {g: full[g] if g.endswith("attn") else full[g] // 8 for g in full}
        kept = {g: len(report["kept_units"][g]) for g in full}
        assert max((kept[g] - 1) / units[g] for g in full) < min(kept[g] / units[g] for g in full)
    assert sum(counts.values()) < sum(full.values())


def test_shared_plain_training_gives_what_the_run_own_training_gives(tmp_path, caplog):
    """A baseline that loads the plain training another baseline stored (another method, budget
    and bi-level-only settings, which plain training ignores) ends exactly as it would have by
    training itself; bilevel runs neither load nor store."""
    settings = dataclasses.replace(TINY, method="magnitude", epochs=1, search_steps=2, outer_lr=0.5,
                                   hard_mask="threshold")
    alone = run_pruning(settings, tmp_path / "alone", progress=False).report
    shared = tmp_path / "shared"
    assert main(["--method", "uniform", "--budget-ms", "0.03", *TINY_ARGS, "--epochs", "1",
                 "--shared-training", str(shared), "-o", str(tmp_path / "uniform")]) == 0
    assert len(list(shared.iterdir())) == 1
    caplog.set_level(logging.INFO, logger="prune.train")
    loaded = run_pruning(settings, tmp_path / "loaded", progress=False, shared_training=SharedTraining(shared)).report
    assert "plain training loaded from" in caplog.text and "search epoch" not in caplog.text
    assert loaded["kept_units"] == alone["kept_units"] and loaded["miou"] == alone["miou"]
    assert loaded["epochs"] == alone["epochs"]
    caplog.clear()
    run_pruning(dataclasses.replace(TINY, epochs=1, search_steps=1), tmp_path / "bilevel", progress=False,
                shared_training=SharedTraining(shared))
    assert "plain training loaded" not in caplog.text and len(list(shared.iterdir())) == 1


def test_dense_reference_keeps_every_unit_and_its_weights_start_a_pruning_run(tmp_path, capsys):
    assert main(["--method", "dense", *TINY_ARGS, "--epochs", "1", "-o", str(tmp_path / "dense")]) == 0
    assert "trained dense" in capsys.readouterr().out
    dense = json.loads((tmp_path / "dense" / "pruning.json").read_text())
    assert dense["budget_ms"] is None and dense["kept_counts"] == dense["full_counts"]
    assert dense["predicted_ms"] == dense["unpruned_predicted_ms"]
    # Half the unpruned predicted latency, starting from the dense run's trained weights.
    pruned = run_pruning(dataclasses.replace(TINY, budget_ms=None, budget_fraction=0.5, epochs=1,
                                             weights=str(tmp_path / "dense" / "weights.safetensors")),
                         tmp_path / "half", progress=False).report
    assert pruned["budget_ms"] == pytest.approx(0.5 * dense["unpruned_predicted_ms"])
    assert pruned["predicted_ms"] <= pruned["budget_ms"]


def test_bilevel_search_itself_lands_just_under_the_budget(tmp_path):
    """The projected hard network is at the budget when the search ends: no unit is dropped
    after the search to fit, and little latency is left unused (the issue's goal: every bilevel
    network within 5% of its budget)."""
    settings = dataclasses.replace(TINY, budget_ms=0.05, epochs=1, search_steps=16, finetune_steps=0,
                                   train_scenes=16)
    report = run_pruning(settings, tmp_path, progress=False).report
    assert report["dropped_to_fit"] == 0
    assert 0.95 * report["budget_ms"] <= report["searched_ms"] <= report["budget_ms"]
    assert 0.95 * report["budget_ms"] <= report["predicted_ms"] <= report["budget_ms"]


def _onnx_weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_a_reused_search_is_projected_onto_another_budget_without_searching_again(tmp_path, caplog, capsys):
    """At its own budget a reused search gives the searched network itself (same units, same
    weights); at other budgets the units its scores rank highest, at that budget; only the budget
    and the latency scale may differ from the search's settings."""
    searched = dataclasses.replace(TINY, epochs=1, search_steps=3, finetune_steps=0)
    first = run_pruning(searched, tmp_path / "search", progress=False).report
    assert (tmp_path / "search" / "search.pt").is_file()
    caplog.set_level(logging.INFO, logger="prune.train")
    again = run_pruning(dataclasses.replace(searched, reuse_search=str(tmp_path / "search")), tmp_path / "same",
                        progress=False).report
    assert "search epoch" not in caplog.text and "projected onto" in caplog.text
    assert again["kept_units"] == first["kept_units"]
    assert again["epochs"] == first["epochs"]  # the search's history, nothing trained since
    a, b = _onnx_weights(tmp_path / "search" / "model.onnx"), _onnx_weights(tmp_path / "same" / "model.onnx")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    kept = {}
    for budget in (0.03, 0.05):
        report = run_pruning(dataclasses.replace(searched, budget_ms=budget, latency_scale=1.1,
                                                 reuse_search=str(tmp_path / "search")),
                             tmp_path / f"at{budget}", progress=False).report
        assert 0.9 * budget <= report["predicted_ms"] <= budget
        kept[budget] = sum(len(units) for units in report["kept_units"].values())
    assert kept[0.03] < sum(len(u) for u in first["kept_units"].values()) < kept[0.05]

    with pytest.raises(EdgesegError, match="seed: 0 there, 1 now"):
        run_pruning(dataclasses.replace(searched, seed=1, reuse_search=str(tmp_path / "search")), tmp_path / "seed",
                    progress=False)
    assert main(["--budget-ms", "0.04", *TINY_ARGS, "--reuse-search", str(tmp_path / "same"), "-o",
                 str(tmp_path / "none")]) != 0
    assert "holds no finished bi-level search" in capsys.readouterr().err
    with pytest.raises(EdgesegError, match="reuses a bi-level search"):
        PruneSettings(budget_ms=0.04, method="uniform", reuse_search=str(tmp_path / "search"))


def test_outer_batch_size_and_period_are_honoured_saved_and_fixed_on_resume(tmp_path, monkeypatch, capsys):
    """--outer-every 2 --outer-batch-size 1: held-out passes (batch 1) only at steps 0 and 2 of 4,
    training passes (batch 2) at every step; the settings are saved and a resume must repeat them."""
    sizes, seg_loss = [], search.seg_loss

    def recording_loss(model, batch):
        sizes.append(len(batch[0]))
        return seg_loss(model, batch)

    monkeypatch.setattr(search, "seg_loss", recording_loss)
    out = tmp_path / "run"
    args = ["--budget-ms", "0.04", *TINY_ARGS, "--epochs", "1", "--search-steps", "4", "--finetune-steps", "0",
            "-o", str(out)]
    assert main([*args, "--outer-batch-size", "1", "--outer-every", "2"]) == 0
    assert sizes == [1, 2, 2, 1, 2, 2]  # held-out pass first, then the training pass, in an outer step
    report = json.loads((out / "pruning.json").read_text())
    assert report["settings"]["outer_batch_size"] == 1 and report["settings"]["outer_every"] == 2
    assert report["predicted_ms"] <= report["budget_ms"]

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main([*args, "--outer-batch-size", "1"]) != 0  # outer_every back to its default
    assert "outer_every: 2 there, 1 now" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_predictor_for_another_model_input_size_or_class_count_is_refused():
    settings = dataclasses.replace(TINY, predictor="some/folder")
    check_predictor_fits({"device_key": "s21-cpu"}, settings)  # names none: accepted
    check_predictor_fits({"model": "segformer-b0", "input_size": 32, "num_classes": TINY.num_classes}, settings)
    with pytest.raises(EdgesegError, match="made for model 'segformer-b1'"):
        check_predictor_fits({"model": "segformer-b1", "input_size": 32}, settings)
    with pytest.raises(EdgesegError, match="made for input_size 512, not 32"):
        check_predictor_fits({"model": "segformer-b0", "input_size": 512}, settings)
    with pytest.raises(EdgesegError, match=f"made for num_classes 150, not {TINY.num_classes}.*--classes"):
        check_predictor_fits({"model": "segformer-b0", "num_classes": 150}, settings)
    hard = dataclasses.replace(settings, data="synthetic-hard")  # its own 40 classes, whatever --classes says
    check_predictor_fits({"num_classes": 40}, hard)
    with pytest.raises(EdgesegError, match="num_classes 8, not 40"):
        check_predictor_fits({"num_classes": 8}, hard)


def test_prune_refuses_a_predictor_collected_at_another_input_size(segformer_b0_predictor, tmp_path,
                                                                   capsys):
    """A real predictor (segformer-b0 layers measured at 64 px on the host farm) for a 32 px run."""
    out = tmp_path / "run"
    assert main(["--predictor", str(segformer_b0_predictor), "--budget-ms", "1", *TINY_ARGS,
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "made for input_size 64, not 32" in err and "python -m latency_model collect --model segformer-b0 --input-size 32" in err
    assert not out.exists()


def test_prune_refuses_a_predictor_for_another_device_or_target_and_records_its_own(segformer_b0_predictor,
                                                                                      tmp_path, capsys):
    """The pruned network's budget holds on the predictor's device and target only: naming
    another is refused before any work; pruning.json records the ones the budget is for."""
    args = ["--predictor", str(segformer_b0_predictor), "--budget-ms", "1000", *TINY_ARGS,
            "--input-size", "64", "--epochs", "1", "--search-steps", "1"]
    for flag, value, said in (("--target", "android-arm64", "not for 'host-cpu' and 'android-arm64'"),
                              ("--device", "s21-cpu", "not for 's21-cpu' and 'host'"),
                              ("--target", "pdp-11", "Unknown target 'pdp-11'")):
        assert main([*args, flag, value, "-o", str(tmp_path / value)]) == 2
        assert said in capsys.readouterr().err and not (tmp_path / value).exists()
    assert main([*args, "--target", "host", "-o", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "pruning.json").read_text())
    assert (report["device"], report["target"]) == ("host-cpu", "host")


def test_torchrun_data_parallel_on_two_gloo_processes(tmp_path):
    """`torchrun --nproc-per-node 2 -m prune`: both processes agree on the plan (the run checks it)
    and one writes the results."""
    out = tmp_path / "dp"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "prune",
               "--budget-ms", "0.04", *TINY_ARGS, "--epochs", "1", "-o", str(out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr[-3000:]
    assert "data parallel over 2 processes" in stderr
    assert stdout.count("pruned by bilevel") == 1  # only rank 0 reports
    report = json.loads((out / "pruning.json").read_text())
    assert report["predicted_ms"] <= report["budget_ms"]
    onnx.checker.check_model(str(out / "model.onnx"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_threshold_mask_and_hard_signal_still_run_and_old_checkpoints_resume_as_they_ran(tmp_path, capsys):
    """The first searches' settings (--hard-mask threshold --budget-signal hard) still run, and
    the network still ships within 5% of its budget (fitted or refilled by gate score); a
    checkpoint written before those settings existed resumes with what runs did then."""
    out = tmp_path / "run"
    first = ["--hard-mask", "threshold", "--budget-signal", "hard"]
    assert main(["--budget-ms", "0.05", *first, *TINY_ARGS, "-o", str(out)]) == 0
    report = json.loads((out / "pruning.json").read_text())
    assert report["settings"]["hard_mask"] == "threshold" and report["searched_ms"] > 0
    assert 0.95 * report["budget_ms"] <= report["predicted_ms"] <= report["budget_ms"]
    assert main(["--budget-ms", "0.05", *TINY_ARGS, "-o", str(out)]) == 2  # today's defaults: refused
    err = capsys.readouterr().err
    assert "budget_signal: 'hard' there, 'expected' now" in err and "hard_mask: 'threshold' there, 'projection' now" in err

    # before the weight decay was a setting, the bi-level search ran with BiP's 1e-3, all else with 1e-4
    old, then = tmp_path / "old", dataclasses.replace(TINY, epochs=1, budget_signal="hard", hard_mask="threshold",
                                                      search_weight_decay=1e-3)
    run_pruning(then, old, progress=False)
    state = torch.load(old / "checkpoint.pt", weights_only=True)
    for later in ("budget_signal", "hard_mask", "implicit_gradient", "neumann_steps", "neumann_alpha", "weight_decay",
                  "search_weight_decay"):
        del state["settings"][later]  # as written before they existed
    torch.save(state, old / "checkpoint.pt")
    assert run_pruning(then, old, progress=False).report["method"] == "bilevel"
    with pytest.raises(EdgesegError, match="hard_mask: 'threshold' there, 'projection' now"):
        run_pruning(dataclasses.replace(TINY, epochs=1), old, progress=False)
    with pytest.raises(EdgesegError, match="search_weight_decay: 0.001 there, None now"):
        run_pruning(dataclasses.replace(then, search_weight_decay=None), old, progress=False)


@pytest.mark.parametrize("method", ["bilevel", "magnitude"])
def test_one_weight_decay_reaches_every_phase_of_every_method_and_is_recorded(tmp_path, method):
    """--weight-decay is the decay of the search's SGD (the bi-level inner step, where it is
    lambda, or the baselines' plain training) and of the fine-tuning; --search-weight-decay
    replaces it in the search alone. Both are in pruning.json's settings."""
    out, decays = tmp_path / "run", {}

    def record(phase, epoch):
        state = torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]
        decays[phase] = state.get("inner", state)["param_groups"][0]["weight_decay"]  # bilevel search: the inner SGD

    assert PruneSettings(budget_ms=1.0).decay("search") == PruneSettings(budget_ms=1.0, method="magnitude").decay("search")
    settings = dataclasses.replace(TINY, method=method, epochs=1, weight_decay=3e-4)
    report = run_pruning(settings, out, progress=False, on_epoch_end=record).report
    assert decays == {"search": 3e-4, "finetune": 3e-4}
    assert report["settings"]["weight_decay"] == 3e-4 and report["settings"]["search_weight_decay"] is None
    if method == "bilevel":
        from prune.search import BilevelSearch
        from prune.train import build_budget, prunable_groups
        from prune.models import create_model

        model = create_model("segformer-b0", num_classes=4)
        group_set, budget = build_budget(settings, model)
        search = BilevelSearch(dataclasses.replace(settings, search_weight_decay=2e-3), model,
                               prunable_groups(group_set, budget.description), budget, 0.04)
        assert search.optimizer.config.weight_decay_lambda == 2e-3  # the implicit gradient's lambda too
        assert search.optimizer.inner.param_groups[0]["weight_decay"] == 2e-3


def test_the_neumann_implicit_gradient_is_a_run_option(tmp_path, monkeypatch):
    """--implicit-gradient neumann reaches the optimiser (each outer step takes the Neumann
    series, not BiP's first-order product), lands under the budget and is saved with the run."""
    from prune.bilevel import BilevelOptimizer

    calls, neumann = [], BilevelOptimizer._neumann

    def counted(self, *args):
        calls.append(self.config.neumann_steps)
        return neumann(self, *args)

    monkeypatch.setattr(BilevelOptimizer, "_neumann", counted)
    out = tmp_path / "run"
    assert main(["--budget-ms", "0.05", "--implicit-gradient", "neumann", "--neumann-steps", "2", *TINY_ARGS,
                 "--epochs", "1", "-o", str(out)]) == 0
    assert calls == [2, 2]  # two search steps, each an outer step
    report = json.loads((out / "pruning.json").read_text())
    assert report["settings"]["implicit_gradient"] == "neumann" and report["settings"]["neumann_steps"] == 2
    assert report["predicted_ms"] <= report["budget_ms"]
    from prune.bilevel import METHODS
    from prune.settings import IMPLICIT_GRADIENTS

    assert IMPLICIT_GRADIENTS == METHODS  # the settings name the optimiser's methods
    with pytest.raises(EdgesegError, match="Unknown implicit gradient 'exact'"):
        PruneSettings(budget_ms=1.0, implicit_gradient="exact")
    with pytest.raises(EdgesegError, match="Neumann series needs"):
        PruneSettings(budget_ms=1.0, neumann_alpha=0.0)


def test_budget_from_fps_and_settings_checks():
    assert PruneSettings(fps=50).target_ms(40.0) == pytest.approx(20.0)
    assert PruneSettings(budget_fraction=0.25).target_ms(40.0) == pytest.approx(10.0)
    assert PruneSettings(method="dense").target_ms(40.0) is None
    with pytest.raises(EdgesegError, match="exactly once"):
        PruneSettings(budget_ms=20.0, fps=50)
    with pytest.raises(EdgesegError, match="exactly once"):
        PruneSettings()
    with pytest.raises(EdgesegError, match="takes no budget"):
        PruneSettings(method="dense", budget_fraction=0.5)
    with pytest.raises(EdgesegError, match="above 1"):
        PruneSettings(budget_fraction=1.5)
    with pytest.raises(EdgesegError, match="multiple of 32"):
        PruneSettings(budget_ms=20.0, input_size=100)
    with pytest.raises(EdgesegError, match="Unknown pruning method"):
        PruneSettings(budget_ms=20.0, method="random")
    for field in ("outer_batch_size", "outer_every"):
        with pytest.raises(EdgesegError, match=f"{field} must be >= 1"):
            PruneSettings(budget_ms=20.0, **{field: 0})
    with pytest.raises(EdgesegError, match="there would be no search"):
        PruneSettings(budget_ms=20.0, search_steps=0)
    PruneSettings(budget_ms=20.0, method="magnitude", search_steps=0)  # defined: the plan from the start weights
    PruneSettings(budget_ms=20.0, finetune_steps=0)  # defined: the shrunk network as the search leaves it
    with pytest.raises(EdgesegError, match="weight_decay must be >= 0"):
        PruneSettings(budget_ms=20.0, method="uniform", weight_decay=-1e-4)
    with pytest.raises(EdgesegError, match="lambda, the inner objective's ridge term"):
        PruneSettings(budget_ms=20.0, weight_decay=0.0)
    assert PruneSettings(budget_ms=20.0, weight_decay=0.0, search_weight_decay=1e-3).decay("finetune") == 0.0
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(EdgesegError, match="must be positive|above 1"):
            PruneSettings(budget_fraction=bad)


@pytest.mark.parametrize("argv, said", [
    (["--search-steps", "0"], "there would be no search"),
    (["--epochs", "0"], "must be > 0"),
    (["--search-steps", "-1"], "must be >= 0"),
    (["--weight-decay", "0"], "lambda, the inner objective's ridge term"),
    (["--weight-decay", "-1"], "must be >= 0"),
    (["--budget-fraction", "0"], "must be > 0"),
])
def test_zero_or_negative_settings_get_a_clear_error_through_the_cli(tmp_path, capsys, argv, said):
    args = ["--budget-ms", "0.04"] if "--budget-fraction" not in argv else []
    parser_error = said.startswith("must be")  # argparse's type check: exit 2, before any work
    with pytest.raises(SystemExit) if parser_error else contextlib.nullcontext():
        assert main([*args, *TINY_ARGS, *argv, "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and not (tmp_path / "run").exists()


def test_the_backbone_starts_from_timms_weights_only_when_they_are_in_the_local_cache(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants
    import timm

    from helpers.hub_cache import fake_hub_cache

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "run"
    args = ["--budget-ms", "0.05", "--pretrained-backbone", *TINY_ARGS, "--epochs", "1", "--search-steps", "1",
            "--finetune-steps", "0", "-o", str(out)]
    assert main(args) == 2  # nothing downloaded: an error that says what to do, nothing written
    err = capsys.readouterr().err
    assert "pvt_v2_b0" in err and "--weights" in err and not out.exists()

    classifier = timm.create_model("pvt_v2_b0")  # stands in for timm's ImageNet weights
    fake_hub_cache(tmp_path / "hub", timm.models.get_pretrained_cfg("pvt_v2_b0").hf_hub_id,
                   {k: v.contiguous() for k, v in classifier.state_dict().items()})
    assert main(args) == 0
    assert json.loads((out / "pruning.json").read_text())["settings"]["pretrained_backbone"] is True
    with pytest.raises(EdgesegError, match="both say where the network starts"):
        PruneSettings(budget_ms=1.0, weights="w.safetensors", pretrained_backbone=True)


def test_a_run_on_synthetic_hard_has_its_forty_classes(tmp_path):
    assert main(["--method", "uniform", "--budget-ms", "0.04", *TINY_ARGS, "--epochs", "1", "--search-steps", "1",
                 "--data", "synthetic-hard", "-o", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "pruning.json").read_text())
    assert report["data"] == "synthetic-hard" and report["num_classes"] == 40
    assert report["predicted_ms"] <= report["budget_ms"]
