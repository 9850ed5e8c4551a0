"""Pareto points of pruned networks: mIoU against latency measured on the embedded device.

    PYTHONPATH=. python bench/prune_vs_baselines.py --model segformer-b0 --input-size 128 \
        --predictor flops --budgets 0.75,0.5,0.35 --methods bilevel,uniform,magnitude \
        --seeds 0,1,2 [--uniform-budgets 0.25,0.2,0.15] [--trials 128] [-o bench/results/prune_vs_baselines]

For every (method, budget, seed): `prune.train.run_pruning` on a synthetic task (`--data`) into its own
folder (resumable: a finished run is returned as is), `compile.api.compile_model` of its
model.onnx for the `host` preset, then `runner.bench.bench_artifact` with the runner's timing protocol and
its numeric check, all on one embedded loopback farm.

The unpruned network is a point too (method "unpruned", every seed): prune's `dense` method keeps
every unit and gives it the same plain training and fine-tuning steps as the baselines. The
baselines and the unpruned network of a seed share that plain training (`prune.shared_training`, in
OUT/work/plain_training): it is trained once per seed instead of once per point.

Every network gets the same tuning treatment, whatever the compile order: the run takes one
snapshot of the tuning database (`--database`, default the host device's) when it begins
(OUT/work/base_database, kept for resumed runs), and each network compiles into a fresh copy of
that snapshot (OUT/work/point_database): exact records and schedule transfer from it, then
`--trials` MetaSchedule trials for what is left (0: those kernels stay naive untuned code). Its
own tuning dies with its copy, so no later network inherits it. A database filled by
`python -m latency_model collect` for the model is the base that leaves the least to chance.

Budgets are fractions of the unpruned network's predicted latency (`--budgets-ms`: absolute ms
in the predictor's units). A device predictor collected beside a drift reference (collect's
protocol) is in milliseconds at the speed the device had when that reference was made; every
network is then timed beside the same reference (`runner.drift`, found in `--database`, the
collection's), so its measured ms are in the budget's unit. Each finished point is appended
(fsynced) to OUT/points.jsonl at once: a rerun with the same settings skips what is there. Runs
and artifacts live in OUT/work/ (not for git). The summary (OUT/result.json, OUT/pareto.png) gives, per method and budget, mean and std
over seeds of mIoU and measured ms; the bilevel-minus-uniform mIoU gap in points at the same
budget and at the same measured latency (uniform's curve, ending at the unpruned network, interpolated;
`--uniform-budgets` extends it to lower budgets), beside the gap the unpruned network's mIoU would
have there (the most a pruned network can be expected to reach: a budget where it is under 3
points cannot show the issue's gap on this task and training); and the share of
bilevel networks within 5% of their budget, by predicted ms and by measured ms. Measured ms are
compared with the budget directly when the predictor is a device predictor (same units); with
`flops` (nominal ms) the measured budget is the budget fraction times the unpruned network's
measured latency.

At the end every network is timed again in `--retime-rounds` rounds, each a session of its own
timing every network round-robin (beside the reference, if any; OUT/retimed.json): the summary's
measured ms are the medians over rounds, which met the same machine states, since the timings
taken right after each build are minutes to hours apart on this shared machine. Every re-timing
is also appended to OUT/retimings.jsonl (each `--finished-only` rerun adds one), and the summary
judges the bilevel networks' landing again on the median over all their sessions
(`pooled_retimings`): one re-timing's five sessions carry a few percent of session noise, the
pool of several re-timings hours apart leaves mostly each network's own prediction error.

Cost: a point is one pruning run (epochs x (search + fine-tune steps) plus an evaluation per epoch),
one compile (about a minute untuned; with trials, MetaSchedule rounds of 10-30 s per kernel the
database lacks) and one benchmark (seconds). At the defaults (128 px, batch 8, 3 x (100 + 100) steps,
200 val scenes) on this 2-core machine at load 8: a plain step 3.9 s, a bi-level step 5.5 s, an
evaluation 45 s, so about 35 min per baseline point and 45 min per bi-level point before compiling.
At load 1-2 the same steps took 0.3-0.5 s: about 5 min per point.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.pareto_points import (STEP_COST, UNPRUNED, apply_retimes, budget_check, goals, plot_pareto, pool_retimes,
                                  pooled_summary, print_summary, summarize, unpruned_measured)
from runner.errors import EdgesegError

log = logging.getLogger("bench.prune_vs_baselines")

POINTS, RESULT, PLOT, SETTINGS, RETIMED = "points.jsonl", "result.json", "pareto.png", "settings.json", "retimed.json"
RETIMINGS = "retimings.jsonl"  # every re-timing of the folder, appended: pooled, they part a network's bias from noise
BASE_DATABASE, POINT_DATABASE = "base_database", "point_database"  # folders in OUT/work


@dataclasses.dataclass(frozen=True)
class PointSpec:
    """One point to measure: a method at a budget (ms, in the predictor's units) for a seed."""

    method: str
    budget_ms: float
    budget_fraction: float  # of the unpruned predicted latency
    seed: int

    @property
    def key(self) -> str:
        return f"{self.method}-{self.budget_ms:.6g}ms-seed{self.seed}"


def plan_points(methods: Sequence[str], budgets_ms: Sequence[float], seeds: Sequence[int],
                full_ms: float, uniform_budgets_ms: Sequence[float] = ()) -> list[PointSpec]:
    """Per seed, the unpruned reference first (the flops-mode measured budgets need the first
    seed's), then every budget x method, so a cut-short run has whole comparisons early; then
    uniform scaling alone at `uniform_budgets_ms`, which extend its curve to where the other
    methods' networks measure (the gap at equal measured latency is read off that curve). The
    reference is trained at every seed: the curve ends at its mean, and one seed's luck would
    move every gap."""
    points = []
    for seed in seeds:
        points.append(PointSpec(UNPRUNED, full_ms, 1.0, seed))
        for budget in budgets_ms:
            points += [PointSpec(m, budget, budget / full_ms, seed) for m in methods]
    extra = [b for b in uniform_budgets_ms if "uniform" not in methods or b not in budgets_ms]
    for seed in seeds:
        points += [PointSpec("uniform", budget, budget / full_ms, seed) for budget in extra]
    return points


# ---- the points and re-timings files: one fsynced JSON line per finished point or re-timing ----

def read_lines(path: Path) -> list[dict[str, Any]]:
    """The finished points (or re-timings) in `path`, none when it does not exist. A line cut
    short by a crash while writing is skipped: its point is measured again."""
    if not path.exists():
        return []
    points = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            points.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d was cut short: its point is measured again", path, number)
    return points


def append_line(path: Path, record: dict[str, Any]) -> None:
    fresh_line = not path.exists() or path.read_bytes()[-1:] in (b"", b"\n")
    with open(path, "a") as f:
        f.write(("" if fresh_line else "\n") + json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_same_settings(out: Path, settings: dict[str, Any]) -> None:
    """Points of other settings must not mix with these: refuse, or record the settings."""
    from prune.settings import as_they_ran

    path = out / SETTINGS
    if path.exists():
        saved = json.loads(path.read_text())
        if "prune" in saved:  # prune settings added since: what runs did before they existed
            # The base names no method; a setting whose old value depended on it (the search's weight
            # decay: 1e-3 for bilevel) is filled as the bilevel points ran, so such a folder is refused.
            filled = as_they_ran({"method": "bilevel", **saved["prune"]})
            del filled["method"]  # not a base setting
            saved["prune"] = filled
        differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differ:
            details = ", ".join(f"{k}: {saved.get(k)!r} there, {settings.get(k)!r} now" for k in differ)
            raise EdgesegError(f"{out} holds points measured with other settings ({details}).",
                               "Repeat those settings to resume, or pass another -o.")
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")
    (out / ".gitignore").write_text("work/\n")  # runs, checkpoints and artifacts: large, local


# ---- measuring ----

def unpruned_latency(base: Any) -> tuple[float, float]:
    """(unpruned, smallest reachable) predicted ms of `base`'s model, by run_pruning's own path."""
    from prune.models import create_model
    from prune.train import build_budget

    _, budget = build_budget(base, create_model(base.model, num_classes=base.num_classes))
    return budget.full_latency_ms(), budget.min_latency_ms()


@dataclasses.dataclass(frozen=True)
class Measuring:
    """Everything a point needs besides its spec: one device, one base database, one protocol."""

    base: Any  # PruneSettings
    work: Path
    device: Any
    preset: Any
    base_database: Path  # the run's snapshot every network's tuning starts from
    trials: int
    protocol: Any
    threads: int | None
    progress: bool
    reference: Any = None  # the DriftReference whose unit the predictor's ms are in (None: raw ms)


def measure_point(spec: PointSpec, m: Measuring) -> dict[str, Any]:
    """Prune (or resume), compile and benchmark one point; its record for points.jsonl."""
    from compile.api import compile_model
    from compile.database import snapshot_database
    from prune.shared_training import SharedTraining
    from prune.train import run_pruning
    from runner.bench import bench_artifact, bench_batch
    from runner.timing import TimingProtocol

    if spec.method == UNPRUNED:
        settings = dataclasses.replace(m.base, method="dense", budget_ms=None, seed=spec.seed)
    else:
        settings = dataclasses.replace(m.base, method=spec.method, budget_ms=spec.budget_ms, seed=spec.seed)
    run_dir, artifact_dir = m.work / "runs" / spec.key, m.work / "artifacts" / spec.key
    started = time.monotonic()
    report = run_pruning(settings, run_dir, progress=m.progress,
                         shared_training=SharedTraining(m.work / "plain_training")).report
    pruned = time.monotonic()
    database = m.work / POINT_DATABASE  # this network's own copy: it inherits no other network's tuning
    start_records = snapshot_database(m.base_database, database)
    compiled = compile_model(run_dir / "model.onnx", artifact_dir, m.preset, database, m.trials, device=m.device,
                             kernel_library=False)  # whole networks only: half the build
    built = time.monotonic()
    if m.reference is None:
        bench = bench_artifact(artifact_dir, m.device, m.protocol, threads=m.threads, check=True)
        timing, raw = bench.timing, {}
    else:  # the budget's unit: ms at the reference's nominal speed; the check's one run is not a figure
        check_only = TimingProtocol(warmup=0, repeat=1, min_repeat_ms=0)
        bench = bench_artifact(artifact_dir, m.device, check_only, threads=m.threads, check=True)
        (beside,) = bench_batch([artifact_dir], m.device, in_rounds(m.protocol, m.reference), m.reference, m.threads)
        timing, raw = beside.timing, {"measured_raw_median_ms": beside.raw.median_ms}
    done = time.monotonic()
    return {
        "key": spec.key, "method": spec.method, "seed": spec.seed, "budget_ms": spec.budget_ms,
        "budget_fraction": spec.budget_fraction, "predicted_ms": report["predicted_ms"],
        "unpruned_predicted_ms": report["unpruned_predicted_ms"], "miou": report["miou"],
        "dropped_to_fit": report["dropped_to_fit"], "measured_median_ms": timing.median_ms, **raw,
        "measured_std_ms": timing.std_ms, "measured_runs": timing.runs, "fps": 1000.0 / timing.median_ms,
        "threads": bench.threads, "check_max_abs_error": bench.check.max_abs_error,
        "compile": {"trials": compiled.tuning.trials, "tuning_seconds": round(compiled.tuning.seconds, 1),
                    "kernels_tuned": compiled.kernels_tuned, "kernels_total": compiled.kernels_total,
                    "base_records": start_records, "task_sources": compiled.tuning.to_dict()["sources"]},
        "seconds": {"prune": round(pruned - started, 1), "compile": round(built - pruned, 1),
                    "bench": round(done - built, 1)},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "utc_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "paths": {"run": str(run_dir), "artifact": str(artifact_dir)},
    }


def base_snapshot(database: Path, folder: Path) -> int:
    """Records in `folder`, the snapshot of `database` every network of the run starts from, taken
    once, so a resumed run gives its new networks the same start as the finished ones."""
    from compile.database import FILENAME, open_database, snapshot_database

    records = len(open_database(folder)) if (folder / FILENAME).is_file() else snapshot_database(database, folder)
    log.info("every network's tuning starts from %s: %d records (a snapshot of %s)", folder, records, database)
    if not records:
        log.warning("the base tuning database %s holds no records: every network tunes from scratch with its "
                    "--trials. Fill one first (python -m latency_model collect --model ...) and pass it as "
                    "--database.", database)
    return records


def tuning_note(trials: int, database: Path, base_records: int) -> str:
    """How every network got its schedules: the same treatment for all, whatever the compile order."""
    rest = (f"then {trials} MetaSchedule trials for the kernels left" if trials
            else "kernels left without a record are naive untuned code")
    return (f"every network compiled into its own fresh copy of one snapshot of {database} ({base_records} records, "
            f"taken when the run began): exact records and schedule transfer from it, {rest}; no network inherits "
            "another's tuning")


def in_rounds(protocol: Any, reference: Any) -> Any:
    """`protocol` taken one sample a round, round-robin in one session (beside `reference` if any)."""
    return dataclasses.replace(protocol, rounds=protocol.repeat, sessions=1, drift_reference=reference is not None)


def retime(points: Sequence[dict[str, Any]], device: Any, protocol: Any, threads: int | None, rounds: int,
           progress: bool, reference: Any = None) -> dict[str, list[float]]:
    """Every point's median in each of `rounds` sessions, each timing all the networks round-robin
    (beside `reference`, in its unit, when given), so every network meets the same machine states:
    the timings taken after each build are minutes to hours apart on a shared machine."""
    from tqdm import tqdm

    from runner.bench import bench_batch

    times: dict[str, list[float]] = {p["key"]: [] for p in points}
    artifacts = [Path(p["paths"]["artifact"]) for p in points]
    for _ in tqdm(range(rounds), desc="re-timing rounds", disable=not progress):
        for p, timed in zip(points, bench_batch(artifacts, device, in_rounds(protocol, reference), reference, threads)):
            times[p["key"]].append(timed.timing.median_ms)
    return times


def predictor_reference(predictor: str, database: Path, threads: int | None) -> Any:
    """The drift reference whose unit a device predictor's ms are in, from the collection's
    database (None: a FLOPs predictor, or one collected without a reference: raw ms). A predictor
    in another unit or of another thread count is refused."""
    from latency_model.drift_reference import FOLDER
    from latency_model.predictor import MANIFEST, check_timed_alike
    from prune.settings import FLOPS
    from runner.drift import REFERENCE_FILE, DriftReference

    if predictor == FLOPS:
        return None
    manifest = json.loads((Path(predictor) / MANIFEST).read_text())
    if not (manifest.get("protocol") or {}).get("drift_reference"):
        check_timed_alike(manifest, predictor, False, None, threads)
        return None
    folder = database / FOLDER
    if not (folder / REFERENCE_FILE).is_file():
        raise EdgesegError(f"The predictor {predictor} prices layers in ms at the speed of the drift reference of the "
                           f"database it was collected into, and {database} has no {FOLDER}/.",
                           "Pass that collection's tuning database as --database.")
    reference = DriftReference.load(folder)
    check_timed_alike(manifest, predictor, True, reference.nominal_ms, threads)
    return reference


# ---- command line ----

def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more positive numbers")
    return values


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="segformer-b0")
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--predictor", default="flops", help="latency predictor folder, or 'flops' (nominal ms)")
    p.add_argument("--budgets", type=_floats, default=[0.75, 0.5, 0.35],
                   help="fractions of the unpruned predicted latency (default 0.75,0.5,0.35)")
    p.add_argument("--uniform-budgets", type=_floats, default=[],
                   help="more budgets for uniform scaling alone, so that its curve reaches the measured ms of "
                   "the other methods' networks (same units as --budgets; e.g. 0.25,0.2,0.15)")
    p.add_argument("--budgets-ms", action="store_true",
                   help="--budgets and --uniform-budgets are absolute ms in the predictor's units")
    p.add_argument("--methods", type=_words, default=["bilevel", "uniform", "magnitude"])
    p.add_argument("--seeds", type=lambda t: [int(x) for x in _words(t)], default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--search-steps", type=int, default=100)
    p.add_argument("--finetune-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--data", default="synthetic-hard", choices=["synthetic", "synthetic-hard"],
                   help="the synthetic task (synthetic-hard, the default: 40 classes that need capacity; "
                   "synthetic: 8 easy classes, on which pruning to 0.75 loses nothing)")
    p.add_argument("--classes", type=int, default=8, help="synthetic classes (synthetic-hard has its own 40)")
    p.add_argument("--train-scenes", type=int, default=None, help="synthetic training scenes (default 2000)")
    p.add_argument("--val-scenes", type=int, default=None, help="synthetic validation scenes (default 200)")
    p.add_argument("--trials", type=int, default=128,
                   help="MetaSchedule trials per compiled network for kernels the database lacks "
                   "(0: database only, missing kernels stay naive untuned code; default 128)")
    p.add_argument("--database", type=Path, default=None,
                   help="tuning database folder every network starts from, as a snapshot taken when the "
                   "run begins; no network writes to it (default: the host device's workspace database)")
    p.add_argument("--threads", type=int, default=None, help="device threads while timing (default: all)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--min-repeat-ms", type=int, default=10, help="calls per sample grow to last this long")
    p.add_argument("--cooldown-ms", type=int, default=0)
    p.add_argument("--retime-rounds", type=int, default=5,
                   help="at the end, time every network this many times round-robin and report the median "
                   "(0: keep the timing taken after each build; default 5)")
    p.add_argument("--finished-only", action="store_true",
                   help="measure nothing new: re-time and summarise the points already in OUT (a run cut short)")
    p.add_argument("--note", default=None, help="a label saved in result.json (e.g. 'smoke run')")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-o", "--out", type=Path, default=Path("bench/results/prune_vs_baselines"))
    p.add_argument("--verbose", "-v", action="store_true")
    return p.parse_args(argv)


def _versions() -> dict[str, str]:
    import timm
    import torch
    import tvm

    return {"python": platform.python_version(), "torch": torch.__version__, "tvm": tvm.__version__,
            "timm": timm.__version__, "numpy": np.__version__}


def trained_with(base: Any) -> str:
    """What every row of the comparison was trained with (one sentence under the table)."""
    b = base
    return (f"every point, each method and the unpruned one: {b.epochs} x ({b.search_steps} search + "
            f"{b.finetune_steps} fine-tuning) steps of batch {b.batch_size} on {b.data}, lr {b.lr}, weight decay "
            f"{b.decay('search')} in the search and {b.decay('finetune')} in the fine-tuning; the search is plain "
            "training for uniform, magnitude and the unpruned network (dense), bi-level steps for bilevel; all start "
            + (f"from {b.weights}" if b.weights else "from random weights"))


def units(device_units: bool, reference: Any) -> str:
    """What the budgets' and measured figures' milliseconds are."""
    if not device_units:
        return "nominal ms (FLOPs)"
    if reference is None:
        return "device ms (raw)"
    return f"device ms at the speed of the drift reference {reference.artifact} (nominal {reference.nominal_ms:.4g} ms)"


def _span_seconds(points: Sequence[dict[str, Any]]) -> float | None:
    """From the first point's start to the last point's end, by their timestamps (resumed runs too)."""
    if not points:
        return None
    ends = [dt.datetime.fromisoformat(p["utc_time"].replace("Z", "+00:00")) for p in points]
    starts = [end - dt.timedelta(seconds=sum(p["seconds"].values())) for end, p in zip(ends, points)]
    return round((max(ends) - min(starts)).total_seconds(), 1)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from compile.targets import resolve_target
    from prune.settings import FLOPS, METHODS, PruneSettings
    from runner.device import HOST_KEY
    from runner.farm import use_device
    from runner.timing import TimingProtocol
    from runner.workspace import tuning_database_dir

    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        raise EdgesegError(f"Unknown method(s) {unknown or args.methods}.", f"Use some of: {', '.join(METHODS)}.")
    if not args.seeds:
        raise EdgesegError("No seed given.", "Pass --seeds as a comma-separated list, e.g. 0,1,2.")
    if args.database is not None and not args.database.is_dir():
        raise EdgesegError(f"The tuning database {args.database} does not exist.",
                           "Pass the folder a collection or compile tuned into (it holds tuning.sqlite), "
                           "or leave --database out to start from the host device's database.")
    started = time.monotonic()
    base = PruneSettings(model=args.model, data=args.data, predictor=args.predictor, budget_ms=1.0,
                         input_size=args.input_size, epochs=args.epochs, search_steps=args.search_steps,
                         finetune_steps=args.finetune_steps, batch_size=args.batch_size, num_classes=args.classes,
                         train_scenes=args.train_scenes, val_scenes=args.val_scenes)
    full_ms, min_ms = unpruned_latency(base)
    budgets, uniform_budgets = (sorted(b if args.budgets_ms else [f * full_ms for f in b], reverse=True)
                                for b in (args.budgets, args.uniform_budgets))
    for budget in budgets + uniform_budgets:
        if not min_ms <= budget <= full_ms:
            raise EdgesegError(f"The budget {budget:.4g} ms is outside the reachable range {min_ms:.4g}-{full_ms:.4g} "
                               f"ms of {args.model} at {args.input_size} px ({args.predictor}).",
                               "Pass budgets inside it (fractions between "
                               f"{min_ms / full_ms:.3f} and 1 without --budgets-ms).")
    preset = resolve_target("host")  # the workspace database's target (threads only at run time)
    database = args.database or tuning_database_dir(HOST_KEY, preset.name)
    protocol = TimingProtocol(warmup=args.warmup, repeat=args.repeat, min_repeat_ms=args.min_repeat_ms,
                              cooldown_ms=args.cooldown_ms)
    device_units = args.predictor != FLOPS
    reference = predictor_reference(args.predictor, database, args.threads)
    fixed = {k: v for k, v in base.to_dict().items() if k not in ("method", "budget_ms", "fps", "seed")}
    check_same_settings(args.out, {"prune": fixed, "trials": args.trials, "database": str(database),
                                   "protocol": protocol.to_dict(), "threads": args.threads,
                                   "tuning": "a fresh copy of the base snapshot per network",
                                   "drift_reference_nominal_ms": reference.nominal_ms if reference else None})
    base_database = args.out / "work" / BASE_DATABASE
    base_records = base_snapshot(database, base_database)
    plan = plan_points(args.methods, budgets, args.seeds, full_ms, uniform_budgets)
    points_path = args.out / POINTS
    points = read_lines(points_path)
    todo = [s for s in plan if s.key not in {p["key"] for p in points}]
    log.info("%d of %d points to measure (%d already in %s)", len(todo), len(plan), len(plan) - len(todo),
             points_path)
    if args.finished_only and todo:
        log.warning("--finished-only: %d planned point(s) left unmeasured: %s", len(todo), ", ".join(s.key for s in todo))
        todo = []
    keys = {s.key for s in plan}
    with use_device(None, None) as device:
        m = Measuring(base, args.out / "work", device, preset, base_database, args.trials, protocol, args.threads,
                      not args.no_progress, reference)
        for spec in tqdm(todo, desc="points", disable=args.no_progress):
            record = measure_point(spec, m)
            record.update(budget_check(record, unpruned_measured([*points, record]), device_units))
            append_line(points_path, record)
            points.append(record)
            log.info("%s: mIoU %.4f, predicted %.4g ms (budget %.4g), measured %.4g ms", spec.key,
                     record["miou"], record["predicted_ms"], spec.budget_ms, record["measured_median_ms"])
        planned = [p for p in points if p["key"] in keys]
        load_before = [round(x, 2) for x in os.getloadavg()]  # a re-timing beside other work is no figure
        times = retime(planned, device, protocol, args.threads, args.retime_rounds, not args.no_progress, reference)
    (args.out / RETIMED).write_text(json.dumps({"rounds": args.retime_rounds, "times_ms": times}, indent=2) + "\n")
    if args.retime_rounds:
        append_line(args.out / RETIMINGS, {"utc_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                           "load_average_before": load_before,
                                           "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                                           "rounds": args.retime_rounds, "times_ms": times})
    summary = summarize(apply_retimes(planned, times), device_units)
    history = read_lines(args.out / RETIMINGS)
    pooled = pooled_summary(summarize(apply_retimes(planned, pool_retimes(history)), device_units), len(history))
    step_cost = json.loads(STEP_COST.read_text()) if STEP_COST.exists() else None
    goal = goals(summary, step_cost)
    untuned = sum(p["compile"]["kernels_total"] - p["compile"]["kernels_tuned"] for p in summary["points"])
    result = {
        "unmeasured_points": [s.key for s in plan if s.key not in {p["key"] for p in points}],
        "what": "mIoU against latency measured on the embedded loopback device (this machine's CPU, not a phone) "
                "of networks pruned by each method to fractions of the unpruned predicted latency, synthetic task",
        "note": args.note,
        "device": f"embedded loopback farm, key {HOST_KEY} ({platform.processor() or platform.machine()}), "
                  f"{os.cpu_count()} CPUs shared with other work",
        "settings": {"prune": fixed, "methods": args.methods, "seeds": args.seeds, "budgets_ms": budgets,
                     "budget_fractions": [b / full_ms for b in budgets],
                     "uniform_only_budget_fractions": [b / full_ms for b in uniform_budgets],
                     "unpruned_predicted_ms": full_ms,
                     "min_predicted_ms": min_ms, "predictor_units": units(device_units, reference),
                     "trials_per_network": args.trials, "database": str(database), "base_records": base_records,
                     "threads": args.threads},
        "tuning_note": tuning_note(args.trials, database, base_records)
                       + f"; {untuned} untuned kernel(s) over all {len(summary['points'])} networks",
        "protocol": {**(timed := in_rounds(protocol, reference)).to_dict(), "described": timed.describe()},
        "retiming": (f"measured ms: median over {args.retime_rounds} sessions, each timing every network round-robin at the end "
                     "(the timing right after each build is kept as measured_at_build_ms)" if args.retime_rounds
                     else "measured ms: timed right after each build"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "versions": _versions(),
        "wall_seconds_this_run": round(time.monotonic() - started, 1),
        "point_seconds_total": round(sum(sum(p["seconds"].values()) for p in summary["points"]), 1),
        "points_wall_span_seconds": _span_seconds(summary["points"]),
        "trained_with": trained_with(base), "goals": goal, "pooled_retimings": pooled, **summary,
    }
    (args.out / RESULT).write_text(json.dumps(result, indent=2) + "\n")
    title = (f"{args.model} {args.input_size}px, {args.predictor} budgets, seeds {args.seeds}, trials "
             f"{args.trials}; measured on {HOST_KEY}" + (f"\n{args.note[:100]}" if args.note else ""))
    plot_pareto(summary, args.out / PLOT, title)
    if args.note:
        print(f"\nNOTE: {args.note}")
    print_summary(summary, goal)
    shares = pooled["bilevel_within_budget"]
    print(f"pooled over all {pooled['timings']} re-timings in {args.out / RETIMINGS}: bilevel within 5% of budget by "
          f"measured ms {shares['share_by_measured']} ({shares['networks']} networks)")
    print(f"\ntrained with: {trained_with(base)}")
    print(f"\n{protocol.describe()}\nresult in {args.out / RESULT}, plot {args.out / PLOT}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from runner.cli_support import run_main, setup_logging

    args = parse_args(argv)
    setup_logging(args.verbose)
    return run_main(lambda: run(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
