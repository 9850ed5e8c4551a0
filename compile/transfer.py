"""Schedule transfer: a kernel the device database has no record for gets a tuned schedule from
a workload of the same structure at other sizes, instead of a random one.

Latency is predictable only if a kernel's schedule is a function of its shape: a pruned width
that was never tuned would otherwise run naive code, or one random schedule. Transfer, in the
spirit of Gibson & Cano's transfer-tuning (PACT 2022) for MetaSchedule:

1. donors: the database's best records of workloads with the same structure key
   (`compile.workload_structure`), nearest in shape first; past one candidate per donor, the
   donors' best records of their other design spaces (a sketch that lost at the donor's shape
   can win at a far smaller one: a matmul whose reduction shrank 32 -> 8 is dominated by its
   separate bias-add loop, which another sketch fuses);
2. replay: each donor's trace on the new workload, its `SamplePerfectTile` decisions refitted to
   the new extents (`refit_tiles`: TVM would otherwise collapse a tile that no longer divides
   into one bad tile), then the target's postprocessors;
3. measure: the top candidates, built and timed on the device by the same builder and runner as
   tuning (one batch of builds, then the timings: never both at once);
4. check: the fastest candidate's outputs against the untuned kernel's on random inputs, on this
   machine's CPU (a schedule's meaning does not depend on the CPU it runs on; GPU kernels,
   bound to threads, cannot run here and are not checked);
5. commit: the winner as a record of its own, with its measured time and its provenance (donor,
   GFLOP/s against the donor's), so later builds find it as an exact record.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Sequence

import numpy as np

from compile.workload_structure import extents, rename_blocks, shape_distance, structure_key

logger = logging.getLogger(__name__)

DEFAULT_CANDIDATES = 3  # the two nearest donors' best, then the nearest one's second sketch
DONOR_WORKLOADS = 2  # the nearest workloads candidates come from; more candidates: their other sketches
CHECK_RTOL = 1e-3


# ---------------------------------------------------------------------------------------------
# Tile refitting


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _nearest_divisor(n: int, wanted: int, limit: int | None = None) -> int:
    """The divisor of `n` nearest to `wanted` in log space (not above `limit`)."""
    options = [d for d in _divisors(n) if limit is None or d <= limit] or [1]
    return min(options, key=lambda d: (abs(math.log(d / max(wanted, 1))), -d))


def _innermost(extent: int, wanted: int, limit: int | None) -> int:
    """The innermost tile: the donor's if it divides; for a power-of-two donor tile (a vector
    width), the largest power of two not above it that divides, if at least 4 (an innermost tile
    of 20 on a vectorised loop ran at a tenth of 8's speed); else the nearest divisor."""
    if extent % wanted == 0 and (limit is None or wanted <= limit):
        return wanted
    if wanted & (wanted - 1) == 0:
        power = wanted
        while power > 1 and (extent % power or (limit is not None and power > limit)):
            power //= 2
        if power >= 4:
            return power
    return _nearest_divisor(extent, wanted, limit)


def refit_tiles(extent: int, donor: Sequence[int], max_innermost: int | None = None) -> list[int]:
    """Tile factors for a loop of `extent`, as close to the donor's (outer to inner) as divide.

    The innermost factor follows `_innermost`; the middle ones keep the donor's where they
    divide what is left, else take the nearest divisor; the outermost takes the rest."""
    factors = [int(f) for f in donor]
    if len(factors) == 1:
        return [extent]
    out = [0] * len(factors)
    out[-1] = _innermost(extent, max(1, factors[-1]), max_innermost)
    left = extent // out[-1]
    for i in range(len(factors) - 2, 0, -1):
        wanted = max(1, factors[i])
        out[i] = wanted if left % wanted == 0 else _nearest_divisor(left, wanted)
        left //= out[i]
    out[0] = left
    return out


def _refit_decision(inst: Any, inputs: Sequence[Any], attrs: Sequence[Any], decision: Any,
                    sch: Any) -> Any:
    """Trace replay's decision provider: refit perfect tiles, keep every other decision."""
    if inst.kind.name != "SamplePerfectTile" or decision is None:
        return decision
    extent = sch.get(inputs[0]).extent
    if not hasattr(extent, "value"):  # a symbolic extent: nothing to refit against
        return decision
    limit = int(attrs[1]) if len(attrs) > 1 and int(attrs[1]) > 0 else None
    return refit_tiles(int(extent.value), [int(d) for d in decision], limit)


# ---------------------------------------------------------------------------------------------
# Donors and candidates


@dataclasses.dataclass(frozen=True)
class Donor:
    """A tuned workload of the same structure: its record and how far its shape is."""

    workload: Any  # ms.database.Workload
    record: Any  # ms.database.TuningRecord
    extents: tuple[int, ...]
    distance: float
    sketch: int = 0  # 0: the workload's best record; n: the best of its (n+1)-th fastest design space

    @property
    def seconds(self) -> float:
        return float(np.mean([float(s) for s in self.record.run_secs]))


def find_donors(db: Any, mod: Any, target: Any, limit: int, sketches: int = 1) -> list[Donor]:
    """The nearest `limit` donor workloads of `mod` in `db`, with up to `sketches` records each
    (their best, then their other design spaces' best): searched records for `target`, never a
    transferred one (a copy of a copy drifts from what was measured to be good)."""
    import tvm_ffi

    own = extents(mod)
    rows = db.records_of_structure(structure_key(mod), target, near=own, limit=limit + 1, tuned_only=True,
                                   sketches=sketches)  # fmt: skip
    donors, rank = [], {}
    for workload, record, ext in rows:
        if tvm_ffi.structural_equal(workload.mod, mod):
            continue
        rank[ext] = rank.get(ext, -1) + 1
        donors.append(Donor(workload, record, ext, shape_distance(own, ext), rank[ext]))
    nearest = set(list(dict.fromkeys(d.extents for d in donors))[:limit])
    return [d for d in donors if d.extents in nearest]


def replay(trace: Any, mod: Any, postprocs: Sequence[Any]) -> Any | None:
    """The donor's `trace` replayed on `mod` with refitted tiles and the postprocessors applied;
    None when the trace does not fit the workload or a postprocessor rejects the result."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod, seed=1)  # seed 0 raises in 0.27
    try:
        trace.apply_to_schedule(
            sch, remove_postproc=True,
            decision_provider=lambda inst, inputs, attrs, decision: _refit_decision(
                inst, inputs, attrs, decision, sch),
        )  # fmt: skip
        sch.enter_postproc()
        for postproc in postprocs:
            if not postproc.apply(sch):
                logger.debug("postprocessor %s rejected the replayed schedule", postproc)
                return None
    except Exception as error:  # noqa: BLE001 - TVM raises many kinds; a donor that does not fit is skipped
        logger.debug("trace replay failed: %s", error)
        return None
    return sch


def postprocessors(mod: Any, target: Any) -> list[Any]:
    """The target's MetaSchedule postprocessors, initialised as tuning initialises them."""
    from tvm.s_tir import meta_schedule as ms

    from compile.intrinsics import register_for

    register_for(target.kind.name)  # a TuneContext would otherwise import every GPU intrinsic

    context = ms.TuneContext(mod=mod, target=target, space_generator=ms.space_generator.PostOrderApply(),
                             task_name="transfer", rand_state=1, num_threads=1)  # fmt: skip
    return list(context.space_generator.postprocs)


# ---------------------------------------------------------------------------------------------
# The numeric check


def outputs_match(scheduled: Any, reference: Any, seed: int = 0) -> bool:
    """Does the scheduled kernel compute what the unscheduled one does? Both built for this
    machine's CPU and run on the same random inputs; every buffer compared after the call."""
    import tvm

    host = tvm.target.Target({"kind": "llvm"})
    rng = np.random.default_rng(seed)
    params = reference["main"].params
    values = [rng.uniform(-1, 1, [int(d) for d in p.shape]).astype(str(p.dtype)) for p in params]
    results = []
    for mod in (scheduled, reference):
        lib = tvm.compile(mod, target=host)
        args = [tvm.runtime.tensor(v.copy(), tvm.cpu()) for v in values]
        lib["main"](*args)
        results.append([a.numpy() for a in args])
    for got, want in zip(*results):
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        if not np.allclose(got, want, rtol=CHECK_RTOL, atol=CHECK_RTOL * scale):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Transfer for a set of tasks


@dataclasses.dataclass(frozen=True)
class Transferred:
    """A kernel that got its schedule by transfer, timed in one batch with its donor.

    `relative_speed` is its work per second against the donor's (FLOPs, or for kernels that
    only move data the elements they touch): 1.0 is as fast per unit of work as the schedule it
    came from."""

    task_name: str
    donor_extents: tuple[int, ...]
    distance: float
    sketch: int  # which of the donor's design spaces (0: its best record's)
    candidates: int  # measured on the device
    us: float
    donor_us: float
    gflops: float
    donor_gflops: float
    relative_speed: float

    def provenance(self, donor_hash: str) -> dict[str, Any]:
        return {"kind": "transferred", "donor": donor_hash, **dataclasses.asdict(self)}


def work(mod: Any) -> float:
    """What a kernel computes: its FLOPs, or the elements of its buffers when it has none."""
    from tvm.s_tir.analysis import estimate_tir_flops

    flop = float(estimate_tir_flops(mod))
    return flop if flop > 0 else float(sum(math.prod(int(d) for d in p.shape) for p in mod["main"].params))


@dataclasses.dataclass
class _Candidate:
    task: Any
    donor: Donor
    schedule: Any
    best_of_donor: Donor  # the donor workload's best record (sketch 0), its reference
    seconds: float | None = None


Measure = Callable[[Sequence[Any], Any], list[float | None]]


def _candidates(tasks: Sequence[Any], db: Any, target: Any, limit: int) -> list[_Candidate]:
    """Every task's replayed donor schedules, `limit` at most: the nearest `DONOR_WORKLOADS`
    donors' best records first, then their other sketches, nearer donor first within a rank."""
    pending = []
    for task in tasks:
        mod = task.dispatched[0]
        donors = find_donors(db, mod, target, DONOR_WORKLOADS, sketches=limit)
        posts = postprocessors(mod, target) if donors else []
        best_of = {d.extents: d for d in donors if d.sketch == 0}
        replayed = []
        for donor in sorted(donors, key=lambda d: (d.sketch, d.distance)):
            trace = rename_blocks(donor.record.trace, donor.workload.mod, mod)
            schedule = replay(trace, mod, posts) if trace is not None else None
            if schedule is None:
                logger.debug("%s: the trace of the donor at %s does not replay", task.task_name, donor.extents)
            else:
                replayed.append(_Candidate(task, donor, schedule, best_of[donor.extents]))
            if len(replayed) == limit:
                break
        pending.extend(replayed)
    return pending


@dataclasses.dataclass
class _Reference:
    """A donor workload's best schedule, timed in the same batch as the transfers from it."""

    donor: Donor  # its best record (sketch 0)
    schedule: Any
    seconds: float | None = None


def _donor_references(pending: Sequence[_Candidate], target: Any) -> dict[tuple[int, ...], _Reference]:
    """Each donor workload's best schedule, by its extents: a transfer's GFLOP/s are compared
    with the donor's under the same machine state, not against a figure from another day, and
    with the donor's best, whichever of its sketches the transfer took."""
    references: dict[tuple[int, ...], _Reference] = {}
    for candidate in pending:
        donor = candidate.best_of_donor
        if donor.extents not in references:
            schedule = replay(donor.record.trace, donor.workload.mod, postprocessors(donor.workload.mod, target))
            references[donor.extents] = _Reference(donor, schedule)
    return {key: ref for key, ref in references.items() if ref.schedule is not None}


def transfer_tasks(tasks: Sequence[Any], db: Any, target: Any, measure: Measure,
                   candidates: int = DEFAULT_CANDIDATES, check: bool = True) -> dict[int, Transferred]:
    """Give every task in `tasks` that has donors a transferred record in `db`; by task index.

    `candidates`: schedules measured per task (`_candidates`). `measure(schedules, target)`
    builds and times schedules on the device, returning seconds (None for a failed build or
    run), in order. `check=False` skips the numeric check (GPU kernels, which cannot run on this
    machine)."""
    pending = _candidates(tasks, db, target, candidates)
    if not pending:
        return {}
    references = _donor_references(pending, target)
    timed = measure([c.schedule for c in pending] + [ref.schedule for ref in references.values()], target)
    for item, seconds in zip([*pending, *references.values()], timed):
        item.seconds = seconds
    done: dict[int, Transferred] = {}
    for index, task in enumerate(tasks):
        mine = [c for c in pending if c.task is task]
        for best in sorted((c for c in mine if c.seconds), key=lambda c: c.seconds):
            if check and not outputs_match(best.schedule.mod, task.dispatched[0]):
                logger.warning("%s: the schedule transferred from the workload at %s fails the numeric "
                               "check; discarded", task.task_name, best.donor.extents)  # fmt: skip
                continue
            reference = references.get(best.donor.extents) or _Reference(best.best_of_donor, None)
            done[index] = _commit(db, task, best, len(mine), reference, target)
            break
    return done


def _commit(db: Any, task: Any, best: _Candidate, measured: int, reference: _Reference,
            target: Any) -> Transferred:
    """Commit the winning candidate as a record of its own, with its provenance."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    mod, donor_mod = task.dispatched[0], best.donor.workload.mod
    donor_seconds = reference.seconds or reference.donor.seconds  # its recorded time when re-timing failed
    result = Transferred(
        task_name=task.task_name, donor_extents=best.donor.extents, distance=round(best.donor.distance, 4),
        sketch=best.donor.sketch, candidates=measured, us=round(best.seconds * 1e6, 3),
        donor_us=round(donor_seconds * 1e6, 3), gflops=round(float(estimate_tir_flops(mod)) / best.seconds / 1e9, 3),
        donor_gflops=round(float(estimate_tir_flops(donor_mod)) / donor_seconds / 1e9, 3),
        relative_speed=round((work(mod) / best.seconds) / (work(donor_mod) / donor_seconds), 4),
    )  # fmt: skip
    record = ms.database.TuningRecord(best.schedule.trace, db.commit_workload(mod), [best.seconds], target,
                                      ms.arg_info.ArgInfo.from_prim_func(mod["main"]))  # fmt: skip
    db.commit_transferred(record, result.provenance(str(tvm_ffi.structural_hash(best.donor.workload.mod))))
    logger.debug("%s: transferred from the workload at %s, %.1f us (%.0f%% of the donor's GFLOP/s)",
                 task.task_name, best.donor.extents, result.us, 100 * result.relative_speed)
    return result
