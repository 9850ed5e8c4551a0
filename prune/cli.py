"""`python -m prune`: prune a SegFormer-style model to a latency budget, fine-tune, export.

Parses, makes one keyword call into `prune.train.run_pruning`, prints a short summary. torch
and the models are imported only when a run starts, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from runner.cli_support import number_in, run_main, setup_logging, whole_number
from runner.errors import EdgesegError
from prune.settings import (BUDGET_SIGNALS, DENSE, FLOPS, HARD_MASKS, IMPLICIT_GRADIENTS, METHODS, PruneSettings,
                            default)

AUTO = "auto"
log = logging.getLogger(__name__)


_positive_int = number_in(int, 0, above=True)
_positive = number_in(float, 0, above=True)
_nonnegative = number_in(float, 0)
_count = whole_number(0)


def _unit(text: str) -> int | str:
    return text if text == AUTO else _positive_int(text)


@dataclass(frozen=True)
class Flag:
    """How a setting of `PruneSettings` is given on the command line. Its default is the
    setting's own (`prune.settings.default`), written into the help wherever it says {default};
    a bool setting is a switch."""

    help: str
    type: Callable[[str], Any] | None = None
    flag: str | None = None  # default: --the-setting-name
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    budget: bool = False  # one of the mutually exclusive budget flags


# Every setting of a run, in the order of --help (settings left out: NOT_FLAGS).
FLAGS: dict[str, Flag] = {
    "model": Flag("registry model (default {default})"),
    "data": Flag("synthetic, synthetic-hard (40 classes: long tail, thin and small objects, context and "
                 "texture pairs), ade20k:PATH or cityscapes:PATH (default {default})"),
    "predictor": Flag("latency predictor folder (latency_model train), or 'flops' for nominal ms proportional "
                      "to FLOPs (default {default})"),
    "budget_ms": Flag("latency budget of the pruned model, ms", _positive, budget=True),
    "fps": Flag("frame-rate target (budget 1000/FPS ms)", _positive, budget=True),
    "budget_fraction": Flag("budget as a fraction of the unpruned network's predicted latency (0.5: half)",
                            _positive, metavar="F", budget=True),
    "input_size": Flag("square input size in pixels, a multiple of 32 (default {default})", _positive_int),
    "method": Flag("default {default}; dense: no pruning, the unpruned network trained with the same schedule "
                   "(the reference; takes no budget, writes weights.safetensors for --weights)", choices=METHODS),
    "epochs": Flag("epochs of search and of fine-tuning; a checkpoint after each (default {default})",
                   _positive_int),
    "search_steps": Flag("search (or baseline training) steps per epoch (default {default})", _count),
    "finetune_steps": Flag("fine-tuning steps per epoch (default {default})", _count),
    "batch_size": Flag("training batch: the weights' batch in every step (default {default})", _positive_int),
    "outer_batch_size": Flag("bilevel: held-out batch of each gate-score update; small, since the scores are "
                             "few and it sets the search's extra cost over plain training (default {default})",
                             _positive_int, metavar="N"),
    "outer_every": Flag("bilevel: update the gate scores (and the budget weight) every K steps; the other steps "
                        "update the weights alone (default {default})", _positive_int, metavar="K"),
    "unit": Flag("channels per prunable unit, the device's alignment, or 'auto': the coarsest step the predictor "
                 "says gives nothing up (python -m latency_model alignment) (default {default})", _unit),
    "lr": Flag("weight learning rate (default {default})", _positive),
    "weight_decay": Flag("SGD weight decay of every method's training steps (plain training, the bi-level search's "
                         "inner step, where it is lambda, and the fine-tuning) (default {default})", _nonnegative),
    "search_weight_decay": Flag("a weight decay for the search phase alone (bi-level inner step or baseline "
                                "training), e.g. 1e-3 for BiP's lambda (default: --weight-decay)", _nonnegative,
                                metavar="DECAY"),
    "outer_lr": Flag("gate score learning rate, bilevel (default {default})", _positive),
    "budget_signal": Flag("bilevel: the latency the budget weight reacts to: the hard network's (what would be "
                          "deployed) or the expected one under the keep probabilities (moves with every score "
                          "step) (default {default})", choices=BUDGET_SIGNALS),
    "hard_mask": Flag("bilevel: the network the search trains: the best-scoring units that fit the budget "
                      "(projection, narrowed from the unpruned network over the first half) or those whose score "
                      "is above zero (threshold) (default {default})", choices=HARD_MASKS),
    "implicit_gradient": Flag("bilevel: BiP's first-order implicit gradient (one backward per split), or a Neumann "
                              "series of --neumann-steps Hessian-vector products (default {default})",
                              choices=IMPLICIT_GRADIENTS),
    "neumann_steps": Flag("Hessian-vector products of the Neumann series (default {default})", _count, metavar="K"),
    "neumann_alpha": Flag("step of the Neumann series, below 2 / the largest Hessian eigenvalue (default {default})",
                          _positive),
    "weights": Flag("local checkpoint of the unpruned model"),
    "pretrained_backbone": Flag("start the backbone from timm's ImageNet weights, if they are in the local Hugging "
                                "Face cache (nothing is downloaded)"),
    "reuse_search": Flag("bilevel: the folder of an earlier bilevel run with the same settings but another budget "
                         "or latency scale; its search's weights and gate scores are projected onto this budget "
                         "instead of searching again (what python -m prune.pipeline's correcting rounds do)",
                         metavar="DIR"),
    "latency_scale": Flag("multiply the predictor's latencies by S: measured ms of a whole network per predicted ms "
                          "of its layers on this device (what lies between layers: launches, copies); "
                          "python -m prune.pipeline measures it (default {default})", _positive, metavar="S"),
    "device": Flag("device key the pruned network is for; a predictor made for another is refused (default: the "
                   "predictor's)", metavar="KEY"),
    "target": Flag("target preset the pruned network will be compiled for (python -m compile --target); a "
                   "predictor made for another is refused (default: the predictor's)", metavar="PRESET"),
    "seed": Flag("default {default}", int),
    "num_classes": Flag("synthetic data: number of classes; synthetic-hard has its own 40 (default {default})",
                        _positive_int, flag="--classes", metavar="CLASSES"),
    "train_scenes": Flag("synthetic data: training scenes (default 2000)", _positive_int),
    "val_scenes": Flag("synthetic data: validation scenes (default 200)", _positive_int),
}
# Settings a Python caller (or a bench) sets; the command line runs with their defaults.
NOT_FLAGS = ("gate_init", "implicit_scale")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m prune",
        description="Prune a segmentation model to a latency budget (bi-level search with a latency "
        "predictor, or a baseline), fine-tune it, and write model.onnx, pruning.json and curves.png. "
        "Rerun the same command to resume after a crash.")
    budget = None
    for name, flag in FLAGS.items():
        value = default(name)
        options: dict[str, Any] = {"dest": name, "help": flag.help.format(default=value)}
        if isinstance(value, bool):
            options["action"] = "store_true"
        else:
            options.update(default=value, type=flag.type, metavar=flag.metavar, choices=flag.choices)
        if flag.budget:
            budget = budget or parser.add_mutually_exclusive_group()
        (budget if flag.budget else parser).add_argument(flag.flag or "--" + name.replace("_", "-"), **options)
    parser.add_argument("--shared-training", metavar="DIR", default=None,
                        help="uniform/magnitude/dense: share the plain training of the unpruned network with other "
                        "runs of the same settings but another method or budget, through DIR (trained once)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-o", "--output", required=True, help="output folder (holds the checkpoint)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging and tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: one process tells the story
        logging.getLogger().setLevel(logging.WARNING)
    return run_main(lambda: _run(args), args.verbose)


def _run(args: argparse.Namespace) -> int:
    from prune.shared_training import SharedTraining
    from prune.train import run_pruning

    values = {name: getattr(args, name) for name in FLAGS}
    settings = PruneSettings(**{**values, "unit": 1 if args.unit == AUTO else args.unit})
    if args.unit == AUTO:
        settings = dataclasses.replace(settings, unit=_auto_unit(settings))
    shared = SharedTraining(args.shared_training) if args.shared_training else None
    result = _run_maybe_distributed(lambda: run_pruning(settings, args.output, progress=not args.no_progress,
                                                        shared_training=shared))
    if result is None:
        return 0
    r = result.report
    budget = "no budget" if r["budget_ms"] is None else f"budget {r['budget_ms']:.4g} ms"
    print(f"{r['model']} {'trained dense' if r['method'] == DENSE else 'pruned by ' + r['method']} at "
          f"{r['input_size']} px ({r['predictor']}):")
    print(f"  predicted  {r['predicted_ms']:.4g} ms  ({budget}, "
          f"unpruned {r['unpruned_predicted_ms']:.4g} ms, "
          f"speed-up {r['unpruned_predicted_ms'] / r['predicted_ms']:.2f}x)")
    print(f"  mIoU       {r['miou']:.4f}")
    print(f"  written    {result.onnx}, {result.output_dir / 'pruning.json'}, {result.output_dir / 'curves.png'}",
          file=sys.stdout)
    return 0


def _auto_unit(settings: PruneSettings) -> int:
    """The channel unit the settings' device predictor says pays off (logged with its table)."""
    from prune.auto_unit import model_alignment
    from prune.train import load_cost

    if settings.predictor == FLOPS:
        raise EdgesegError("--unit auto reads the alignment from a device predictor, and --predictor is flops "
                           "(FLOPs fall with every channel, whatever the device).",
                           "Pass --predictor DIR (collected with --unit 1), or a number: --unit 8.")
    choice = model_alignment(settings.model, settings.input_size, load_cost(settings), settings.num_classes)
    log.info("--unit auto: %d channels per unit\n%s", choice.unit, choice.table())
    return choice.unit


def _run_maybe_distributed(body):
    """Under torchrun (WORLD_SIZE > 1): one gloo process group around the run; only rank 0's
    result is returned (the others return None and print nothing)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return body()
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        result = body()
        return result if dist.get_rank() == 0 else None
    finally:
        dist.destroy_process_group()
