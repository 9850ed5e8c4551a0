"""MetaSchedule tuning over RPC, reusing one tuning database across models.

Only tasks without a record in the database are tuned, so recompiling the same or a
similar model (a pruned variant whose layers were tuned before) costs only the new kernels.
Candidates are measured on the device named by `device` through TVM's `RPCRunner`, spread
over every server registered under its key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir.analysis import estimate_tir_flops
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

from compile.builder import PooledBuilder
from compile.database import json_database, open_database  # noqa: F401 (open_database: also imported from here)
from compile.intrinsics import register_for as register_intrinsics_for
from compile.linkers import check_linker
from compile.measure import close_runner, device_runner, measure_schedules, measures_on_build_machine
from compile.targets import TargetPreset
from compile.transfer import DEFAULT_CANDIDATES, transfer_tasks
from runner.device import Device
from runner.session import check_tracker, wait_for_device

logger = logging.getLogger(__name__)


SOURCES = ("exact", "transferred", "tuned", "untuned")


@dataclasses.dataclass(frozen=True)
class TaskReport:
    """One tuning task (a fused kernel), and where its schedule came from.

    `source`: `exact`, a record of this very workload was in the database before the run;
    `transferred`, a schedule replayed from a workload of the same structure and measured
    (`transfer` says from which, and how fast against it per FLOP); `tuned`, searched in this
    run; `untuned`, none of these (naive code on CPU)."""

    name: str
    calls: int
    flop: float
    had_record: bool  # found in the database before this run (exact or transferred earlier)
    trials: int  # trials spent on it in this run
    best_us: float | None  # best measured run time; None when it has no valid record
    source: str = "untuned"
    transfer: dict[str, Any] | None = None  # the transferred record's provenance

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TuningReport:
    tasks: tuple[TaskReport, ...]
    trials: int
    seconds: float
    # The extracted MetaSchedule tasks themselves, so later steps need not extract them again.
    extracted: tuple[Any, ...] = dataclasses.field(default=(), repr=False, compare=False)
    transfer_seconds: float = 0.0

    @property
    def predicted_ms(self) -> float:
        """Sum of the best kernel times weighted by calls (kernels without records excluded)."""
        return sum(t.best_us * t.calls for t in self.tasks if t.best_us is not None) / 1000.0

    def count(self, source: str) -> int:
        return sum(t.source == source for t in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": len(self.tasks),
            "trials": self.trials,
            "tuning_seconds": round(self.seconds, 1),
            "transfer_seconds": round(self.transfer_seconds, 1),
            "reused_tasks": sum(t.had_record for t in self.tasks),
            "tasks_with_record": sum(t.best_us is not None for t in self.tasks),
            "sources": {source: self.count(source) for source in SOURCES},
            "predicted_kernel_total_ms": round(self.predicted_ms, 4),
            "per_task": [t.to_dict() for t in self.tasks],
        }


def best_run_us(db, task: ms.ExtractedTask, target) -> float | None:
    record = db.query_tuning_record(task.dispatched[0], target, task.task_name)
    if record is None or not record.run_secs:
        return None
    return float(sum(float(s) for s in record.run_secs) / len(record.run_secs)) * 1e6


@derived_object
class _TrialProgress(PyMeasureCallback):
    """Advances a progress bar by each measured batch of candidates."""

    def __init__(self, bar: tqdm, counts: dict[int, int]):
        super().__init__()
        self.bar = bar
        self.counts = counts

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        self.counts[task_id] = self.counts.get(task_id, 0) + len(measure_candidates)
        self.bar.update(len(measure_candidates))


def tune(
    lowered: Any,
    preset: TargetPreset,
    device: Callable[[], Device],
    database_dir: Path,
    trials: int,
    seed: int = 0,
    trials_per_task: int | None = None,
    transfer_candidates: int = DEFAULT_CANDIDATES,
) -> TuningReport:
    """Give every kernel of `lowered` a schedule: the database's record, else one transferred
    from a tuned workload of the same structure (`compile.transfer`), else a search with
    `trials` in total, or `trials_per_task` x the number of kernels without a tuned record
    when given (a budget that scales with how much of the model is new to the database).

    `device` is called only when there is something to measure, so a build from a complete
    database never starts or contacts a device. `transfer_candidates` is how many donors' schedules
    are measured per kernel (0: no transfer)."""
    tasks = ms.relax_integration.extract_tasks(lowered, preset.target())
    return tune_extracted(tasks, preset, device, database_dir, trials, seed, trials_per_task,
                          transfer_candidates)


def tune_extracted(
    tasks: Sequence[Any],
    preset: TargetPreset,
    device: Callable[[], Device],
    database_dir: Path,
    trials: int,
    seed: int = 0,
    trials_per_task: int | None = None,
    transfer_candidates: int = DEFAULT_CANDIDATES,
    transfer_tuned: bool = False,
) -> TuningReport:
    """`tune` for MetaSchedule tasks already extracted, possibly from several models (one tuning
    run for all of them pays the run's fixed cost, seconds per run, once). `transfer_tuned`:
    offer donors' schedules to the kernels that have a record too, the fastest record winning (a
    kernel's own few trials can be far worse than a neighbour's schedule: one random trial gave
    segformer-b0's decoder fuse conv 4 GFLOP/s, its transfer from a narrower width 88)."""
    started = time.monotonic()
    target = preset.target()
    db = open_database(database_dir, target)
    had = [db.has_record(t.dispatched[0], target) for t in tasks]
    missing = [i for i, found in enumerate(had) if not found]
    offered = list(range(len(tasks))) if transfer_tuned else missing
    transfer_seconds = 0.0
    if offered and transfer_candidates:
        transfer_started = time.monotonic()
        transfer_tasks([tasks[i] for i in offered], db, target,
                       lambda schedules, tgt: measure_schedules(schedules, tgt, preset, device()),
                       candidates=transfer_candidates, check=not preset.is_gpu)  # fmt: skip
        transfer_seconds = time.monotonic() - transfer_started
    searchable = [i for i, t in enumerate(tasks) if _provenance_kind(db, t, target) != "tuned"]
    if trials_per_task is not None:
        trials = trials_per_task * len(searchable)
    logger.info(
        "%d tuning tasks: %d in the database %s, %d transferred now, %d to search with %d trials",
        len(tasks), sum(had), database_dir,
        sum(1 for i in missing if db.has_record(tasks[i].dispatched[0], target)),
        len(searchable) if trials else 0, trials,
    )  # fmt: skip
    counts: dict[int, int] = {}
    if searchable and trials > 0:
        check_linker(preset)  # candidates are linked for the device, even with --export tar
        with _metaschedule_logging_contained():
            _tune_tasks([tasks[i] for i in searchable], target, preset, device(), db, database_dir, trials,
                        seed, counts)
    spent = {searchable[j]: n for j, n in counts.items()}
    reports = tuple(_task_report(db, t, target, had[i], spent.get(i, 0)) for i, t in enumerate(tasks))
    return TuningReport(reports, sum(counts.values()), time.monotonic() - started, tuple(tasks),
                        transfer_seconds)


def _provenance_kind(db: Any, task: Any, target: Any) -> str | None:
    """`tuned` (a searched record), `transferred`, or None (no record) for the task's best."""
    if not db.has_record(task.dispatched[0], target):
        return None
    provenance = db.provenance(task.dispatched[0], target)
    return provenance.get("kind", "transferred") if provenance else "tuned"


def _task_report(db: Any, task: Any, target: Any, had_record: bool, trials: int) -> TaskReport:
    best = best_run_us(db, task, target)
    provenance = db.provenance(task.dispatched[0], target) if best is not None else None
    if best is None:
        source = "untuned"
    elif provenance:
        source = "transferred"
    else:
        source = "exact" if had_record and not trials else "tuned"
    return TaskReport(name=task.task_name, calls=int(task.weight),
                      flop=float(estimate_tir_flops(task.dispatched[0])), had_record=had_record,
                      trials=trials, best_us=best, source=source, transfer=provenance)  # fmt: skip


EVOLUTION_FROM_TRIALS_PER_TASK = 4


def search_strategy(trials: int, tasks: int) -> Any:
    """Evolutionary search when each task gets a few trials, random schedules below that.

    An evolutionary round samples and mutates a population of 512 schedules ranked by a cost
    model (3-4 s per task here) to pick its candidates; with one or two trials per task the cost
    model has seen no measurement of the task yet, so the pick is as good as random while the
    round costs more than building and running the candidates. Random traces cost milliseconds.
    """
    if trials >= EVOLUTION_FROM_TRIALS_PER_TASK * tasks:
        return "evolutionary"
    return ms.search_strategy.ReplayTrace()


def trials_per_round(trials: int, tasks: int) -> int:
    """Candidates per scheduler round: the first round visits every task once, so it may take
    at most half of the budget; the gradient scheduler gives the rest to the tasks with the
    largest share of the weighted latency (and the fastest improvement), as Ansor's does. A
    round that took the whole budget (trials / tasks each) spent it evenly: a 1x1 conv with 38%
    of the latency got as many trials as an elementwise kernel."""
    return max(1, min(64, trials // (2 * tasks)))


def _tune_tasks(todo, target, preset, device, db, database_dir, trials, seed, counts) -> None:
    check_tracker(device.tracker)
    wait_for_device(device, timeout_s=60)
    register_intrinsics_for(target.kind.name)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted_tasks=todo, work_dir=str(database_dir), seed=seed,
        strategy=search_strategy(trials, len(todo)),
    )
    per_iter = trials_per_round(trials, len(todo))
    builder = PooledBuilder(preset)
    runner = device_runner(device, alone=measures_on_build_machine(device))
    with tqdm(total=trials, desc="tuning", unit="trial") as bar:
        try:
            ms.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(database_dir),
                max_trials_global=trials,
                num_trials_per_iter=per_iter,
                builder=builder,
                runner=runner,
                database=db,
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                   _TrialProgress(bar, counts)],
            )  # fmt: skip
        finally:
            builder.shutdown()
            close_runner(runner)


