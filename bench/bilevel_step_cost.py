"""Wall time of the bi-level search's step against one plain training step, on the real search.

The issue's goal (BiP's claim of first-order cost): one bi-level step costs no more than 1.6x a
plain training step at the same training batch size. Both steps are the code the pruning run
executes: `prune.steps.plain_step` (the baselines' training and the fine-tuning) and
`prune.search.BilevelSearch.step` (gates, projection onto the budget, penalty, budget weight) on
the model `--model` (default segformer-b0) at `--size`, with its latency budget built by
`prune.train.build_budget` (the FLOPs table by default; `--predictor DIR` for a device
predictor) at `--budget-fraction` of the unpruned latency, on synthetic scenes. Settings not
given here are `PruneSettings`'s defaults (batch sizes, outer period, hard mask, budget signal).

Timed, interleaved run by run so that load from other processes hits all of them alike (warm-up
runs dropped):
  plain      forward + backward + SGD step of the unpruned network on one training batch;
  masked     the same step with the search's gates attached (what masking alone costs);
  inner      the search's weights-only step (between outer updates when `outer_every` > 1);
  outer      the search's outer step past the projection's ramp (the budget at its target, the
             most units cut): a held-out pass and a training pass at the same weights, BiP's
             first-order implicit gradient, the expected-latency penalty, Adam on the scores,
             SGD on the weights, the projection of the new scores onto the budget, the hard
             network's predicted latency and the budget weight's update;
  threshold  the same step with `hard_mask="threshold"` (no projection): what the projection costs;
  equal      the outer step with a held-out batch as large as the training batch.
Reported: per step, median, quartiles, min and max; per ratio, the median and quartiles of the
run-by-run ratios (each run's steps ran back to back), and the ratio of the minima (load from
other processes only ever adds time). The bi-level step's cost per step is
(outer + (outer_every - 1) x inner) / outer_every against plain; per sample it is divided by
the samples read per step relative to plain's, (batch + outer_batch / outer_every) / batch.

One torch thread by default: with two threads on this shared two-core machine, every step
stalls whenever another process holds a core; pass --threads 2 (and read the ratio of the
minima) for the two-core figure.

    PYTHONPATH=. python bench/bilevel_step_cost.py [--model segformer-b0] [--size 128] [--runs 15]
        [--threads 1] [--predictor flops] [--implicit-gradient first_order|neumann --neumann-steps K]
        [-o bench/results/bilevel_step_cost.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from prune.data import build_dataset
from prune.describe import prunable_groups
from prune.models import create_model
from prune.search import BilevelSearch
from prune.settings import IMPLICIT_GRADIENTS, PruneSettings
from prune.steps import plain_step, sgd
from prune.train import build_budget

DEFAULTS = PruneSettings(budget_ms=1.0)
OUTPUT = Path(__file__).resolve().parent / "results" / "bilevel_step_cost.json"


def summary(values: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return {"median": median, "q1": q1, "q3": q3, "min": min(values), "max": max(values)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULTS.model)
    parser.add_argument("--size", type=int, default=128, help="input height and width")
    parser.add_argument("--predictor", default="flops", help="latency predictor folder, or 'flops' (default)")
    parser.add_argument("--budget-fraction", type=float, default=0.5, help="of the unpruned predicted latency")
    parser.add_argument("--implicit-gradient", choices=IMPLICIT_GRADIENTS, default=DEFAULTS.implicit_gradient)
    parser.add_argument("--neumann-steps", type=int, default=DEFAULTS.neumann_steps)
    parser.add_argument("--classes", type=int, default=8, help="synthetic classes")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, see above)")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help=f"JSON results (default {OUTPUT})")
    return parser.parse_args(argv)


def build_steps(args: argparse.Namespace) -> tuple[dict[str, Callable[[], None]], PruneSettings, int]:
    """The timed steps (see the module docstring), the settings they run with, the gated groups."""
    settings = PruneSettings(model=args.model, predictor=args.predictor, budget_fraction=args.budget_fraction,
                             input_size=args.size, num_classes=args.classes, implicit_gradient=args.implicit_gradient,
                             neumann_steps=args.neumann_steps)
    torch.manual_seed(settings.seed)
    scenes = build_dataset("synthetic", "train", args.size, length=2 * settings.batch_size,
                           num_classes=args.classes, seed=settings.seed)
    loader = DataLoader(scenes, batch_size=settings.batch_size)
    train, second = itertools.islice(loader, 2)
    val, equal_val = [x[: settings.outer_batch_size] for x in second], second

    plain_model = create_model(args.model, num_classes=args.classes)
    plain_opt = sgd(plain_model, settings.lr, settings.decay("search"))
    past_ramp = settings.epochs * settings.search_steps - 1  # the projection's budget is the target

    def search(**changes) -> BilevelSearch:
        """A search over a copy of the unpruned network (its own gates and optimiser)."""
        model = create_model(args.model, num_classes=args.classes)
        model.load_state_dict(plain_model.state_dict())
        group_set, budget = build_budget(settings, model)
        groups = prunable_groups(group_set, budget.description)
        return BilevelSearch(dataclasses.replace(settings, **changes), model, groups, budget,
                             settings.target_ms(budget.full_latency_ms()))

    projected, threshold, masked = search(), search(hard_mask="threshold"), search()
    masked_opt = sgd(masked.optimizer.model, settings.lr, settings.decay("search"))
    steps = {
        "plain": lambda: plain_step(plain_model, plain_opt, train),
        "masked": lambda: plain_step(masked.optimizer.model, masked_opt, train),
        "inner": lambda: projected.optimizer.step(train),
        "outer": lambda: projected.step(past_ramp, train, itertools.repeat(val)),
        "threshold": lambda: threshold.step(past_ramp, train, itertools.repeat(val)),
        "equal": lambda: projected.step(past_ramp, train, itertools.repeat(equal_val)),
    }
    return steps, settings, len(projected.groups)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, settings, n_groups = build_steps(args)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for run in range(args.warmup + args.runs):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if run >= args.warmup:
                times[name].append(time.perf_counter() - start)

    k, batch, outer_batch = settings.outer_every, settings.batch_size, settings.outer_batch_size
    others = list(steps)[1:]  # each against "plain"
    by_run = [dict(zip(times, run)) for run in zip(*times.values())]
    ratios = {"bilevel_per_step": [(r["outer"] + (k - 1) * r["inner"]) / k / r["plain"] for r in by_run],
              **{f"{name}_step": [r[name] / r["plain"] for r in by_run] for name in others}}
    ratio_summary = {name: summary(values) for name, values in ratios.items()}
    fastest = {name: min(t) for name, t in times.items()}
    minima = {"bilevel_per_step": (fastest["outer"] + (k - 1) * fastest["inner"]) / k / fastest["plain"],
              **{f"{name}_step": fastest[name] / fastest["plain"] for name in others}}
    per_step = ratio_summary["bilevel_per_step"]["median"]
    per_sample = per_step * batch / (batch + outer_batch / k)
    report = {
        "setup": {**vars(args), "output": None, "groups": n_groups, "batch": batch, "outer_batch": outer_batch,
                  "outer_every": k, "hard_mask": settings.hard_mask, "budget_signal": settings.budget_signal,
                  "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
                  "torch": torch.__version__, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "how": f"{args.runs} interleaved runs of the {len(steps)} steps after {args.warmup} warm-up runs; "
               "ratios are the median (and quartiles) of run-by-run ratios to the plain step of the same run",
        "steps_ms": {name: {key: value * 1e3 for key, value in summary(t).items()} for name, t in times.items()},
        "ratios": ratio_summary,
        "ratios_of_minima": minima,
        "ratio_per_step": per_step,
        "ratio_per_sample": per_sample,
        "goal_per_step": 1.6,
    }
    for name, figures in report["steps_ms"].items():
        print(f"{name:9s} median {figures['median']:8.1f} ms  (quartiles {figures['q1']:.1f}-{figures['q3']:.1f}, "
              f"min {figures['min']:.1f}, max {figures['max']:.1f})")
    for name, figures in ratio_summary.items():
        print(f"{name:19s} {figures['median']:.2f}x plain  (run-by-run quartiles {figures['q1']:.2f}-"
              f"{figures['q3']:.2f}; ratio of minima {minima[name]:.2f}x)")
    print(f"bi-level/plain {per_step:.2f}x per step, {per_sample:.2f}x per sample read ({args.model}, batch {batch}, "
          f"held-out batch {outer_batch} every {k} step(s), {args.size}x{args.size}, {settings.hard_mask} hard mask, "
          f"{settings.implicit_gradient} implicit gradient, "
          f"{report['setup']['torch_threads']} threads, {args.runs} runs after {args.warmup} warm-up; goal <= 1.6x)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
