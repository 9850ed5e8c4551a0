"""`python -m latency_model`: collect per-layer latencies on a device, train, evaluate, validate,
and read off the channel alignment that pays off (`alignment`).

Parses, makes one call into the library, renders. torch, TVM and XGBoost are imported only
inside a command, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Sequence

from runner.cli_support import add_timing_flags, run_main, setup_logging, timing_protocol, whole_number
from runner.device import HOST_KEY, Tracker

log = logging.getLogger(__name__)

HELP = {
    "model": "model name whose prunable layers are sampled (e.g. segformer-b0)",
    "input_size": "square input size in pixels the model runs at",
    "target": "target preset (see `python -m compile --target help`; default: host, or the --device's CPU)",
    "device": "phone preset (python -m compile --device help): its target, CPU model and big-core threads, "
              "as `python -m compile --device` compiles for it",
    "classes": "class count of the network to be pruned: it sizes the classifier layer measured (150: "
               "ADE20K, 19: Cityscapes, 40: synthetic-hard; `python -m prune --data synthetic` defaults to 8)",
    "tracker": "RPC tracker HOST:PORT of the device (default: the embedded loopback farm)",
    "key": f"device key at the tracker (default: {HOST_KEY} for the embedded farm)",
    "samples": "random pruned variants whose layers are measured (plus the unpruned and the smallest network)",
    "trials": "MetaSchedule trials per tuning task of each layer (0: database only)",
    "rounds": "adaptive rounds: remeasure around configs predicted off by more than 10%%",
    "out": "JSONL file to append to (default: the device's workspace folder/dataset.jsonl)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m latency_model", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging and tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    c = commands.add_parser("collect", parents=[common], help="measure sampled layer configs "
                            "of a model on a device (resumable)")
    c.add_argument("--model", required=True, help=HELP["model"])
    c.add_argument("--input-size", type=whole_number(1), default=512, help=HELP["input_size"])
    c.add_argument("--classes", type=whole_number(2), default=150, help=HELP["classes"] + " (default 150)")
    c.add_argument("--target", default=None, help=HELP["target"])
    c.add_argument("--device", default=None, help=HELP["device"])
    c.add_argument("--tracker", type=Tracker.parse, default=None, help=HELP["tracker"])
    c.add_argument("--key", default=None, help=HELP["key"])
    c.add_argument("--samples", type=whole_number(0), default=50, help=HELP["samples"])
    c.add_argument("--pruned", type=Path, action="append", default=[], metavar="DIR",
                   help="also measure the layers of the network a `python -m prune` run wrote to DIR (repeatable): "
                   "the widths its budget priced")
    c.add_argument("--trials-per-layer", type=whole_number(0), default=8, help=HELP["trials"])
    c.add_argument("--rounds", type=whole_number(0), default=0, help=HELP["rounds"])
    c.add_argument("--seed", type=int, default=0, help="sampling seed")
    c.add_argument("--unit", type=whole_number(1), default=8,
                   help="channel step of the sampled widths (default 8; 1 samples every width, which is what "
                   "`alignment` needs to tell which step pays off)")
    add_timing_flags(c, drift=True)
    c.add_argument("-o", "--out", type=Path, default=None, help=HELP["out"])

    a = commands.add_parser("alignment", parents=[common], help="the channel step that pays off on the "
                            "predictor's device, for a model's channel groups (prune --unit auto)")
    a.add_argument("predictor", type=Path, help="predictor folder from `train`")
    a.add_argument("--model", required=True, help=HELP["model"])
    a.add_argument("--input-size", type=whole_number(1), default=512, help=HELP["input_size"])
    a.add_argument("--json", action="store_true", help="print the choice as JSON")

    t = commands.add_parser("train", parents=[common], help="train an XGBoost predictor")
    t.add_argument("data", type=Path, help="JSONL measurements from `collect`")
    t.add_argument("-o", "--out", type=Path, required=True, help="predictor folder to write")
    t.add_argument("--holdout", type=float, default=0.2, help="share of configs held out")
    t.add_argument("--seed", type=int, default=0, help="split and training seed")

    e = commands.add_parser("evaluate", parents=[common], help="accuracy of a predictor on "
                            "measurements of its own device and target")
    e.add_argument("predictor", type=Path, help="predictor folder from `train`")
    e.add_argument("data", type=Path, help="JSONL measurements")
    e.add_argument("--all", action="store_true", help="evaluate on every config, not only the "
                   "configs held out of training (training configs flatter the predictor)")
    e.add_argument("--plot", type=Path, default=None, help="scatter plot PNG to write")
    e.add_argument("--json", action="store_true", help="print the report as JSON")

    v = commands.add_parser("validate", parents=[common], help="whole pruned variants "
                            "measured end to end against the predicted sum")
    v.add_argument("predictor", type=Path, help="predictor folder from `train`")
    v.add_argument("--model", required=True, help=HELP["model"])
    v.add_argument("--input-size", type=whole_number(1), default=512, help=HELP["input_size"])
    v.add_argument("--classes", type=whole_number(2), default=150, help=HELP["classes"] + " (default 150)")
    v.add_argument("--variants", type=whole_number(1), default=20, help="random pruned variants")
    v.add_argument("--target", default=None, help=HELP["target"])
    v.add_argument("--device", default=None, help=HELP["device"])
    v.add_argument("--tracker", type=Tracker.parse, default=None, help=HELP["tracker"])
    v.add_argument("--key", default=None, help=HELP["key"])
    v.add_argument("--trials-per-task", type=whole_number(0), default=0,
                   help="MetaSchedule trials per kernel of a variant that the tuning database "
                   "lacks; 0 (default): build from the database that collect filled, as it is")
    v.add_argument("--seed", type=int, default=0, help="variant sampling seed")
    add_timing_flags(v, drift=True)
    v.add_argument("-o", "--out", type=Path, required=True,
                   help="folder for the variants' ONNX files, measurements.jsonl (a rerun "
                   "resumes from it), validation.json and validation.png")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    body = {"collect": _collect, "train": _train, "evaluate": _evaluate,
            "validate": _validate, "alignment": _alignment}[args.command]
    return run_main(lambda: body(args), args.verbose)


def _device_key(args: argparse.Namespace) -> str:
    from runner.errors import EdgesegError

    if args.tracker is None and args.key not in (None, HOST_KEY):
        raise EdgesegError(f"--key {args.key} was given without --tracker.",
                           "Pass --tracker HOST:PORT too, or neither for the embedded farm.")
    if args.tracker is not None and not args.key:
        raise EdgesegError("--tracker was given without --key.",
                           "Name the device: --key KEY (see python -m runner devices).")
    return args.key or HOST_KEY


def _preset(args: argparse.Namespace) -> tuple[Any, int | None]:
    """The target preset measured and the threads to time with: a phone preset's (as `python -m
    compile --device` builds for it and `runner bench` runs it, so layers and networks share one
    tuning database and one thread pool), or `--target`'s with the device's default threads."""
    from compile.devices import resolve_phone
    from compile.targets import resolve_target

    if args.device:
        preset, runtime = resolve_phone(args.device).resolve(args.target)
        return preset, runtime["threads"]
    return resolve_target(args.target or "host"), None


def _collect(args: argparse.Namespace) -> int:
    from latency_model.collect import Source, collect, collect_adaptive
    from latency_model.sampling import layer_configs, sample_kept
    from prune.describe import describe_model  # the command line composes the two packages
    from prune.export import export_onnx
    from prune.models import create_model
    from prune.variants import pruned_kept
    from runner.errors import EdgesegError
    from runner.farm import use_device
    from runner.workspace import device_dir, tuning_database_dir

    key = _device_key(args)
    preset, threads = _preset(args)
    description = describe_model(args.model, args.input_size, unit=args.unit, num_classes=args.classes)
    if args.rounds and args.pruned:
        raise EdgesegError("--rounds and --pruned do not combine.",
                           "Collect the pruned networks' layers in a run without --rounds.")
    pruned = [pruned_kept(folder, description, args.model, args.input_size, args.classes)
              for folder in args.pruned]  # checked before any device is asked
    out = args.out or device_dir(key, preset.name) / "dataset.jsonl"
    common: dict[str, Any] = dict(preset=preset, out=out, protocol=timing_protocol(args),
                                  database_dir=tuning_database_dir(key, preset.name),
                                  trials_per_layer=args.trials_per_layer,
                                  source=Source(args.model, args.input_size, args.classes),
                                  threads=threads)
    # The unpruned network's own kernels join the tuning: a few fuse across layers (the
    # decoder's resizes with their concat), and a pruned network's compile needs their donors.
    with tempfile.TemporaryDirectory(prefix="edgeseg-collect-") as scratch, \
            use_device(args.tracker, key) as device:
        network = export_onnx(create_model(args.model, num_classes=args.classes), args.input_size,
                              Path(scratch) / "unpruned.onnx")
        common["networks"] = [network]
        if args.rounds:
            first, rounds = collect_adaptive(
                description, device, samples=args.samples, rounds=args.rounds,
                predictor_dir=out.parent / "adaptive", seed=args.seed, **common)
            reports = [first, *(r.report for r in rounds)]
        else:
            configs = layer_configs(description, [*sample_kept(description, args.samples, args.seed), *pruned])
            reports = [collect(configs, device, **common)]
    measured = sum(len(r.measured) for r in reports)
    seconds = sum(r.seconds for r in reports)
    print(f"measured {measured} layer configs in {seconds:.0f} s "
          f"({3600 * measured / seconds if measured else 0:.0f}/hour); "
          f"{reports[0].skipped} already in {out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from latency_model.predictor import train_predictor
    from latency_model.records import read_records

    predictor = train_predictor(read_records(args.data), args.out, seed=args.seed,
                                holdout=args.holdout)
    chosen = predictor.report["candidates"][predictor.report["chosen"]]
    print(f"predictor {args.out}: {predictor.mode} model for {predictor.device_key} / "
          f"{predictor.target_preset}; held-out +-10% {100 * chosen['within_10']:.1f}%, "
          f"RMSPE {100 * chosen['rmspe']:.1f}% on {predictor.report['n_test']} configs")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from latency_model.evaluate import evaluate_predictor
    from latency_model.predictor import Predictor
    from latency_model.records import read_records
    from runner.errors import EdgesegError

    predictor = Predictor.load(args.predictor)
    records = read_records(args.data)
    baseline = None
    if not args.all and predictor.holdout_keys:
        held = [r for r in records if r.key in predictor.holdout_keys]
        if not held:
            raise EdgesegError(f"None of the configs held out of training are in {args.data}.",
                               "Pass the data file the predictor was trained on, or --all.")
        baseline = [r for r in records if r.key not in predictor.holdout_keys] or None
        records = held
        predictor = predictor.held_out_view()  # the fit that never saw them
    out_dir = args.plot.parent if args.plot else None
    report = evaluate_predictor(predictor, records, out_dir=out_dir, baseline_records=baseline)
    if args.plot and report.plot and Path(report.plot) != args.plot:
        Path(report.plot).replace(args.plot)
        report = replace(report, plot=str(args.plot))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
        print(f"FLOPs baseline: {report.baseline_fit}")
        if report.plot:
            print(f"plot: {report.plot}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from prune.variants import build_variants
    from latency_model.predictor import Predictor
    from latency_model.validate import validate_variants
    from runner.farm import use_device
    from runner.workspace import tuning_database_dir

    predictor = Predictor.load(args.predictor)
    key = _device_key(args)
    preset, threads = _preset(args)
    predictor.check_compatible(key, preset.name)  # before any model is built or device asked
    protocol = timing_protocol(args)
    predictor.check_timed_alike(protocol.drift_reference, None, threads)
    _warn_if_made_otherwise(predictor.manifest, args.model, args.input_size, protocol, args.classes)
    variants = build_variants(args.model, args.input_size, args.variants, args.seed, args.out,
                              num_classes=args.classes)
    with use_device(args.tracker, key) as device:
        report = validate_variants(predictor, variants, device, preset,
                                   tuning_database_dir(key, preset.name),
                                   args.trials_per_task, protocol, out_dir=args.out, threads=threads)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
        print(f"report {args.out / 'validation.json'}, plot {report.plot}")
    return 0


def _alignment(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from latency_model.predictor import Predictor
    from prune.auto_unit import model_alignment

    predictor = Predictor.load(args.predictor)
    _warn_if_made_otherwise(predictor.manifest, args.model, args.input_size)
    choice = model_alignment(args.model, args.input_size, predictor)
    if args.json:
        print(json.dumps(asdict(choice), indent=2))
    else:
        print(f"{args.model} at {args.input_size} px, {len(choice.groups)} channel groups, predictor {args.predictor}:")
        print(choice.table())
        print(f"channel unit: {choice.unit} (the coarsest step within {100 * choice.tolerance:.0f}% of the best)")
    return 0


def _warn_if_made_otherwise(manifest: dict[str, Any], model: str, input_size: int,
                            protocol: Any = None, num_classes: int | None = None) -> None:
    """A predictor of another model, size or protocol can be asked (that is a question worth
    asking), but the answer is about that mismatch too: say so. No protocol: not compared."""
    from runner.timing import TimingProtocol

    ours = {"model": model, "input_size": input_size, "num_classes": num_classes,
            "protocol": protocol.to_dict() if protocol else None}
    if isinstance(manifest.get("protocol"), dict):  # settings added since it was made take their defaults
        manifest = {**manifest, "protocol": TimingProtocol(**manifest["protocol"]).to_dict()}
    for name, value in ours.items():
        theirs = manifest.get(name)
        if value is not None and theirs is not None and theirs != value:
            log.warning("the predictor was made with %s %s; asking it about %s", name, theirs, value)
