"""Networks side by side, as the main job ends: mIoU, predicted ms, measured ms, FPS, speed-up.

    python -m prune.compare out/pipeline/unpruned out/pipeline/pruned -o out/pipeline/report

Each argument is a folder that the three commands filled:
    pruning.json   `python -m prune ... -o FOLDER`             mIoU, predicted latency, budget
    artifact/      `python -m compile FOLDER/model.onnx -o FOLDER/artifact`   tuning hit rate
    bench.json     `python -m runner bench FOLDER/artifact --out FOLDER/bench.json`   measured
The first folder is the reference of the speed-ups. Writes `comparison.json` and
`comparison.png` to the output folder and prints the table. Figures are only read, never
made up: a row whose bench ran on an emulator says so, and the predicted column is the latency
predictor's sum of layers (no graph overhead), the measured one the whole network over RPC.
Under the table, every row says what it was trained with: its method and steps, and, when it
started from the weights of an earlier run (`--weights DIR/weights.safetensors` of a dense
run), that run's too, so a network fine-tuned after a dense training is not read as better
than a reference that trained half as long without saying so.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from prune.settings import as_they_ran
from runner.cli_support import run_main, setup_logging
from runner.errors import ArtifactError

PRUNING, ARTIFACT, BENCH = "pruning.json", "artifact", "bench.json"


@dataclass(frozen=True)
class Row:
    """One network: how it was pruned, how well it segments, how fast it is predicted and runs."""

    name: str
    method: str
    miou: float
    budget_ms: float | None
    predicted_ms: float
    measured_ms: float
    measured_std_ms: float
    runs: int
    device_key: str
    emulated: bool
    kernels_tuned: int
    kernels: int
    tasks_reused: int
    tasks: int
    tuning_seconds: float
    trained: str = "?"  # what it was trained with, every stage (`training_stages`)
    steps: int | None = None  # training steps over every stage; None: a start whose training is unknown
    artifact: str = ""  # the benched artifact's folder
    baseline_artifact: str | None = None  # an artifact timed in turns with it (`runner bench --baseline`)
    baseline_ratio: float | None = None  # this row's median over the baseline's, in turns in one session

    @property
    def fps(self) -> float:
        return 1000.0 / self.measured_ms


def read_json(path: Path, made_by: str) -> dict[str, Any]:
    """A JSON file a command wrote; a missing or torn one is an error naming the command to run."""
    if not path.is_file():
        raise ArtifactError(f"{path} is missing.", f"Make it with {made_by}.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path} is not valid JSON ({err}).", f"Remake it with {made_by}.") from None


def training_stages(pruning: dict[str, Any], seen: int = 0) -> tuple[list[str], int | None]:
    """What a run's network was trained with, stage by stage (its start's run first, when the
    start is the weights file of another run's folder), and the steps over all stages (None when
    the first start is a checkpoint of unknown training)."""
    s = as_they_ran(pruning.get("settings", {}))
    epochs, search, finetune = (int(s.get(k, 0)) for k in ("epochs", "search_steps", "finetune_steps"))
    phase = "training" if pruning["method"] == "dense" else "search"
    stage = (f"{pruning['method']} {epochs * (search + finetune)} steps ({epochs} x ({search} {phase} + {finetune} "
             f"fine-tuning), lr {s.get('lr', '?')}, weight decay {s.get('weight_decay', '?')}"
             + (f", search weight decay {s['search_weight_decay']}" if s.get("search_weight_decay") is not None else "")
             + (f"; the search of {s['reuse_search']} projected onto its budget" if s.get("reuse_search") else "")
             + ")")
    steps: int | None = epochs * (search + finetune)
    weights = s.get("weights")
    if weights is None:
        start = ["ImageNet backbone"] if s.get("pretrained_backbone") else []
        return start + [stage], steps
    earlier = Path(weights).parent / PRUNING
    if earlier.is_file() and seen < 8:
        before, before_steps = training_stages(json.loads(earlier.read_text()), seen + 1)
        return before + [stage], None if before_steps is None else before_steps + steps
    return [f"weights {weights} (training unknown)", stage], None


def load_row(folder: str | Path) -> Row:
    """Read one network's folder (see the module docstring for what it must hold)."""
    folder = Path(folder)
    pruning = read_json(folder / PRUNING, f"python -m prune ... -o {folder}")
    tuning = read_json(folder / ARTIFACT / "manifest.json",
                        f"python -m compile {folder}/model.onnx -o {folder / ARTIFACT}").get("tuning", {})
    bench = read_json(folder / BENCH, f"python -m runner bench {folder / ARTIFACT} --out {folder / BENCH}")
    stages, steps = training_stages(pruning)
    return Row(
        name=folder.name, method=pruning["method"], miou=float(pruning["miou"]),
        budget_ms=pruning.get("budget_ms"),  # None for the dense reference
        predicted_ms=float(pruning["predicted_ms"]) / float(pruning.get("latency_scale", 1.0)),  # layers' sum
        measured_ms=float(bench["median_ms"]),
        measured_std_ms=float(bench["std_ms"]), runs=int(bench["runs"]),
        device_key=bench["device"]["key"], emulated=bool(bench.get("emulated")),
        kernels_tuned=int(tuning.get("kernels_tuned", 0)), kernels=int(tuning.get("kernels", 0)),
        tasks_reused=int(tuning.get("reused_tasks", 0)), tasks=int(tuning.get("tasks", 0)),
        tuning_seconds=float(tuning.get("tuning_seconds", 0.0)),
        trained=", then ".join(stages), steps=steps, artifact=str(folder / ARTIFACT),
        baseline_artifact=(bench.get("baseline") or {}).get("artifact"),
        baseline_ratio=(bench.get("baseline") or {}).get("ratio"),
    )  # fmt: skip


