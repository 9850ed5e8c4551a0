"""Tuning whose timings never overlap builds, against MetaSchedule's overlapping runner.

On the embedded device the CPU that times a candidate also builds the next batch. `compile`
therefore times candidates with `compile.measure.MeasureAlone` on the embedded keys. This
benchmark tunes the same model twice at the same trials and seed, each into an empty
database:
- `alone`: the embedded device under its own key (`host-cpu`), as `compile` does;
- `overlap`: the same server under another key (`host-overlap`), which `compile` treats as a
  remote device, so MetaSchedule's RPC runner times while the next batch builds (as before
  `MeasureAlone`).
Then it times both builds and ONNX Runtime (same file, same threads) in interleaved rounds. It
reports each build's median latency, how well MetaSchedule's best times add up to it (the sum
of best kernel times x calls over the measured latency), and the tuning time.

    PYTHONPATH=. python bench/measure_alone.py [--size 256 --trials 300 --threads 2] [--work DIR] \\
        [-o bench/results/measure_alone.json]

With `--work` the export, both databases and builds are kept: a rerun after a crash compiles each
arm from the database it left (no more trials; its records count as its trials).

Run it alone: both arms and every timing use this machine's 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.interleaved import time_in_rounds, timing_row
from bench.peers import add_timing_arguments, compile_resumably, time_onnxruntime
from compile.targets import resolve_target
from runner.bench import bench_artifact
from runner.cli_support import setup_logging
from runner.machine import write_result
from runner.device import HOST_KEY
from runner.farm import LocalFarm
from runner.timing import TimingProtocol

OVERLAP_KEY = "host-overlap"  # not an embedded key: compile.measure leaves MetaSchedule's runner as it is


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segformer-b0")
    parser.add_argument("--size", type=int, default=256, help="input size (px)")
    parser.add_argument("--trials", type=int, default=300, help="MetaSchedule trials per arm")
    parser.add_argument("--seed", type=int, default=0, help="MetaSchedule's search seed (both arms)")
    add_timing_arguments(parser)
    parser.add_argument("--work", type=Path, help="folder kept for the export, databases and builds (default: a "
                        "temporary one); a rerun on it compiles the databases an interrupted run left")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/measure_alone.json"))
    args = parser.parse_args(argv)
    setup_logging(False)
    from prune.export import export_onnx
    from prune.models import create_model
    import torch

    preset = resolve_target("host", threads=args.threads)
    protocol = TimingProtocol(warmup=args.warmup, repeat=args.repeat)
    load_before, started = os.getloadavg(), time.monotonic()
    builds, tuning = {}, {}
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeseg-alone-")))
        work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model_path = export_onnx(create_model(args.model, num_classes=150).eval(), args.size, work / "model.onnx")
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype("float32")
        for arm, key in (("overlap", OVERLAP_KEY), ("alone", HOST_KEY)):
            with LocalFarm(key=key) as farm:
                result, trials, seconds = compile_resumably(model_path, work / f"artifact-{arm}", work / f"db-{arm}",
                                                            args.trials, preset, farm.device, args.seed,
                                                            kernel_library=False)
                builds[arm] = result
                tuning[arm] = {"trials": trials, "seconds": seconds, "from_earlier_run": seconds is None,
                               "untuned_kernels": result.untuned,
                               "metaschedule_sum_ms": round(result.tuning.predicted_ms, 3)}
        checks = {}

        def timed_build(arm: str, device) -> list[float]:
            bench = bench_artifact(builds[arm].artifact, device, protocol, threads=args.threads,
                                   check=arm not in checks)
            if bench.check is not None:  # checked once, in the first round
                checks[arm] = bench.check.passed
            return list(bench.timing.samples_ms)

        with LocalFarm() as farm:
            engines = {arm: (lambda arm=arm: timed_build(arm, farm.device)) for arm in builds}
            engines["onnxruntime"] = lambda: time_onnxruntime(model_path, x, args.threads, protocol).samples_ms
            samples = time_in_rounds(engines, args.rounds)
    rows = {name: timing_row(timing) for name, timing in samples.items()}
    for arm in builds:
        rows[arm].update(tuning[arm], check_passed=checks[arm],
                         metaschedule_sum_over_measured=round(tuning[arm]["metaschedule_sum_ms"]
                                                              / rows[arm]["median_ms"], 3))
    ort_ms = rows["onnxruntime"]["median_ms"]
    result = {
        "what": f"{args.model} at {args.size} px tuned with {args.trials} trials, timings alone vs overlapping builds",
        "protocol": f"{protocol.describe()}; {args.rounds} interleaved rounds, median of all runs; "
                    f"{args.threads} threads for TVM and ONNX Runtime",
        "rows": rows,
        "alone_over_overlap": round(rows["alone"]["median_ms"] / rows["overlap"]["median_ms"], 3),
        "over_onnxruntime": {arm: round(rows[arm]["median_ms"] / ort_ms, 3) for arm in builds},
    }  # fmt: skip
    write_result(args.out, result, load_before, started)
    for name, row in rows.items():
        tuned_in = "an earlier run" if row.get("from_earlier_run") else f"{row.get('seconds')} s"
        extra = (f"; tuned {row['trials']} trials in {tuned_in}, MetaSchedule's sum {row['metaschedule_sum_ms']:.2f} ms "
                 f"({row['metaschedule_sum_over_measured']:.2f} of measured), check {'passed' if row['check_passed'] else 'FAILED'}"
                 if name in builds else "")
        print(f"{name:12s} median {row['median_ms']:8.3f} ms (min {row['min_ms']:.3f}, max {row['max_ms']:.3f}, "
              f"{row['runs']} runs){extra}")
    print(f"alone/overlap {result['alone_over_overlap']:.3f}; vs ONNX Runtime {result['over_onnxruntime']}; "
          f"{result['protocol']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
