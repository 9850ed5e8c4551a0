"""Can a pruned kernel run at its donor's GFLOP/s at all? Schedule transfer against a search of
the donor's own effort on the pruned kernel (issue 12's goal: transferred kernels at >= 90% of
their donor's GFLOP/s).

`bench/schedule_transfer.py` found transferred kernels at a median 0.56 of their donors' rate and
the same kernels searched from scratch at 0.53, but that search had 8 trials per kernel against
the donors' 20. Here both sides get the same search: one pruned variant of the model (the same
draw as schedule_transfer's by default) and the unpruned model are lowered; the variant's
`--kernels` kernels with the most work (FLOPs x calls) whose shape differs from every unpruned
kernel are each paired with the unpruned kernel of the same structure nearest in shape (its
donor). Then, each into a database of its own:
- the donors are searched with `--trials-per-task` trials per kernel;
- the variant's kernels take a schedule transferred from those donors, with no search, once per
  count in `--transfer-candidates` (1: the nearest donor's best schedule, the pair's; more: the
  next donor's best, then the donors' other sketches, `compile.transfer._candidates`);
- the variant's kernels are searched from scratch with the same trials per kernel.
Every pair's schedules (the donor at the donor's shape, each transfer and the search at the
pruned shape) are built and timed in one batch, `--rounds` times, median per schedule; per kernel
it reports work per second (GFLOP/s, or elements for kernels without FLOPs) of each transfer and
of the search against the donor's, and each transfer's time against the search's.

`--every-donor-record N` asks how far picking among the donors' schedules can go at all: every
one of the N best records of each of the two nearest donor workloads is replayed on the pruned
kernel and timed in one batch with the search's schedule and each transfer's, `--rounds` times;
the fastest of them in hindsight (`every_record_best`) bounds any transfer that chooses among
the donors' records, however it ranks them, and its rank in its donor's own order says how
deep a ranking would have to look.

    PYTHONPATH=. python bench/transfer_ceiling.py [--input-size 64 --variant-seed 1000 --kernels 12 \\
        --trials-per-task 32 --transfer-candidates 1,3 --rounds 3] [--work DIR] \\
        [-o bench/results/transfer_ceiling.json]

`--work` keeps the exports and the databases: a rerun skips the searches and transfers that finished.
Run it alone: every timing is of this machine's CPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from bench.common import extracted_tasks, finished, ratio_summary
from compile.targets import resolve_target
from runner.cli_support import setup_logging, whole_number
from runner.device import HOST_KEY
from runner.farm import use_device
from runner.machine import write_result

log = logging.getLogger("bench.transfer_ceiling")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="segformer-b0")
    p.add_argument("--input-size", type=int, default=64, help="input size (px)")
    p.add_argument("--variant-seed", type=int, default=1000, help="seed of the pruned variant")
    p.add_argument("--kernels", type=int, default=12, help="pruned kernels compared (most work first)")
    p.add_argument("--trials-per-task", type=int, default=32, help="search trials per kernel, donors and pruned alike")
    p.add_argument("--transfer-candidates", type=_counts, default=(1, 3),
                   help="comma-separated candidate counts, one transfer each (default 1,3)")
    p.add_argument("--every-donor-record", type=whole_number(0), default=0, metavar="N",
                   help="also time the N best records of each of the two nearest donors on each pruned kernel")
    p.add_argument("--rounds", type=int, default=3, help="batches timing every schedule; median per schedule")
    p.add_argument("--work", type=Path, default=None, help="folder kept for a rerun (default: a temporary one)")
    p.add_argument("-o", "--out", type=Path, default=Path("bench/results/transfer_ceiling.json"))
    return p.parse_args(argv)


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return counts


def donor_pairs(pruned: Sequence[Any], unpruned: Sequence[Any], count: int) -> list[tuple[Any, Any]]:
    """(donor, pruned task) for the `count` pruned tasks with the most work whose shape no unpruned
    task has; the donor is the unpruned task of the same structure nearest in shape."""
    from compile.transfer import work
    from compile.workload_structure import extents, shape_distance, structure_key

    by_structure: dict[str, list[Any]] = {}
    for task in unpruned:
        by_structure.setdefault(structure_key(task.dispatched[0]), []).append(task)
    pairs = []
    for task in pruned:
        mod = task.dispatched[0]
        own = extents(mod)
        donors = by_structure.get(structure_key(mod), [])
        if donors and own not in {extents(d.dispatched[0]) for d in donors}:
            pairs.append((min(donors, key=lambda d: shape_distance(own, extents(d.dispatched[0]))), task))
    pairs.sort(key=lambda pair: work(pair[1].dispatched[0]) * int(pair[1].weight), reverse=True)
    return pairs[:count]


def _distinct(tasks: Sequence[Any]) -> list[Any]:
    """`tasks` without repeats (two pruned kernels may share a donor)."""
    seen: dict[str, Any] = {}
    for task in tasks:
        seen.setdefault(task.task_name, task)
    return list(seen.values())


def _search(tasks: Sequence[Any], database: Path, trials_per_task: int, preset, device) -> dict:
    """Search `tasks` from scratch into `database` (no transfer): trials and seconds spent."""
    from compile.tuning import tune_extracted

    report = tune_extracted(tasks, preset, lambda: device, database, trials=0, trials_per_task=trials_per_task,
                            transfer_candidates=0)
    return {"tasks": len(tasks), "trials": report.trials, "seconds": round(report.seconds, 1)}


def _transfer(tasks: Sequence[Any], donors: Path, database: Path, candidates: int, preset, device) -> dict:
    """Transfer the donors' schedules to `tasks` into a copy of `donors`, `candidates` measured each."""
    from compile.tuning import tune_extracted

    shutil.rmtree(database, ignore_errors=True)
    shutil.copytree(donors, database)
    report = tune_extracted(tasks, preset, lambda: device, database, trials=0, transfer_candidates=candidates)
    sketches = [t.transfer.get("sketch", 0) for t in report.tasks if t.source == "transferred"]
    return {"candidates": candidates, "transferred": len(sketches),
            "from_another_sketch": sum(1 for s in sketches if s), "seconds": round(report.transfer_seconds, 1)}


