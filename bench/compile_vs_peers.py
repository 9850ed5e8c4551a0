"""TVM-tuned builds vs ONNX Runtime vs PyTorch eager, on this machine, in one run.

For each input size a registry model (150 classes, random weights: speed does not depend on
their values) is exported to ONNX twice: as built, and with its decoder merged the way
`--rewrite-decoder` compiles it (`prune.models.decoder.MergedDecoder`), so ONNX Runtime and
PyTorch are also timed on the work the rewritten TVM build does; the table then separates what
the rewrite earns from what the compiler earns. Each TVM lowering named by `--tvm` (`default`:
fast math; `rewrite`: fast math and the decoder rewrite) is tuned with `--trials` into an empty
database of its own (on the embedded device, whose timings never overlap builds), checked
against the reference output and profiled per kernel. Then every engine is timed in
interleaved rounds with the same threads and protocol (warm-up discarded, then single-call
samples; median of all rounds). Ratios are to ONNX Runtime on the model as built. GFLOP/s is
the FLOPs of the graph an engine runs (TVM's count of its lowered kernels times their calls)
over its median, against this CPU's GEMM peak measured first in the same run
(bench/gemm_peak.py: a `--gemm-n` cubed matmul in torch, ONNX Runtime and TVM tuned with
`--gemm-trials`; the best engine's rate).
Tuning is long (2,000 trials took 38-67 min here, plus 9 min for the GEMM peak): with
`--work DIR` a rerun after a crash or a kill compiles each database as the interrupted run
left it (no more trials, no transfer; its records, one per measured candidate, counted as the
trials) and goes on to the timings.

    PYTHONPATH=. python bench/compile_vs_peers.py [--model segformer-b0 --sizes 256 512]
        [--trials 2000 --tvm default rewrite --threads 2] [--gemm-n 1024 --gemm-trials 500] [--work DIR]
        [-o bench/results/compile_vs_peers.json]

Run it alone: tuning and every timing use this machine's 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.gemm_peak import add_gemm_arguments, measure_gemm_peak, print_gemm_peak
from bench.interleaved import time_in_rounds, timing_row
from bench.peers import add_timing_arguments, compile_resumably, time_onnxruntime
from runner.timing import Timing, TimingProtocol, time_callable

LOWERINGS = {"default": {}, "rewrite": {"rewrite_decoder": True}}
ORIGINAL, MERGED = "", "-merged"


def export_models(name: str, size: int, folder: Path) -> tuple[dict, dict, float]:
    """The model as built and with its decoder merged (eval mode), their ONNX files, and the
    largest output difference between the two on a seeded input."""
    import torch

    from prune.export import export_onnx
    from prune.models import SegmentationModel, create_model
    from prune.models.decoder import MergedDecoder

    torch.manual_seed(0)
    model = create_model(name, num_classes=150).eval()
    models = {ORIGINAL: model, MERGED: SegmentationModel(model.backbone, MergedDecoder(model.decoder)).eval()}
    paths = {form: export_onnx(m, size, folder / f"{name}-{size}{form}.onnx") for form, m in models.items()}
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = float((models[MERGED](x) - model(x)).abs().max())
    return models, paths, difference


def graph_flops(path: Path, preset, work: Path) -> float:
    """FLOPs of one run of an ONNX file as TVM lowers it by default."""
    from compile.build import lower, model_flops
    from compile.frontend import load_model

    return model_flops(lower(load_model(path, None, work).mod, preset))


def time_pytorch(model, size: int, threads: int, protocol: TimingProtocol) -> Timing:
    import torch

    torch.set_num_threads(threads)
    x = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        return time_callable(lambda: model(x), protocol)


def tune_and_profile(lowering: str, size: int, model_path: Path, work: Path, args, preset, device,
                     protocol) -> dict:
    """Tune one lowering into an empty database of its own, check its outputs, and time its
    kernels one by one. A database that an earlier run on the same `--work` left with records
    (a crash, a kill) is compiled as it stands: no more trials, its records counted as them."""
    from runner.bench import bench_artifact

    result, trials, seconds = compile_resumably(model_path, work / f"artifact-{size}-{lowering}",
                                                work / f"db-{size}-{lowering}", args.trials, preset, device,
                                                args.seed, **LOWERINGS[lowering])  # fmt: skip
    profile = bench_artifact(result.artifact, device, protocol, threads=args.threads, check=True, per_kernel=True)
    flop_of = {t.name: t.flop for t in result.tuning.tasks}
    slowest = sorted(profile.kernels.rows, key=lambda r: -r.total_ms)[:5]
    tuning = {"trials": trials, "seconds": seconds, "seed": args.seed, "from_earlier_run": seconds is None,
              "tasks": len(result.tuning.tasks), "untuned_kernels": result.untuned,
              "metaschedule_sum_ms": round(result.tuning.predicted_ms, 3)}  # fmt: skip
    return {
        "artifact": result.artifact,
        "flop": sum(t.flop * t.calls for t in result.tuning.tasks),
        "tuning": tuning,
        "check_max_abs_error": profile.check.max_abs_error,
        "slowest_kernels": [{"name": r.name, "calls": r.calls, "total_ms": round(r.total_ms, 3),
                             "gflops": round(flop_of[r.name] / (r.timing.median_ms / 1000) / 1e9, 2)
                             if r.name in flop_of else None} for r in slowest],
    }  # fmt: skip


def bench_size(size: int, args: argparse.Namespace, work: Path, device, protocol: TimingProtocol) -> dict:
    from compile.targets import resolve_target
    from runner.bench import bench_artifact

    preset = resolve_target("host", threads=args.threads)
    models, paths, merge_difference = export_models(args.model, size, work)
    flop = {form: graph_flops(path, preset, work) for form, path in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype("float32")
    builds = {name: tune_and_profile(name, size, paths[ORIGINAL], work, args, preset, device, protocol)
              for name in args.tvm}  # fmt: skip
    engines = {f"tvm-{name}": (lambda b=b: bench_artifact(b["artifact"], device, protocol,
                                                          threads=args.threads).timing.samples_ms)
               for name, b in builds.items()}  # fmt: skip
    for form in (ORIGINAL, MERGED):
        engines[f"onnxruntime{form}"] = lambda p=paths[form]: time_onnxruntime(p, x, args.threads, protocol).samples_ms
        engines[f"pytorch{form}"] = lambda m=models[form]: time_pytorch(m, size, args.threads, protocol).samples_ms
    samples = time_in_rounds(engines, args.rounds)
    rows = {}
    for engine, timing in samples.items():
        build = builds.get(engine.removeprefix("tvm-"))
        work_flop = build["flop"] if build else flop[MERGED if engine.endswith(MERGED) else ORIGINAL]
        stats = timing_row(timing)
        rows[engine] = {**stats, "gflop": round(work_flop / 1e9, 4),
                        "gflops": round(work_flop / (stats["median_ms"] / 1000) / 1e9, 2)}  # fmt: skip
        if build:
            rows[engine].update({k: v for k, v in build.items() if k not in ("artifact", "flop")})
    ort_ms = rows["onnxruntime"]["median_ms"]
    for row in rows.values():
        row["over_onnxruntime"] = round(row["median_ms"] / ort_ms, 3)
    return {"input_size": size, "merged_decoder_max_abs_difference": merge_difference, "engines": rows}


def main() -> None:
    from runner.cli_support import setup_logging
    from runner.farm import use_device
    from runner.machine import write_result

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segformer-b0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--trials", type=int, default=2000, help="MetaSchedule trials per TVM lowering and size")
    parser.add_argument("--seed", type=int, default=0, help="MetaSchedule's search seed (a repeat with another "
                        "seed shows how much of a figure is the search's draw)")
    parser.add_argument("--tvm", nargs="+", choices=sorted(LOWERINGS), default=["default", "rewrite"],
                        help="TVM lowerings to tune and time")
    add_timing_arguments(parser)
    add_gemm_arguments(parser)
    parser.add_argument("--work", type=Path, help="folder kept for exports, databases and builds (default: a "
                        "temporary one); a rerun on it compiles the databases an interrupted run left")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/compile_vs_peers.json"))
    args = parser.parse_args()
    setup_logging(False)
    protocol = TimingProtocol(warmup=args.warmup, repeat=args.repeat)
    load_before, started = os.getloadavg(), time.monotonic()
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeseg-peers-")))
        work.mkdir(parents=True, exist_ok=True)
        device = stack.enter_context(use_device(None, None))
        gemm = measure_gemm_peak(args.gemm_n, args.gemm_trials, args.threads, args.seed, work / "gemm", device,
                                 protocol, args.rounds)  # fmt: skip
        results = [bench_size(size, args, work, device, protocol) for size in args.sizes]
    peak = gemm["peak_gflops"]
    report = {
        "what": f"{args.model} (150 classes, random weights): TVM tuned with {args.trials} trials per lowering "
                f"into an empty database, against ONNX Runtime and PyTorch eager on the model as built and "
                f"with its decoder merged",
        "protocol": f"{protocol.describe()}; {args.rounds} interleaved rounds, median of all runs; "
                    f"{args.threads} threads for every engine",
        "gemm": gemm, "results": results,
    }  # fmt: skip
    write_result(args.out, report, load_before, started)
    print(f"\n{report['protocol']}")
    print_gemm_peak(gemm)
    print(f"{'size':>5} {'engine':22s} {'median ms':>10} {'IQR/med':>8} {'vs ORT':>7} {'GFLOP/s':>8} {'% peak':>7}")
    for result in results:
        for engine, row in result["engines"].items():
            print(f"{result['input_size']:5d} {engine:22s} {row['median_ms']:10.2f} {row['iqr_over_median']:8.3f} "
                  f"{row['over_onnxruntime']:7.2f} {row['gflops']:8.1f} {100 * row['gflops'] / peak:6.1f}%")  # fmt: skip
            if "tuning" in row:
                spent = row["tuning"]["seconds"]
                print(f"{'':5} {'':22s} tuned {row['tuning']['trials']} trials "
                      f"{'in an earlier run' if spent is None else f'in {spent:.0f} s'}, "
                      f"{row['tuning']['untuned_kernels']} untuned; slowest kernels: "
                      + ", ".join(f"{k['name']} {k['total_ms']:.2f} ms ({k['gflops'] or 0:.0f} GFLOP/s)"
                                  for k in row["slowest_kernels"]))  # fmt: skip
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
