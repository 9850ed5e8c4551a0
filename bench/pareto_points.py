"""The pure half of bench/prune_vs_baselines.py: Pareto point records in, figures and a plot out.

A point record (one line of points.jsonl) has at least: method, seed, budget_ms (predictor units),
budget_fraction (of the unpruned predicted latency), predicted_ms, measured_median_ms, miou (0-1).
The method "unpruned" is the reference network. No timing or training here: testable on
synthetic records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

UNPRUNED = "unpruned"
TOLERANCE = 0.05  # "within 5% of the budget"
GOAL_GAP_POINTS = 3.0  # bilevel at least 3 mIoU points above uniform at equal measured latency
GOAL_STEP_RATIO = 1.6  # one bi-level step at most 1.6x a plain one (bench/bilevel_step_cost.py)
STEP_COST = Path("bench/results/bilevel_step_cost.json")


# ---- budgets ----

def budget_check(point: dict[str, Any], unpruned_measured_ms: float | None, device_units: bool) -> dict[str, Any]:
    """Relative gaps to the budget, by predicted and by measured ms, and whether each is within
    TOLERANCE. Measured ms meet the budget itself when the predictor is in device ms; with
    nominal (FLOPs) ms they meet the budget fraction of the unpruned network's measured ms."""
    budget = point["budget_ms"]
    predicted_gap = (point["predicted_ms"] - budget) / budget
    measured_budget = budget if device_units else (
        point["budget_fraction"] * unpruned_measured_ms if unpruned_measured_ms else None)
    measured_gap = (point["measured_median_ms"] - measured_budget) / measured_budget if measured_budget else None
    return {"predicted_gap": predicted_gap, "within_predicted": abs(predicted_gap) <= TOLERANCE,
            "measured_budget_ms": measured_budget, "measured_gap": measured_gap,
            "within_measured": None if measured_gap is None else abs(measured_gap) <= TOLERANCE}


def apply_retimes(points: Sequence[dict[str, Any]], times: dict[str, Sequence[float]]) -> list[dict[str, Any]]:
    """Points whose measured ms is the median of their re-timing rounds (`times[key]`: one median
    per round), the timing taken right after the build kept as `measured_at_build_ms`. Points
    without re-timings are returned as they are."""
    out = []
    for p in points:
        rounds = times.get(p["key"])
        if rounds:
            p = {**p, "measured_at_build_ms": p["measured_median_ms"], "retimed_ms": list(rounds),
                 "measured_median_ms": float(np.median(rounds))}
        out.append(p)
    return out


def pool_retimes(history: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Every session of every re-timing in `history` (lines of retimings.jsonl), per point key."""
    pooled: dict[str, list[float]] = {}
    for timing in history:
        for key, sessions in timing["times_ms"].items():
            pooled.setdefault(key, []).extend(sessions)
    return pooled


def pooled_summary(summary: dict[str, Any], timings: int) -> dict[str, Any]:
    """What the bilevel networks' landing looks like with every re-timing pooled: one re-timing's
    median carries the machine's session-to-session noise (a few percent here); the median over
    all sessions of several re-timings, hours apart, leaves mostly the network's own error."""
    bilevel = [p for p in summary["points"] if p["method"] == "bilevel"]
    return {"timings": timings, "bilevel_within_budget": summary["bilevel_within_budget"],
            "bilevel": {p["key"]: {"sessions": len(p.get("retimed_ms") or []), "measured_ms": p["measured_median_ms"],
                                   "measured_gap": p["measured_gap"]} for p in bilevel}}


def unpruned_measured(points: Iterable[dict[str, Any]]) -> float | None:
    """The unpruned network's measured ms: the median over its seeds (one architecture: they
    differ by timing alone)."""
    times = [p["measured_median_ms"] for p in points if p["method"] == UNPRUNED]
    return float(np.median(times)) if times else None


def session_ratio_check(point: dict[str, Any], unpruned: dict[str, Any] | None) -> dict[str, Any]:
    """The network against the unpruned one timed in the same re-timing sessions: the median over
    sessions of their ratio, and its gap to the budget fraction. A drift reference of kernel size
    tracks a network only in part; the unpruned network, timed round-robin beside it, meets the
    same machine states, so what is left of the gap is the predictor's, not the session's. None
    without re-timings of both."""
    ours, theirs = point.get("retimed_ms"), (unpruned or {}).get("retimed_ms")
    if not ours or not theirs or len(ours) != len(theirs):
        return {"session_ratio": None, "fraction_gap": None, "within_fraction": None}
    ratio = float(np.median(np.asarray(ours) / np.asarray(theirs)))
    gap = ratio / point["budget_fraction"] - 1
    return {"session_ratio": ratio, "fraction_gap": gap, "within_fraction": abs(gap) <= TOLERANCE}


# ---- summary (pure: point records in, figures out) ----

def _mean_std(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
            "n": int(array.size)}


def summarize(points: Sequence[dict[str, Any]], device_units: bool) -> dict[str, Any]:
    """Per method and budget: mean/std over seeds; bilevel-vs-uniform gaps; budget shares."""
    reference = unpruned_measured(points)
    unpruned = next((p for p in points if p["method"] == UNPRUNED), None)
    checked = [{**p, **budget_check(p, reference, device_units), **session_ratio_check(p, unpruned)} for p in points]
    cells: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for p in checked:
        cells.setdefault((p["method"], p["budget_ms"]), []).append(p)
    rows = [{"method": method, "budget_ms": budget, "budget_fraction": group[0]["budget_fraction"],
             "seeds": sorted(p["seed"] for p in group),
             "miou": _mean_std([p["miou"] for p in group]),
             "measured_ms": _mean_std([p["measured_median_ms"] for p in group]),
             "predicted_ms": _mean_std([p["predicted_ms"] for p in group])}
            for (method, budget), group in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1]))]
    return {"rows": rows, "bilevel_vs_uniform": _gaps(checked, rows),
            "bilevel_within_budget": _shares([p for p in checked if p["method"] == "bilevel"]),
            "unpruned_measured_ms": reference, "points": checked}