def _best_schedule(database: Path, task: Any, preset: Any) -> Any | None:
    """The database's best schedule for `task`, replayed with the target's postprocessors."""
    from compile.database import open_database
    from compile.transfer import postprocessors, replay

    target = preset.target()
    mod = task.dispatched[0]
    record = open_database(database, target).query_tuning_record(mod, target, task.task_name)
    return None if record is None else replay(record.trace, mod, postprocessors(mod, target))


def _timed(schedules: Sequence[Any], preset, device, rounds: int) -> list[list[float]]:
    """Every schedule's seconds in each of `rounds` batches (a failed build or run leaves a gap)."""
    from compile.measure import measure_schedules

    samples: list[list[float]] = [[] for _ in schedules]
    for _ in range(rounds):
        for i, seconds in enumerate(measure_schedules(schedules, preset.target(), preset, device)):
            if seconds:
                samples[i].append(seconds)
    return samples


def time_pairs(pairs: Sequence[tuple[Any, Any]], work: Path, counts: Sequence[int], preset, device,
               rounds: int) -> list[dict]:
    """Every pair's donor, transferred (one per candidate count) and searched schedules, timed in
    one batch `rounds` times."""
    from compile.transfer import work as work_of
    from compile.workload_structure import extents

    names = ["donor", *(f"transferred-k{k}" for k in counts), "searched"]
    rows, schedules = [], []
    for donor, task in pairs:
        mine = [_best_schedule(work / "donors", donor, preset),
                *(_best_schedule(work / f"transferred-k{k}", task, preset) for k in counts),
                _best_schedule(work / "searched", task, preset)]
        if None in mine:
            log.warning("%s: no %s schedule; left out", task.task_name, names[mine.index(None)])
            continue
        rows.append((donor, task))
        schedules.extend(mine)
    samples = _timed(schedules, preset, device, rounds)
    out = []
    for k, (donor, task) in enumerate(rows):
        mine = dict(zip(names, samples[len(names) * k:len(names) * (k + 1)]))
        if not all(mine.values()):
            continue
        us = {name: statistics.median(s) * 1e6 for name, s in mine.items()}
        donor_rate = work_of(donor.dispatched[0]) / us["donor"]
        pruned_work = work_of(task.dispatched[0])
        out.append({"kernel": task.task_name, "calls": int(task.weight), "extents": extents(task.dispatched[0]),
                    "donor": donor.task_name, "donor_extents": extents(donor.dispatched[0]),
                    "us": {name: round(t, 3) for name, t in us.items()},
                    "range_us": {name: [round(min(s) * 1e6, 3), round(max(s) * 1e6, 3)] for name, s in mine.items()},
                    "over_donor_rate": {name: round(pruned_work / t / donor_rate, 4) for name, t in us.items()
                                        if name != "donor"},
                    "over_searched_time": {name: round(t / us["searched"], 4) for name, t in us.items()
                                           if name.startswith("transferred")}})
    return out


