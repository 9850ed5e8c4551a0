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
- the variant's kernels take a schedule transferred from those donors (one candidate each: the
  nearest donor, the pair's), with no search;
- the variant's kernels are searched from scratch with the same trials per kernel.
Every pair's three schedules (donor at the donor's shape, transferred and searched at the pruned
shape) are built and timed in one batch, `--rounds` times, median per schedule; per kernel it
reports work per second (GFLOP/s, or elements for kernels without FLOPs) of the transfer and of
the search against the donor's, and the transfer's time against the search's.

    PYTHONPATH=. python bench/transfer_ceiling.py [--input-size 64 --variant-seed 1000 --kernels 12 \\
        --trials-per-task 32 --rounds 3] [--work DIR] [-o bench/results/transfer_ceiling.json]

`--work` keeps the exports and the three databases: a rerun skips the searches that finished.
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
from runner.cli_support import setup_logging
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
    p.add_argument("--rounds", type=int, default=3, help="batches timing every schedule; median per schedule")
    p.add_argument("--work", type=Path, default=None, help="folder kept for a rerun (default: a temporary one)")
    p.add_argument("-o", "--out", type=Path, default=Path("bench/results/transfer_ceiling.json"))
    return p.parse_args(argv)


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


def _transfer(tasks: Sequence[Any], donors: Path, database: Path, preset, device) -> dict:
    """Transfer the donors' schedules (nearest donor only) to `tasks` into a copy of `donors`."""
    from compile.tuning import tune_extracted

    shutil.rmtree(database, ignore_errors=True)
    shutil.copytree(donors, database)
    report = tune_extracted(tasks, preset, lambda: device, database, trials=0, transfer_candidates=1)
    return {"transferred": sum(t.source == "transferred" for t in report.tasks),
            "seconds": round(report.transfer_seconds, 1)}


def _best_schedule(database: Path, task: Any, preset: Any) -> Any | None:
    """The database's best schedule for `task`, replayed with the target's postprocessors."""
    from compile.database import open_database
    from compile.transfer import postprocessors, replay

    target = preset.target()
    mod = task.dispatched[0]
    record = open_database(database, target).query_tuning_record(mod, target, task.task_name)
    return None if record is None else replay(record.trace, mod, postprocessors(mod, target))


def time_pairs(pairs: Sequence[tuple[Any, Any]], work: Path, preset, device, rounds: int) -> list[dict]:
    """Every pair's donor, transferred and searched schedules, timed in one batch `rounds` times."""
    from compile.measure import measure_schedules
    from compile.transfer import work as work_of
    from compile.workload_structure import extents

    rows, schedules = [], []
    for donor, task in pairs:
        three = (_best_schedule(work / "donors", donor, preset), _best_schedule(work / "transferred", task, preset),
                 _best_schedule(work / "searched", task, preset))
        if None in three:
            log.warning("%s: no %s schedule; left out", task.task_name,
                        ("donor", "transferred", "searched")[three.index(None)])
            continue
        rows.append((donor, task))
        schedules.extend(three)
    samples: list[list[float]] = [[] for _ in schedules]
    for _ in range(rounds):
        for i, seconds in enumerate(measure_schedules(schedules, preset.target(), preset, device)):
            if seconds:
                samples[i].append(seconds)
    out = []
    for k, (donor, task) in enumerate(rows):
        three = samples[3 * k:3 * k + 3]
        if not all(three):
            continue
        times = [statistics.median(s) for s in three]
        donor_rate = work_of(donor.dispatched[0]) / times[0]
        pruned_work = work_of(task.dispatched[0])
        out.append({"kernel": task.task_name, "calls": int(task.weight), "extents": extents(task.dispatched[0]),
                    "donor": donor.task_name, "donor_extents": extents(donor.dispatched[0]),
                    "donor_us": round(times[0] * 1e6, 3), "transferred_us": round(times[1] * 1e6, 3),
                    "searched_us": round(times[2] * 1e6, 3),
                    "range_us": {name: [round(min(s) * 1e6, 3), round(max(s) * 1e6, 3)]
                                 for name, s in zip(("donor", "transferred", "searched"), three)},
                    "transferred_over_donor_rate": round(pruned_work / times[1] / donor_rate, 4),
                    "searched_over_donor_rate": round(pruned_work / times[2] / donor_rate, 4),
                    "transferred_over_searched_time": round(times[1] / times[2], 4)})
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
        transferred = finished(work / "transferred.json", lambda: _transfer(
            [t for _, t in pairs], work / "donors", work / "transferred", preset, device))
        searched = finished(work / "searched.json", lambda: _search(
            [t for _, t in pairs], work / "searched", args.trials_per_task, preset, device))
        kernels = time_pairs(pairs, work, preset, device, args.rounds)
    transfer_rates = [k["transferred_over_donor_rate"] for k in kernels]
    search_rates = [k["searched_over_donor_rate"] for k in kernels]
    result = {
        "what": "pruned kernels: schedule transfer and a search of the donors' own effort, each against the "
                "donor's work per second",
        "model": args.model, "input_size": args.input_size, "variant_seed": args.variant_seed,
        "trials_per_task": args.trials_per_task, "donor_search": donors, "transfer": transferred,
        "pruned_search": searched,
        "protocol": f"donor, transferred and searched schedules built and timed in one batch, {args.rounds} "
                    "batches, median per schedule (range_us: min-max over the batches); each timing the "
                    "median of tuning's 5 repeats of at least 10 ms after 1 warm-up call",
        "transferred_over_donor_rate": ratio_summary(transfer_rates),
        "searched_over_donor_rate": ratio_summary(search_rates),
        "transferred_over_searched_time": ratio_summary([k["transferred_over_searched_time"] for k in kernels]),
        "goal_transfer_at_least_90pct_of_donor": bool(transfer_rates) and statistics.median(transfer_rates) >= 0.9,
        "search_at_least_90pct_of_donor": bool(search_rates) and statistics.median(search_rates) >= 0.9,
        "kernels": kernels,
    }  # fmt: skip
    write_result(args.out, result, load_before, started)
    if args.work is None:
        shutil.rmtree(work)
    for k in kernels:
        print(f"{k['kernel']:28s} x{k['calls']}  donor {k['donor_us']:9.2f} us  transferred {k['transferred_us']:9.2f} us "
              f"({k['transferred_over_donor_rate']:.2f} of its rate)  searched {k['searched_us']:9.2f} us "
              f"({k['searched_over_donor_rate']:.2f})")
    print(f"transferred/donor rate {result['transferred_over_donor_rate']}\n"
          f"searched/donor rate {result['searched_over_donor_rate']}\n"
          f"transferred/searched time {result['transferred_over_searched_time']}\n"
          f"{result['protocol']}; {args.trials_per_task} trials per kernel; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