def comparison(rows: Sequence[Row]) -> dict[str, Any]:
    """The rows with speed-ups against the first (measured and predicted) and mIoU deltas. A row
    benched in turns with the first row's artifact takes its measured speed-up from that ratio
    (one session: the device's drift between sessions cancels); the others from the two benches."""
    ref = rows[0]

    def in_turns(r: Row) -> bool:
        return bool(r.baseline_artifact) and r.baseline_ratio is not None and \
            Path(r.baseline_artifact).resolve() == Path(ref.artifact).resolve()

    return {"reference": ref.name, "rows": [
        {**asdict(r), "fps": r.fps, "speedup_in_turns": in_turns(r),
         "measured_speedup": 1 / r.baseline_ratio if in_turns(r) else ref.measured_ms / r.measured_ms,
         "predicted_speedup": ref.predicted_ms / r.predicted_ms, "miou_delta": r.miou - ref.miou,
         "predicted_over_measured": r.predicted_ms / r.measured_ms}
        for r in rows]}  # fmt: skip


def render_table(report: dict[str, Any]) -> str:
    rows = report["rows"]
    header = (f"{'network':12s} {'method':9s} {'mIoU':>6s} {'budget ms':>9s} {'predicted ms':>12s} "
              f"{'measured ms':>15s} {'FPS':>6s} {'speed-up':>8s} {'tuned':>8s} {'db hits':>8s}")
    lines = [header, "-" * len(header)]
    for r in rows:
        budget = f"{r['budget_ms']:.3g}" if r["budget_ms"] else "-"
        lines.append(
            f"{r['name']:12s} {r['method']:9s} {r['miou']:6.3f} {budget:>9s} {r['predicted_ms']:12.3f} "
            f"{r['measured_ms']:9.3f} ±{r['measured_std_ms']:5.2f} {r['fps']:6.1f} {r['measured_speedup']:6.2f}x"
            f"{'*' if r.get('speedup_in_turns') else ' '} "
            f"{r['kernels_tuned']:>3d}/{r['kernels']:<4d} {r['tasks_reused']:>3d}/{r['tasks']:<4d}")
    device = rows[0]["device_key"] + (" (EMULATED: correctness only, not speed)" if any(r["emulated"] for r in rows)
                                      else "")
    lines.append(f"measured: median of {rows[0]['runs']} runs over RPC on {device}; predicted: sum of the latency "
                 "predictor's layers; speed-up: measured, against the first row (*: timed in turns with it in one "
                 "session, their ratio; else from the two benches, between which the device's speed drifts); db "
                 "hits: tuning tasks found in the device's database before tuning")
    lines.append("trained with:")
    for r in rows:
        total = "" if r.get("steps") is None else f" ({r['steps']} steps in all)"
        lines.append(f"  {r['name']}: {r.get('trained', '?')}{total}")
    steps = {r.get("steps") for r in rows}
    if len(steps) > 1:
        lines.append("  the rows trained for different numbers of steps: a longer-trained row's mIoU is not "
                     "the pruning's doing alone")
    return "\n".join(lines)


def plot_comparison(report: dict[str, Any], path: Path) -> Path:
    """Bars: measured vs predicted ms per network, and mIoU per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = [r["name"] for r in rows]
    x = range(len(rows))
    fig, (ms_ax, miou_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    ms_ax.bar([i - 0.2 for i in x], [r["predicted_ms"] for r in rows], width=0.4, label="predicted (sum of layers)")
    ms_ax.bar([i + 0.2 for i in x], [r["measured_ms"] for r in rows], width=0.4,
              yerr=[r["measured_std_ms"] for r in rows], label="measured over RPC (median)")
    ms_ax.set(xticks=list(x), xticklabels=names, ylabel="latency (ms)", title=f"latency on {rows[0]['device_key']}")
    ms_ax.legend(fontsize=8)
    miou_ax.bar(list(x), [r["miou"] for r in rows], color="tab:green")
    miou_ax.set(xticks=list(x), xticklabels=names, ylabel="mIoU", ylim=(0, 1), title="mIoU (validation split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_comparison(folders: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Load the folders' rows, write comparison.json and comparison.png to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = comparison([load_row(f) for f in folders])
    (out / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    report["plot"] = str(plot_comparison(report, out / "comparison.png"))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prune.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="network folders; the first is the reference")
    parser.add_argument("-o", "--out", type=Path, required=True, help="folder for comparison.json/.png")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        report = write_comparison(args.folders, args.out)
        print(render_table(report))
        print(f"wrote {args.out / 'comparison.json'} and {report['plot']}")
        return 0

    return run_main(body, args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
