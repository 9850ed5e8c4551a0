"""How well a model learns the synthetic scenes from random weights on this CPU in a few minutes.

    PYTHONPATH=. python bench/synthetic_learnability.py [--minutes 5] [--input-size 64] [-o result.json]

Trains `--model` (default segformer-b0, random init) with AdamW and a cosine learning rate over a
wall-clock budget (or `--steps`), on the synthetic train split, then evaluates mIoU on the
held-out val split (other scenes: a different split id in the generator's seed). Prints steps,
training time and the scores; `-o` also writes them as JSON. The default run takes about
`--minutes` plus a short evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from prune.data import build_dataset
from prune.metrics import IGNORE_INDEX, ConfusionMatrix
from prune.models import create_model, list_models


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="segformer-b0", choices=list_models())
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--minutes", type=float, default=5.0, help="training wall-clock budget")
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead of a time budget")
    parser.add_argument("--val-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=None)
    return parser.parse_args(argv)


def train(model: torch.nn.Module, args: argparse.Namespace) -> tuple[int, float, float]:
    """Train until the budget is spent; returns (steps, seconds, last smoothed loss)."""
    budget_steps = args.steps or 10**9
    budget_s = math.inf if args.steps else args.minutes * 60.0
    data = build_dataset("synthetic", "train", args.input_size, num_classes=args.num_classes,
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
    data = build_dataset("synthetic", "val", args.input_size, num_classes=args.num_classes,
                         length=args.val_size, seed=args.seed)  # fmt: skip
    model.eval()
    matrix = ConfusionMatrix(args.num_classes)
    for images, labels in DataLoader(data, batch_size=32, num_workers=0):
        matrix.update(model(images), labels)
    return matrix


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=args.num_classes)
    steps, seconds, loss = train(model, args)
    scores = evaluate(model, args).scores()
    result = {
        "model": args.model,
        "input_size": args.input_size,
        "num_classes": args.num_classes,
        "batch_size": args.batch_size,
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "train_loss": round(loss, 4),
        "val_images": args.val_size,
        "miou": round(scores.miou, 4),
        "pixel_accuracy": round(scores.pixel_accuracy, 4),
        "iou_per_class": [None if v is None else round(v, 4) for v in scores.iou],
    }
    print(f"{args.model} at {args.input_size}px, {args.num_classes} classes: {steps} steps of batch "
          f"{args.batch_size} in {seconds:.0f} s, train loss {loss:.3f}")  # fmt: skip
    print(f"val mIoU {scores.miou:.3f}, pixel accuracy {scores.pixel_accuracy:.3f} on {args.val_size} held-out scenes")
    print("IoU per class: " + " ".join("-" if v is None else f"{v:.2f}" for v in scores.iou))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
