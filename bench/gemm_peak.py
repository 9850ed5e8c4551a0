"""The float32 GEMM rate this CPU reaches, measured: one n x n x n matmul (a constant weight,
as a model's layers have) timed in torch, ONNX Runtime and a TVM build that MetaSchedule tuned
for it, interleaved in one run with the same threads and protocol. The best engine's median
GFLOP/s is the measured peak that bench/compile_vs_peers.py rates every kernel against: a
vector unit's published width is a bound at a clock nobody measured, not a measurement.

    PYTHONPATH=. python bench/gemm_peak.py [--gemm-n 1024 --gemm-trials 500 --threads 2] [--work DIR]
        [-o bench/results/gemm_peak.json]

Run it alone: tuning and timing use this machine's 2 cores (500 trials took 8.7 min here).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.interleaved import time_in_rounds, timing_row
from bench.peers import add_timing_arguments, compile_resumably, time_onnxruntime
from runner.timing import TimingProtocol, time_callable


def matmul_onnx(n: int, path: Path) -> Path:
    """An ONNX file of one MatMul: "input" (n x n) times a seeded constant n x n weight."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((n, n)).astype("float32")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "weight"], ["output"])], f"matmul{n}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [n, n])],
        initializer=[numpy_helper.from_array(weight, "weight")])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def measure_gemm_peak(n: int, trials: int, threads: int, seed: int, work: Path, device,
                      protocol: TimingProtocol, rounds: int) -> dict:
    """Tune the matmul on `device` (outputs checked against the reference), then time the three
    engines in `rounds` interleaved rounds; the peak is the best engine's median rate."""
    import torch

    from compile.targets import resolve_target
    from runner.bench import bench_artifact

    work.mkdir(parents=True, exist_ok=True)
    path = matmul_onnx(n, work / f"matmul-{n}.onnx")
    preset = resolve_target("host", threads=threads)
    build, spent, seconds = compile_resumably(path, work / f"artifact-matmul-{n}", work / f"db-matmul-{n}",
                                              trials, preset, device, seed)  # fmt: skip
    check = bench_artifact(build.artifact, device, protocol, threads=threads, check=True).check
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    x = np.random.default_rng(1).standard_normal((n, n)).astype("float32")
    engines = {
        "tvm": lambda: bench_artifact(build.artifact, device, protocol, threads=threads).timing.samples_ms,
        "onnxruntime": lambda: time_onnxruntime(path, x, threads, protocol).samples_ms,
        "torch": lambda: time_callable(lambda: torch.mm(a, b), protocol).samples_ms,
    }
    rows = {}
    for engine, timing in time_in_rounds(engines, rounds).items():
        stats = timing_row(timing)
        rows[engine] = {**stats, "gflops": float(f"{2 * n**3 / (stats['median_ms'] / 1000) / 1e9:.3g}")}
    best = max(rows, key=lambda engine: rows[engine]["gflops"])
    return {"n": n, "threads": threads, "peak_gflops": rows[best]["gflops"], "peak_engine": best, "engines": rows,
            "tvm_tuning": {"trials": spent, "seconds": seconds, "seed": seed, "from_earlier_run": seconds is None,
                           "untuned_kernels": build.untuned},
            "tvm_check_max_abs_error": check.max_abs_error}  # fmt: skip


def print_gemm_peak(gemm: dict) -> None:
    print(f"GEMM {gemm['n']}^3 float32, {gemm['threads']} threads (median ms, IQR/median, GFLOP/s):")
    for engine, row in gemm["engines"].items():
        print(f"  {engine:12s} {row['median_ms']:8.3f} {row['iqr_over_median']:7.3f} {row['gflops']:8.3g}")
    print(f"  measured peak: {gemm['peak_gflops']:.1f} GFLOP/s ({gemm['peak_engine']}); TVM tuned with "
          f"{gemm['tvm_tuning']['trials']} trials, output {gemm['tvm_check_max_abs_error']:.1e} from the reference")


def add_gemm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gemm-n", type=int, default=1024, help="the peak's square matmul size")
    parser.add_argument("--gemm-trials", type=int, default=500, help="MetaSchedule trials for the peak's matmul")


def main(argv: Sequence[str] | None = None) -> int:
    from runner.cli_support import setup_logging
    from runner.farm import use_device
    from runner.machine import write_result

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gemm_arguments(parser)
    add_timing_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="MetaSchedule's search seed")
    parser.add_argument("--work", type=Path, help="folder kept for the model, database and build (default: a "
                        "temporary one); a rerun on it compiles the database an interrupted run left")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/gemm_peak.json"))
    args = parser.parse_args(argv)
    setup_logging(False)
    protocol = TimingProtocol(warmup=args.warmup, repeat=args.repeat)
    load_before, started = os.getloadavg(), time.monotonic()
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeseg-gemm-")))
        device = stack.enter_context(use_device(None, None))
        gemm = measure_gemm_peak(args.gemm_n, args.gemm_trials, args.threads, args.seed, work, device, protocol,
                                 args.rounds)  # fmt: skip
    report = {"what": "float32 GEMM rate of this CPU, measured in torch, ONNX Runtime and tuned TVM",
              "protocol": f"{protocol.describe()}; {args.rounds} interleaved rounds, median of all runs",
              **gemm}  # fmt: skip
    write_result(args.out, report, load_before, started)
    print(f"\n{report['protocol']}")
    print_gemm_peak(gemm)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
