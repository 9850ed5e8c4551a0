"""What a latency collection saves when a pruned model is compiled afterwards.

`python -m latency_model collect` tunes every sampled layer into the device's tuning database.
This benchmark repeats a collection's tuning (`latency_model.collect.tune_layers`: the layers of
the unpruned model and of `--samples` random pruned variants, `--trials-per-task` each) into a
scratch database, then compiles one pruned model twice with the same budget per missing kernel:
against a copy of that database (what `python -m compile` does after a collection) and against
an empty one (from scratch). It reports the hit rate (tuning tasks found in the database /
tasks), the tuning seconds of each, the time saved, the collection's own tuning time (the
investment), and the latency of both builds over RPC on the embedded device (same protocol,
interleaved), so a saving bought with slower kernels shows.

    PYTHONPATH=. python bench/database_reuse.py out/pipeline/pruned/model.onnx \\
        [--model segformer-b0 --input-size 128 --samples 2 --trials-per-task 1] \\
        [-o bench/results/database_reuse.json]

The pruned model must come from the same model and input size (the main job's
`out/pipeline/pruned/model.onnx`). Everything is tuned in a scratch folder; the device's own
database is never read or written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

from compile.api import compile_model
from compile.targets import resolve_target
from latency_model.collect import tune_layers
from latency_model.sampling import layer_configs, sample_kept
from prune.describe import describe_model
from runner.bench import bench_artifact
from runner.cli_support import setup_logging
from runner.device import HOST_KEY
from runner.farm import use_device
from runner.timing import TimingProtocol

log = logging.getLogger("bench.database_reuse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", type=Path, help="ONNX file of the pruned model")
    parser.add_argument("--model", default="segformer-b0", help="model whose layers the collection samples")
    parser.add_argument("--input-size", type=int, default=128, help="input size of the collection")
    parser.add_argument("--samples", type=int, default=2, help="random pruned variants of the collection")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the collection")
    parser.add_argument("--trials-per-task", type=int, default=1, help="trials per kernel to tune")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each build")
    parser.add_argument("--warmup", type=int, default=3, help="discarded warm-up runs")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/database_reuse.json"))
    args = parser.parse_args()
    setup_logging(False)
    preset = resolve_target("host")
    protocol = TimingProtocol(warmup=args.warmup, repeat=args.repeat)
    description = describe_model(args.model, args.input_size)
    configs = layer_configs(description, sample_kept(description, args.samples, args.seed))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeseg-db-reuse-") as scratch, use_device(None, HOST_KEY) as device:
        scratch = Path(scratch)
        log.info("tuning the collection's %d layer configs into a scratch database", len(set(configs)))
        collection_seconds, _ = tune_layers(list({c.key: c for c in configs}.values()), device, preset,
                                            scratch / "after-collection", args.trials_per_task)
        builds = {}
        for name in ("after-collection", "from-scratch"):
            log.info("compiling %s with the %s database", args.onnx, name)
            builds[name] = compile_model(args.onnx, scratch / f"artifact-{name}", preset,
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
        "pruned_model": str(args.onnx), "trials_per_task": args.trials_per_task,
        "collection": {"model": args.model, "input_size": args.input_size, "samples": args.samples,
                       "seed": args.seed, "layer_configs": len({c.key for c in configs}),
                       "tuning_seconds": round(collection_seconds, 1)},
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
    print(f"collection tuning {collection_seconds:.0f} s over {result['collection']['layer_configs']} layer configs; "
          f"tuning time saved: {result['tuning_seconds_saved']:.0f} s; latency after/scratch "
          f"{result['latency_ratio_after_over_scratch']:.2f}x; {result['protocol']}; wrote {args.out}")


if __name__ == "__main__":
    main()
