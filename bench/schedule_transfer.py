"""Schedule transfer after a latency collection, against tuning from scratch.

A collection (`latency_model.collect.tune_layers`: segformer-b0's layers, unpruned and
`--samples` random pruned variants, and the unpruned network's own kernels; anchors tuned with
`--trials-per-layer` trials each, the other kernels transferred from them) fills a scratch
database. Then one pruned variant drawn
with another seed (its layer configs mostly never collected) is compiled twice:
- after the collection, with `trials=0`: every kernel the database lacks takes a transferred
  schedule;
- from scratch, into an empty database, with `--scratch-trials-per-task` trials for every kernel
  (8 by default: eight times the main job's one trial per kernel when the issue was filed).
The collection's own search trials are recorded beside the from-scratch build's: choose
`--trials-per-layer` so that the collection spends no more in total than one from-scratch build
(59 anchors x 20 = 1,180 trials against 156 kernels x 8 = 1,248 at 64 px), and the comparison
is at equal total trials although the collection serves every later variant.
It reports, for each build, the kernels by schedule source (exact, transferred, tuned, untuned),
the compile's wall time, the numeric check against ONNX Runtime, and the latency over RPC
(both builds timed in interleaved rounds); over every transferred kernel (the collection's
and the variant's), its GFLOP/s against its donor's, both timed in one batch; and every kernel
of the variant that took a transferred schedule against the schedule the from-scratch build
tuned for that very kernel, both timed in one batch. The donor comparison mixes two things, the
schedule and the shape (a narrower kernel does less work per call and runs fewer FLOP/s under
any schedule); the comparison with the kernel's own tuning holds the shape fixed.

    PYTHONPATH=. python bench/schedule_transfer.py [--input-size 64 --samples 2 \\
        --trials-per-layer 20 --scratch-trials-per-task 8] [-o bench/results/schedule_transfer.json]

Everything runs in a scratch folder (`--work DIR` keeps it: a rerun after a crash skips the
collection and the builds that finished); the device's own database is never read or written.
Run it alone: every timing here is of this machine's CPU, shared with nothing else.
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
from typing import Sequence

from bench.common import extracted_tasks, finished, ratio_summary
from compile.api import compile_model
from compile.database import open_database
from compile.targets import resolve_target
from latency_model.collect import tune_layers
from prune.variants import build_variants
from latency_model.sampling import layer_configs, sample_kept
from prune.describe import describe_model
from prune.export import export_onnx
from prune.models import create_model
from runner.bench import bench_artifact
from runner.cli_support import setup_logging
from runner.machine import write_result
from runner.device import HOST_KEY
from runner.farm import use_device
from runner.timing import TimingProtocol

log = logging.getLogger("bench.schedule_transfer")


def _relative_speeds(database: Path, target) -> list[float]:
    """Every transferred record's GFLOP/s against its donor's, from its provenance."""
    db = open_database(database, target)
    workloads = {str(r.workload.mod): r.workload for r in db.get_all_tuning_records()}.values()
    provenances = (db.provenance(w.mod, target) for w in workloads)
    return [p["relative_speed"] for p in provenances if p and p.get("kind") == "transferred"]


def _collect(args: argparse.Namespace, configs, device, preset, work: Path) -> dict:
    """The collection's tuning into work/collection."""
    shutil.rmtree(work / "collection", ignore_errors=True)  # an unfinished one: start it again
    unpruned = export_onnx(create_model(args.model), args.input_size, work / "unpruned.onnx")
    collection_started = time.monotonic()
    tuning = tune_layers(configs, device, preset, work / "collection", args.trials_per_layer, networks=[unpruned])
    return {"seconds": round(time.monotonic() - collection_started, 1), "search_trials": tuning.trials,
            "anchors": tuning.anchors, "kernels": tuning.kernels}


