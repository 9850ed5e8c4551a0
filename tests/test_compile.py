"""compile end to end: tune over RPC on the loopback farm, build, bench --check; database reuse."""

from __future__ import annotations

import json

import pytest

from compile.api import compile_model
from compile.build import apply_database, lower
from compile.frontend import load_model
from compile.targets import resolve_target
from compile.tuning import open_database
from helpers.tiny_models import TinyAttention, TinyConvNet, export_onnx, export_pt2
from runner.artifact import load_artifact
from runner.bench import bench_artifact
from runner.device import Device, Tracker
from runner.timing import TimingProtocol

FAST = TimingProtocol(warmup=1, repeat=3)


@pytest.fixture(scope="module")
def tuned_conv(host_farm, tmp_path_factory):
    """The tiny conv net compiled for host with a few trials per kernel; its database."""
    work = tmp_path_factory.mktemp("tuned-conv")
    model = export_onnx(TinyConvNet(), work / "conv.onnx")
    result = compile_model(
        model, work / "artifact", resolve_target("host"), database_dir=work / "db",
        trials=9, device=host_farm.device,
    )  # fmt: skip
    return model, work / "db", result


def test_conv_net_end_to_end_checks_on_device(tuned_conv, host_farm):
    _, _, result = tuned_conv
    assert result.kernels_total == 3 and result.untuned == 0
    assert result.tuning.trials >= 3 and all(t.best_us for t in result.tuning.tasks)
    manifest = load_artifact(result.artifact, with_kernels=True).manifest
    assert manifest.tuning["kernels_tuned"] == 3 and manifest.target.preset == "host"
    bench = bench_artifact(result.artifact, host_farm.device, FAST, check=True, per_kernel=True)
    assert bench.check.passed and bench.check.max_abs_error < 1e-4
    assert bench.timing.runs == 3 and bench.fps > 0
    assert len(bench.kernels.rows) == 3


def test_attention_block_end_to_end_from_pt2(tuned_conv, host_farm, tmp_path, capsys):
    """Also the second tuning of a process (after tuned_conv's): MetaSchedule's console stays quiet."""
    model = export_pt2(TinyAttention(), tmp_path / "attn.pt2")
    result = compile_model(
        model, tmp_path / "artifact", resolve_target("host"), database_dir=tmp_path / "db",
        trials=1000, trials_per_task=1, device=host_farm.device, kernel_library=False,
    )  # fmt: skip
    assert result.kernels_total >= 4  # embed conv, norm, attention matmuls/softmax, ...
    # One trial per kernel the empty database lacked, in place of the global budget.
    assert 1 <= result.tuning.trials <= len(result.tuning.tasks)
    assert "TaskScheduler" not in capsys.readouterr().out
    bench = bench_artifact(result.artifact, host_farm.device, FAST, check=True)
    assert bench.check.passed


def test_database_is_applied_and_changes_the_built_code(tuned_conv, tmp_path):
    """Read from the build itself: every kernel's TIR differs from the untuned lowering."""
    onnx_path, db_dir, _ = tuned_conv
    preset = resolve_target("host")
    lowered = lower(load_model(onnx_path, None, tmp_path).mod, preset)
    tuned, status = apply_database(lowered, preset, open_database(db_dir))
    untouched, empty_status = apply_database(lowered, preset, open_database(tmp_path / "empty"))
    assert all(status.values()) and not any(empty_status.values())
    for name in status:
        assert "T.parallel" in tuned[name].script() or "T.vectorized" in tuned[name].script()
        assert "T.parallel" not in untouched[name].script()  # untuned CPU code is naive


def test_trials_zero_builds_from_database_without_a_device(tuned_conv, tmp_path):
    onnx_path, db_dir, _ = tuned_conv
    nowhere = Device(Tracker("127.0.0.1", 9), "no-such-device")  # would fail if contacted
    result = compile_model(
        onnx_path, tmp_path / "again", resolve_target("host"), database_dir=db_dir, trials=0,
        device=nowhere,
    )  # fmt: skip
    assert result.tuning.trials == 0 and result.untuned == 0
    assert all(t.had_record for t in result.tuning.tasks)
    # The artifact carries its own records: reusable as a database elsewhere.
    records = (result.artifact / "tuning" / "database_tuning_record.json").read_text().splitlines()
    assert len(records) == 3


def test_without_kernel_library_the_model_runs_and_per_kernel_timing_is_refused(tuned_conv, host_farm, tmp_path):
    from compile.cli import main as compile_main
    from runner.errors import ArtifactError

    onnx_path, db_dir, _ = tuned_conv
    lean = tmp_path / "lean"
    assert compile_main([str(onnx_path), "--trials", "0", "--database", str(db_dir), "--no-kernel-library",
                         "-o", str(lean)]) == 0
    assert not (lean / "kernels.so").exists() and (lean / "model.so").exists()
    assert bench_artifact(lean, host_farm.device, FAST, check=True).check.passed
    with pytest.raises(ArtifactError, match="kernels.so") as refused:
        bench_artifact(lean, host_farm.device, FAST, per_kernel=True)
    assert "without --no-kernel-library" in refused.value.fix


def test_trials_zero_with_empty_database_warns_untuned(tmp_path, caplog):
    model = export_onnx(TinyConvNet(), tmp_path / "conv.onnx")
    result = compile_model(
        model, tmp_path / "art", resolve_target("host"), database_dir=tmp_path / "db", trials=0
    )
    assert result.untuned == 3
    assert "UNTUNED: 3 of 3 kernels" in caplog.text
    manifest = json.loads((result.artifact / "manifest.json").read_text())
    assert len(manifest["tuning"]["untuned_kernels"]) == 3