@contextlib.contextmanager
def _metaschedule_logging_contained() -> Iterator[None]:
    """MetaSchedule rebuilds its logging config from the names of its logger's handlers and
    crashes on an unnamed one (pytest's capture handler, for one): set those aside meanwhile.
    Its console handler takes the logger's level, DEBUG when unset, and it leaves the logger at
    DEBUG: hold it at WARNING unless the caller chose a level (`-v` chooses DEBUG), and restore
    it after, so every tuning of a process is as quiet as the first; the full log still goes to
    the database folder's logs/."""
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level = ms_logger.level
    if level == logging.NOTSET:
        ms_logger.setLevel(logging.WARNING)
    unnamed = [h for h in ms_logger.handlers if not h.get_name()]
    for handler in unnamed:
        ms_logger.removeHandler(handler)
    try:
        yield
    finally:
        ms_logger.setLevel(level)
        for handler in unnamed:
            ms_logger.addHandler(handler)


def copy_records(tasks: Sequence[Any], preset: TargetPreset, db: Any, dest: Path) -> int:
    """Copy the best record of each of the model's kernels (its extracted `tasks`) into a
    MetaSchedule JSON database of its own in `dest` (an artifact's tuning/, which other TVM
    tools read)."""
    target = preset.target()
    out = json_database(dest)
    copied = 0
    for task in tasks:
        record = db.query_tuning_record(task.dispatched[0], target, task.task_name)
        if record is None:
            continue
        workload = out.commit_workload(task.dispatched[0])
        out.commit_tuning_record(
            ms.database.TuningRecord(
                record.trace, workload, record.run_secs, record.target, record.args_info
            )
        )
        copied += 1
    return copied