def _build(model_path: Path, work: Path, name: str, preset, trials_per_task: int | None, device,
           database_from: Path | None) -> dict:
    """Compile the variant into work/artifact-NAME from the database work/NAME, made anew (a copy of
    `database_from`, or empty): its row so far."""
    shutil.rmtree(work / name, ignore_errors=True)  # what an unfinished build left would shorten this one
    if database_from is not None:
        shutil.copytree(database_from, work / name)
    log.info("compiling the variant %s", name)
    started = time.monotonic()
    build = compile_model(model_path, work / f"artifact-{name}", preset, database_dir=work / name, trials=0,
                          trials_per_task=trials_per_task, device=device)
    return {"sources": build.tuning.to_dict()["sources"], "kernels": build.kernels_total,
            "untuned": build.untuned, "search_trials": build.tuning.trials,
            "compile_wall_seconds": round(time.monotonic() - started, 1),
            "tuning_seconds": round(build.tuning.seconds, 1),
            "transfer_seconds": round(build.tuning.transfer_seconds, 1)}


def _against_own_tuning(model_path: Path, work: Path, preset, device) -> list[dict]:
    """The variant's kernels that took a transferred schedule, each timed in one batch beside the
    schedule the from-scratch build tuned for that very kernel."""
    from compile.measure import measure_schedules
    from compile.transfer import postprocessors, replay

    target = preset.target()
    after, scratch = open_database(work / "after-collection", target), open_database(work / "from-scratch", target)
    pairs = []
    for task in extracted_tasks(model_path, preset, work):
        mod = task.dispatched[0]
        provenance = after.provenance(mod, target)
        transferred = after.query_tuning_record(mod, target, task.task_name)
        own = scratch.query_tuning_record(mod, target, task.task_name)
        if not provenance or provenance.get("kind") != "transferred" or transferred is None or own is None:
            continue
        posts = postprocessors(mod, target)
        schedules = replay(transferred.trace, mod, posts), replay(own.trace, mod, posts)
        if None not in schedules:
            pairs.append((task.task_name, int(task.weight), *schedules))
    log.info("timing %d transferred kernels beside their own from-scratch schedules", len(pairs))
    seconds = measure_schedules([s for *_, a, b in pairs for s in (a, b)], target, preset, device)
    return [{"kernel": name, "calls": calls, "transferred_us": round(a * 1e6, 3), "own_tuning_us": round(b * 1e6, 3)}
            for (name, calls, *_), a, b in zip(pairs, seconds[0::2], seconds[1::2]) if a and b]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segformer-b0", help="model whose layers the collection samples")
    parser.add_argument("--input-size", type=int, default=64, help="input size (px)")
    parser.add_argument("--samples", type=int, default=2, help="random pruned variants of the collection")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the collection")
    parser.add_argument("--variant-seed", type=int, default=1000, help="seed of the pruned variant compiled")
    parser.add_argument("--trials-per-layer", type=int, default=20, help="trials per anchor kernel")
    parser.add_argument("--scratch-trials-per-task", type=int, default=8, help="from-scratch trials per kernel")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds of both builds")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per round")
    parser.add_argument("--warmup", type=int, default=3, help="discarded warm-up runs per round")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the databases and builds here: a rerun skips the collection and the builds "
                        "that finished (default: a fresh temporary folder)")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/schedule_transfer.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(False)
    preset = resolve_target("host")
    target = preset.target()
    description = describe_model(args.model, args.input_size)
    kept = sample_kept(description, args.samples, args.seed)
    configs = layer_configs(description, kept)
    load_before, started = os.getloadavg(), time.monotonic()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgeseg-transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    with use_device(None, HOST_KEY) as device:
        (variant,) = build_variants(args.model, args.input_size, 1, args.variant_seed, work)
        collected = {c.key for c in configs}
        variant_configs = {c.key for c in variant.configs}
        new_configs = len(variant_configs - collected)
        log.info("collection: %d layer configs and the unpruned network's kernels; the variant has %d layer "
                 "configs, %d never collected", len(configs), len(variant_configs), new_configs)
        collection = finished(work / "collection.json", lambda: _collect(args, configs, device, preset, work))
        rows = {}
        for name, trials_per_task, database_from in (
                ("after-collection", None, work / "collection"),
                ("from-scratch", args.scratch_trials_per_task, None)):
            rows[name] = finished(work / f"build-{name}.json", lambda: _build(
                variant.model_path, work, name, preset, trials_per_task, device, database_from))
        protocol = TimingProtocol(warmup=args.warmup, repeat=args.repeat)
        timings: dict[str, list[float]] = {name: [] for name in rows}
        for round_index in range(args.rounds):  # interleaved: drift on this machine hits both builds alike
            for name, row in rows.items():
                result = bench_artifact(work / f"artifact-{name}", device, protocol, check=round_index == 0)
                if result.check is not None:
                    row["check_passed"] = result.check.passed
                timings[name].extend(result.timing.samples_ms)
        speeds = _relative_speeds(work / "after-collection", target)
        own = _against_own_tuning(variant.model_path, work, preset, device)
    for name, row in rows.items():
        samples = sorted(timings[name])
        row.update(median_ms=round(statistics.median(samples), 4), min_ms=round(samples[0], 4),
                   max_ms=round(samples[-1], 4), runs=len(samples))
    after, fresh = rows["after-collection"], rows["from-scratch"]
    result = {
        "what": "a pruned variant compiled after a latency collection (trials 0, schedule transfer) vs "
                "tuned from scratch",
        "collection": {"model": args.model, "input_size": args.input_size, "samples": args.samples,
                       "seed": args.seed, "layer_configs": len(configs),
                       "trials_per_anchor_kernel": args.trials_per_layer, **collection},
        "variant": {"seed": args.variant_seed, "layer_configs": len(variant_configs),
                    "never_collected": new_configs},
        "from_scratch_trials_per_task": args.scratch_trials_per_task,
        "collection_trials_over_scratch_trials": round(
            collection.get("search_trials", 0) / max(1, fresh["search_trials"]), 3),
        "protocol": f"{protocol.describe()}; {args.rounds} interleaved rounds per build, median of all runs",
        "rows": rows,
        "compile_time_ratio": round(after["compile_wall_seconds"] / fresh["compile_wall_seconds"], 3),
        "latency_ratio_after_over_scratch": round(after["median_ms"] / fresh["median_ms"], 3),
        "transferred_vs_donor_gflops": ratio_summary(speeds),
        "transferred_over_own_tuning_time": {
            **ratio_summary(own_ratios := [k["transferred_us"] / k["own_tuning_us"] for k in own]),
            "share_at_most_1.1": round(sum(r <= 1.1 for r in own_ratios) / max(1, len(own_ratios)), 3),
            "weighted_by_calls": round(sum(k["transferred_us"] * k["calls"] for k in own)
                                       / max(1e-9, sum(k["own_tuning_us"] * k["calls"] for k in own)), 3),
            "how": "each transferred kernel of the variant and the schedule the from-scratch build tuned for it, "
                   "built and timed in one batch (tuning's evaluator); time ratio, below 1 is the transfer faster"},
        "own_tuning_kernels": own,
        "goals": {
            "zero_untuned_and_check": after["untuned"] == 0 and after["check_passed"],
            "compile_time_at_most_10pct": after["compile_wall_seconds"] <= 0.1 * fresh["compile_wall_seconds"],
            "latency_no_worse_than_scratch": after["median_ms"] <= fresh["median_ms"],
            "median_transfer_at_least_90pct_of_donor": bool(speeds) and statistics.median(speeds) >= 0.9,
        },
    }  # fmt: skip
    write_result(args.out, result, load_before, started)
    if args.work is None:
        shutil.rmtree(work)
    for name, row in rows.items():
        print(f"{name:17s} {row['sources']}, {row['search_trials']} search trials, compile {row['compile_wall_seconds']:.0f} s, "
              f"check {'passed' if row['check_passed'] else 'FAILED'}, median {row['median_ms']:.3f} ms over "
              f"{row['runs']} runs (min {row['min_ms']:.3f}, max {row['max_ms']:.3f})")
    print(f"collection {collection['seconds']:.0f} s, {collection.get('search_trials')} search trials over "
          f"{len(configs)} layer configs; compile time after/scratch "
          f"{result['compile_time_ratio']:.2f}; latency after/scratch {result['latency_ratio_after_over_scratch']:.2f}; "
          f"transferred kernels vs donors (GFLOP/s ratio): {result['transferred_vs_donor_gflops']}; "
          f"transferred over the kernel's own from-scratch schedule (time ratio): "
          f"{result['transferred_over_own_tuning_time']}")
    print(f"goals: {result['goals']}; {result['protocol']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
