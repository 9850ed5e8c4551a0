"""The device tuning database: MetaSchedule's records in one indexed SQLite file.

Why: MetaSchedule's `JSONDatabase` keeps two JSON-lines files and parses both whole at every
open (every workload's TIR, every record's trace replayed). A real device database grew to
2,748 workloads (134 MB) and 1,740 records and took 5.0 s to open, once per measured layer.
`DeviceDatabase` answers the same questions from an index and parses only what a query returns.

Layout: `DB_DIR/tuning.sqlite`, three tables.
- `meta(key, value)`: `schema_version`, `tvm_version` (records replay only on the TVM that
  wrote them), `target` (the kind, mtriple, mcpu and device the database serves, once known).
- `workloads(id, shash, structure, extents, mod_json)`: `shash` is `tvm_ffi.structural_hash`
  as text (rows of one hash are told apart with `structural_equal`), `structure` and `extents`
  come from `compile.workload_structure` (schedule transfer looks workloads up by structure),
  `mod_json` is `Workload.as_json()`, the line MetaSchedule's JSON database writes.
- `records(id, workload_id, run_secs, mean_secs, valid, trace_json, target, target_key,
  args_info, provenance, utc_time)`: the parts of `TuningRecord.as_json()` (`record_json`),
  plus the sort key (`mean_secs`, the mean of `run_secs` as MetaSchedule sorts), whether the
  record is valid by MetaSchedule's rule, the target's identity, and a provenance (JSON, e.g. a
  transferred schedule's donor; NULL for a record tuned here).

Concurrency: WAL journal and a 30 s busy timeout. Readers never block and are never blocked;
writers queue. A workload is committed inside an immediate (write-locked) transaction that looks
for it again first, so two processes committing one workload get one row, and every record
committed by any process is kept (tested with two processes writing at once). WAL needs a local
file system (not NFS). Within a process, `open_database` returns one shared object per folder.

A folder that holds only MetaSchedule's JSON pair is imported on first open; `export_json`
writes that pair back for other TVM tools (`python -m compile database export|import`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import tvm
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.database import PyDatabase, TuningRecord, Workload

from compile import workload_structure
from runner.errors import EdgesegError

logger = logging.getLogger(__name__)

FILENAME = "tuning.sqlite"
SCHEMA_VERSION = "1"
BUSY_TIMEOUT_S = 30.0
JSON_WORKLOADS = "database_workload.json"
JSON_RECORDS = "database_tuning_record.json"
# MetaSchedule's stand-in for a run time that was not measured (a build or run error).
MAX_MEAN_TIME = 1e10
TARGET_IDENTITY_KEYS = ("kind", "mtriple", "mcpu", "device")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS workloads (
    id INTEGER PRIMARY KEY, shash TEXT NOT NULL, structure TEXT, extents TEXT, mod_json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS workloads_shash ON workloads (shash);
CREATE INDEX IF NOT EXISTS workloads_structure ON workloads (structure);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY, workload_id INTEGER NOT NULL REFERENCES workloads (id),
    run_secs TEXT, mean_secs REAL NOT NULL, valid INTEGER NOT NULL, trace_json TEXT NOT NULL,
    target TEXT, target_key TEXT, args_info TEXT, provenance TEXT, utc_time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_best ON records (workload_id, mean_secs);
"""


def target_identity(target: Any) -> dict[str, str | None]:
    """What makes two targets the same device code: kind, mtriple, mcpu and device (not
    num-cores: one device database serves every thread count). `target` is a `Target` or its
    export/config dict."""
    if target is None:
        return {}
    config = target.export() if hasattr(target, "export") else target
    return {k: (None if config.get(k) is None else str(config.get(k))) for k in TARGET_IDENTITY_KEYS}


def _target_key(target: Any) -> str | None:
    return None if target is None else json.dumps(target_identity(target), sort_keys=True)


def record_json(record: TuningRecord) -> list:
    """`TuningRecord.as_json()` as MetaSchedule's JSON database writes it (`JSONDumps`): the
    index map of a weight-layout rewrite (a trace input once weights are prepacked) becomes its
    JSON-graph string, which the trace parser reads back; TVM's Python `as_json` cannot convert it."""
    from tvm.s_tir.meta_schedule import _ffi_api
    from tvm.s_tir.meta_schedule.utils import _json_de_tvm
    from tvm.tirx import IndexMap

    def plain(obj: Any) -> Any:
        if isinstance(obj, IndexMap):
            return tvm.ir.save_json(obj)
        if isinstance(obj, tvm_ffi.Array):
            return [plain(item) for item in obj]
        if isinstance(obj, tvm_ffi.Map):
            return {plain(k): plain(v) for k, v in obj.items()}
        return _json_de_tvm(obj)

    return plain(_ffi_api.TuningRecordAsJSON(record))


