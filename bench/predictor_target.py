"""What the latency predictor's trees should learn: log ms, or log ms over a FLOPs baseline
(`latency_model.baseline`), compared on measurements already taken (nothing is timed here).

    PYTHONPATH=. python bench/predictor_target.py DATA.jsonl [--networks MEASUREMENTS.jsonl]
        [--pruned-layers LAYERS.jsonl --pruned DIR...] [--splits 5] [--rounds 800] -o OUT.json

For each target of `latency_model.predictor.TARGETS`, trained by `train_predictor` itself:
- held-out layers: `--splits` stratified 20% splits of DATA (seeds 0..), share within +-10% of
  the split fit (the model that never saw them);
- whole networks (`--networks`: the measurements of `latency_model validate`, each network's kept
  widths and measured ms): the predicting model's layer sum, and with the overhead fitted
  leave-one-out as validate does; within +-10%, RMSPE, Spearman;
- pruned networks (`--pruned DIR`, folders `python -m prune` wrote, with their layers measured in
  `--pruned-layers` by `latency_model collect --pruned`): the predicted layer sum beside the
  measured one, and the bench's ratio to the reference where DIR has a bench.json. Searches
  choose widths between the collection's samples, so this is where a predictor flat between
  samples shows (main-job run 20: networks predicted 6% apart measured 18% apart).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from latency_model.metrics import compute_metrics
from latency_model.predictor import TARGETS, TrainSettings, dataset_from_records, train_predictor
from latency_model.records import read_records
from latency_model.validate import leave_one_out_overhead
from prune.describe import describe_model
from prune.pipeline.rounds import network_layers


def held_out_layers(records: list, settings: TrainSettings, splits: int, work: Path) -> dict[str, Any]:
    shares = []
    for seed in range(splits):
        predictor = train_predictor(records, work / f"{settings.target}-split{seed}", seed=seed, settings=settings)
        held = dataset_from_records([r for r in records if r.key in predictor.holdout_keys])
        shares.append(compute_metrics(predictor.held_out_view().predict_ms(held.configs), held.measured_ms).within_10)
    return {"within_10_per_split": shares, "within_10_mean": float(np.mean(shares))}


def networks(predictor: Any, lines: list[dict], records: list) -> dict[str, Any]:
    first = records[0]
    description = describe_model(first.model, first.input_size, num_classes=first.num_classes)
    sums = np.array([predictor.predict_ms(description.config_at(n["kept"])).sum() for n in lines])
    measured = np.array([float(n["median_ms"]) for n in lines])
    with_overhead = sums + leave_one_out_overhead(measured, sums)
    return {"layer_sum": compute_metrics(sums, measured).to_dict(),
            "with_overhead": compute_metrics(with_overhead, measured).to_dict(), "n": len(lines)}


def pruned(predictor: Any, folders: list[Path], layer_records: list) -> list[dict[str, Any]]:
    data = dataset_from_records(layer_records)
    measured = {c.key: ms for c, ms in zip(data.configs, data.measured_ms)}
    rows = []
    for folder in folders:
        layers = network_layers(folder)
        missing = [c.key for c in layers if c.key not in measured]
        bench = folder / "bench.json"
        rows.append({"network": str(folder), "predicted_layers_ms": float(predictor.predict_ms(layers).sum()),
                     "measured_layers_ms": None if missing else float(sum(measured[c.key] for c in layers)),
                     "ratio_to_reference": json.loads(bench.read_text())["baseline"]["ratio"] if bench.is_file()
                     else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a collection's data.jsonl")
    parser.add_argument("--networks", type=Path, help="validate's measurements.jsonl")
    parser.add_argument("--pruned-layers", type=Path, help="collect --pruned's data file for --pruned")
    parser.add_argument("--pruned", type=Path, nargs="*", default=[], help="folders python -m prune wrote")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=TrainSettings().rounds, help="XGBoost rounds (default: train's)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    if args.pruned and not args.pruned_layers:
        parser.error("--pruned needs --pruned-layers: the file `latency_model collect --pruned DIR` wrote")
    logging.basicConfig(level=logging.WARNING)
    records = read_records(args.data)
    lines = [json.loads(line) for line in args.networks.read_text().splitlines() if line] if args.networks else []
    layer_records = read_records(args.pruned_layers) if args.pruned_layers else []
    result: dict[str, Any] = {"data": str(args.data), "networks": str(args.networks), "targets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for target in TARGETS:
            settings = TrainSettings(target=target, rounds=args.rounds)
            predictor = train_predictor(records, work / target, seed=0, settings=settings)
            row: dict[str, Any] = {"held_out_layers": held_out_layers(records, settings, args.splits, work)}
            if lines:
                row["networks"] = networks(predictor, lines, records)
            if args.pruned:
                row["pruned"] = pruned(predictor, args.pruned, layer_records)
            result["targets"][target] = row
            line = f"{target:14s} held-out layers within +-10%: {row['held_out_layers']['within_10_mean']:.3f}"
            if lines:
                n = row["networks"]
                line += (f" | networks: layer sum within +-10% {n['layer_sum']['within_10']:.2f}, RMSPE "
                         f"{n['layer_sum']['rmspe']:.3f}, Spearman {n['layer_sum']['spearman']:.3f}; with overhead "
                         f"{n['with_overhead']['within_10']:.2f}, {n['with_overhead']['rmspe']:.3f}")
            print(line)
            for p in row.get("pruned", []):
                print(f"    {Path(p['network']).name}: predicted layers {p['predicted_layers_ms']:.3f} ms, measured "
                      f"{p['measured_layers_ms']} ms, network/reference {p['ratio_to_reference']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
