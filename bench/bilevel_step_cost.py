"""Wall time of the bi-level search's steps against one plain training step.

The issue's goal (BiP's claim of first-order cost): one bi-level step costs no more than 1.6x a
plain training step at the same training batch size. Stand-in network: timm `pvt_v2_b0`
(features_only) with a 1x1 convolution per feature map to the classes, upsampled to the finest
map and summed. Batch sizes and the outer period default to `PruneSettings`'s.

Five steps are timed, interleaved run by run so that load from other processes on the machine
hits all of them alike (warm-up runs are dropped):
  plain    forward + backward + SGD step of the unpruned network on one training batch;
  masked   the same step with the gates attached (what masking alone costs);
  inner    `BilevelOptimizer.step` without a held-out batch: the weights' step alone (what the
           search does between outer updates when `outer_every` > 1);
  outer    `BilevelOptimizer.step` with a held-out batch of `outer_batch_size`: a held-out pass
           (forward + backward to weights and scores), a training pass (forward + backward to
           the weights) at the same weights, BiP's first-order implicit gradient, the budget
           term, one Adam step on the scores and one SGD step on the weights;
  equal    the same with a held-out batch as large as the training batch (the former default).
Reported: per step, median, quartiles, min and max; per ratio, the median and quartiles of the
run-by-run ratios (each run's steps ran back to back), and the ratio of the minima (load from
other processes only ever adds time). The bi-level step's cost per step is
(outer + (outer_every - 1) x inner) / outer_every against plain; per sample it is divided by
the samples read per step relative to plain's, (batch + outer_batch / outer_every) / batch.

One torch thread by default: with two threads on this shared two-core machine, every step
stalls whenever another process holds a core, and run-by-run ratios spread from 0.8x to 3.3x;
pass --threads 2 (and read the ratio of the minima) for the two-core figure.

    PYTHONPATH=. python bench/bilevel_step_cost.py [--method first_order] [--size 128] [--batch 8]
        [--outer-batch 2] [--outer-every 1] [--threads 1] [-o bench/results/bilevel_step_cost.json]
"""

from __future__ import annotations

import argparse
import json
import platform
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
from prune.settings import PruneSettings

DEFAULTS = PruneSettings(budget_ms=1.0)
OUTPUT = Path(__file__).resolve().parent / "results" / "bilevel_step_cost.json"


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


def summary(values: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return {"median": median, "q1": q1, "q3": q3, "min": min(values), "max": max(values)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=METHODS, default="first_order")
    parser.add_argument("--neumann-steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=128, help="input height and width")
    parser.add_argument("--batch", type=int, default=DEFAULTS.batch_size, help="training batch")
    parser.add_argument("--outer-batch", type=int, default=DEFAULTS.outer_batch_size, help="held-out batch")
    parser.add_argument("--outer-every", type=int, default=DEFAULTS.outer_every, help="outer update period")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--unit", type=int, default=8)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, see above)")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help=f"JSON results (default {OUTPUT})")
    return parser.parse_args(argv)


def build_steps(args: argparse.Namespace) -> tuple[dict[str, Callable[[], None]], int]:
    """The five timed steps (see the module docstring) and the number of gate groups."""
    torch.manual_seed(0)
    label_size = args.size // 4

    def batch(n: int):
        return torch.randn(n, 3, args.size, args.size), torch.randint(0, args.classes, (n, label_size, label_size))

    train, val, equal_val = batch(args.batch), batch(args.outer_batch), batch(args.batch)
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
        "inner": lambda: bilevel.step(train),
        "outer": lambda: bilevel.step(train, val, kept_fraction),
        "equal": lambda: bilevel.step(train, equal_val, kept_fraction),
    }
    return steps, len(groups.groups)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, n_groups = build_steps(args)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for run in range(args.warmup + args.runs):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if run >= args.warmup:
                times[name].append(time.perf_counter() - start)

    k, batch, outer_batch = args.outer_every, args.batch, args.outer_batch
    runs = list(zip(*times.values()))
    by_run = [dict(zip(times, run)) for run in runs]
    ratios = {
        "bilevel_per_step": [(r["outer"] + (k - 1) * r["inner"]) / k / r["plain"] for r in by_run],
        "outer_step": [r["outer"] / r["plain"] for r in by_run],
        "inner_step": [r["inner"] / r["plain"] for r in by_run],
        "equal_step": [r["equal"] / r["plain"] for r in by_run],
        "masked_step": [r["masked"] / r["plain"] for r in by_run],
    }
    ratio_summary = {name: summary(values) for name, values in ratios.items()}
    fastest = {name: min(t) for name, t in times.items()}
    minima = {"bilevel_per_step": (fastest["outer"] + (k - 1) * fastest["inner"]) / k / fastest["plain"],
              **{f"{name}_step": fastest[name] / fastest["plain"] for name in ("outer", "inner", "equal", "masked")}}
    per_step = ratio_summary["bilevel_per_step"]["median"]
    per_sample = per_step * batch / (batch + outer_batch / k)
    report = {
        "setup": {**vars(args), "output": None, "groups": n_groups, "torch_threads": torch.get_num_threads(),
                  "machine": platform.machine(), "torch": torch.__version__},
        "how": f"{args.runs} interleaved runs of the five steps after {args.warmup} warm-up runs; "
               "ratios are the median (and quartiles) of run-by-run ratios to the plain step of the same run",
        "steps_ms": {name: {key: value * 1e3 for key, value in summary(t).items()} for name, t in times.items()},
        "ratios": ratio_summary,
        "ratios_of_minima": minima,
        "ratio_per_step": per_step,
        "ratio_per_sample": per_sample,
        "goal_per_step": 1.6,
    }
    for name, figures in report["steps_ms"].items():
        print(f"{name:7s} median {figures['median']:8.1f} ms  (quartiles {figures['q1']:.1f}-{figures['q3']:.1f}, "
              f"min {figures['min']:.1f}, max {figures['max']:.1f})")
    for name, figures in ratio_summary.items():
        print(f"{name:19s} {figures['median']:.2f}x plain  (run-by-run quartiles {figures['q1']:.2f}-"
              f"{figures['q3']:.2f}; ratio of minima {minima[name]:.2f}x)")
    print(f"bi-level/plain {per_step:.2f}x per step, {per_sample:.2f}x per sample read "
          f"({args.method}, batch {batch}, held-out batch {outer_batch} every {k} step(s), {args.size}x{args.size}, "
          f"{report['setup']['torch_threads']} threads, {args.runs} runs after {args.warmup} warm-up; goal <= 1.6x)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