def _gaps(points: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per budget: bilevel minus uniform mIoU in points (x100), paired by seed, and bilevel's mean
    against uniform's mean-mIoU curve interpolated at bilevel's mean measured ms (None outside it).
    The curve ends at the unpruned network: uniform scaling to the whole latency keeps every unit.
    `ceiling_points` is the gap bilevel would have with the unpruned network's mIoU at its measured
    ms: a pruned network is not expected to beat the unpruned one, so a budget where the ceiling
    is under the goal cannot meet it on this task and training, whatever the method."""
    by = {(p["method"], p["budget_ms"], p["seed"]): p for p in points}
    uniform = sorted((r["measured_ms"]["mean"], r["miou"]["mean"]) for r in rows if r["method"] in ("uniform", UNPRUNED))
    unpruned_miou = next((r["miou"]["mean"] for r in rows if r["method"] == UNPRUNED), None)
    out = []
    for row in (r for r in rows if r["method"] == "bilevel"):
        paired = [100 * (by[("bilevel", row["budget_ms"], s)]["miou"] - by[("uniform", row["budget_ms"], s)]["miou"])
                  for s in row["seeds"] if ("uniform", row["budget_ms"], s) in by]
        x = row["measured_ms"]["mean"]
        uniform_at_x = None
        if len(uniform) >= 2 and uniform[0][0] <= x <= uniform[-1][0]:
            uniform_at_x = float(np.interp(x, *zip(*uniform)))
        elif len(uniform) == 1 and np.isclose(uniform[0][0], x, rtol=TOLERANCE):
            uniform_at_x = uniform[0][1]
        known = uniform_at_x is not None
        out.append({"budget_ms": row["budget_ms"], "budget_fraction": row["budget_fraction"],
                    "gap_points_same_budget": _mean_std(paired) if paired else None,
                    "gap_points_same_measured_ms": 100 * (row["miou"]["mean"] - uniform_at_x) if known else None,
                    "ceiling_points": 100 * (unpruned_miou - uniform_at_x) if known and unpruned_miou is not None
                    else None,
                    "bilevel_measured_ms": x})
    return out


def _shares(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def share(flag: str) -> float | None:
        known = [p[flag] for p in points if p[flag] is not None]
        return float(np.mean(known)) if known else None

    return {"networks": len(points), "tolerance": TOLERANCE, "share_by_predicted": share("within_predicted"),
            "share_by_measured": share("within_measured"), "share_by_session_ratio": share("within_fraction")}


def goals(summary: dict[str, Any], step_cost: dict[str, Any] | None) -> dict[str, Any]:
    """The issue's three goals against what was measured (None: not measured here)."""
    gaps = [g["gap_points_same_measured_ms"] for g in summary["bilevel_vs_uniform"]]
    shares = summary["bilevel_within_budget"]
    ratio = step_cost.get("ratio_per_step") if step_cost else None
    return {
        "miou_gap_at_equal_measured_ms": {
            "goal": f">= {GOAL_GAP_POINTS} points at every budget", "measured": gaps,
            "met": None if not gaps or None in gaps else all(g >= GOAL_GAP_POINTS for g in gaps)},
        "bilevel_within_5pct_of_budget": {
            "goal": "every bilevel network", "by_predicted": shares["share_by_predicted"],
            "by_measured": shares["share_by_measured"],
            "by_ratio_to_unpruned_in_session": shares["share_by_session_ratio"],
            "met": None if shares["share_by_measured"] is None else shares["share_by_measured"] == 1.0},
        "bilevel_step_cost": {
            "goal": f"<= {GOAL_STEP_RATIO}x a plain step", "measured": ratio,
            "source": str(STEP_COST) if step_cost else None,
            "met": None if ratio is None else ratio <= GOAL_STEP_RATIO},
    }


def plot_pareto(summary: dict[str, Any], path: Path, title: str) -> None:
    """mIoU against measured ms: seeds as faint dots, mean +- std over seeds per budget."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"bilevel": "o", "uniform": "s", "magnitude": "^", UNPRUNED: "*"}
    fig, ax = plt.subplots(figsize=(7, 5))
    for method in dict.fromkeys(r["method"] for r in summary["rows"]):
        rows = sorted((r for r in summary["rows"] if r["method"] == method), key=lambda r: r["measured_ms"]["mean"])
        seeds = [p for p in summary["points"] if p["method"] == method]
        line = ax.errorbar([r["measured_ms"]["mean"] for r in rows], [100 * r["miou"]["mean"] for r in rows],
                           xerr=[r["measured_ms"]["std"] for r in rows], yerr=[100 * r["miou"]["std"] for r in rows],
                           marker=markers.get(method, "x"), markersize=12 if method == UNPRUNED else 7,
                           capsize=3, linestyle="-" if len(rows) > 1 else "none", label=method)
        ax.scatter([p["measured_median_ms"] for p in seeds], [100 * p["miou"] for p in seeds],
                   color=line[0].get_color(), alpha=0.3, s=12)
    ax.set_xlabel("measured latency, median (ms)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("\n".join(textwrap.fill(line, 95) for line in title.splitlines()), fontsize=9)  # a long path
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_summary(summary: dict[str, Any], goal: dict[str, Any]) -> None:
    print(f"\n{'method':10s} {'budget ms':>10} {'frac':>5} {'n':>2} {'mIoU %':>13} {'measured ms':>15} {'predicted':>9}")
    for r in summary["rows"]:
        m, t = r["miou"], r["measured_ms"]
        print(f"{r['method']:10s} {r['budget_ms']:10.4g} {r['budget_fraction']:5.2f} {m['n']:2d} "
              f"{100 * m['mean']:6.2f}+-{100 * m['std']:5.2f} {t['mean']:8.3f}+-{t['std']:6.3f} "
              f"{r['predicted_ms']['mean']:9.4g}")
    for g in summary["bilevel_vs_uniform"]:
        same = g["gap_points_same_budget"]
        at = g["gap_points_same_measured_ms"]
        print(f"bilevel - uniform at budget {g['budget_fraction']:.2f}: "
              + (f"{same['mean']:+.2f}+-{same['std']:.2f} points (paired by seed)" if same else "no pair")
              + ("; at equal measured ms " + (f"{at:+.2f} points" if at is not None else "outside uniform's range"))
              + (f" (the unpruned network's mIoU there: {g['ceiling_points']:+.2f})" if g.get("ceiling_points") is not None
                 else ""))
    s = summary["bilevel_within_budget"]
    print(f"bilevel within 5% of budget: by predicted {s['share_by_predicted']}, by measured "
          f"{s['share_by_measured']}, by its ratio to the unpruned network in the same sessions "
          f"{s['share_by_session_ratio']} ({s['networks']} networks)")
    for name, g in goal.items():
        print(f"goal {name}: {g['goal']}: met={g['met']}")
