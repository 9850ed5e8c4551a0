"""Small real MetaSchedule workloads and records, for tests of the device tuning database."""

from __future__ import annotations

import tvm
from tvm import te, topi
from tvm.s_tir import meta_schedule as ms

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "znver4", "num-cores": 2})


def matmul(m: int, k: int, n: int):
    a = te.placeholder((m, k), name="A")
    b = te.placeholder((k, n), name="B")
    return tvm.IRModule({"main": te.create_prim_func([a, b, topi.matmul(a, b)])})


def relu(n: int):
    a = te.placeholder((n,), name="A")
    return tvm.IRModule({"main": te.create_prim_func([a, topi.nn.relu(a)])})


def record(db, mod, run_secs, target=TARGET, loop=0):
    """A real record: a trace with two sampled splits of the workload's first block's `loop`-th
    loop (another loop: another design space)."""
    sch = tvm.s_tir.Schedule(mod, seed=1)
    loops = sch.get_loops(sch.get_child_blocks(sch.get_sblock("root"))[0])
    sch.split(loops[loop], sch.sample_perfect_tile(loops[loop], n=2))
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    return ms.database.TuningRecord(sch.trace, db.commit_workload(mod), run_secs, target, args)


def best(db, mod):
    found = db.query_tuning_record(mod, TARGET, "main")
    return None if found is None else [round(float(s), 9) for s in found.run_secs]