def _mean_and_validity(trace_json: list, run_secs: list | None) -> tuple[float, bool]:
    """MetaSchedule's sort key and validity (`TuningRecordNode::IsValid`): the trace has an
    instruction before any postprocessing, and some run time is not the 1e10 error stand-in.
    One deviation: a non-finite mean (an inf or nan run time) is invalid here, not last."""
    secs = [float(s) for s in run_secs or []]
    mean = sum(secs) / len(secs) if secs else MAX_MEAN_TIME
    insts = trace_json[0] if trace_json else []
    has_schedule = bool(insts) and insts[0][0] != "EnterPostproc"
    valid = has_schedule and any(s != MAX_MEAN_TIME for s in secs) and math.isfinite(mean)
    return (mean if math.isfinite(mean) else MAX_MEAN_TIME), valid


@derived_object
class DeviceDatabase(PyDatabase):
    """MetaSchedule database of one device and target, stored in `folder/tuning.sqlite`.

    Use `open_database(folder, target)` rather than this constructor: it shares one object per
    folder in a process and checks the target."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = Path(folder)
        self.path = self.folder / FILENAME
        self._lock = threading.RLock()
        self._depth = 0  # nesting of _write() blocks
        self._by_hash: dict[str, list[tuple[int, Workload]]] = {}
        self._by_id: dict[int, Workload] = {}
        self._unreplayable: set[str] = set()  # traces already warned about, once each
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
            self._sql(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._enable_wal()
            self._initialise()
        except sqlite3.OperationalError as err:
            raise EdgesegError(f"The tuning database {self.path} could not be opened: {err}.",
                               "If another command holds it for long, wait for it to finish; otherwise "
                               "check the folder is writable and on a local disk (SQLite WAL needs one).") from err
        except sqlite3.DatabaseError as err:
            raise EdgesegError(
                f"{self.path} is not a readable tuning database ({err}).",
                f"Move it away or delete it (its records are lost; a MetaSchedule JSON pair in {self.folder} "
                "is imported again on the next open), or point --database at another folder.",
            ) from err
        self.meta = dict(self._sql("SELECT key, value FROM meta"))
        self._check_version()

    # ---- opening -------------------------------------------------------------------------

    def _enable_wal(self) -> None:
        """Switch the file to WAL, retried until the busy timeout: while another process opening
        the same new file holds its lock, SQLite refuses the switch at once ("database is
        locked") without waiting in its busy handler (seen with two writers opening one folder)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._sql("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _initialise(self) -> None:
        """Create the schema once, and import a MetaSchedule JSON pair found beside it, inside one
        write transaction: of two processes opening a new folder at once, one does both. An
        initialised database is only read (no write lock at open)."""
        if self._one("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'") and self._one(
                "SELECT 1 FROM meta WHERE key='schema_version'"):
            return
        with self._write():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._sql(statement)
            if self._one("SELECT 1 FROM meta WHERE key='schema_version'"):
                return
            self._set_meta("schema_version", SCHEMA_VERSION)
            self._set_meta("tvm_version", tvm.__version__)
            if (self.folder / JSON_WORKLOADS).is_file():
                workloads, records = import_json(self.folder, self)
                self._set_meta("imported_from_json", str(self.folder))
                logger.info("imported MetaSchedule's JSON database in %s: %d workloads, %d records",
                            self.folder, workloads, records)

    def _check_version(self) -> None:
        version = self.meta.get("tvm_version")
        if version != tvm.__version__:
            raise EdgesegError(
                f"The tuning database {self.path} was written by TVM {version}; this is TVM {tvm.__version__}, "
                f"and records from TVM {version} may not replay on {tvm.__version__}.",
                "Start a new database folder with --database NEW_FOLDER, or delete this one to retune.",
            )
        if self.meta.get("schema_version") != SCHEMA_VERSION:
            raise EdgesegError(
                f"The tuning database {self.path} has layout version {self.meta.get('schema_version')}, "
                f"this edgeseg reads version {SCHEMA_VERSION}.",
                "Use the edgeseg that wrote it, or start a new database folder with --database.",
            )

    def check_target(self, target: Any) -> None:
        """Refuse a target other than the one the database serves; adopt it when none is known."""
        if target is None:
            return
        wanted = target_identity(target)
        known = self.meta.get("target")
        if known is None:
            with self._write():
                row = self._one("SELECT value FROM meta WHERE key='target'")
                if row is None:
                    self._set_meta("target", json.dumps(wanted, sort_keys=True))
                known = row[0] if row else json.dumps(wanted, sort_keys=True)
            self.meta["target"] = known
        if json.loads(known) != wanted:
            raise EdgesegError(
                f"The tuning database {self.folder} serves target {_describe(json.loads(known))}, "
                f"not {_describe(wanted)}: a database serves one device and target.",
                "Pass --database with a folder of its own for this target (the default folder is per "
                "device key and target preset), or use the target the database was made for.",
            )

    def _set_meta(self, key: str, value: str) -> None:
        self._sql("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taken at its start (BEGIN IMMEDIATE); nested blocks join it."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._sql("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                if self._conn.in_transaction:
                    self._sql("ROLLBACK")
                raise
            else:
                if self._conn.in_transaction:
                    self._sql("COMMIT")
            finally:
                self._depth = 0

    def _sql(self, statement: str, args: tuple = ()) -> list[tuple]:
        """Every statement goes through here: one connection, used by one thread at a time."""
        with self._lock:
            return self._conn.execute(statement, args).fetchall()

    def _one(self, statement: str, args: tuple = ()) -> tuple | None:
        rows = self._sql(statement, args)
        return rows[0] if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def backup_to(self, path: Path) -> None:
        """Write a consistent copy of the whole file to `path` with SQLite's backup API: a file copy
        could catch another process's write half-way through the WAL."""
        out = sqlite3.connect(str(path))
        try:
            with self._lock:
                self._conn.backup(out)
        finally:
            out.close()

    # ---- workloads -----------------------------------------------------------------------

    def _find(self, mod: Any) -> tuple[int, Workload] | None:
        """The committed workload equal to `mod`, parsed once per process."""
        shash = str(tvm_ffi.structural_hash(mod))
        cached = self._by_hash.setdefault(shash, [])
        for wid, workload in cached:
            if tvm_ffi.structural_equal(workload.mod, mod):
                return wid, workload
        known = [wid for wid, _ in cached]
        rows = self._sql(
            f"SELECT id, mod_json FROM workloads WHERE shash=? AND id NOT IN ({','.join('?' * len(known))})",
            (shash, *known),
        )
        for wid, mod_json in rows:
            workload = self._remember(wid, shash, Workload.from_json(json.loads(mod_json)))
            if tvm_ffi.structural_equal(workload.mod, mod):
                return wid, workload
        return None

    def _remember(self, wid: int, shash: str, workload: Workload) -> Workload:
        with self._lock:
            self._by_hash.setdefault(shash, []).append((wid, workload))
            self._by_id[wid] = workload
        return workload

    def _workload_by_id(self, wid: int) -> Workload:
        if wid not in self._by_id:
            shash, mod_json = self._one("SELECT shash, mod_json FROM workloads WHERE id=?", (wid,))
            self._remember(wid, shash, Workload.from_json(json.loads(mod_json)))
        return self._by_id[wid]

    def has_workload(self, mod: Any) -> bool:
        return self._find(mod) is not None

    def commit_workload(self, mod: Any) -> Workload:
        """Commit `mod` (kept once per structure) and return a workload of `mod` itself: callers,
        MetaSchedule's own measure callback among them, pair it with a trace made on `mod`, and
        the stored workload's blocks may be named otherwise (`_for_workload` renames on insert)."""
        stored = self._commit_workload(mod)[1]
        return stored if stored.mod.same_as(mod) else Workload(mod)

    def _commit_workload(self, mod: Any) -> tuple[int, Workload]:
        found = self._find(mod)
        if found is not None:
            return found
        with self._write():
            found = self._find(mod)  # another process may have committed it meanwhile
            if found is not None:
                return found
            workload = Workload(mod)
            try:
                structure = workload_structure.structure_key(mod)
                extents = json.dumps(list(workload_structure.extents(mod)))
            except ValueError:  # not a single-PrimFunc workload: no structure to transfer from
                structure, extents = None, None
            shash = str(tvm_ffi.structural_hash(mod))
            with self._lock:
                wid = self._conn.execute(
                    "INSERT INTO workloads (shash, structure, extents, mod_json) VALUES (?, ?, ?, ?)",
                    (shash, structure, extents, json.dumps(workload.as_json())),
                ).lastrowid
            return wid, self._remember(wid, shash, workload)

    # ---- records -------------------------------------------------------------------------

    def commit_tuning_record(self, record: TuningRecord) -> None:
        self._insert(record, None)

    def commit_transferred(self, record: TuningRecord, provenance: dict) -> None:
        """Commit a record made elsewhere than by tuning this workload (a schedule transferred
        from a donor workload), with where it came from, e.g. {"kind": "transferred",
        "donor": "<shash>", "donor_task": name}."""
        self._insert(record, json.dumps(provenance, sort_keys=True))

    def _insert(self, record: TuningRecord, provenance: str | None, dedupe: bool = False) -> bool:
        wid, stored = self._commit_workload(record.workload.mod)
        record = _for_workload(record, stored)
        if record is None:
            return False
        trace_json, run_secs, target, args_info = record_json(record)
        mean, valid = _mean_and_validity(trace_json, run_secs)
        row = (wid, json.dumps(run_secs), mean, int(valid), json.dumps(trace_json), json.dumps(target),
               _target_key(target), json.dumps(args_info), provenance,
               datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        with self._write():
            if dedupe and self._one(
                "SELECT 1 FROM records WHERE workload_id=? AND run_secs=? AND trace_json=? AND target IS ?",
                (wid, row[1], row[4], row[5]),
            ):
                return False
            self._sql(
                "INSERT INTO records (workload_id, run_secs, mean_secs, valid, trace_json, target, target_key, "
                "args_info, provenance, utc_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        return True

    def _record(self, workload: Workload, trace_json: str, run_secs: str, target: str,
                args_info: str) -> TuningRecord | None:
        """The stored row as a record of `workload`; None (with a warning) for a row kept before
        records were renamed to their stored workload (`_for_workload`), whose trace does not replay."""
        parts = [json.loads(trace_json), json.loads(run_secs), json.loads(target), json.loads(args_info)]
        try:
            return TuningRecord.from_json(parts, workload)
        except RuntimeError as error:  # TVM's ScheduleError
            if trace_json not in self._unreplayable:
                self._unreplayable.add(trace_json)
                logger.warning("a tuning record in %s does not replay on its workload (%s); skipped",
                               self.folder, str(error).splitlines()[0] if str(error) else type(error).__name__)
            return None

    _COLUMNS = "trace_json, run_secs, target, args_info"

    def _best_rows(self, wid: int, target: Any, limit: int, columns: str) -> list[tuple]:
        where, args = "workload_id=? AND valid=1", [wid]
        if target is not None:
            where += " AND target_key=?"
            args.append(_target_key(target))
        return self._sql(f"SELECT {columns} FROM records WHERE {where} ORDER BY mean_secs, id LIMIT ?",
                                  (*args, limit))

    def get_top_k(self, workload: Workload, top_k: int) -> list[TuningRecord]:
        if top_k < 0:
            raise ValueError("top_k must be non-negative")
        found = self._find(workload.mod) if top_k else None
        if found is None:
            return []
        wid, stored = found
        records = (self._record(stored, *row) for row in self._best_rows(wid, None, top_k, self._COLUMNS))
        return [record for record in records if record is not None]

    def get_all_tuning_records(self) -> list[TuningRecord]:
        rows = self._sql(f"SELECT workload_id, {self._COLUMNS} FROM records ORDER BY mean_secs, id")
        records = (self._record(self._workload_by_id(wid), *rest) for wid, *rest in rows)
        return [record for record in records if record is not None]

    def __len__(self) -> int:
        return self._one("SELECT COUNT(*) FROM records")[0]

    # ---- what schedule transfer asks -----------------------------------------------------

    def has_record(self, mod: Any, target: Any = None) -> bool:
        """Whether the workload has a valid record (for `target`'s identity, when given)."""
        found = self._find(mod)
        return found is not None and bool(self._best_rows(found[0], target, 1, "1"))

    def provenance(self, mod: Any, target: Any = None) -> dict | None:
        """Where the workload's best valid record came from; None for a record tuned here or
        when there is no record."""
        found = self._find(mod)
        rows = self._best_rows(found[0], target, 1, "provenance") if found else []
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    def records_of_structure(self, structure: str, target: Any = None, near: tuple[int, ...] | None = None,
                             limit: int = 50, tuned_only: bool = False, sketches: int = 1,
                             ) -> list[tuple[Workload, TuningRecord, tuple[int, ...]]]:
        """The best valid record of the workloads with that structure key, with their extents:
        the `limit` nearest to the extents `near` (by `workload_structure.shape_distance`), else the first by commit
        order. `sketches` > 1 adds, after each workload's best, the best record of each of its
        other design spaces (`sketch`), fastest first, up to `sketches` rows per workload: a design
        that lost at the donor's shape may fit another shape better. `tuned_only` leaves out records
        that were themselves transferred, so a transfer always starts from a searched schedule,
        never from a copy of a copy. Only the workloads returned are parsed."""
        kept, args = "valid = 1", []
        if target is not None:
            kept += " AND target_key = ?"
            args.append(_target_key(target))
        if tuned_only:
            kept += " AND provenance IS NULL"
        # Which workloads qualify, from the index alone; their records only for those returned.
        rows = self._sql(f"SELECT w.id, w.extents FROM workloads w WHERE w.structure = ? AND EXISTS "
                         f"(SELECT 1 FROM records WHERE workload_id = w.id AND {kept}) ORDER BY w.id",
                         (structure, *args))
        found = [(wid, tuple(json.loads(extents))) for wid, extents in rows]
        if near is not None:
            found.sort(key=lambda row: workload_structure.shape_distance(near, row[1]))
        out = []
        for wid, extents in found[:limit]:
            candidates = self._sql(f"SELECT {self._COLUMNS} FROM records WHERE workload_id = ? AND {kept} "
                                   "ORDER BY mean_secs, id LIMIT ?", (wid, *args, 1 if sketches == 1 else 256))
            distinct = {}
            for row in candidates:  # fastest first: the first row of each design space is its best
                distinct.setdefault(sketch(row[0]), row)
            workload = self._workload_by_id(wid)
            for row in list(distinct.values())[:sketches]:
                record = self._record(workload, *row)
                if record is not None:
                    out.append((workload, record, extents))
        return out

    # ---- bulk access for import/export ---------------------------------------------------

    def bulk(self):
        """One write transaction around many commits (an import)."""
        return self._write()

    def dump_rows(self) -> tuple[list[tuple[int, str]], list[tuple]]:
        """(workload id, mod_json) in commit order and every record's (workload id, trace_json,
        run_secs, target, args_info), without parsing any of them."""
        workloads = self._sql("SELECT id, mod_json FROM workloads ORDER BY id")
        records = self._sql(f"SELECT workload_id, {self._COLUMNS} FROM records ORDER BY id")
        return workloads, records


def sketch(trace_json: str) -> str:
    """A stored trace's design space: its instructions up to postprocessing, without their
    sampled decisions (two records of one sketch differ only in tile sizes, unroll depth and
    the like; another sketch fuses, caches or parallelises otherwise)."""
    instructions, _decisions = json.loads(trace_json)
    kinds = [inst[0] for inst in instructions]
    end = kinds.index("EnterPostproc") if "EnterPostproc" in kinds else len(kinds)
    return json.dumps(instructions[:end])


def _describe(identity: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in identity.items() if v is not None) or "(none)"


_OPEN: dict[tuple[int, str], tuple[Any, int]] = {}
_OPEN_LOCK = threading.Lock()


def _for_workload(record: TuningRecord, stored: Workload) -> TuningRecord | None:
    """`record` as a record of `stored`, the committed workload structurally equal to its own.
    Structural equality ignores names, and blocks are named after the variables that fed the
    kernel (`lv5_sum` here, `input_sum` there), while a trace finds its blocks by name: a trace
    kept as it came would not replay on the stored workload. None (with a warning) if the block
    lists differ."""
    if record.workload.mod.same_as(stored.mod):
        return record
    trace = workload_structure.rename_blocks(record.trace, record.workload.mod, stored.mod)
    if trace is None:
        logger.warning("a tuning record's blocks do not match its stored workload's; record not kept")
        return None
    if trace is record.trace:
        return record
    return TuningRecord(trace, stored, record.run_secs, record.target, record.args_info)


def open_database(path: Path, target: Any = None) -> DeviceDatabase:
    """The device's tuning database in folder `path` (created empty when missing, imported from
    a MetaSchedule JSON pair there on first open). One object per folder and process. With
    `target`, a database made for another target is refused."""
    folder = Path(path).expanduser().resolve()
    key = (os.getpid(), str(folder))  # a forked child must not share its parent's connection
    with _OPEN_LOCK:
        db, inode = _OPEN.get(key, (None, None))
        if db is None or _inode(folder / FILENAME) != inode:  # deleted or replaced meanwhile
            db = DeviceDatabase(str(folder))
            _OPEN[key] = (db, _inode(folder / FILENAME))
    db.check_target(target)
    return db


def snapshot_database(source: Path, dest: Path) -> int:
    """Make folder `dest` a copy of the tuning database in folder `source` (replacing what `dest`
    held), taken as one consistent snapshot even while another process writes `source`; returns
    its record count. Benchmarks that must give every network the same schedules to start from
    compile each into a fresh snapshot of one base, so no network inherits another's tuning."""
    origin = open_database(source)
    dest = Path(dest).expanduser().resolve()
    if dest == origin.folder.resolve():
        raise EdgesegError(f"Cannot snapshot the tuning database {dest} onto itself.", "Name another folder.")
    dest.mkdir(parents=True, exist_ok=True)
    with _OPEN_LOCK:  # this process's connection to the old copy must not outlive it
        stale, _ = _OPEN.pop((os.getpid(), str(dest)), (None, None))
    if stale is not None:
        stale.close()
    partial = dest / (FILENAME + ".partial")
    partial.unlink(missing_ok=True)
    origin.backup_to(partial)
    for leftover in (dest / (FILENAME + "-wal"), dest / (FILENAME + "-shm")):
        leftover.unlink(missing_ok=True)
    os.replace(partial, dest / FILENAME)
    return len(open_database(dest))


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def import_json(json_dir: Path, db: DeviceDatabase) -> tuple[int, int]:
    """Add MetaSchedule's JSON pair in `json_dir` to `db` (records already there are skipped);
    returns the workloads and records read."""
    json_dir = Path(json_dir)
    workloads_path, records_path = json_dir / JSON_WORKLOADS, json_dir / JSON_RECORDS
    if not workloads_path.is_file():
        raise EdgesegError(f"{json_dir} holds no {JSON_WORKLOADS}.",
                           "Point at a folder that MetaSchedule's JSONDatabase wrote.")
    lines = [line for line in workloads_path.read_text().splitlines() if line.strip()]
    workloads = [Workload.from_json(json.loads(line)) for line in lines]
    count = 0
    with db.bulk():
        for workload in workloads:
            db.commit_workload(workload.mod)
        if records_path.is_file():
            for number, line in enumerate(records_path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    index, record_json = json.loads(line)
                    record = TuningRecord.from_json(record_json, workloads[index])
                except (ValueError, IndexError, TypeError) as err:
                    raise EdgesegError(f"Line {number} of {records_path} is not a tuning record ({err}).",
                                       "Repair or remove that line, then import again.") from err
                db._insert(record, None, dedupe=True)
                count += 1
    return len(workloads), count


def export_json(db: DeviceDatabase, json_dir: Path) -> tuple[int, int]:
    """Write every workload and record of `db` as MetaSchedule's JSON pair in `json_dir` (which
    `ms.database.JSONDatabase(work_dir=json_dir)` reads); returns the counts written."""
    json_dir = Path(json_dir)
    json_dir.mkdir(parents=True, exist_ok=True)
    workloads, records = db.dump_rows()
    index = {wid: i for i, (wid, _) in enumerate(workloads)}
    (json_dir / JSON_WORKLOADS).write_text("".join(f"{mod_json}\n" for _, mod_json in workloads))
    lines = []
    for wid, *parts in records:
        record = [json.loads(p) for p in parts]
        lines.append(json.dumps([index[wid], record]) + "\n")
    (json_dir / JSON_RECORDS).write_text("".join(lines))
    return len(workloads), len(records)


def json_database(folder: Path) -> Any:
    """MetaSchedule's own JSON database in `folder` (created with its folder when missing)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(folder), allow_missing=True)
