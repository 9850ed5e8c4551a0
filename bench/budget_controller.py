"""Where the bi-level search itself lands against its budget, per hard mask, budget signal and IG scale.

    PYTHONPATH=. python bench/budget_controller.py [--hard-masks projection,threshold] \
        [--signals hard,expected] [--implicit-scales 1,0] [--budgets 0.75,0.5,0.35] [--seeds 0,1] \
        [--input-size 64] [-o bench/results/budget_controller]

The search ends with a hard network (the gates' decision); `run_pruning` then drops units by gate
score if it is over the budget, or adds them back if it fell under, so every network ships at or
just under its budget. How far the search's own network is from the budget says how well the
budget weight's dual ascent steers it (the issue asks for a weight schedule that lands it there).
For every hard mask x signal x implicit scale x budget x seed: one search (`--epochs` x `--search-steps`,
no fine-tuning) on the synthetic task with the FLOPs budget; recorded: searched ms / budget,
units added or dropped by the fit, and the mIoU of the fitted network before any fine-tuning.

Every run has its own folder under OUT/work (a rerun returns finished runs as they are); the
records go to OUT/runs.jsonl, the summary to OUT/result.json and OUT/landing.png. Single-threaded
torch by default (`--threads`): the figures are about the controller, not speed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.budget_controller")


def _list(kind: type):
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hard-masks", type=_list(str), default=["projection", "threshold"])
    p.add_argument("--signals", type=_list(str), default=["hard", "expected"])
    p.add_argument("--implicit-scales", type=_list(float), default=[1.0, 0.0])
    p.add_argument("--budgets", type=_list(float), default=[0.75, 0.5, 0.35], help="fractions of the unpruned latency")
    p.add_argument("--seeds", type=_list(int), default=[0, 1])
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--search-steps", type=int, default=40)
    p.add_argument("--train-scenes", type=int, default=400)
    p.add_argument("--val-scenes", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("-o", "--out", type=Path, default=Path("bench/results/budget_controller"))
    return p.parse_args(argv)


def run_one(args: argparse.Namespace, mask: str, signal: str, scale: float, fraction: float, seed: int) -> dict[str, Any]:
    from prune.settings import PruneSettings
    from prune.train import run_pruning

    settings = PruneSettings(budget_fraction=fraction, budget_signal=signal, hard_mask=mask,
                             implicit_scale=scale, seed=seed,
                             input_size=args.input_size, epochs=args.epochs, search_steps=args.search_steps,
                             finetune_steps=0, train_scenes=args.train_scenes, val_scenes=args.val_scenes)
    key = f"{mask}-{signal}-is{scale:g}-b{fraction:g}-seed{seed}"
    started = time.monotonic()
    report = run_pruning(settings, args.out / "work" / key, progress=False).report
    return {"key": key, "hard_mask": mask, "signal": signal, "implicit_scale": scale, "budget_fraction": fraction, "seed": seed,
            "searched_over_budget": report["searched_ms"] / report["budget_ms"],
            "fitted_over_budget": report["predicted_ms"] / report["budget_ms"],
            "added_to_fit": report["added_to_fit"], "dropped_to_fit": report["dropped_to_fit"],
            "miou_before_finetune": report["miou"], "seconds": round(time.monotonic() - started, 1)}


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[tuple, list[float]] = {}
    for r in records:
        cells.setdefault((r["hard_mask"], r["signal"], r["implicit_scale"], r["budget_fraction"]), []).append(r)
    rows = []
    for (mask, signal, scale, fraction), group in sorted(cells.items(),
                                                          key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2], -kv[0][3])):
        landing = np.array([r["searched_over_budget"] for r in group])
        rows.append({"hard_mask": mask, "signal": signal, "implicit_scale": scale, "budget_fraction": fraction,
                     "n": len(group),
                     "searched_over_budget_mean": float(landing.mean()), "min": float(landing.min()),
                     "max": float(landing.max()),
                     "within_5pct": float(np.mean(np.abs(landing - 1) <= 0.05)),
                     "miou_before_finetune_mean": float(np.mean([r["miou_before_finetune"] for r in group]))})
    return rows


def plot(records: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r["hard_mask"], r["signal"], r["implicit_scale"]) for r in records},
                     key=lambda c: (c[0], c[1], -c[2]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (mask, signal, scale) in enumerate(configs):
        mine = [r for r in records if (r["hard_mask"], r["signal"], r["implicit_scale"]) == (mask, signal, scale)]
        ax.scatter([r["budget_fraction"] + 0.01 * (i - len(configs) / 2) for r in mine],
                   [r["searched_over_budget"] for r in mine], label=f"{mask}, {signal}, implicit scale {scale:g}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhspan(0.95, 1.0, color="g", alpha=0.15, label="within 5% under")
    ax.set(xlabel="budget (fraction of the unpruned latency)", ylabel="search's network / budget", title=title)
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("prune").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ".gitignore").write_text("work/\n")
    records = []
    grid = [(mask, sig, sc, b, seed) for mask in args.hard_masks for sig in args.signals
            for sc in args.implicit_scales for b in args.budgets for seed in args.seeds]
    from tqdm import tqdm

    for mask, signal, scale, fraction, seed in tqdm(grid, desc="searches"):
        record = run_one(args, mask, signal, scale, fraction, seed)
        records.append(record)
        log.info("%s: search landed at %.3f x budget (added %d, dropped %d), mIoU %.3f before fine-tuning",
                 record["key"], record["searched_over_budget"], record["added_to_fit"], record["dropped_to_fit"],
                 record["miou_before_finetune"])
    (args.out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = summarize(records)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.out / "result.json").write_text(json.dumps({
        "what": "the bi-level search's own hard network (before the fit to budget) over its budget, FLOPs budget, "
                "synthetic task, no fine-tuning", "settings": settings, "rows": rows}, indent=2) + "\n")
    plot(records, args.out / "landing.png",
         f"segformer-b0 {args.input_size}px, {args.epochs}x{args.search_steps} search steps, seeds {args.seeds}")
    print(f"\n{'hard mask':10s} {'signal':9s} {'IG scale':>8} {'budget':>6} {'n':>2} "
          f"{'landed/budget mean (min-max)':>30} {'within 5%':>9} {'mIoU':>6}")
    for r in rows:
        print(f"{r['hard_mask']:10s} {r['signal']:9s} {r['implicit_scale']:8g} {r['budget_fraction']:6.2f} {r['n']:2d} "
              f"{r['searched_over_budget_mean']:12.3f} ({r['min']:.3f}-{r['max']:.3f})      "
              f"{r['within_5pct']:9.2f} {r['miou_before_finetune_mean']:6.3f}")
    print(f"\nresult in {args.out / 'result.json'}, plot {args.out / 'landing.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
