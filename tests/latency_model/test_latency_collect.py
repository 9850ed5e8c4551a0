"""collect on the loopback farm: real export, TVM tuning over RPC, real timings; resume."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from compile.targets import resolve_target
from latency_model import layers as L
from latency_model.collect import collect
from latency_model.records import read_records
from runner.drift import DriftReference
from runner.errors import EdgesegError
from runner.timing import TimingProtocol

FAST = TimingProtocol(warmup=1, repeat=3)
DRIFT = TimingProtocol(warmup=1, repeat=3, rounds=3, drift_reference=True)  # collect's protocol, shortened
# One tuning task each: a MetaSchedule round costs 10-30 s here whatever the trial count.
TINY = [L.LayerNorm(4, 4, 8), L.ConvNormAct(8, 8, 8, 4, 1)]


@pytest.fixture(scope="module")
def collected(host_farm, tmp_path_factory):
    work = tmp_path_factory.mktemp("collect")
    preset = resolve_target("host")
    report = collect(TINY, host_farm.device, preset, work / "data.jsonl", work / "db",
                     trials_per_layer=1, protocol=DRIFT, progress=False)
    return work, preset, report


def test_collect_writes_one_sane_record_per_config(collected, host_farm):
    work, _, report = collected
    records = read_records(work / "data.jsonl")
    assert [r.key for r in records] == [c.key for c in TINY]
    assert len(report.measured) == 2 and report.skipped == 0
    for r in records:
        assert 0 < r.median_ms < 100 and r.runs == 3 and len(r.run_ms) == 3
        assert r.device_key == host_farm.device.key and r.target_preset == "host"
        assert r.tuning_trials >= 1 and r.tvm_version.startswith("0.27")
    assert any((work / "db").iterdir())  # the shared tuning database got the schedules
    assert report.measurements_per_hour > 0


def test_rerun_measures_nothing_new(collected, host_farm):
    work, preset, _ = collected
    again = collect(TINY, host_farm.device, preset, work / "data.jsonl", work / "db",
                    trials_per_layer=1, protocol=DRIFT, progress=False)
    assert again.measured == () and again.skipped == 2
    assert len(read_records(work / "data.jsonl")) == 2


def test_torn_last_line_is_cut_and_the_rest_resumes(collected, host_farm, tmp_path):
    work, preset, _ = collected
    data = tmp_path / "data.jsonl"  # untuned (trials 0) and the database is warm: fast
    collect(TINY, host_farm.device, preset, data, work / "db", trials_per_layer=0,
            protocol=FAST, progress=False)
    torn = json.dumps(read_records(data)[0].to_dict())[:40]
    with open(data, "a") as f:
        f.write(torn)  # a crash in the middle of writing a record
    extra = L.LayerNorm(4, 4, 12)
    report = collect([*TINY, extra], host_farm.device, preset, data, work / "db",
                     trials_per_layer=0, protocol=FAST, progress=False)
    assert [r.key for r in report.measured] == [extra.key] and report.skipped == 2
    assert report.measured[0].tuning_trials == 0
    assert [r.key for r in read_records(data)] == [c.key for c in [*TINY, extra]]


def test_records_carry_the_protocol_trials_and_source(collected):
    work, _, _ = collected
    for record in read_records(work / "data.jsonl"):
        assert record.protocol == DRIFT and record.trials_per_layer == 1
        assert record.model is None and record.input_size is None  # configs of no model


def test_layers_are_timed_in_rounds_beside_the_devices_drift_reference(collected):
    work, _, _ = collected
    reference = DriftReference.load(work / "db" / "drift_reference")  # built once, with the database
    assert reference.nominal_ms > 0 and "decoder_proj" in reference.what
    for record in read_records(work / "data.jsonl"):
        assert len(record.reference_ms) == 3 and all(r > 0 for r in record.reference_ms)  # one per round
        assert record.reference_nominal_ms == reference.nominal_ms


def test_a_rebuilt_drift_reference_cannot_add_records_in_another_unit(collected, host_farm, tmp_path):
    work, preset, _ = collected
    shutil.copytree(work / "db", tmp_path / "db")
    shutil.copy(work / "data.jsonl", tmp_path / "data.jsonl")
    rebuilt = DriftReference.load(tmp_path / "db" / "drift_reference")
    dataclasses.replace(rebuilt, nominal_ms=2 * rebuilt.nominal_ms).save()
    with pytest.raises(EdgesegError, match="two units"):
        collect([L.LayerNorm(4, 4, 12)], host_farm.device, preset, tmp_path / "data.jsonl", tmp_path / "db",
                trials_per_layer=1, protocol=DRIFT, progress=False)
    assert len(read_records(tmp_path / "data.jsonl")) == 2


def test_collecting_with_another_setting_into_the_same_file_is_refused(collected, host_farm,
                                                                       tmp_path):
    work, preset, _ = collected
    data = tmp_path / "data.jsonl"
    shutil.copy(work / "data.jsonl", data)
    with pytest.raises(EdgesegError, match="another timing setting.*trials per layer 1"):
        collect([L.LayerNorm(4, 4, 12)], host_farm.device, preset, data, work / "db",
                trials_per_layer=0, protocol=FAST, progress=False)
    assert len(read_records(data)) == 2  # nothing measured, nothing written


def test_widths_between_the_anchors_get_transferred_schedules(host_farm, tmp_path):
    """Three widths of one conv: the widest and the narrowest are tuned, the middle one is
    measured with a schedule transferred from them, as a pruned network's compile would get."""
    from compile.database import open_database

    widths = [L.ConvNormAct(8, 8, 8, c, 1) for c in (4, 12, 24)]
    preset = resolve_target("host")
    report = collect(widths, host_farm.device, preset, tmp_path / "data.jsonl", tmp_path / "db",
                     trials_per_layer=1, protocol=FAST, progress=False)
    trials = {r.config.cout: r.tuning_trials for r in report.measured}
    assert trials[4] >= 1 and trials[24] >= 1 and trials[12] == 0
    from compile.workload_structure import extents, structure_key

    db = open_database(tmp_path / "db", preset.target())
    workloads = {str(r.workload.mod): r.workload for r in db.get_all_tuning_records()}.values()
    # The conv kernels: input 1x8x8x8, then the weight, whose first extent is the width.
    convs = [w for w in workloads if extents(w.mod)[:4] == (1, 8, 8, 8)]
    (key,) = {structure_key(w.mod) for w in convs}
    searched = db.records_of_structure(key, preset.target(), tuned_only=True)
    assert sorted(ext[4] for _, _, ext in searched) == [4, 24]  # only the anchors were searched
    middle = [w for w in workloads if structure_key(w.mod) == key and extents(w.mod)[4] == 12]
    assert db.provenance(middle[0].mod, preset.target())["kind"] == "transferred"
    assert all(0 < r.median_ms < 100 for r in report.measured)