def every_donor_record(pairs: Sequence[tuple[Any, Any]], work: Path, counts: Sequence[int], per_donor: int,
                       preset, device, rounds: int) -> list[dict]:
    """Per pruned kernel: the `per_donor` best records of each of its two nearest donor workloads,
    replayed on it and timed in one batch with the searched and transferred schedules; the
    hindsight-fastest replay against the search and its rank among its donor's records."""
    from compile.database import open_database
    from compile.transfer import DONOR_WORKLOADS, postprocessors, rename_blocks, replay
    from compile.workload_structure import extents, structure_key

    target = preset.target()
    db = open_database(work / "donors", target)
    others = ["searched", *(f"transferred-k{k}" for k in counts)]
    out = []
    for _, task in pairs:
        mod = task.dispatched[0]
        posts = postprocessors(mod, target)
        replays, ranks = [], []
        for workload, _, _ in db.records_of_structure(structure_key(mod), target, near=extents(mod),
                                                      limit=DONOR_WORKLOADS, tuned_only=True):
            for rank, record in enumerate(db.get_top_k(workload, per_donor)):
                trace = rename_blocks(record.trace, workload.mod, mod)
                schedule = replay(trace, mod, posts) if trace is not None else None
                if schedule is not None:
                    replays.append(schedule)
                    ranks.append(rank)
        mine = [_best_schedule(work / name, task, preset) for name in others]
        if not replays or None in mine:
            continue
        samples = [[t * 1e6 for t in s] for s in _timed(replays + mine, preset, device, rounds)]
        us = [statistics.median(s) if s else float("inf") for s in samples]
        best = min(range(len(replays)), key=us.__getitem__)
        timed = dict(zip(others, us[len(replays):]))
        spread = dict(zip(["every_record_best", *others], [samples[best], *samples[len(replays):]]))
        out.append({"kernel": task.task_name, "replayed": len(replays), "every_record_best_us": round(us[best], 3),
                    "its_rank_in_its_donor": ranks[best],
                    "us": {name: round(t, 3) for name, t in timed.items()},
                    "range_us": {name: [round(min(s), 3), round(max(s), 3)] for name, s in spread.items() if s},
                    "every_record_best_over_searched_time": round(us[best] / timed["searched"], 4)})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(False)
    from prune.export import export_onnx
    from prune.models import create_model
    from prune.variants import build_variants

    preset = resolve_target("host")
    load_before, started = os.getloadavg(), time.monotonic()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgeseg-ceiling-"))
    work.mkdir(parents=True, exist_ok=True)
    unpruned_path = work / "unpruned.onnx"
    if not unpruned_path.is_file():
        export_onnx(create_model(args.model), args.input_size, unpruned_path)
    (variant,) = build_variants(args.model, args.input_size, 1, args.variant_seed, work)
    pairs = donor_pairs(extracted_tasks(variant.model_path, preset, work),
                        extracted_tasks(unpruned_path, preset, work), args.kernels)
    if not pairs:
        log.error("no kernel of the variant has a donor of another shape; nothing to compare")
        return 1
    log.info("%d pruned kernels paired with %d donors", len(pairs), len(_distinct([d for d, _ in pairs])))
    with use_device(None, HOST_KEY) as device:
        donors = finished(work / "donors.json", lambda: _search(
            _distinct([d for d, _ in pairs]), work / "donors", args.trials_per_task, preset, device))
        transfers = [finished(work / f"transferred-k{k}.json", lambda k=k: _transfer(
            [t for _, t in pairs], work / "donors", work / f"transferred-k{k}", k, preset, device))
            for k in args.transfer_candidates]
        searched = finished(work / "searched.json", lambda: _search(
            [t for _, t in pairs], work / "searched", args.trials_per_task, preset, device))
        kernels = time_pairs(pairs, work, args.transfer_candidates, preset, device, args.rounds)
        every = every_donor_record(pairs, work, args.transfer_candidates, args.every_donor_record, preset, device,
                                   args.rounds) if args.every_donor_record else []
    names = [*(f"transferred-k{k}" for k in args.transfer_candidates), "searched"]
    rates = {name: [k["over_donor_rate"][name] for k in kernels] for name in names}
    result = {
        "what": "pruned kernels: schedule transfer and a search of the donors' own effort, each against the "
                "donor's work per second",
        "model": args.model, "input_size": args.input_size, "variant_seed": args.variant_seed,
        "trials_per_task": args.trials_per_task, "donor_search": donors, "transfers": transfers,
        "pruned_search": searched,
        "protocol": f"donor, transferred and searched schedules built and timed in one batch, {args.rounds} "
                    "batches, median per schedule (range_us: min-max over the batches); each timing the "
                    "median of tuning's 5 repeats of at least 10 ms after 1 warm-up call",
        "over_donor_rate": {name: ratio_summary(values) for name, values in rates.items()},
        "over_searched_time": {name: ratio_summary([k["over_searched_time"][name] for k in kernels])
                               for name in names[:-1]},
        "at_least_90pct_of_donor": {name: bool(values) and statistics.median(values) >= 0.9
                                    for name, values in rates.items()},
        "kernels": kernels,
    }  # fmt: skip
    if every:
        result["every_donor_record"] = {
            "records_per_donor": args.every_donor_record,
            "best_over_searched_time": ratio_summary([k["every_record_best_over_searched_time"] for k in every]),
            "kernels": every}
    write_result(args.out, result, load_before, started)
    if args.work is None:
        shutil.rmtree(work)
    for k in kernels:
        print(f"{k['kernel']:28s} x{k['calls']}  donor {k['us']['donor']:9.2f} us  " + "  ".join(
            f"{name} {k['us'][name]:9.2f} us ({k['over_donor_rate'][name]:.2f})" for name in names))
    for name in names:
        print(f"{name}/donor rate {result['over_donor_rate'][name]}")
    for name in names[:-1]:
        print(f"{name}/searched time {result['over_searched_time'][name]}")
    for k in every:
        print(f"{k['kernel']:28s} best of {k['replayed']} donor records {k['every_record_best_us']:9.2f} us "
              f"(rank {k['its_rank_in_its_donor']} in its donor), searched {k['us']['searched']:9.2f} us")
    if every:
        print(f"best donor record/searched time {result['every_donor_record']['best_over_searched_time']}")
    print(f"{result['protocol']}; {args.trials_per_task} trials per kernel; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
