"""How well models of several capacities learn a synthetic task from random weights on this CPU.

    PYTHONPATH=. python bench/synthetic_learnability.py [--data synthetic-hard] [--steps 2000 | --minutes 5] \
        [--models segformer-b0,segformer-b1,segformer-b0@0.75] [--input-size 64] [-o result.json]

Trains every model of `--models` (random init) with AdamW and a cosine learning rate for the
same `--steps` (or the same wall-clock budget, `--minutes` each), on the train split of `--data`
(`synthetic` or `synthetic-hard`), then evaluates mIoU on its held-out val split (other scenes:
a different split id in the generator's seed). `NAME@W` is the registry model with every
backbone stage and the decoder W times as wide (heads kept, so head_dim shrinks): a uniformly
scaled network, what uniform pruning to that width gives before fine-tuning. A task that tells
pruning methods apart needs the capacity being pruned: on it, segformer-b1 beats segformer-b0
and segformer-b0@0.75 loses points within the steps the benchmark can afford; the summary
prints those two differences. Prints steps, training time and the scores; `-o` also writes
them as JSON. Give `--steps` to compare capacities fairly (a wider model makes fewer steps in
the same minutes).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from prune.data import build_dataset
from prune.metrics import IGNORE_INDEX, ConfusionMatrix
from prune.models import MODELS, create_model, list_models


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=lambda t: [w.strip() for w in t.split(",") if w.strip()],
                        default=["segformer-b0", "segformer-b1", "segformer-b0@0.75"],
                        help=f"comma-separated NAME or NAME@WIDTH, NAME one of {', '.join(list_models())} "
                        "(default segformer-b0,segformer-b1,segformer-b0@0.75)")
    parser.add_argument("--data", default="synthetic-hard", choices=["synthetic", "synthetic-hard"])
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=8, help="synthetic: classes (synthetic-hard has 40)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--minutes", type=float, default=5.0, help="training wall-clock budget")
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead of a time budget")
    parser.add_argument("--val-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=None)
    return parser.parse_args(argv)


def build_variant(variant: str, num_classes: int) -> torch.nn.Module:
    """`NAME` from the registry, or `NAME@W`: every backbone stage and the decoder W times as wide
    (rounded to a multiple of the stage's heads), the heads kept (SegFormer/PVTv2 models)."""
    name, _, width = variant.partition("@")
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r} in --models; use one of {', '.join(list_models())}")
    if not width:
        return create_model(name, num_classes=num_classes)
    scale = float(width)
    base = create_model(name, num_classes=num_classes)
    stages = [m for n, m in base.backbone.named_children() if n.startswith("stages_")]
    if not stages or not hasattr(stages[0].blocks[0], "attn"):
        raise SystemExit(f"{variant}: width scaling is written for the SegFormer (PVTv2) models")
    heads = [int(stage.blocks[0].attn.num_heads) for stage in stages]
    dims = tuple(max(h, round(c * scale / h) * h) for c, h in zip(base.backbone.feature_info.channels(), heads))
    return create_model(name, num_classes=num_classes, embed_dims=dims,
                        embed_dim=max(8, round(MODELS[name].embed_dim * scale / 8) * 8))


def train(model: torch.nn.Module, args: argparse.Namespace) -> tuple[int, float, float]:
    """Train until the budget is spent; returns (steps, seconds, last smoothed loss)."""
    budget_steps = args.steps or 10**9
    budget_s = math.inf if args.steps else args.minutes * 60.0
    data = build_dataset(args.data, "train", args.input_size, num_classes=args.num_classes,
                         length=min(budget_steps * args.batch_size, 10**7), seed=args.seed)  # fmt: skip
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False, num_workers=0)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = 30
    model.train()
    start, steps, smooth = time.perf_counter(), 0, float("nan")
    # iter(): the loader's length is a cap, not the plan, when a time budget ends training
    bar = tqdm(iter(loader), desc="train", unit="step", total=args.steps, file=sys.stderr)
    for images, labels in bar:
        elapsed = time.perf_counter() - start
        progress = steps / budget_steps if args.steps else elapsed / budget_s
        if progress >= 1.0:
            break
        scale = min(1.0, (steps + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = args.lr * scale
        logits = F.interpolate(model(images), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        smooth = loss.item() if math.isnan(smooth) else 0.95 * smooth + 0.05 * loss.item()
        bar.set_postfix(loss=f"{smooth:.3f}", lr=f"{args.lr * scale:.1e}")
    bar.close()
    return steps, time.perf_counter() - start, smooth


@torch.no_grad()
def evaluate(model: torch.nn.Module, args: argparse.Namespace) -> ConfusionMatrix:
    data = build_dataset(args.data, "val", args.input_size, num_classes=args.num_classes,
                         length=args.val_size, seed=args.seed)  # fmt: skip
    model.eval()
    matrix = ConfusionMatrix(data.num_classes)
    for images, labels in DataLoader(data, batch_size=32, num_workers=0):
        matrix.update(model(images), labels)
    return matrix


def run_variant(variant: str, num_classes: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = build_variant(variant, num_classes)
    steps, seconds, loss = train(model, args)
    scores = evaluate(model, args).scores()
    print(f"{variant} at {args.input_size}px on {args.data} ({num_classes} classes): {steps} steps of batch "
          f"{args.batch_size} in {seconds:.0f} s, train loss {loss:.3f}")  # fmt: skip
    print(f"  val mIoU {scores.miou:.3f}, pixel accuracy {scores.pixel_accuracy:.3f} on {args.val_size} held-out scenes")
    print("  IoU per class: " + " ".join("-" if v is None else f"{v:.2f}" for v in scores.iou))
    return {
        "model": variant,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "train_loss": round(loss, 4),
        "miou": round(scores.miou, 4),
        "pixel_accuracy": round(scores.pixel_accuracy, 4),
        "iou_per_class": [None if v is None else round(v, 4) for v in scores.iou],
    }


def capacity_checks(rows: list[dict]) -> dict[str, float]:
    """mIoU points that capacity buys, for the pairs the task is meant to show (when both ran)."""
    miou = {r["model"]: r["miou"] for r in rows}
    pairs = {"b1_minus_b0": ("segformer-b1", "segformer-b0"), "b0_minus_b0@0.75": ("segformer-b0", "segformer-b0@0.75")}
    return {key: round(100 * (miou[a] - miou[b]), 2) for key, (a, b) in pairs.items() if a in miou and b in miou}


def main(argv: list[str] | None = None) -> int:
    from runner.machine import write_result

    args = parse_args(argv)
    load_before, started = os.getloadavg(), time.monotonic()
    torch.set_num_threads(args.threads)
    num_classes = build_dataset(args.data, "val", args.input_size, num_classes=args.num_classes, length=1).num_classes
    rows = [run_variant(variant, num_classes, args) for variant in args.models]
    checks = capacity_checks(rows)
    if checks:
        print("capacity (mIoU points): " + ", ".join(f"{k} {v:+.2f}" for k, v in checks.items()))
    result = {
        "data": args.data,
        "input_size": args.input_size,
        "num_classes": num_classes,
        "batch_size": args.batch_size,
        "budget": f"{args.steps} steps" if args.steps else f"{args.minutes} minutes per model",
        "threads": args.threads,
        "val_images": args.val_size,
        "rows": rows,
        "capacity_mIoU_points": checks,
    }
    if args.output:
        write_result(args.output, result, load_before, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
