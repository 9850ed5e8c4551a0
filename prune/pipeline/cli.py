"""`python -m prune.pipeline`: collect, predict, train, prune, compile and bench in one command.

    python -m prune.pipeline --model segformer-b0 --data synthetic --budget-fraction 0.5 -o out/pipeline
    python -m prune.pipeline --data ade20k:/data/ADEChallengeData2016 --input-size 512 --fps 30 \\
        --device s21-snapdragon --tracker 192.168.1.10:9190 --key s21 -o runs/s21-30fps

Without --tracker every stage measures the embedded device (this machine's CPU over RPC on
127.0.0.1). The training settings are `python -m prune`'s, with its defaults; the budget is
given exactly once, in measured ms of the whole network on the device. Rerun the same command after a crash: finished stages are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from prune.cli import FLAGS
from prune.pipeline.plan import BUDGETS, DEFAULT_LANDING_TOLERANCE, TRAINING, DeviceChoice, PipelineOptions
from prune.settings import DENSE, METHODS, default
from runner.cli_support import number_in, run_main, setup_logging, whole_number
from runner.device import Tracker
from runner.errors import EdgesegError


MEASURED_FRACTION = "budget as a fraction of the dense reference's measured latency on the device (0.5: half)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prune.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = parser.add_mutually_exclusive_group(required=True)
    for name in BUDGETS:
        flag = FLAGS[name]
        budget.add_argument("--" + name.replace("_", "-"), dest=name, type=flag.type, metavar=flag.metavar,
                            help=MEASURED_FRACTION if name == "budget_fraction" else flag.help)
    parser.add_argument("--method", default=default("method"), choices=[m for m in METHODS if m != DENSE],
                        help="pruning method (default %(default)s)")
    device = parser.add_argument_group("device (default: the embedded farm of this machine's CPU)")
    device.add_argument("--target", default=None, help="target preset (python -m compile --target help; default: "
                        "host, or the --device's CPU)")
    device.add_argument("--device", dest="phone", default=None, metavar="PHONE",
                        help="phone preset (python -m compile --device help): target, CPU model, big-core threads")
    device.add_argument("--tracker", type=Tracker.parse, default=None, help="RPC tracker HOST:PORT of the device")
    device.add_argument("--key", default=None, help="device key at the tracker (python -m runner devices)")
    collect = parser.add_argument_group("latency collection")
    collect.add_argument("--samples", type=whole_number(0), default=50,
                         help="random pruned variants whose layers are measured, besides the unpruned and the smallest network "
                         "(default %(default)s)")
    collect.add_argument("--trials-per-layer", type=whole_number(0), default=8,
                         help="MetaSchedule trials per anchor kernel (two per layer structure; the other kernels "
                         "get transferred schedules) (default %(default)s)")
    landing = parser.add_argument_group("landing on the budget (docs/pipeline.md)")
    landing.add_argument("--max-rounds", type=whole_number(1), default=3,
                         help="rounds of prune, compile and bench at most: while a round's measured latency misses "
                         "the budget, the next one projects round 0's search onto an aim lower or higher by the factor "
                         "it missed by, and once one round was over and one under, between them (default %(default)s)")
    landing.add_argument("--landing-tolerance", type=number_in(float, 0, below=1), default=DEFAULT_LANDING_TOLERANCE, metavar="F",
                         help="a round lands when its measured latency is within this fraction of the budget "
                         "(default %(default)s: ±5%%)")
    training = parser.add_argument_group("training (python -m prune's settings and defaults)")
    for name in TRAINING:
        flag = FLAGS[name]
        value = default(name)
        training.add_argument(flag.flag or "--" + name.replace("_", "-"), dest=name, default=value, type=flag.type,
                              metavar=flag.metavar, choices=flag.choices, help=flag.help.format(default=value))
    training.add_argument("--no-long-reference", dest="long_reference", action="store_false",
                          help="skip the reference trained as many steps as the pruned network")
    build = parser.add_argument_group("compile and bench")
    build.add_argument("--compile-trials", type=whole_number(0), default=0,
                       help="MetaSchedule search trials per network after schedule transfer (default %(default)s: "
                       "the collection's schedules, exact or transferred)")
    build.add_argument("--repeat", type=whole_number(1), default=100,
                       help="timed runs per network, split between the turns of a bench with the reference "
                       "(default %(default)s)")
    build.add_argument("--warmup", type=whole_number(0), default=3, help="discarded warm-up runs (default %(default)s)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="report folder (also holds every stage's files)")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks of the pipeline's own errors")
    return parser




def options_from(args: argparse.Namespace) -> PipelineOptions:
    """Check the device, target and data before any stage runs, so a bad option costs nothing."""
    from compile.devices import resolve_phone
    from compile.linkers import check_linker
    from compile.targets import resolve_target
    from prune.data import data_classes

    if (args.tracker is None) != (args.key is None):
        raise EdgesegError("--tracker and --key go together.",
                           "Pass both for a device behind a tracker (python -m runner devices --tracker HOST:PORT "
                           "lists the keys), or neither for the embedded device.")
    preset = resolve_phone(args.phone).resolve(args.target)[0] if args.phone else resolve_target(args.target or "host")
    check_linker(preset)  # an Android target without TVM_NDK_CC fails here, not after an hour of training
    if args.tracker is None and preset.name != "host":
        raise EdgesegError(
            f"--target {preset.name} has no embedded device that measures speed (the emulated aarch64 server proves "
            "correctness only).", "Pass --tracker HOST:PORT --key KEY of a real device, or use --target host.")
    training: dict[str, Any] = {name: getattr(args, name) for name in TRAINING}
    budget_name = next(name for name in BUDGETS if getattr(args, name) is not None)
    return PipelineOptions(
        out=args.out, device=DeviceChoice(args.target, args.phone, args.tracker, args.key), training=training,
        budget=(budget_name, getattr(args, budget_name)), method=args.method,
        num_classes=data_classes(args.data, args.num_classes), samples=args.samples,
        trials_per_layer=args.trials_per_layer, compile_trials=args.compile_trials, repeat=args.repeat,
        warmup=args.warmup, long_reference=args.long_reference, max_rounds=args.max_rounds,
        landing_tolerance=args.landing_tolerance)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return run_main(lambda: _run(args), args.verbose)


def _run(args: argparse.Namespace) -> int:
    from prune.pipeline.report import write_report
    from prune.pipeline.rounds import run_rounds
    from prune.pipeline.stages import RECORD, StageRecord

    options = options_from(args)
    options.out.mkdir(parents=True, exist_ok=True)
    record = StageRecord.load(options.out / RECORD)
    budget, results, chosen = run_rounds(options, record)
    report = write_report(options, budget, results, chosen, record)
    print(f"\n{report.read_text()}", file=sys.stdout)
    print(f"report {report}; plots {options.out / 'comparison.png'}, {options.out / 'latency' / 'scatter.png'}")
    return 0
