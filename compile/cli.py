"""`python -m compile MODEL --target PRESET ...`: parse, call `compile_model`, render.

`python -m compile database export|import ...` handles the tuning database (`compile.database_cli`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner.cli_support import run_main, setup_logging, whole_number

HELP = {
    "model": "an ONNX file, or a torch.export program saved as .pt2",
    "target": "target preset (`--target help` lists them)",
    "input_shape": "static input shape: 1,3,512,512, or NAME:1,3,512,512;OTHER:... for several inputs",
    "trials": "MetaSchedule trial budget for the kernels the database lacks (0: build from the database alone)",
    "trials_per_task": "trial budget per kernel the database lacks, instead of --trials (scales with the new kernels)",
    "tracker": "RPC tracker HOST:PORT of the device that measures candidates (default: the embedded loopback farm)",
    "key": "device key at the tracker (default: host-cpu)",
    "database": "tuning database folder to reuse and extend (default: the device's folder in the workspace)",
    "out": "artifact folder to write (default: ./out/<model>-<target>)",
    "threads": "threads the compiled code uses (num-cores; default: all cores of the target)",
    "mcpu": "LLVM CPU name to generate code for (default: the target's)",
    "device": "phone preset (s21-snapdragon, s21-exynos): target CPU, threads and big-core pinning",
    "cc": "cross compiler that links linux-arm64 libraries (default: aarch64-linux-gnu-gcc)",
    "export": "so: shared libraries the runner can run; tar: object files to link elsewhere",
    "transfer_candidates": "kernels the database lacks take a schedule transferred from a tuned kernel of the same "
                           "structure: how many candidates to measure per kernel (the two nearest donors' best "
                           "schedules, then their other sketches)",
    "no_fast_math": "keep libm's erf/exp/tanh and the exact softmax (default: their fast approximate forms, "
    "~1e-6 off, vectorised; fast math changes the GELU/softmax kernels' workload hashes, so a database "
    "tuned with the other setting re-tunes those kernels)",
    "no_kernel_library": "skip kernels.so, every kernel built alone for `runner bench --per-kernel` (halves the "
    "build; whole-network benches do not need it)",
    "rewrite_decoder": "merge a SegFormer all-MLP decoder's projections into its fuse conv (exact up to float "
    "rounding, ~half of segformer-b0's FLOPs); off by default: the latency model's layer description "
    "(prune) still prices the unrewritten decoder, so a pruned budget does not account for it",
    "prepack_weights": "CPU targets: let the tuner choose each kernel's weight layout and pack the weights at "
    "compile time (its kernels tune and record apart from unpacked ones; see docs/compile.md for when it pays)",
}


def _parser() -> argparse.ArgumentParser:
    from compile.transfer import DEFAULT_CANDIDATES  # light: no TVM import
    from runner.device import Tracker

    p = argparse.ArgumentParser(prog="python -m compile", description=__doc__)
    p.add_argument("model", type=Path, nargs="?", help=HELP["model"])
    p.add_argument("--target", default=None, help=HELP["target"] + " (default: host, or the --device's CPU)")
    p.add_argument("--device", default=None, help=HELP["device"])
    p.add_argument("--input-shape", type=_shapes, default=None, help=HELP["input_shape"])
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--trials", type=whole_number(0), default=64, help=HELP["trials"])
    budget.add_argument("--trials-per-task", type=whole_number(0), default=None, help=HELP["trials_per_task"])
    p.add_argument("--transfer-candidates", type=whole_number(0), default=DEFAULT_CANDIDATES,
                   help=HELP["transfer_candidates"] + f" (default {DEFAULT_CANDIDATES}; 0: no transfer)")
    p.add_argument("--tracker", type=Tracker.parse, default=None, help=HELP["tracker"])
    p.add_argument("--key", default=None, help=HELP["key"])
    p.add_argument("--database", type=Path, default=None, help=HELP["database"])
    p.add_argument("-o", "--out", type=Path, default=None, help=HELP["out"])
    p.add_argument("--threads", type=whole_number(0), default=None, help=HELP["threads"])
    p.add_argument("--mcpu", default=None, help=HELP["mcpu"])
    p.add_argument("--cc", default=None, help=HELP["cc"])
    p.add_argument("--export", choices=("so", "tar"), default="so", help=HELP["export"])
    p.add_argument("--no-fast-math", dest="fast_math", action="store_false", help=HELP["no_fast_math"])
    p.add_argument("--rewrite-decoder", action="store_true", help=HELP["rewrite_decoder"])
    p.add_argument("--prepack-weights", action="store_true", help=HELP["prepack_weights"])
    p.add_argument("--no-kernel-library", dest="kernel_library", action="store_false", help=HELP["no_kernel_library"])
    p.add_argument("--seed", type=int, default=0, help="tuning seed")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    return p


def _shapes(text: str):
    from compile.frontend import parse_input_shapes

    try:
        return parse_input_shapes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err




def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["database"] and not Path("database").is_file():  # a word, not a model file
        from compile.database_cli import main as database_main

        return database_main(argv[1:])
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    return run_main(lambda: _run(args), args.verbose)


def _run(args: argparse.Namespace) -> int:
    from compile.targets import list_presets, resolve_target
    from runner.errors import EdgesegError

    from compile.devices import PHONES, resolve_phone

    if args.target == "help" or args.device == "help":
        for name, doc in list_presets().items():
            print(f"--target {name:24s} {doc}")
        for name, phone in PHONES.items():
            print(f"--device {name:24s} {phone.description}")
        return 0
    if args.model is None:
        raise EdgesegError("No model file given.", "Usage: python -m compile MODEL.onnx --target host")
    if args.key and args.tracker is None:
        raise EdgesegError("--key was given without --tracker.", "Pass both, or neither for the embedded farm.")
    if args.tracker and not args.key:
        raise EdgesegError("--tracker was given without --key.", "Name the device: --key KEY (see python -m runner devices).")
    runtime: dict = {}
    if args.device:
        preset, runtime = resolve_phone(args.device).resolve(args.target, threads=args.threads)
    else:
        preset = resolve_target(args.target or "host", threads=args.threads, mcpu=args.mcpu, cc=args.cc)

    from compile.api import compile_model
    from runner.device import Device
    from runner.workspace import tuning_database_dir

    key = args.key or preset.embedded_key or args.device or "phone"
    device = Device(args.tracker, args.key) if args.tracker else None
    out = args.out or Path("out") / f"{args.model.stem}-{preset.name}"
    result = compile_model(
        model_path=args.model,
        out_dir=out,
        preset=preset,
        database_dir=args.database or tuning_database_dir(key, preset.name),
        trials=args.trials,
        input_shapes=args.input_shape,
        device=device,
        seed=args.seed,
        runtime=runtime,
        export=args.export,
        trials_per_task=args.trials_per_task,
        transfer_candidates=args.transfer_candidates,
        fast_math=args.fast_math,
        rewrite_decoder=args.rewrite_decoder,
        prepack_weights=args.prepack_weights,
        kernel_library=args.kernel_library,
    )
    _render(result, preset.name)
    return 0


def _render(result, preset_name: str) -> None:
    import statistics

    report = result.tuning
    print(f"artifact      {result.artifact}")
    print(f"target        {preset_name}")
    print(f"tuning        {report.trials} trials in {report.seconds:.0f} s "
          f"(schedule transfer {report.transfer_seconds:.0f} s of it)")  # fmt: skip
    speeds = [t.transfer["relative_speed"] for t in report.tasks if t.source == "transferred"]
    transferred = f"{report.count('transferred')} transferred"
    if speeds:
        transferred += f" (median {100 * statistics.median(speeds):.0f}% of their donors' GFLOP/s)"
    print(f"schedules     {report.count('exact')} exact, {transferred}, {report.count('tuned')} tuned now, "
          f"{report.count('untuned')} untuned")  # fmt: skip
    print(f"kernels       {result.kernels_tuned}/{result.kernels_total} tuned"
          + (f"  ({result.untuned} UNTUNED: naive code, slow)" if result.untuned else ""))  # fmt: skip
    print(f"predicted     {report.predicted_ms:.3f} ms (sum of best kernel times x calls)")
    width = max((len(t.name) for t in report.tasks), default=4)
    print(f"\n{'kernel':{width}s}  calls  trials  best_us   GFLOP/s  schedule")
    for t in sorted(report.tasks, key=lambda t: -(t.best_us or 0) * t.calls):
        best = f"{t.best_us:8.1f}" if t.best_us is not None else "       -"
        gflops = f"{t.flop / t.best_us / 1e3:8.2f}" if t.best_us else "       -"
        note = t.source.upper() if t.source == "untuned" else t.source
        if t.source == "transferred":
            note += f" from {tuple(t.transfer['donor_extents'])} ({100 * t.transfer['relative_speed']:.0f}%)"
        print(f"{t.name:{width}s}  {t.calls:5d}  {t.trials:6d}  {best}  {gflops}  {note}")
