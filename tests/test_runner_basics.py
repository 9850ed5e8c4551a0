"""The small value types of `runner` and the artifact format's checks (no device needed)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from runner.artifact import (
    MANIFEST,
    MODEL_LIB,
    REFERENCE,
    KERNELS_JSON,
    Manifest,
    load_artifact,
    write_manifest,
)
from runner.device import Tracker
from runner.drift import REFERENCE_FILE, DriftReference, corrected_samples, round_speeds
from runner.errors import ArtifactError, EdgesegError
from runner.timing import Timing, TimingProtocol


@pytest.mark.parametrize("text", ["127.0.0.1:9190", "phone-lab.local:80", " 10.0.0.2:9190 "])
def test_tracker_parse_reads_host_and_port(text):
    tracker = Tracker.parse(text)
    host, port = text.strip().rsplit(":", 1)
    assert tracker == Tracker(host, int(port)) and str(tracker) == text.strip()


@pytest.mark.parametrize("text", ["9190", "localhost", "localhost:", ":9190", "host:x", "h:70000"])
def test_tracker_parse_rejects_bad_text_with_an_example(text):
    with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
        Tracker.parse(text)
    with pytest.raises(ValueError):
        Tracker.parse(text)


def test_timing_statistics_follow_the_samples():
    timing = Timing((4.0, 1.0, 3.0, 2.0, 10.0))
    assert timing.median_ms == 3.0 and timing.mean_ms == 4.0
    assert timing.min_ms == 1.0 and timing.max_ms == 10.0 and timing.runs == 5
    assert timing.fps == pytest.approx(1000 / 3)
    assert timing.std_ms == pytest.approx(np.std([4, 1, 3, 2, 10], ddof=1))
    assert timing.p90_ms == pytest.approx(np.percentile([4, 1, 3, 2, 10], 90))
    assert timing.to_dict()["fps"] == timing.fps and timing.to_dict()["runs"] == 5
    assert Timing((2.5,)).std_ms == 0.0
    assert timing.spread == pytest.approx((4.0 - 2.0) / 3.0)  # interquartile range over the median


def test_a_timing_spread_beyond_the_protocols_limit_is_noisy():
    steady, bursty = Timing((1.0, 1.01, 0.99, 1.0, 1.02)), Timing((1.0, 1.6, 0.9, 2.0, 1.1))
    protocol = TimingProtocol()
    assert not protocol.is_noisy(steady) and protocol.is_noisy(bursty)
    assert not TimingProtocol(max_spread=2.0).is_noisy(bursty)


@pytest.mark.parametrize("bad", [{"repeat": 0}, {"warmup": -1}, {"number": 0}, {"cooldown_ms": -5},
                                 {"max_spread": 0}, {"rounds": 0}, {"repeat": 4, "rounds": 5},
                                 {"repeat": 4, "rounds": 2, "sessions": 3}])
def test_timing_protocol_refuses_unusable_settings(bad):
    with pytest.raises(EdgesegError):
        TimingProtocol(**bad)


def test_a_protocol_in_rounds_with_a_drift_reference_says_so_and_differs_from_one_without():
    plain, drifting = TimingProtocol(), TimingProtocol(rounds=20, drift_reference=True, sessions=5)
    assert "rounds" not in plain.describe() and "drift reference" not in plain.describe()
    assert "in 20 rounds" in drifting.describe() and "drift reference" in drifting.describe()
    assert "over 5 RPC sessions" in drifting.describe()
    assert plain != drifting and TimingProtocol(**drifting.to_dict()) == drifting


def test_drift_correction_scales_each_round_by_the_references_nominal_over_its_time():
    # The device ran at half speed in round 2: both its samples and the reference doubled.
    samples = [(1.0, 1.2), (2.0, 2.4), (1.0, 1.2)]
    reference = [0.5, 1.0, 0.5]
    assert corrected_samples(samples, reference, 0.5) == pytest.approx((1.0, 1.2) * 3)
    assert round_speeds(reference, 0.5) == {"median": 1.0, "min": 0.5, "max": 1.0}
    with pytest.raises(ValueError):
        corrected_samples(samples, reference[:2], 0.5)


def test_a_drift_reference_round_trips_and_a_damaged_one_names_the_fix(tmp_path):
    reference = DriftReference(tmp_path, 0.0123, "decoder_proj:h=16")
    reference.save()
    assert DriftReference.load(tmp_path) == reference
    (tmp_path / REFERENCE_FILE).write_text('{"nominal_ms": 0}')
    with pytest.raises(ArtifactError, match="nominal time 0.*Delete"):
        DriftReference.load(tmp_path)
    (tmp_path / REFERENCE_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable.*Delete"):
        DriftReference.load(tmp_path)


def test_the_tracker_wire_constants_match_tvm():
    from tvm.rpc import base

    from runner import session

    assert session.TRACKER_MAGIC == base.RPC_TRACKER_MAGIC
    assert (session.TRACKER_SUCCESS, session.TRACKER_REQUEST, session.TRACKER_SUMMARY) == (
        base.TrackerCode.SUCCESS, base.TrackerCode.REQUEST, base.TrackerCode.SUMMARY)


def test_manifest_lists_every_file_and_round_trips(host_artifact):
    artifact = load_artifact(host_artifact, with_kernels=True)
    manifest = artifact.manifest
    on_disk = {p.relative_to(host_artifact).as_posix() for p in host_artifact.rglob("*")
               if p.is_file() and p.name != MANIFEST}  # fmt: skip
    assert set(manifest.files) == on_disk and "tuning/database_workload.json" in on_disk
    assert Manifest.from_dict(json.loads((host_artifact / MANIFEST).read_text())) == manifest
    assert manifest.inputs[0].name == "x" and manifest.outputs[0].shape == (1, 4, 16, 16)
    inputs, outputs = artifact.reference()
    assert inputs["x"].shape == (1, 3, 16, 16) and outputs[0].shape == (1, 4, 16, 16)
    assert {k.name for k in artifact.kernels()} == {"fused_conv2d_relu", "fused_conv2d1_add"}


def test_a_changed_file_fails_its_checksum(artifact_copy):
    with open(artifact_copy / MODEL_LIB, "r+b") as library:
        library.seek(200)
        library.write(b"\x00\xff")
    with pytest.raises(ArtifactError) as error:
        load_artifact(artifact_copy)
    assert "model.so" in error.value.problem and "checksum" in error.value.problem
    assert "Recompile" in error.value.fix


@pytest.mark.parametrize("name", [MODEL_LIB, REFERENCE, "tuning/database_workload.json"])
def test_a_missing_file_is_named(artifact_copy, name):
    (artifact_copy / name).unlink()
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.")) as error:
        load_artifact(artifact_copy)
    assert "missing" in error.value.problem and error.value.exit_code == 4


def test_kernel_files_are_required_only_for_per_kernel_timing(artifact_copy):
    manifest = load_artifact(artifact_copy).manifest
    (artifact_copy / KERNELS_JSON).unlink()
    write_manifest(artifact_copy, target=manifest.target, inputs=manifest.inputs,
                   outputs=manifest.outputs)  # fmt: skip
    assert load_artifact(artifact_copy).manifest.target == manifest.target
    with pytest.raises(ArtifactError, match="kernels.json"):
        load_artifact(artifact_copy, with_kernels=True)


def test_a_folder_without_manifest_is_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")


def test_time_callable_follows_the_protocol():
    from runner.timing import TimingProtocol, time_callable

    import time

    calls = []
    timing = time_callable(lambda: (calls.append(1), time.sleep(0.002)), TimingProtocol(warmup=2, repeat=4, number=3, min_repeat_ms=0))
    assert timing.runs == 4 and len(calls) == 2 + 4 * 3
    assert all(2.0 <= sample < 200.0 for sample in timing.samples_ms)  # ms per call: each call sleeps 2 ms


def test_collect_and_validate_time_in_rounds_beside_the_drift_reference_and_runner_bench_does_not():
    import argparse as ap

    from runner.cli_support import add_timing_flags, timing_protocol

    layers, networks = ap.ArgumentParser(), ap.ArgumentParser()
    add_timing_flags(layers, drift=True)
    add_timing_flags(networks)
    default = timing_protocol(layers.parse_args([]))
    assert default.drift_reference and default.rounds == default.repeat == 20  # one sample a round
    assert default.sessions == 5
    short = timing_protocol(layers.parse_args(["--repeat", "3"]))
    assert short.rounds == short.sessions == 3  # never more sessions than rounds
    raw = timing_protocol(layers.parse_args(["--timing-rounds", "4", "--timing-sessions", "2", "--no-drift-reference"]))
    assert raw.rounds == 4 and raw.sessions == 2 and not raw.drift_reference
    with pytest.raises(EdgesegError, match="--timing-rounds"):
        timing_protocol(layers.parse_args(["--repeat", "2", "--timing-rounds", "5"]))
    bench = timing_protocol(networks.parse_args([]))
    assert bench.rounds == bench.sessions == 1 and not bench.drift_reference
