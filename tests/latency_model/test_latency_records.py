import dataclasses
import json
import logging
import threading
from pathlib import Path

import pytest

from latency_cases import ONE_OF_EACH, make_record
from latency_model.records import (
    MeasurementLog,
    check_one_setting,
    installed_versions,
    read_records,
)
from runner.errors import EdgesegError
from runner.timing import TimingProtocol

ROOT = Path(__file__).resolve().parents[2]


def test_append_then_read_round_trips(tmp_path):
    log = MeasurementLog(tmp_path / "sub" / "data.jsonl")
    records = [make_record(c) for c in ONE_OF_EACH[:3]]
    log.extend(records)
    back = read_records(log.path)
    assert back == records
    line = json.loads(log.path.read_text().splitlines()[0])
    assert line["key"] == records[0].key and line["runs"] == 3 and line["run_ms"]
    assert {"target", "device_key", "median_ms", "std_ms", "tvm_version", "edgeseg_version",
            "utc_time", "target_preset"} <= set(line)


def test_torn_last_line_is_skipped_with_a_warning_then_cut_before_appending(tmp_path, caplog):
    path = tmp_path / "data.jsonl"
    log = MeasurementLog(path)
    log.extend(make_record(c) for c in ONE_OF_EACH[:2])
    whole = json.dumps(make_record(ONE_OF_EACH[2]).to_dict())
    with open(path, "a") as f:
        f.write(whole[: len(whole) // 2])  # a crash in the middle of a write
    with caplog.at_level(logging.WARNING):
        assert len(read_records(path)) == 2
    assert "torn last line" in caplog.text
    resumed = MeasurementLog(path)  # a new process resuming the collection
    resumed.append(make_record(ONE_OF_EACH[3]))
    assert [r.key for r in read_records(path)] == [c.key for c in
                                                  (ONE_OF_EACH[0], ONE_OF_EACH[1], ONE_OF_EACH[3])]


def test_a_valid_last_line_without_newline_is_kept_when_appending(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(make_record(ONE_OF_EACH[0]).to_dict()))  # no trailing newline
    MeasurementLog(path).append(make_record(ONE_OF_EACH[1]))
    assert len(read_records(path)) == 2


def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    good = json.dumps(make_record(ONE_OF_EACH[0]).to_dict())
    path.write_text(f"{good}\nnot json at all\n{good}\n")
    with pytest.raises(EdgesegError, match=r"data.jsonl, line 2"):
        read_records(path)
    with pytest.raises(EdgesegError):  # the writer refuses to append to it, too
        MeasurementLog(path).append(make_record(ONE_OF_EACH[1]))
    assert path.read_text().count("\n") == 3


def test_files_that_are_not_jsonl_are_edgeseg_errors(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("key,ms\na,1\nb,2\n")
    with pytest.raises(EdgesegError, match="line 1"):
        read_records(csv)
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 8)
    with pytest.raises(EdgesegError, match="not a text"):
        read_records(binary)
    with pytest.raises(EdgesegError, match="No measurement file"):
        read_records(tmp_path / "missing.jsonl")


def test_a_key_that_does_not_match_its_config_is_corrupt(tmp_path):
    path = tmp_path / "data.jsonl"
    data = make_record(ONE_OF_EACH[0]).to_dict()
    path.write_text(json.dumps({**data, "key": "conv:h=1"}) + "\n" + json.dumps(data) + "\n")
    with pytest.raises(EdgesegError, match="line 1"):
        read_records(path)


def test_threads_appending_at_once_write_whole_lines(tmp_path):
    log = MeasurementLog(tmp_path / "data.jsonl")
    records = [make_record(c, device_key=f"dev{i}") for i in range(4) for c in ONE_OF_EACH]
    chunks = [records[i::4] for i in range(4)]
    threads = [threading.Thread(target=log.extend, args=(chunk,)) for chunk in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    back = read_records(log.path)
    assert sorted((r.to_dict() for r in back), key=json.dumps) == \
        sorted((r.to_dict() for r in records), key=json.dumps)


def test_an_unparseable_last_line_with_its_newline_is_damage_not_a_crash(tmp_path):
    path = tmp_path / "data.jsonl"
    good = json.dumps(make_record(ONE_OF_EACH[0]).to_dict())
    path.write_text(f"{good}\n{good[:40]}\n")
    with pytest.raises(EdgesegError, match="line 2"):
        read_records(path)


def test_a_one_line_foreign_file_is_never_truncated(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some notes")
    with pytest.raises(EdgesegError, match="line 1"):
        MeasurementLog(path).append(make_record(ONE_OF_EACH[0]))
    assert path.read_text() == "just some notes"


def test_installed_versions_come_from_package_metadata():
    tvm_version, edgeseg_version = installed_versions()
    assert tvm_version.startswith("0.27") and edgeseg_version


OLD_LINE = ('{"key":"layer_norm:h=32,w=32,dim=32","config":{"type":"layer_norm","h":32,"w":32,'
            '"dim":32},"target_preset":"host","target":{"kind":"llvm","num-cores":2},'
            '"device_key":"host-cpu","median_ms":0.05,"std_ms":0.001,"runs":2,'
            '"run_ms":[0.05,0.051],"tuning_trials":0,"tvm_version":"0.27.0.post1",'
            '"edgeseg_version":"0.1.0","utc_time":"2026-11-26T07:28:37+00:00"}')


def test_records_written_before_settings_were_stored_read_as_unknown(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(OLD_LINE + "\n")
    (record,) = read_records(path)
    assert record.protocol is None and record.trials_per_layer is None
    assert record.model is None and record.input_size is None and record.tuning_trials == 0
    committed = sorted(ROOT.glob("bench/results/latency_model*/data.jsonl"))
    for data in committed:  # the measurements committed with the benchmarks still read
        assert read_records(data)


def test_settings_model_and_size_round_trip(tmp_path):
    record = dataclasses.replace(make_record(ONE_OF_EACH[0]), protocol=TimingProtocol(
        warmup=2, repeat=7, min_repeat_ms=10, rounds=7, drift_reference=True), trials_per_layer=8,
        model="segformer-b0", input_size=64, num_classes=8, threads=2, noisy=True,
        reference_ms=(0.5, 0.6, 0.5, 0.5, 0.7, 0.5, 0.5), reference_nominal_ms=0.5)
    log = MeasurementLog(tmp_path / "data.jsonl")
    log.append(record)
    line = json.loads(log.path.read_text())
    assert line["protocol"] == {"warmup": 2, "repeat": 7, "number": 1, "min_repeat_ms": 10,
                                "cooldown_ms": 0, "max_spread": 0.25, "rounds": 7, "drift_reference": True,
                                "sessions": 1}
    assert line["reference_ms"][4] == 0.7 and line["reference_nominal_ms"] == 0.5
    assert line["trials_per_layer"] == 8 and line["model"] == "segformer-b0"
    assert line["num_classes"] == 8 and line["threads"] == 2 and line["noisy"] is True
    assert read_records(log.path) == [record]


def test_one_setting_check_treats_unknown_as_a_setting_of_its_own():
    old = [make_record(c) for c in ONE_OF_EACH[:2]]
    check_one_setting(old, "old data")  # all unknown: one setting
    new = dataclasses.replace(old[1], protocol=TimingProtocol(), trials_per_layer=0)
    check_one_setting([new, new], "new data")
    with pytest.raises(EdgesegError, match=r"mixed\.jsonl.*unknown.*\] and \[warmup 3"):
        check_one_setting([old[0], new], "mixed.jsonl")
