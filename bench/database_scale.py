"""Open and query cost of the SQLite device tuning database at N records, against MetaSchedule's
JSONDatabase (goal of issue 12: open + query < 0.5 s at 100,000 records; the JSON pair of a real
device took 5.0 s to open at 1,740 records over 2,748 workloads).

Fills a scratch database with N synthetic records over W real workloads of three structures
(dense matmuls, matmul + bias, elementwise add, of many sizes), each record with a real trace of
its workload (two sampled splits) and its own run time. Then, in fresh processes (one per run,
TVM's import not counted), times: opening (`DeviceDatabase(folder)`), `query_tuning_record` of a
known workload (first query of the process: parses that workload and replays one trace), and
`records_of_structure` (50 workloads of one structure, their best records). The JSON database
gets the same records at `--json-records` (default 10,000: its open replays every trace, so
100,000 takes minutes) and the same timings. Prints each statistic as the median of `--runs`
(>= 5) fresh processes with min-max.

    PYTHONPATH=. python bench/database_scale.py --records 100000 --workloads 3000 \\
        [-o bench/results/database_scale.json]   # run alone: the timings share the cores

Writes the JSON result only with -o (run it on a quiet machine; the load average goes into it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, time
sys.path.insert(0, {repo!r})
sys.path.insert(0, {bench!r})
import database_scale as bench
kind, folder, m, k, n = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
mod = bench.workload("matmul", m, k, n)
target = bench.TARGET()
t0 = time.perf_counter()
db = bench.open_fresh(kind, folder)
t1 = time.perf_counter()
record = db.query_tuning_record(mod, target, "main")
t2 = time.perf_counter()
out = {{"open_s": t1 - t0, "query_s": t2 - t1, "found": record is not None}}
if kind == "sqlite":
    from compile.workload_structure import structure_key
    t3 = time.perf_counter()
    rows = db.records_of_structure(structure_key(mod), limit=50)
    out.update(structure_s=time.perf_counter() - t3, structure_rows=len(rows))
print(json.dumps(out))
"""


def TARGET():
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": "znver4", "num-cores": 2})


def workload(kind: str, m: int, k: int, n: int):
    import tvm
    from tvm import te, topi

    a = te.placeholder((m, k), name="A")
    if kind == "add":
        b = te.placeholder((m, k), name="B")
        return tvm.IRModule({"main": te.create_prim_func([a, b, topi.add(a, b)])})
    b = te.placeholder((k, n), name="B")
    out = topi.matmul(a, b)
    if kind == "matmul_bias":
        bias = te.placeholder((n,), name="bias")
        out = topi.add(out, bias)
        return tvm.IRModule({"main": te.create_prim_func([a, b, bias, out])})
    return tvm.IRModule({"main": te.create_prim_func([a, b, out])})


