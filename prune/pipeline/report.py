"""`report.md`: the pipeline's table, how each figure was measured, and where it came from.

Nothing in it is typed in: every figure is read from the files the stages wrote
(`comparison.json` via `prune.compare`, each network's `bench.json`, the predictor's training
report, `pipeline.json`). Where a figure is not of a phone, the report says what it is of.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from prune.compare import render_table, write_comparison
from prune.pipeline.plan import PipelineOptions, network_folders, predictor_folder
from prune.pipeline.rounds import RoundResult, landed
from prune.pipeline.stages import StageRecord
from runner.device import HOST_KEY

REPORT = "report.md"


def _device_words(bench: dict[str, Any]) -> str:
    device = bench["device"]
    if bench.get("emulated"):
        return (f"`{device['key']}`, an EMULATED device (QEMU): its timings prove the code runs and is correct, "
                "they are not a device's speed")
    if device["key"] == HOST_KEY:
        return (f"`{HOST_KEY}`, the embedded RPC server of this machine's own CPU on 127.0.0.1: real measurements "
                "of this CPU, not of a phone")
    return f"`{device['key']}` through the RPC tracker at {device['tracker']}"


def _predictor_words(predictor_dir: Path) -> str:
    from latency_model.predictor import REPORT as TRAINING_REPORT

    path = predictor_dir / TRAINING_REPORT
    if not path.is_file():
        return "predictor training report missing"
    report = json.loads(path.read_text())
    chosen = report["candidates"][report["chosen"]]
    return (f"{100 * chosen['within_10']:.1f}% of {report['n_test']} held-out layer configs within ±10% "
            f"(RMSPE {100 * chosen['rmspe']:.1f}%, {report['chosen']} model)")


def _round_lines(options: PipelineOptions, budget: float, results: Sequence[RoundResult],
                 chosen: RoundResult) -> list[str]:
    """Each round's network: what its search aimed at, what it measured."""
    landed_words = (f"round {chosen.round} landed" if landed(chosen, budget, options.landing_tolerance)
                    else f"no round landed; round {chosen.round} is the closest")
    lines = ["## Rounds of pruning", "",
             f"Budget **{budget:.3f} ms** measured ({_budget_words(options)}); landing tolerance "
             f"±{100 * options.landing_tolerance:g}%: {landed_words} and ships as `pruned/`. Each round's search "
             "prunes to a sum of the predictor's layer latencies (\"aim\"): round 0's is the budget over the "
             "reference's measured-over-predicted factor, each later round's is the one before times budget / "
             "measured. Every round is compiled and benched in turns with the reference in one session: "
             "\"measured ms\" is their ratio times the reference's median over every session that timed it "
             "(the device's speed drifts between sessions, the ratio holds). The table above lists each network's "
             "own bench and the budget its search was given (from the reference's level when the round was "
             "planned); here both are at the reference's level pooled over every session that timed it, and "
             "landing is judged on these.", "",
             "| round | aim: layers ms | scale | predicted ms | ratio to reference | measured ms "
             "| its own session ms | vs budget |",
             "|---|---|---|---|---|---|---|---|"]
    for result in results:
        lines.append(f"| {result.round} | {result.aim_ms:.3f} | {result.latency_scale:.3f} | "
                     f"{result.predicted_ms:.2f} | {result.ratio:.4f} (IQR {100 * result.ratio_spread:.1f}%) | "
                     f"{result.measured_ms:.2f} | {result.raw_ms:.2f} | {100 * result.miss(budget):+.1f}% |")
    return [*lines, ""]


def _budget_words(options: PipelineOptions) -> str:
    name, value = options.budget
    if name == "budget_fraction":
        return f"--budget-fraction {value:g} of the dense reference's measured latency"
    return f"--{name.replace('_', '-')} {value:g}"


def write_report(options: PipelineOptions, budget: float, results: Sequence[RoundResult], chosen: RoundResult,
                 record: StageRecord) -> Path:
    """Write comparison.json/.png (prune.compare) and report.md into the pipeline's folder; the
    report's path."""
    out = options.out
    folders = network_folders(options)
    comparison = write_comparison(folders, out)
    benches = {f.name: json.loads((f / "bench.json").read_text()) for f in folders}
    first = benches[folders[0].name]
    checks = ", ".join(f"{name} {'passed' if b['check'] and b['check']['passed'] else 'FAILED'}"
                       for name, b in benches.items())  # fmt: skip
    lines = [
        f"# edgeseg pipeline: {comparison['rows'][0]['device_key']}", "",
        "```", render_table(comparison), "```", "",
        "## How each figure was measured", "",
        f"- **Device:** {_device_words(first)}; {first['device']['threads']} threads, target "
        f"`{first['target']['preset']}`.",
        f"- **measured ms:** the whole network over RPC: {first['measured']}; the median of the samples, ± their "
        "std. Load average of the machine (1, 5, 15 min) before and after each bench: "
        + "; ".join(f"{f.name} {_load(record, 'bench-' + f.resolve().name)}" for f in folders) + ".",
        f"- **Numeric check** against ONNX Runtime on the build machine: {checks}.",
        f"- **predicted ms:** the latency predictor's sum of layers (the rounds table has it times the round's "
        f"scale); the predictor: {_predictor_words(predictor_folder(options))}; its held-out scatter: "
        "`latency/scatter.png`.",
        "- **mIoU:** on the data set's validation split, at the end of each network's training.", "",
        *_round_lines(options, budget, results, chosen),
        "## Stages", "", "| stage | seconds | load before | command |", "|---|---|---|---|",
    ]
    for name, entry in record.stages.items():
        lines.append(f"| {name} | {entry['seconds']:.0f} | {entry['load_average_before'][0]:.2f} | "
                     f"`{entry['command']}` |")
    lines += ["", "## Files", "",
              "- `comparison.json`, `comparison.png`: the table and its plot",
              "- `latency/data.jsonl`, `latency/predictor/`, `latency/scatter.png`: the layer measurements, the "
              "predictor, its accuracy",
              f"- `pruned/`: a link to `{chosen.folder.name}/`, the round that ships; every round's folder holds "
              "the same files",
              *(f"- `{f.name}/`: `pruning.json`, `curves.png`, `model.onnx`, `artifact/manifest.json` (every "
                f"kernel's schedule source), `bench.json`" for f in folders),
              "- `pipeline.json`: every stage's command, seconds and load average"]
    path = out / REPORT
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(record: StageRecord, stage: str) -> str:
    entry = record.stages.get(stage)
    if not entry:
        return "?"
    return f"{'/'.join(f'{x:.2f}' for x in entry['load_average_before'])} -> " \
           f"{'/'.join(f'{x:.2f}' for x in entry['load_average_after'])}"