def test_output_folder_that_is_not_an_artifact_is_not_overwritten(tuned_conv, tmp_path):
    from runner.errors import EdgesegError

    onnx_path, db_dir, _ = tuned_conv
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(EdgesegError, match="not an edgeseg artifact"):
        compile_model(onnx_path, precious, resolve_target("host"), database_dir=db_dir, trials=0)
    assert (precious / "thesis.txt").read_text() == "keep me"


def test_cli_compile_then_bench(tuned_conv, host_farm, tmp_path, capsys):
    from compile.cli import main as compile_main
    from runner.cli import main as runner_main

    onnx_path, db_dir, _ = tuned_conv
    tracker = str(host_farm.tracker)
    out = tmp_path / "cli-artifact"
    assert compile_main([str(onnx_path), "--target", "host", "--tracker", tracker, "--key",
                         "host-cpu", "--database", str(db_dir), "--trials", "0", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3/3 tuned" in printed and "3 exact, 0 transferred, 0 tuned now, 0 untuned" in printed
    bench_json = tmp_path / "bench.json"
    assert runner_main(["bench", str(out), "--tracker", tracker, "--key", "host-cpu", "--check",
                        "--repeat", "3", "--warmup", "1", "--out", str(bench_json)]) == 0
    assert json.loads(bench_json.read_text())["fps"] > 0


def test_tuning_with_an_unreachable_tracker_fails_within_seconds(tmp_path):
    import time

    from runner.errors import DeviceError
    from runner.emulator import free_port

    model = export_onnx(TinyConvNet(), tmp_path / "conv.onnx")
    port = free_port()
    started = time.monotonic()
    with pytest.raises(DeviceError, match=f"127.0.0.1:{port}"):
        compile_model(model, tmp_path / "art", resolve_target("host"), tmp_path / "db", trials=4,
                      device=Device(Tracker("127.0.0.1", port), "host-cpu"))  # fmt: skip
    assert time.monotonic() - started < 30  # import + lowering included; the check itself is ~1 s
    assert not (tmp_path / "art").exists()


def test_compiling_a_pruned_network_for_another_target_than_its_predictor_warns(tmp_path, caplog):
    from compile.api import warn_if_pruned_for_another_target

    model = tmp_path / "model.onnx"
    host = resolve_target("host")
    warn_if_pruned_for_another_target(model, host)  # no pruning.json: nothing to say
    (tmp_path / "pruning.json").write_text(json.dumps({"target": "host", "device": "host-cpu"}))
    warn_if_pruned_for_another_target(model, host)
    assert "pruned to a latency budget" not in caplog.text
    (tmp_path / "pruning.json").write_text(json.dumps({"target": "android-arm64", "device": "s21-cpu"}))
    warn_if_pruned_for_another_target(model, host)
    assert "predicted for target android-arm64, not host" in caplog.text


def test_prepacked_weights_are_packed_at_compile_time_and_check_on_device(host_farm, tmp_path):
    """Layout-free weights: the tuned kernels read weights in their own layout, packed once by
    the build (so the shipped kernels take shapes the plain lowering never has), same outputs."""
    from compile.build import _arg_specs, _prim_funcs

    model = export_onnx(TinyConvNet(), tmp_path / "conv.onnx")
    result = compile_model(model, tmp_path / "art", resolve_target("host"), database_dir=tmp_path / "db",
                           trials=3, device=host_farm.device, prepack_weights=True)  # fmt: skip
    assert result.untuned == 0
    artifact = load_artifact(result.artifact, with_kernels=True)
    assert artifact.manifest.lowering["prepack_weights"] is True
    plain = lower(load_model(model, None, tmp_path).mod, resolve_target("host"))
    plain_shapes = {s.shape for f in _prim_funcs(plain).values() for s in _arg_specs(f)}
    packed_shapes = {s.shape for k in artifact.kernels() for s in k.args}
    assert packed_shapes - plain_shapes  # some weight now comes in a tiled layout
    assert bench_artifact(result.artifact, host_farm.device, FAST, check=True).check.passed


def test_prepacking_is_refused_for_gpu_targets():
    from compile.build import LoweringOptions
    from runner.errors import EdgesegError

    with pytest.raises(EdgesegError, match="CPU build option") as refused:
        lower(None, resolve_target("android-mali"), LoweringOptions(prepack_weights=True))
    assert "--prepack-weights" in refused.value.fix


def test_the_prepack_benchmark_pairs_each_packed_kernel_with_its_plain_twin(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    from bench.weight_prepack import paired_tasks
    from compile.build import LoweringOptions

    preset = resolve_target("host")
    mod = load_model(export_onnx(TinyConvNet(), tmp_path / "conv.onnx"), None, tmp_path).mod
    plain, packed = (ms.relax_integration.extract_tasks(lower(mod, preset, LoweringOptions(prepack_weights=p)),
                                                         preset.target()) for p in (False, True))  # fmt: skip
    pairs = paired_tasks(plain, packed, kernels=2)
    assert len(pairs) == 2  # the two kernels with the most FLOPs x calls
    for twin, task in pairs:
        assert "layout_free_buffers" not in (twin.dispatched[0]["main"].attrs or {})
        assert list(task.dispatched[0]["main"].attrs["layout_free_buffers"])  # the weight (and bias)
        assert int(twin.weight) == int(task.weight)
