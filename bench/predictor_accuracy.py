"""How well the latency predictor predicts a device, per layer and per whole pruned network, with
the FLOPs line beside it in the same report (issue 13, part 3).

    PYTHONPATH=. python bench/predictor_accuracy.py [--model segformer-b0 --input-size 128 --classes 40]
        [--samples 40] [--trials-per-layer 16] [--variants 20] [--tracker HOST:PORT --key KEY]
        [-o bench/results/predictor_accuracy]

It runs the project's own commands as a user would, each its own process, in a workspace of its
own (OUT/workspace, kept out of git: the tuning database and drift reference, so no earlier tuning
flatters or hurts it):
1. `latency_model collect -o OUT/data.jsonl`: the layers of the unpruned and smallest network and
   of `--samples` pruned variants; per structure two anchor widths tuned with `--trials-per-layer`,
   the rest given transferred schedules; timed with collect's protocol (rounds over sessions,
   beside the drift reference);
2. `latency_model train` (20% of the configs held out), then `evaluate` on the held-out configs,
   the FLOPs line (per layer type) fitted on the training configs;
3. `latency_model validate`: `--variants` random pruned networks, compiled from the same database
   and timed whole with the same protocol, against the predicted layer sum (plus an overhead
   fitted leave-one-out) and against a FLOPs line fitted leave-one-out on the other networks.
OUT/pipeline.json records each finished stage with its command, time and load before and after:
a rerun skips what is done, and each command resumes its own work. OUT/result.json gathers both
levels beside the FLOPs line, the issue's goals, and the collection's measurements per hour.
Run it alone: it measures this machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from latency_model.predictor import MANIFEST
from prune.pipeline.stages import Stage, StageRecord, StageRunner

GOALS = {"layers_within_10": 0.95, "networks_within_10": 0.95, "networks_spearman": 0.98, "variants": 20}
DATA, PREDICTOR, LAYERS, NETWORKS, RESULT = "data.jsonl", "predictor", "layers", "networks", "result.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="segformer-b0")
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--classes", type=int, default=40, help="class count (40: synthetic-hard)")
    p.add_argument("--samples", type=int, default=40, help="random pruned variants whose layers are collected")
    p.add_argument("--trials-per-layer", type=int, default=16, help="trials per anchor kernel")
    p.add_argument("--variants", type=int, default=GOALS["variants"], help="whole pruned networks validated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tracker", default=None, help="RPC tracker of a device (default: the embedded farm)")
    p.add_argument("--key", default=None, help="device key at --tracker")
    p.add_argument("-o", "--out", type=Path, default=Path("bench/results/predictor_accuracy"))
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> list[Stage]:
    """The four commands, with the flags that tie them to one model, size and device."""
    out = args.out
    model = ["--model", args.model, "--input-size", str(args.input_size), "--classes", str(args.classes)]
    device = ["--tracker", args.tracker, "--key", args.key or ""] if args.tracker else []
    predictor = str(out / PREDICTOR)
    return [
        Stage("collect", "layer latencies of the model's pruning grid", "latency_model",
              ("collect", *model, *device, "--samples", str(args.samples), "--trials-per-layer",
               str(args.trials_per_layer), "--seed", str(args.seed), "-o", str(out / DATA)), (out / DATA,)),
        Stage("train", "the XGBoost predictor, 20% of configs held out", "latency_model",
              ("train", str(out / DATA), "-o", predictor, "--seed", str(args.seed)),
              (out / PREDICTOR / MANIFEST,), after=("collect",)),
        Stage("evaluate", "held-out layers, FLOPs line beside", "latency_model",
              ("evaluate", predictor, str(out / DATA), "--plot", str(out / LAYERS / "scatter.png")),
              (out / LAYERS / "evaluation.json",), after=("train",)),
        # another seed than the collection's: networks whose layers were all collected would flatter it
        Stage("validate", "whole pruned networks, FLOPs line beside", "latency_model",
              ("validate", predictor, *model, *device, "--variants", str(args.variants),
               "--seed", str(args.seed + 1), "-o", str(out / NETWORKS)),
              (out / NETWORKS / "validation.json",), after=("train",)),
    ]


def per_hour(times: Sequence[str]) -> float | None:
    """Measurements per hour between the first and last of `times` (ISO UTC stamps of records)."""
    stamps = sorted(dt.datetime.fromisoformat(t) for t in times)
    hours = (stamps[-1] - stamps[0]).total_seconds() / 3600 if len(stamps) > 1 else 0.0
    return round((len(stamps) - 1) / hours, 1) if hours else None


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(out: Path) -> dict[str, Any]:
    """result.json's body from the stages' files: both levels, the FLOPs line beside each, goals."""
    layers = json.loads((out / LAYERS / "evaluation.json").read_text())
    networks = json.loads((out / NETWORKS / "validation.json").read_text())
    records = _lines(out / DATA)
    layer, layer_flops = layers["predictor"]["overall"], layers["flops_baseline"]["overall"]
    net, net_flops = networks["metrics"], networks["flops_line"]["metrics"]
    return {
        "layers": {"held_out": layer["n"], "predictor": layer, "flops_line": layer_flops,
                   "flops_fit": layers["flops_baseline"]["fit"],
                   "per_type": {k: {"predictor": m, "flops_line": layers["flops_baseline"]["per_type"][k]}
                                for k, m in layers["predictor"]["per_type"].items()}},
        "networks": {"variants": net["n"], "predictor": net, "layer_sum_alone": networks["layer_sum_metrics"],
                     "flops_line": net_flops, "overhead_ms": networks["overhead_ms"],
                     "overhead_share_of_median_variant": networks["overhead_share_of_median_variant"]},
        "collection": {"records": len(records), "noisy": sum(bool(r.get("noisy")) for r in records),
                       "measurements_per_hour": per_hour([r["utc_time"] for r in records])},
        "validation_measurements_per_hour": per_hour(
            [m["utc_time"] for m in _lines(out / NETWORKS / "measurements.jsonl")]),
        "protocol": networks["protocol"],
        "goals": {"wanted": GOALS, "met": {
            "layers_within_10": layer["within_10"] >= GOALS["layers_within_10"],
            "networks_within_10": net["within_10"] >= GOALS["networks_within_10"],
            "networks_spearman": (net["spearman"] or -1.0) >= GOALS["networks_spearman"],
            "variants": net["n"] >= GOALS["variants"]}},
    }


def report_lines(result: dict[str, Any]) -> list[str]:
    """The figures as a person reads them."""
    def row(label: str, m: dict[str, Any]) -> str:
        rho = "n/a" if m["spearman"] is None else f"{m['spearman']:.3f}"
        return (f"  {label:<22} +-5% {100 * m['within_5']:5.1f}%  +-10% {100 * m['within_10']:5.1f}%  "
                f"RMSPE {100 * m['rmspe']:6.1f}%  Spearman {rho}")
    lay, net = result["layers"], result["networks"]
    return [f"layers held out: {lay['held_out']}", row("predictor", lay["predictor"]), row("FLOPs line", lay["flops_line"]),
            f"whole networks: {net['variants']} (overhead {net['overhead_ms']:.3f} ms, "
            f"{100 * net['overhead_share_of_median_variant']:.1f}% of the median network)",
            row("layer sum + overhead", net["predictor"]), row("layer sum", net["layer_sum_alone"]),
            row("FLOPs line", net["flops_line"]),
            f"collection: {result['collection']['records']} layer records, "
            f"{result['collection']['measurements_per_hour']} per hour; goals met: {result['goals']['met']}"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ".gitignore").write_text("workspace/\nnetworks/variants/\n")  # databases and ONNX files: large, local
    os.environ["EDGESEG_WORKSPACE"] = str((args.out / "workspace").resolve())  # the commands' database
    record = StageRecord.load(args.out / "pipeline.json")
    StageRunner(record).run(plan(args))
    result = {"what": f"{args.model} at {args.input_size} px, {args.classes} classes: the latency predictor "
                      "per held-out layer and per whole pruned network, the FLOPs line beside each",
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              **summarize(args.out), "stages": record.stages}
    (args.out / RESULT).write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(report_lines(result)) + f"\nwrote {args.out / RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
