"""compile.database: the SQLite device tuning database against MetaSchedule's JSON database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tvm
from tvm.s_tir import meta_schedule as ms

from compile.database import (DeviceDatabase, FILENAME, export_json, import_json, json_database, open_database,
                              snapshot_database)
from compile.workload_structure import structure_key
from helpers.tuning_records import TARGET, best, matmul, record, relu
from runner.errors import EdgesegError

REPO = Path(__file__).resolve().parents[1]


def test_top_k_matches_metaschedule_json_database_on_invalid_and_tied_records(tmp_path):
    sqlite_db, json_db = open_database(tmp_path / "sqlite", TARGET), json_database(tmp_path / "json")
    mod, failed_only = matmul(16, 8, 8), matmul(8, 8, 8)
    for db in (sqlite_db, json_db):
        for secs in ([3e-4], [1e10], [2e-4, 4e-4], None, [1e-4, 1e10], [5e-5, 5e-5]):
            db.commit_tuning_record(record(db, mod, secs))
        db.commit_tuning_record(record(db, failed_only, [1e10]))
    tops = []
    for db in (sqlite_db, json_db):
        assert len(db) == 7
        tops.append([[round(float(s), 9) for s in r.run_secs] for r in db.get_top_k(db.commit_workload(mod), 10)])
        assert best(db, failed_only) is None and best(db, matmul(4, 4, 4)) is None
        assert db.get_top_k(db.commit_workload(mod), 0) == []
    # Same order, ties (3e-4 against the mean of 2e-4 and 4e-4) included; [1e-4, 1e10] has a
    # measured run, so it is valid, with a mean of 5e9: last.
    assert tops[0] == tops[1]
    assert tops[0][0] == [5e-5, 5e-5] and tops[0][-1] == [1e-4, 1e10] and len(tops[0]) == 4
    assert not sqlite_db.has_record(failed_only, TARGET) and sqlite_db.has_record(mod, TARGET)
    assert sqlite_db.query_schedule(mod, TARGET, "main") is not None
    assert sqlite_db.query_ir_module(mod, TARGET, "main") is not None
    assert len(sqlite_db.get_all_tuning_records()) == 7


def test_one_object_per_folder_and_reopening_reads_what_was_committed(tmp_path):
    db = open_database(tmp_path / "db", TARGET)
    assert open_database(tmp_path / "x" / ".." / "db") is db
    db.commit_tuning_record(record(db, matmul(16, 8, 8), [1e-4]))
    fresh = DeviceDatabase(str(tmp_path / "db"))  # what another process sees
    assert fresh is not db and len(fresh) == 1 and best(fresh, matmul(16, 8, 8)) == [1e-4]


def test_records_of_structure_returns_that_structure_only_with_extents(tmp_path):
    db = open_database(tmp_path / "db", TARGET)
    for m, k, n in ((16, 8, 8), (32, 8, 16), (64, 16, 8)):
        for secs in ([2e-4], [1e-4], [1e10]):
            db.commit_tuning_record(record(db, matmul(m, k, n), secs))
    db.commit_tuning_record(record(db, relu(64), [1e-5]))
    db.commit_tuning_record(record(db, matmul(4, 4, 4), [1e10]))  # no valid record: left out
    found = db.records_of_structure(structure_key(matmul(2, 2, 2)))
    assert sorted(extents for _, _, extents in found) == [(16, 8, 8, 8, 16, 8), (32, 8, 8, 16, 32, 16),
                                                         (64, 16, 16, 8, 64, 8)]
    for workload, rec, extents in found:
        assert [int(d) for p in workload.mod["main"].params for d in p.shape] == list(extents)
        assert [round(float(s), 9) for s in rec.run_secs] == [1e-4]  # each workload's best
    assert len(db.records_of_structure(structure_key(relu(8)))) == 1
    assert db.records_of_structure(structure_key(matmul(2, 2, 2)), target=TARGET, limit=2)[1:] != []
    other = tvm.target.Target({"kind": "llvm", "mcpu": "cortex-a76", "mtriple": "aarch64-linux-gnu",
                               "num-cores": 4})
    assert db.records_of_structure(structure_key(matmul(2, 2, 2)), target=other) == []


def test_records_of_structure_offers_each_design_spaces_best_after_the_workloads_best(tmp_path):
    db = open_database(tmp_path / "db", TARGET)
    mod = matmul(16, 8, 8)
    for secs, loop in (([3e-4], 0), ([1e-4], 0), ([4e-4], 1), ([2e-4], 1)):
        db.commit_tuning_record(record(db, mod, secs, loop=loop))

    def times(found):
        return [round(float(rec.run_secs[0]), 9) for _, rec, _ in found]

    assert times(db.records_of_structure(structure_key(mod))) == [1e-4]
    assert times(db.records_of_structure(structure_key(mod), sketches=2)) == [1e-4, 2e-4]
    assert times(db.records_of_structure(structure_key(mod), sketches=5)) == [1e-4, 2e-4]  # two sketches only


def test_transferred_record_carries_its_provenance(tmp_path):
    db = open_database(tmp_path / "db", TARGET)
    tuned, new = matmul(16, 8, 8), matmul(24, 8, 8)
    db.commit_tuning_record(record(db, tuned, [1e-4]))
    origin = {"kind": "transferred", "donor": "123", "donor_task": "matmul_16"}
    db.commit_transferred(record(db, new, [2e-4]), origin)
    assert db.provenance(new, TARGET) == origin and db.provenance(tuned, TARGET) is None
    assert db.provenance(matmul(4, 4, 4), TARGET) is None
    db.commit_tuning_record(record(db, new, [1e-4]))  # tuned afterwards, and faster: now the best
    assert db.provenance(new, TARGET) is None


def test_a_snapshot_starts_equal_to_its_source_and_then_goes_its_own_way(tmp_path):
    source = open_database(tmp_path / "base", TARGET)
    tuned, other = matmul(16, 8, 8), matmul(24, 8, 8)
    source.commit_tuning_record(record(source, tuned, [1e-4]))
    assert snapshot_database(tmp_path / "base", tmp_path / "copy") == 1
    copy = open_database(tmp_path / "copy", TARGET)
    assert best(copy, tuned) == [1e-4]
    copy.commit_tuning_record(record(copy, other, [2e-4]))  # a network's own tuning stays in its copy
    assert best(source, other) is None and len(source) == 1
    source.commit_tuning_record(record(source, relu(64), [1e-6]))
    assert snapshot_database(tmp_path / "base", tmp_path / "copy") == 2  # a fresh copy forgets the old one
    fresh = open_database(tmp_path / "copy", TARGET)
    assert fresh is not copy and best(fresh, other) is None and best(fresh, tuned) == [1e-4]
    with pytest.raises(EdgesegError, match="onto itself"):
        snapshot_database(tmp_path / "base", tmp_path / "base")


def test_another_tvm_version_is_refused(tmp_path):
    open_database(tmp_path / "db", TARGET)
    with sqlite3.connect(tmp_path / "db" / FILENAME) as conn:
        conn.execute("UPDATE meta SET value='0.19.0' WHERE key='tvm_version'")
    with pytest.raises(EdgesegError, match="TVM 0.19.0") as err:
        DeviceDatabase(str(tmp_path / "db"))
    assert "--database" in err.value.fix


def test_another_target_is_refused_and_thread_counts_are_not_another_target(tmp_path):
    open_database(tmp_path / "db", TARGET)
    two_more_cores = tvm.target.Target({"kind": "llvm", "mcpu": "znver4", "num-cores": 4})
    assert open_database(tmp_path / "db", two_more_cores) is not None
    with pytest.raises(EdgesegError, match="mcpu=znver4") as err:
        open_database(tmp_path / "db", tvm.target.Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2}))
    assert "--database" in err.value.fix
    with pytest.raises(EdgesegError, match="serves target"):  # also a process that opens it afresh
        DeviceDatabase(str(tmp_path / "db")).check_target({"kind": "opencl", "device": "mali"})


def test_a_corrupt_file_is_refused_naming_it(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / FILENAME).write_bytes(b"not a database at all, " * 100)
    with pytest.raises(EdgesegError, match=FILENAME) as err:
        open_database(tmp_path / "db")
    assert "delete" in err.value.fix


def test_a_metaschedule_json_folder_is_imported_on_first_open(tmp_path, caplog):
    folder = tmp_path / "db"
    old = json_database(folder)
    for m in (16, 32):
        old.commit_tuning_record(record(old, matmul(m, 8, 8), [m * 1e-5]))
    old.commit_tuning_record(record(old, matmul(16, 8, 8), [1e10]))
    with caplog.at_level("INFO", logger="compile.database"):
        db = open_database(folder, TARGET)
    assert "2 workloads, 3 records" in caplog.text
    assert len(db) == 3 and best(db, matmul(32, 8, 8)) == [32e-5]
    assert len(DeviceDatabase(str(folder))) == 3  # imported once, not at every open


def test_export_then_import_keeps_every_workload_and_record(tmp_path):
    db = open_database(tmp_path / "db", TARGET)
    for m, secs in ((16, [1e-4]), (16, [3e-4]), (32, [1e10]), (48, None)):
        db.commit_tuning_record(record(db, matmul(m, 8, 8), secs))
    db.commit_workload(relu(8))  # a workload without records
    assert export_json(db, tmp_path / "json") == (4, 4)
    readback = ms.database.JSONDatabase(work_dir=str(tmp_path / "json"), allow_missing=False)
    assert len(readback) == 4 and readback.has_workload(relu(8)) and best(readback, matmul(16, 8, 8)) == [1e-4]
    again = open_database(tmp_path / "again")
    assert import_json(tmp_path / "json", again) == (4, 4)
    assert import_json(tmp_path / "json", again) == (4, 4) and len(again) == 4  # no duplicates
    assert again.dump_rows()[0][1] == db.dump_rows()[0][1]  # same workloads, same order
    assert sorted(r[1:] for r in again.dump_rows()[1]) == sorted(r[1:] for r in db.dump_rows()[1])


def test_cli_exports_and_imports(tmp_path, capsys):
    from compile.cli import main

    db = open_database(tmp_path / "db", TARGET)
    db.commit_tuning_record(record(db, matmul(16, 8, 8), [1e-4]))
    assert main(["database", "export", str(tmp_path / "db"), str(tmp_path / "json")]) == 0
    assert main(["database", "import", str(tmp_path / "json"), str(tmp_path / "db2")]) == 0
    assert "imported 1 workloads and 1 records" in capsys.readouterr().out
    assert best(open_database(tmp_path / "db2"), matmul(16, 8, 8)) == [1e-4]
    assert main(["database", "export", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2


WRITER = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    from helpers.tuning_records import matmul, record
    from compile.database import open_database
    db = open_database(sys.argv[1])
    start = float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.005)
    for i in range({count}):
        mod = matmul(16, 8, 8) if i % 2 else matmul(8 * (i % 5 + 1), int(sys.argv[2]), 8)
        db.commit_tuning_record(record(db, mod, [1e-4 * (i + 1)]))
    print(len(db))
""")