def shapes(count: int) -> list[tuple[str, int, int, int]]:
    """`count` distinct (structure, m, k, n), spread over the three structures."""
    sizes = [8 * i for i in range(1, 65)]
    out, seen, i = [], set(), 0
    while len(out) < count:
        kind = ("matmul", "matmul_bias", "add")[i % 3]
        m, k, n = sizes[i % 64], sizes[(i // 64) % 64], sizes[(i // 4096 + i) % 64]
        if kind == "add":
            n = 1
        if (kind, m, k, n) not in seen:
            seen.add((kind, m, k, n))
            out.append((kind, m, k, n))
        i += 1
    return out


def trace_of(mod):
    import tvm

    sch = tvm.s_tir.Schedule(mod, seed=1)
    block = sch.get_child_blocks(sch.get_sblock("root"))[0]
    loops = sch.get_loops(block)
    for loop in loops[:2]:
        sch.split(loop, sch.sample_perfect_tile(loop, n=2))
    return sch.trace


def fill(db, work: list[tuple[str, int, int, int]], records: int, bulk) -> None:
    from tvm.s_tir import meta_schedule as ms

    target = TARGET()
    per = [records // len(work) + (i < records % len(work)) for i in range(len(work))]
    with bulk():
        for (kind, m, k, n), count in zip(work, per):
            mod = workload(kind, m, k, n)
            committed = db.commit_workload(mod)
            trace, args = trace_of(mod), ms.arg_info.ArgInfo.from_prim_func(mod["main"])
            for j in range(count):
                secs = [1e10] if j % 10 == 9 else [1e-5 * (1 + (j * 7919) % 97), 1e-5 * (1 + j % 13)]
                db.commit_tuning_record(ms.database.TuningRecord(trace, committed, secs, target, args))


def open_fresh(kind: str, folder: str):
    if kind == "sqlite":
        from compile.database import DeviceDatabase

        return DeviceDatabase(folder)
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(work_dir=folder, allow_missing=False)


def measure(kind: str, folder: Path, probe: tuple[str, int, int, int], runs: int) -> dict:
    script = PROBE.format(repo=str(REPO), bench=str(REPO / "bench"))
    samples = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", script, kind, str(folder), *map(str, probe[1:])],
                              capture_output=True, text=True, check=True, timeout=1800)
        samples.append(json.loads(done.stdout.strip().splitlines()[-1]))
    summary = {"runs": runs, "found": all(s["found"] for s in samples)}
    for key in ("open_s", "query_s", "structure_s"):
        values = [s[key] for s in samples if key in s]
        if values:
            summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                            "samples": values}
    if "structure_rows" in samples[0]:
        summary["structure_rows"] = samples[0]["structure_rows"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="records in the SQLite database")
    parser.add_argument("--workloads", type=int, default=3000, help="distinct workloads they spread over")
    parser.add_argument("--json-records", type=int, default=10_000,
                        help="records in the JSON database compared (0: skip it)")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per measurement (>= 5)")
    parser.add_argument("-o", "--out", type=Path, default=None, help="JSON result to write (quiet machine only)")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5 (the statistic is a median)")
    from compile.database import DeviceDatabase, json_database
    from runner.machine import write_result

    load_before, began = os.getloadavg(), time.monotonic()
    work = shapes(args.workloads)
    probe = work[len(work) // 2]
    result = {"what": "open + query cost, SQLite DeviceDatabase vs MetaSchedule JSONDatabase, fresh process per run",
              "workloads": len(work), "probe_workload": list(probe), "rows": {}}
    with tempfile.TemporaryDirectory(prefix="edgeseg-db-scale-") as scratch:
        scratch = Path(scratch)
        for kind, records in (("sqlite", args.records), ("json", args.json_records)):
            if records <= 0:
                continue
            folder = scratch / kind
            started = time.perf_counter()
            if kind == "sqlite":
                db = DeviceDatabase(str(folder))
                fill(db, work, records, db.bulk)
                size = (folder / "tuning.sqlite").stat().st_size
            else:
                import contextlib

                db = json_database(folder)
                fill(db, work, records, contextlib.nullcontext)
                size = sum(p.stat().st_size for p in folder.glob("*.json"))
            fill_s = time.perf_counter() - started
            del db
            row = measure(kind, folder, probe, args.runs)
            row.update(records=records, fill_seconds=round(fill_s, 1), bytes=size)
            result["rows"][kind] = row
            print(f"{kind:6s} {records:7d} records, {size / 1e6:6.1f} MB, filled in {fill_s:.0f} s; over {row['runs']} "
                  f"fresh processes: " + "; ".join(
                      f"{key[:-2]} median {row[key]['median'] * 1e3:.1f} ms (min {row[key]['min'] * 1e3:.1f}, "
                      f"max {row[key]['max'] * 1e3:.1f})"
                      for key in ("open_s", "query_s", "structure_s") if key in row))
    if args.out:
        write_result(args.out, result, load_before, began)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
