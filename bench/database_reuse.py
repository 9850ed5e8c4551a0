"""What a latency collection saves when a pruned model is compiled afterwards.

`python -m latency_model collect` tunes every sampled layer into the device's tuning database.
This benchmark compiles one model twice with the same budget per missing kernel
(`--trials-per-task`): once against a copy of that database (what `python -m compile` does
after a collection), once against an empty one (from scratch). It reports the hit rate (tuning
tasks found in the database / tasks), the tuning seconds of each, the time saved, and the
latency of both builds over RPC on the embedded device (same protocol, interleaved), so a saving
bought with slower kernels shows.

    PYTHONPATH=. python bench/database_reuse.py out/pipeline/pruned/model.onnx \\
        [--database DIR] [--trials-per-task 1] [-o bench/results/database_reuse.json]

The database defaults to the embedded device's (`runner.workspace`), which the main job's
collection fills. Both copies live in a scratch folder; the device's database is never written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from compile.api import compile_model
from compile.targets import resolve_target
from runner.bench import bench_artifact
from runner.cli_support import setup_logging
from runner.device import HOST_KEY
from runner.farm import use_device
from runner.timing import TimingProtocol
from runner.workspace import tuning_database_dir

log = logging.getLogger("bench.database_reuse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="ONNX file of the (pruned) model")
    parser.add_argument("--database", type=Path, default=None,
                        help="tuning database after a collection (default: the embedded device's)")
    parser.add_argument("--trials-per-task", type=int, default=1, help="trials per kernel the database lacks")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each build")
    parser.add_argument("--warmup", type=int, default=3, help="discarded warm-up runs")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/database_reuse.json"))
    args = parser.parse_args()
    setup_logging(False)
    preset = resolve_target("host")
    collected = args.database or tuning_database_dir(HOST_KEY, preset.name)
    if not collected.is_dir():
        raise SystemExit(f"error: no tuning database at {collected}; run the main job (scripts/demo.sh) "
                         "or python -m latency_model collect first, or pass --database")
    protocol = TimingProtocol(warmup=args.warmup, repeat=args.repeat)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeseg-db-reuse-") as scratch, use_device(None, HOST_KEY) as device:
        scratch = Path(scratch)
        shutil.copytree(collected, scratch / "after-collection")
        builds = {}
        for name in ("after-collection", "from-scratch"):
            log.info("compiling %s with the %s database", args.model, name)
            builds[name] = compile_model(args.model, scratch / f"artifact-{name}", preset,
                                         database_dir=scratch / name, trials=0,
                                         trials_per_task=args.trials_per_task, device=device)
        timings = {name: [] for name in builds}
        for _ in range(2):  # interleaved halves: drift on this shared machine hits both builds
            for name, build in builds.items():
                half = TimingProtocol(warmup=args.warmup, repeat=max(1, args.repeat // 2))
                timings[name].extend(bench_artifact(build.artifact, device, half).timing.samples_ms)
    rows = {}
    for name, build in builds.items():
        tasks = build.tuning.tasks
        samples = sorted(timings[name])
        rows[name] = {
            "tasks": len(tasks), "tasks_in_database": sum(t.had_record for t in tasks),
            "hit_rate": sum(t.had_record for t in tasks) / len(tasks),
            "trials": build.tuning.trials, "tuning_seconds": round(build.tuning.seconds, 1),
            "kernels_tuned": build.kernels_tuned, "kernels": build.kernels_total,
            "median_ms": samples[len(samples) // 2], "min_ms": samples[0], "max_ms": samples[-1],
            "runs": len(samples),
        }  # fmt: skip
    after, scratch_row = rows["after-collection"], rows["from-scratch"]
    result = {
        "what": "compile one model after a latency collection vs from scratch, same trials per missing kernel",
        "model": str(args.model), "database": str(collected), "trials_per_task": args.trials_per_task,
        "protocol": f"{protocol.describe()}, as two interleaved halves per build",
        "rows": rows,
        "tuning_seconds_saved": round(scratch_row["tuning_seconds"] - after["tuning_seconds"], 1),
        "tuning_time_ratio": (after["tuning_seconds"] / scratch_row["tuning_seconds"]
                              if scratch_row["tuning_seconds"] else None),
        "latency_ratio_after_over_scratch": after["median_ms"] / scratch_row["median_ms"],
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "wall_seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, row in rows.items():
        print(f"{name:17s} hit rate {row['tasks_in_database']}/{row['tasks']} ({100 * row['hit_rate']:.0f}%), "
              f"{row['trials']} trials in {row['tuning_seconds']:.0f} s, {row['kernels_tuned']}/{row['kernels']} "
              f"kernels tuned, median {row['median_ms']:.3f} ms over {row['runs']} runs "
              f"(min {row['min_ms']:.3f}, max {row['max_ms']:.3f})")
    print(f"tuning time saved: {result['tuning_seconds_saved']:.0f} s; latency after/scratch "
          f"{result['latency_ratio_after_over_scratch']:.2f}x; {result['protocol']}; wrote {args.out}")


if __name__ == "__main__":
    main()
