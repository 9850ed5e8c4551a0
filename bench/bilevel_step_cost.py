"""Wall time of one bi-level step against one plain training step.

The issue's goal (BiP's claim of first-order cost): one first-order bi-level step costs no more
than 1.6x a plain training step. Stand-in network: timm `pvt_v2_b0` (features_only) with a 1x1
convolution per feature map to the classes, upsampled to the finest map and summed.

Three steps are timed, interleaved run by run so that load from other processes on the machine
hits all of them alike (warm-up runs are dropped):
  plain    forward + backward + SGD step of the unpruned network on one batch;
  masked   the same step with the gates attached (what masking alone costs);
  bilevel  `BilevelOptimizer.step`: a held-out pass and a training pass (each forward + backward
           at the same weights), the hypergradient, one Adam step on the scores and one SGD step
           on the weights. It consumes two batches (train + held-out).
Reported: median and quartiles per step, the ratio of medians bilevel/plain, and the same ratio
per training sample (bilevel/plain x batch / (batch + val_batch)).

    PYTHONPATH=. python bench/bilevel_step_cost.py [--method first_order] [--size 128] [--batch 4] [-o cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

from prune.bilevel import METHODS, BilevelConfig, BilevelOptimizer
from prune.gates import Gates
from prune.groups import build_groups


class StandIn(nn.Module):
    """pvt_v2_b0 features + a 1x1 conv head per feature, summed at the finest resolution."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.backbone = timm.create_model("pvt_v2_b0", features_only=True, pretrained=False)
        self.heads = nn.ModuleList(nn.Conv2d(c, classes, 1) for c in self.backbone.feature_info.channels())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        size = features[0].shape[-2:]
        return sum(
            F.interpolate(head(f), size=size, mode="bilinear", align_corners=False)
            for head, f in zip(self.heads, features)
        )


def seg_loss(model: nn.Module, batch) -> torch.Tensor:
    images, labels = batch
    return F.cross_entropy(model(images), labels)


def kept_fraction(gates: Gates) -> torch.Tensor:
    """A differentiable stand-in for the latency budget term (same place in the step)."""
    probs = list(gates.probabilities().values())
    return 0.1 * sum(p.mean() for p in probs) / len(probs)


def summary(times: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(times, n=4)
    return {"median_s": median, "q1_s": q1, "q3_s": q3, "min_s": min(times), "max_s": max(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=METHODS, default="first_order")
    parser.add_argument("--neumann-steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=128, help="input height and width")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--val-batch", type=int, default=None, help="held-out batch (default: --batch)")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--unit", type=int, default=8)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("-o", "--output", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    val_batch = args.val_batch or args.batch
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    label_size = args.size // 4

    def batch(n: int):
        return torch.randn(n, 3, args.size, args.size), torch.randint(0, args.classes, (n, label_size, label_size))

    train, val = batch(args.batch), batch(val_batch)
    plain_model = StandIn(args.classes)
    gated_model = StandIn(args.classes)
    gated_model.load_state_dict(plain_model.state_dict())
    groups = build_groups(gated_model, train[0][:1], unit=args.unit)
    gates = Gates(groups.groups)
    gates.attach(gated_model)
    config = BilevelConfig(method=args.method, neumann_steps=args.neumann_steps)
    bilevel = BilevelOptimizer(gated_model, gates, seg_loss, config)
    masked_inner = torch.optim.SGD(bilevel.weights, lr=config.inner_lr, momentum=config.inner_momentum)
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=config.inner_lr, momentum=config.inner_momentum,
                                weight_decay=config.weight_decay_lambda)

    def plain_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        def step() -> None:
            model.train()
            optimizer.zero_grad()
            seg_loss(model, train).backward()
            optimizer.step()

        return step

    steps = {
        "plain": plain_step(plain_model, plain_opt),
        "masked": plain_step(gated_model, masked_inner),
        "bilevel": lambda: bilevel.step(train, val, kept_fraction),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for run in range(args.warmup + args.runs):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if run >= args.warmup:
                times[name].append(time.perf_counter() - start)

    result = {name: summary(t) for name, t in times.items()}
    ratio = result["bilevel"]["median_s"] / result["plain"]["median_s"]
    report = {
        "setup": {**vars(args), "output": None, "val_batch": val_batch, "groups": len(groups.groups),
                  "torch_threads": torch.get_num_threads()},
        "steps": result,
        "ratio_bilevel_to_plain": ratio,
        "ratio_masked_to_plain": result["masked"]["median_s"] / result["plain"]["median_s"],
        "ratio_per_sample": ratio * args.batch / (args.batch + val_batch),
    }
    for name, figures in result.items():
        print(f"{name:8s} median {figures['median_s'] * 1e3:8.1f} ms  "
              f"(quartiles {figures['q1_s'] * 1e3:.1f}-{figures['q3_s'] * 1e3:.1f}, "
              f"min {figures['min_s'] * 1e3:.1f}, max {figures['max_s'] * 1e3:.1f})")
    print(f"bilevel/plain {ratio:.2f}x per step, {report['ratio_per_sample']:.2f}x per training sample; "
          f"masking alone {report['ratio_masked_to_plain']:.2f}x ({args.method}, batch {args.batch}+{val_batch}, "
          f"{args.size}x{args.size}, {args.runs} runs after {args.warmup} warm-up)")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
