"""bench_artifact on the loopback farm: check, timing, per-kernel table, refusals, retries."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from runner.artifact import REFERENCE, load_artifact, write_manifest
from runner.bench import bench_artifact, bench_batch
from runner.device import Device, Tracker
from runner.drift import DriftReference
from runner.emulator import free_port
from runner.errors import ArtifactError, CheckFailed, DeviceError
from runner.report import render_bench
from runner.timing import TimingProtocol

from helpers.artifacts import build_artifact

QUICK = TimingProtocol(warmup=1, repeat=5)


def test_bench_checks_times_and_tables_every_kernel(host_farm, host_artifact):
    result = bench_artifact(host_artifact, host_farm.device, QUICK, threads=1, check=True,
                            per_kernel=True)  # fmt: skip
    assert result.check.passed and result.check.max_abs_error <= 1e-5
    assert result.timing.runs == 5 and result.timing.median_ms > 0
    assert result.fps == pytest.approx(1000 / result.timing.median_ms)
    assert result.threads == 1 and result.threads_requested == 1 and not result.emulated
    table = result.kernels
    totals = [row.total_ms for row in table.rows]
    assert totals == sorted(totals, reverse=True)
    assert {row.name for row in table.rows} == {"fused_conv2d_relu", "fused_conv2d1_add"}
    assert table.sum_ms == pytest.approx(sum(r.calls * r.timing.median_ms for r in table.rows))
    assert sum(table.share(row) for row in table.rows) == pytest.approx(1.0)
    assert table.end_to_end_ms == result.timing.median_ms
    data = result.to_dict()
    assert data["fps"] == result.fps and data["device"]["key"] == "host-cpu"
    assert data["kernels"]["sum_of_kernels_ms"] == pytest.approx(table.sum_ms)
    text = render_bench(result)
    assert "fused_conv2d1_add" in text and "sum of kernels" in text and "EMULATED" not in text


def test_a_baseline_is_timed_in_turns_in_the_same_session_and_their_ratio_reported(host_farm, host_artifact,
                                                                                   artifact_copy, aarch64_artifact):
    result = bench_artifact(host_artifact, host_farm.device, TimingProtocol(warmup=1, repeat=7), check=True,
                            baseline=artifact_copy, rounds=3)
    base = result.baseline
    assert result.check.passed and base.artifact == str(artifact_copy)
    assert result.timing.runs == base.timing.runs == 9  # 3 rounds of ceil(7 / 3) samples each
    assert len(base.ratios) == 3 and base.ratio == pytest.approx(sorted(base.ratios)[1]) and base.ratio > 0
    data = result.to_dict()["baseline"]
    assert data["rounds"] == 3 and data["ratio"] == base.ratio and len(data["samples_ms"]) == 9
    assert "benched / baseline" in render_bench(result)
    with pytest.raises(ArtifactError, match="built for target 'linux-arm64'"):
        bench_artifact(host_artifact, host_farm.device, QUICK, baseline=aarch64_artifact)


def test_a_batch_is_timed_round_robin_and_scaled_by_the_drift_reference(host_farm, host_artifact, artifact_copy,
                                                                        aarch64_artifact):
    protocol = TimingProtocol(warmup=1, repeat=4, rounds=2, sessions=2, drift_reference=True)  # a round a session
    reference = DriftReference(host_artifact, 0.5)
    first, second = bench_batch([host_artifact, artifact_copy], host_farm.device, protocol, reference)
    assert first.artifact == str(host_artifact) and second.artifact == str(artifact_copy)
    for timed in (first, second):
        assert timed.raw.runs == timed.corrected.runs == 4 and len(timed.reference_ms) == 2 and timed.threads >= 1
        scale = [0.5 / r for r in timed.reference_ms for _ in range(2)]  # two samples a round
        assert timed.corrected.samples_ms == pytest.approx([s * f for s, f in zip(timed.raw.samples_ms, scale)])
        assert timed.timing is timed.corrected
    (plain,) = bench_batch([host_artifact], host_farm.device, TimingProtocol(warmup=0, repeat=3))
    assert plain.corrected is None and plain.timing is plain.raw and plain.raw.runs == 3
    with pytest.raises(ArtifactError, match="asks for a drift reference, and none"):
        bench_batch([host_artifact], host_farm.device, protocol)
    with pytest.raises(ArtifactError, match="several targets"):
        bench_batch([host_artifact, aarch64_artifact], host_farm.device, TimingProtocol(repeat=1))


def test_a_wrong_reference_output_raises_check_failed_with_the_errors(host_farm, artifact_copy):
    artifact = load_artifact(artifact_copy)
    inputs, outputs = artifact.reference()
    np.savez(artifact_copy / REFERENCE, **{f"input:{k}": v for k, v in inputs.items()},
             **{"output:0": outputs[0] + 0.5})  # fmt: skip
    manifest = artifact.manifest
    write_manifest(artifact_copy, target=manifest.target, inputs=manifest.inputs,
                   outputs=manifest.outputs)  # fmt: skip
    with pytest.raises(CheckFailed) as error:
        bench_artifact(artifact_copy, host_farm.device, QUICK, check=True)
    assert "max abs error 0.5" in error.value.problem and error.value.exit_code == 5


def test_an_aarch64_artifact_is_refused_before_the_model_is_uploaded(
    host_farm, aarch64_artifact, caplog
):
    caplog.set_level(logging.DEBUG, logger="runner.bench")
    with pytest.raises(ArtifactError) as error:
        bench_artifact(aarch64_artifact, host_farm.device, QUICK, check=True)
    assert "built for aarch64" in error.value.problem and "linux-arm64" in error.value.problem
    assert "--emulate aarch64" in error.value.fix
    uploads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("uploading")]
    assert len(uploads) == 1 and uploads[0].startswith("uploading probe.so")


def test_an_opencl_artifact_is_refused_on_a_device_without_opencl(host_farm, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="runner.bench")
    folder = build_artifact(tmp_path / "mali", preset="android-mali", device_type="opencl")
    with pytest.raises(ArtifactError, match="no OpenCL device"):
        bench_artifact(folder, host_farm.device, QUICK)
    assert not [r for r in caplog.records if r.getMessage().startswith("uploading")]


def test_an_android_artifact_is_refused_on_the_emulated_device_without_a_session(tmp_path):
    folder = build_artifact(tmp_path / "android", preset="android-arm64", emulated_ok=False)
    # Nothing listens at this tracker: only a refusal before any session avoids a DeviceError.
    unreachable = Device(Tracker("127.0.0.1", free_port()), "emu-arm64")
    with pytest.raises(ArtifactError, match="emulated aarch64 device"):
        bench_artifact(folder, unreachable, QUICK)


def test_a_device_that_drops_twice_fails_keeping_what_was_measured(host_farm, host_artifact):
    slow = TimingProtocol(warmup=0, repeat=2, min_repeat_ms=3000)  # outlives a 2 s session
    with pytest.raises(DeviceError) as error:
        bench_artifact(host_artifact, host_farm.device, slow, check=True, session_timeout_s=2)
    assert "dropped twice" in error.value.problem
    assert "check passed" in error.value.problem
