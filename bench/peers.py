"""What every comparison of TVM with its peers needs: ONNX Runtime timed with the device's
protocol, and a TVM build tuned into a database of its own that a rerun after a crash resumes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from runner.timing import Timing, TimingProtocol, time_callable


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """The threads and interleaved-timing options every peer comparison takes."""
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per round and engine")
    parser.add_argument("--warmup", type=int, default=3)


def time_onnxruntime(path: Path, x: np.ndarray, threads: int, protocol: TimingProtocol) -> Timing:
    """ONNX Runtime's CPU provider on `path` with `threads` intra-op threads, fed `x` as "input"."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return time_callable(lambda: session.run(None, {"input": x}), protocol)


def compile_resumably(model_path: Path, out_dir: Path, database: Path, trials: int, preset, device,
                      seed: int, **options) -> tuple[Any, int, float | None]:
    """`compile_model` with `trials` into `database`, or, when an interrupted run on the same
    folder left records there, compiled as it stands (no more trials, no transfer).

    Returns the CompileResult, the trials spent (the earlier run's records count as its
    trials) and the seconds spent tuning now (None when resumed)."""
    from compile.api import compile_model
    from compile.database import open_database

    earlier = len(open_database(database)) if database.exists() else 0
    resumed = {"trials": 0, "transfer_candidates": 0} if earlier else {"trials": trials}  # leave its records as they are
    started = time.monotonic()
    result = compile_model(model_path, out_dir, preset, database, device=device, seed=seed, **resumed, **options)
    seconds = None if earlier else round(time.monotonic() - started, 1)
    return result, earlier or result.tuning.trials, seconds
