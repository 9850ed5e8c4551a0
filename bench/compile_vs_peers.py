"""TVM-tuned build vs ONNX Runtime vs PyTorch eager, on this machine, in one run.

For a SegFormer-B0-class model (timm pvt_v2_b0 + SegFormer all-MLP decoder, 150 classes,
random weights: speed does not depend on their values) at each input size: tune and compile
with edgeseg (trial budget as an argument, tuning time reported), time it over RPC on the
embedded loopback device, and time ONNX Runtime and PyTorch eager in this process with the
same thread count and the same protocol (warm-up runs discarded, then repeated single runs;
median and spread). Ratios are to ONNX Runtime measured in the same run; achieved GFLOP/s is
the model's FLOPs (TVM's count of its kernels) over the median latency, against the best
float32 GEMM rate torch reaches here with the same threads (an achievable peak).

    python bench/compile_vs_peers.py --sizes 256 512 --trials 500 --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from runner.timing import Timing, TimingProtocol, time_callable


def export_model(size: int, folder: Path) -> Path:
    import torch

    from prune.export import export_onnx
    from prune.models import create_model

    torch.manual_seed(0)
    model = create_model("segformer-b0", num_classes=150).eval()
    return export_onnx(model, size, folder / f"segformer-b0-{size}.onnx")


def time_onnxruntime(path: Path, size: int, threads: int, protocol: TimingProtocol) -> Timing:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype("float32")
    return time_callable(lambda: session.run(None, {"input": x}), protocol)


def time_pytorch(size: int, threads: int, protocol: TimingProtocol) -> Timing:
    import torch

    from prune.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model("segformer-b0", num_classes=150).eval()
    x = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        return time_callable(lambda: model(x), protocol)


def gemm_peak_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """Best float32 GEMM rate of torch here: what well-tuned code reaches on this CPU."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_size(size: int, args: argparse.Namespace, work: Path, protocol: TimingProtocol) -> dict:
    from compile.api import compile_model
    from compile.targets import resolve_target
    from runner.bench import bench_artifact
    from runner.farm import use_device

    onnx_path = export_model(size, work)
    preset = resolve_target("host", threads=args.threads)
    with use_device(None, None) as device:
        result = compile_model(
            onnx_path, work / f"artifact-{size}", preset, database_dir=args.database,
            trials=args.trials, device=device,
        )  # fmt: skip
        tvm = bench_artifact(result.artifact, device, protocol, threads=args.threads, check=True, per_kernel=True)
    ort = time_onnxruntime(onnx_path, size, args.threads, protocol)
    torch_eager = time_pytorch(size, args.threads, protocol)
    flop = sum(t.flop * t.calls for t in result.tuning.tasks)
    top = sorted(tvm.kernels.rows, key=lambda r: -r.total_ms)[:5] if tvm.kernels else []
    return {
        "input_size": size,
        "gflop": flop / 1e9,
        "tuning": {"trials": result.tuning.trials, "seconds": result.tuning.seconds,
                   "tasks": len(result.tuning.tasks), "untuned_kernels": result.untuned},
        "tvm": _entry(tvm.timing, flop), "onnxruntime": _entry(ort, flop), "pytorch": _entry(torch_eager, flop),
        "tvm_check_max_abs_error": tvm.check.max_abs_error if tvm.check else None,
        "top_kernels": [{"name": r.name, "calls": r.calls, "total_ms": r.total_ms} for r in top],
    }  # fmt: skip


def _entry(timing: Timing, flop: float) -> dict:
    return {**timing.to_dict(), "gflops": flop / (timing.median_ms / 1000) / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--trials", type=int, default=500, help="MetaSchedule trials per size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database", type=Path, default=Path("bench/results/tuning-host"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/compile_vs_peers.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    protocol = TimingProtocol(warmup=args.warmup, repeat=args.repeat)
    peak = gemm_peak_gflops(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            rows.append(bench_size(size, args, Path(tmp), protocol))
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "gemm_peak_gflops": peak},
        "protocol": protocol.to_dict(), "results": rows,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{protocol.describe()}; threads={args.threads}; GEMM peak {peak:.1f} GFLOP/s (torch, same threads)")
    print(f"{'size':>5} {'engine':12s} {'median ms':>10} {'std':>7} {'vs ORT':>7} {'GFLOP/s':>8} {'% peak':>7}")
    for row in rows:
        ort_ms = row["onnxruntime"]["median_ms"]
        for engine in ("tvm", "onnxruntime", "pytorch"):
            e = row[engine]
            print(f"{row['input_size']:5d} {engine:12s} {e['median_ms']:10.2f} {e['std_ms']:7.2f} "
                  f"{e['median_ms'] / ort_ms:7.2f} {e['gflops']:8.1f} {100 * e['gflops'] / peak:6.1f}%")  # fmt: skip
        print(f"      tuning: {row['tuning']['trials']} trials, {row['tuning']['seconds']:.0f} s, "
              f"{row['tuning']['untuned_kernels']} untuned kernels; slowest TVM kernels: "
              + ", ".join(f"{k['name']} {k['total_ms']:.2f} ms" for k in row["top_kernels"][:3]))  # fmt: skip
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
