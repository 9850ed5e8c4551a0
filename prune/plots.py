"""Loss and predicted-latency curves of a pruning run, as one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(steps: Sequence[dict[str, Any]], budget_ms: float | None, path: Path) -> Path:
    """Training loss and predicted latency (ms) against the global step; the budget (if any) as a line."""
    fig, (loss_ax, ms_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    for phase, colour in (("search", "tab:blue"), ("finetune", "tab:orange")):
        rows = [(i, r) for i, r in enumerate(steps) if r["phase"] == phase]
        if rows:
            loss_ax.plot([i for i, _ in rows], [r["loss"] for _, r in rows], color=colour, label=phase)
            ms_ax.plot([i for i, _ in rows], [r["predicted_ms"] for _, r in rows], color=colour, label=phase)
    if budget_ms is not None:
        ms_ax.axhline(budget_ms, color="black", linestyle="--", label="budget")
    loss_ax.set(xlabel="step", ylabel="training loss", title="loss")
    ms_ax.set(xlabel="step", ylabel="predicted latency (ms)", title="predicted latency of the hard network")
    for ax in (loss_ax, ms_ax):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