def test_opening_waits_for_another_process_that_holds_a_new_file_locked(tmp_path):
    """SQLite refuses the switch to WAL at once while another connection writes a new file."""
    import sqlite3
    import threading

    (tmp_path / "db").mkdir()
    other = sqlite3.connect(str(tmp_path / "db" / "tuning.sqlite"), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE scratch(x)")
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    try:
        db = DeviceDatabase(str(tmp_path / "db"))
    finally:
        release.join()
        other.close()
    assert len(db) == 0 and db.meta["schema_version"]


def test_two_processes_writing_at_once_lose_no_record(tmp_path):
    import time

    count = 60
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO), tests=str(REPO / "tests"), count=count))
    start = time.time() + 4  # both past TVM's import before the first commit
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "db"), str(k), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (4, 12)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    db = DeviceDatabase(str(tmp_path / "db"))
    assert len(db) == 2 * count
    # matmul(16, 8, 8), committed by both, is one workload: 5 + 5 others + 1 shared.
    assert len(db.dump_rows()[0]) == 11
    assert len(db.get_top_k(db.commit_workload(matmul(16, 8, 8)), 1000)) == count


@pytest.fixture(scope="module")
def tuned_tiny(host_farm, tmp_path_factory):
    """TinyConvNet tuned for the host with one trial per kernel into a DeviceDatabase."""
    from compile.build import lower
    from compile.frontend import load_model
    from compile.targets import resolve_target
    from compile.tuning import tune
    from helpers.tiny_models import TinyConvNet, export_onnx

    work = tmp_path_factory.mktemp("tuned-tiny")
    preset = resolve_target("host")
    lowered = lower(load_model(export_onnx(TinyConvNet(), work / "conv.onnx"), None, work).mod, preset)
    report = tune(lowered, preset, lambda: host_farm.device, work / "db", trials=0, trials_per_task=1)
    return preset, lowered, work / "db", report


def test_a_real_tuning_goes_into_the_database_and_is_applied_from_it(tuned_tiny, tmp_path):
    from compile.build import apply_database

    preset, lowered, db_dir, report = tuned_tiny
    db = open_database(db_dir, preset.target())
    assert isinstance(db, ms.database.Database) and (db_dir / FILENAME).is_file()
    assert report.trials >= len(report.tasks) and all(t.best_us for t in report.tasks)
    assert len(db) >= report.trials
    _, status = apply_database(lowered, preset, db)
    assert status and all(status.values())
    # The export replays in MetaSchedule's own database: the same kernels get tuned code.
    export_json(db, tmp_path / "json")
    _, from_json = apply_database(lowered, preset, ms.database.JSONDatabase(work_dir=str(tmp_path / "json")))
    assert from_json == status
    assert json.loads(db.meta["target"])["mcpu"] == str(preset.target().export()["mcpu"])


def test_database_help_imports_no_tvm():
    code = ("import sys\nfrom compile.cli import main\ntry:\n    main(['database', 'export', '--help'])\n"
            "except SystemExit:\n    pass\nprint('tvm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    assert "usage: python -m compile database export" in out and out.strip().splitlines()[-1] == "False"
