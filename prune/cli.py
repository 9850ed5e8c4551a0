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
from typing import Sequence

from runner.cli_support import run_main, setup_logging
from runner.errors import EdgesegError
from prune.settings import BUDGET_SIGNALS, DENSE, FLOPS, HARD_MASKS, IMPLICIT_GRADIENTS, METHODS, PruneSettings

DEFAULTS = PruneSettings(budget_ms=1.0)
AUTO = "auto"
log = logging.getLogger(__name__)


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} must be > 0")
        return value

    return parse


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def _unit(text: str) -> int | str:
    return text if text == AUTO else _positive(int)(text)


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    parser = argparse.ArgumentParser(
        prog="python -m prune",
        description="Prune a segmentation model to a latency budget (bi-level search with a latency "
        "predictor, or a baseline), fine-tune it, and write model.onnx, pruning.json and curves.png. "
        "Rerun the same command to resume after a crash.")
    parser.add_argument("--model", default=d.model, help=f"registry model (default {d.model})")
    parser.add_argument("--data", default=d.data, help="synthetic, synthetic-hard (40 classes: long tail, thin "
                        "and small objects, context and texture pairs), ade20k:PATH or cityscapes:PATH "
                        f"(default {d.data})")
    parser.add_argument("--predictor", default=d.predictor, help="latency predictor folder (latency_model "
                        f"train), or '{FLOPS}' for nominal ms proportional to FLOPs (default {FLOPS})")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-ms", type=_positive(float), help="latency budget of the pruned model, ms")
    budget.add_argument("--fps", type=_positive(float), help="frame-rate target (budget 1000/FPS ms)")
    budget.add_argument("--budget-fraction", type=_positive(float), metavar="F",
                        help="budget as a fraction of the unpruned network's predicted latency (0.5: half)")
    parser.add_argument("--input-size", type=_positive(int), default=d.input_size,
                        help=f"square input size in pixels, a multiple of 32 (default {d.input_size})")
    parser.add_argument("--method", choices=METHODS, default=d.method,
                        help=f"default {d.method}; dense: no pruning, the unpruned network trained with the same "
                        "schedule (the reference; takes no budget, writes weights.safetensors for --weights)")
    parser.add_argument("--epochs", type=_positive(int), default=d.epochs,
                        help=f"epochs of search and of fine-tuning; a checkpoint after each (default {d.epochs})")
    parser.add_argument("--search-steps", type=_count, default=d.search_steps,
                        help=f"search (or baseline training) steps per epoch (default {d.search_steps})")
    parser.add_argument("--finetune-steps", type=_count, default=d.finetune_steps,
                        help=f"fine-tuning steps per epoch (default {d.finetune_steps})")
    parser.add_argument("--batch-size", type=_positive(int), default=d.batch_size,
                        help=f"training batch: the weights' batch in every step (default {d.batch_size})")
    parser.add_argument("--outer-batch-size", type=_positive(int), default=d.outer_batch_size, metavar="N",
                        help="bilevel: held-out batch of each gate-score update; small, since the scores are few "
                        f"and it sets the search's extra cost over plain training (default {d.outer_batch_size})")
    parser.add_argument("--outer-every", type=_positive(int), default=d.outer_every, metavar="K",
                        help="bilevel: update the gate scores (and the budget weight) every K steps; the other "
                        f"steps update the weights alone (default {d.outer_every})")
    parser.add_argument("--unit", type=_unit, default=d.unit,
                        help="channels per prunable unit, the device's alignment, or 'auto': the coarsest step the "
                        f"predictor says gives nothing up (python -m latency_model alignment) (default {d.unit})")
    parser.add_argument("--lr", type=_positive(float), default=d.lr, help=f"weight learning rate (default {d.lr})")
    parser.add_argument("--weight-decay", type=_nonnegative, default=d.weight_decay,
                        help="SGD weight decay of every method's training steps (plain training, the bi-level "
                        f"search's inner step, where it is lambda, and the fine-tuning) (default {d.weight_decay})")
    parser.add_argument("--search-weight-decay", type=_nonnegative, default=None, metavar="DECAY",
                        help="a weight decay for the search phase alone (bi-level inner step or baseline training), "
                        "e.g. 1e-3 for BiP's lambda (default: --weight-decay)")
    parser.add_argument("--outer-lr", type=_positive(float), default=d.outer_lr,
                        help=f"gate score learning rate, bilevel (default {d.outer_lr})")
    parser.add_argument("--budget-signal", choices=BUDGET_SIGNALS, default=d.budget_signal,
                        help="bilevel: the latency the budget weight reacts to: the hard network's (what would be "
                        "deployed) or the expected one under the keep probabilities (moves with every score step) "
                        f"(default {d.budget_signal})")
    parser.add_argument("--hard-mask", choices=HARD_MASKS, default=d.hard_mask,
                        help="bilevel: the network the search trains: the best-scoring units that fit the budget "
                        "(projection, narrowed from the unpruned network over the first half) or those whose score "
                        f"is above zero (threshold) (default {d.hard_mask})")
    parser.add_argument("--implicit-gradient", choices=IMPLICIT_GRADIENTS, default=d.implicit_gradient,
                        help="bilevel: BiP's first-order implicit gradient (one backward per split), or a Neumann "
                        f"series of --neumann-steps Hessian-vector products (default {d.implicit_gradient})")
    parser.add_argument("--neumann-steps", type=_count, default=d.neumann_steps, metavar="K",
                        help=f"Hessian-vector products of the Neumann series (default {d.neumann_steps})")
    parser.add_argument("--neumann-alpha", type=_positive(float), default=d.neumann_alpha,
                        help="step of the Neumann series, below 2 / the largest Hessian eigenvalue "
                        f"(default {d.neumann_alpha})")
    parser.add_argument("--weights", default=None, help="local checkpoint of the unpruned model")
    parser.add_argument("--pretrained-backbone", action="store_true",
                        help="start the backbone from timm's ImageNet weights, if they are in the local Hugging Face "
                        "cache (nothing is downloaded)")
    parser.add_argument("--device", default=None, metavar="KEY",
                        help="device key the pruned network is for; a predictor made for another is refused "
                        "(default: the predictor's)")
    parser.add_argument("--target", default=None, metavar="PRESET",
                        help="target preset the pruned network will be compiled for (python -m compile --target); "
                        "a predictor made for another is refused (default: the predictor's)")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    parser.add_argument("--classes", type=_positive(int), default=d.num_classes,
                        help=f"synthetic data: number of classes; synthetic-hard has its own 40 (default {d.num_classes})")
    parser.add_argument("--train-scenes", type=_positive(int), default=None,
                        help="synthetic data: training scenes (default 2000)")
    parser.add_argument("--val-scenes", type=_positive(int), default=None,
                        help="synthetic data: validation scenes (default 200)")
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

    settings = PruneSettings(
        model=args.model, data=args.data, predictor=args.predictor, budget_ms=args.budget_ms, fps=args.fps,
        budget_fraction=args.budget_fraction,
        input_size=args.input_size, method=args.method, epochs=args.epochs, search_steps=args.search_steps,
        finetune_steps=args.finetune_steps, batch_size=args.batch_size,
        outer_batch_size=args.outer_batch_size, outer_every=args.outer_every, unit=1 if args.unit == AUTO else args.unit, lr=args.lr, outer_lr=args.outer_lr,
        weight_decay=args.weight_decay, search_weight_decay=args.search_weight_decay,
        budget_signal=args.budget_signal, hard_mask=args.hard_mask, implicit_gradient=args.implicit_gradient,
        neumann_steps=args.neumann_steps, neumann_alpha=args.neumann_alpha,
        weights=args.weights, pretrained_backbone=args.pretrained_backbone, device=args.device, target=args.target, seed=args.seed, num_classes=args.classes, train_scenes=args.train_scenes,
        val_scenes=args.val_scenes)
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
