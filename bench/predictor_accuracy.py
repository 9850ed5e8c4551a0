"""Per-layer latency predictor accuracy on the embedded host device, FLOPs baseline beside it.

    PYTHONPATH=. python bench/predictor_accuracy.py [--samples 40] [--trials-per-layer 1]
        [--input-size 128] [-o bench/results/latency_model]

Samples `--samples` pruned variants of the model description (prune.describe's `--model` when
that module exists, else the built-in description below: the first two SegFormer-B0 stages and
their decoder projections), measures every distinct layer config (samples of at least
`--min-repeat-ms`) on the embedded loopback farm of this machine with `latency_model.collect`
(resumable: the data file in the output folder is reused), trains the XGBoost predictor with 20% of the configs held out, and evaluates it on the
held-out configs against a FLOPs-linear baseline fitted on the training configs. Writes
`result.json` (metrics, measurements per hour, measurement noise, settings; with `--repeat-of`,
run-to-run repeatability against an earlier collection) and `scatter.png` to the output folder.

Tuning dominates the cost: one MetaSchedule round per tuning task costs 10-30 s on a loaded
2-core machine whatever the trial count, so `--trials-per-layer 0` (database only: untuned,
naive kernels unless the database already has them) measures a layer in about 2 s here and
says so in the result; such figures are about the predictor, not about tuned latency.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from compile.targets import resolve_target
from latency_model import layers as L
from latency_model.collect import collect
from latency_model.description import Group, LayerSlot, ModelDescription
from latency_model.evaluate import evaluate_predictor
from latency_model.predictor import train_predictor
from latency_model.records import read_records
from latency_model.sampling import layer_configs, sample_kept
from runner.cli_support import setup_logging
from runner.farm import use_device
from runner.timing import TimingProtocol

log = logging.getLogger("bench.latency_model")


def builtin_description(size: int) -> ModelDescription:
    """SegFormer-B0 stages 1-2 (timm pvt_v2_b0 widths, heads, MLP ratio 8, sr 8/4) and their
    decoder projections to 256 channels, at a `size` x `size` input; pruning grids step 4 for
    widths, 8 for MLP hidden and decoder channels, every head count."""
    s1, s2 = size // 4, size // 8
    groups = (Group.aligned("dim1", 32, 4), Group("heads1", 1, (1,)),
              Group.aligned("mlp1", 256, 8), Group.aligned("dim2", 64, 4),
              Group("heads2", 2, (1, 2)), Group.aligned("mlp2", 512, 8),
              Group.aligned("dec", 256, 8))
    S = LayerSlot
    slots = (
        S(L.PatchEmbed(size, size, 3, 32, 7, 4), {"cout": "dim1"}, "stage1.embed"),
        S(L.LayerNorm(s1, s1, 32), {"dim": "dim1"}, "stage1.norm"),
        S(L.Attention(s1, s1, 32, 1, 32, 8, True), {"dim": "dim1", "heads": "heads1"},
          "stage1.attn"),
        S(L.MixFFN(s1, s1, 32, 256, 32, True), {"cin": "dim1", "hidden": "mlp1", "cout": "dim1"},
          "stage1.mlp"),
        S(L.PatchEmbed(s1, s1, 32, 64, 3, 2), {"cin": "dim1", "cout": "dim2"}, "stage2.embed"),
        S(L.Attention(s2, s2, 64, 2, 32, 4, True), {"dim": "dim2", "heads": "heads2"},
          "stage2.attn"),
        S(L.MixFFN(s2, s2, 64, 512, 64, True), {"cin": "dim2", "hidden": "mlp2", "cout": "dim2"},
          "stage2.mlp"),
        S(L.DecoderProjection(s1, s1, 32, 256), {"cin": "dim1", "cout": "dec"}, "decoder.proj1"),
        S(L.DecoderProjection(s2, s2, 64, 256), {"cin": "dim2", "cout": "dec"}, "decoder.proj2"),
        S(L.Upsample(s2, s2, 256, s1, s1), {"channels": "dec"}, "decoder.up2"),
    )
    return ModelDescription(groups, slots)


def description_for(model: str, size: int) -> tuple[ModelDescription, str]:
    try:
        from prune.describe import describe_model
    except ImportError:
        return (builtin_description(size),
                "built-in: SegFormer-B0 stages 1-2 and decoder projections")
    return describe_model(model, size), f"prune.describe {model}"


def data_figures(records: list) -> dict:
    """Measurement noise (std / median per record) and the collection rate of the data file,
    from its records' own timestamps (so a resumed run still reports the collection's rate)."""
    cv = np.array([r.std_ms / r.median_ms for r in records])
    times = sorted(dt.datetime.fromisoformat(r.utc_time) for r in records)
    span_h = (times[-1] - times[0]).total_seconds() / 3600 if len(times) > 1 else 0.0
    return {"noise_std_over_median": {"median": round(float(np.median(cv)), 3),
                                      "p90": round(float(np.quantile(cv, 0.9)), 3)},
            "measurements_per_hour_from_timestamps":
                round((len(times) - 1) / span_h, 1) if span_h else None}


def repeatability(records: list, other_path: Path) -> dict:
    """Run-to-run agreement with another collection of the same configs: the ceiling on any
    predictor's accuracy against these measurements."""
    other = {r.key: r.median_ms for r in read_records(other_path)}
    ratio = np.array([r.median_ms / other[r.key] for r in records if r.key in other])
    if ratio.size == 0:
        return {"other": str(other_path), "shared_configs": 0}
    return {"other": str(other_path), "shared_configs": int(ratio.size),
            "within_10": round(float(np.mean(np.abs(ratio - 1) <= 0.10)), 3),
            "median_ratio": round(float(np.median(ratio)), 3),
            "ratio_p10_p90": [round(float(q), 3) for q in np.quantile(ratio, [0.1, 0.9])]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="segformer-b0")
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--samples", type=int, default=40, help="random pruned variants to sample")
    p.add_argument("--trials-per-layer", type=int, default=1)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--min-repeat-ms", type=int, default=10,
                   help="runs per sample grow until a sample lasts this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat-of", type=Path, default=None,
                   help="data.jsonl of an earlier collection of the same configs: report how "
                   "often the two measurements of a config agree within 10%%")
    p.add_argument("-o", "--out", type=Path, default=Path("bench/results/latency_model"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(False)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    description, source = description_for(args.model, args.input_size)
    configs = layer_configs(description, sample_kept(description, args.samples, args.seed))
    preset = resolve_target("host")
    protocol = TimingProtocol(warmup=2, repeat=args.repeat, min_repeat_ms=args.min_repeat_ms)
    data = out / "data.jsonl"
    # A database of the bench's own: the workspace's host database would make reruns incomparable.
    database = out / "tuning" if args.trials_per_layer else out / "empty-database"
    started = time.monotonic()
    with use_device(None, None) as device:
        report = collect(configs, device, preset, data, database, args.trials_per_layer, protocol)
    records = [r for r in read_records(data) if r.key in {c.key for c in configs}]
    predictor = train_predictor(records, out / "predictor", seed=args.seed)
    held = [r for r in records if r.key in predictor.holdout_keys]
    train = [r for r in records if r.key not in predictor.holdout_keys]
    evaluation = evaluate_predictor(predictor, held, out_dir=out, baseline_records=train)
    result = {
        "what": "per-layer latency predictor on held-out layer configs vs a FLOPs-linear "
                "baseline fitted on the training configs",
        "device": f"embedded loopback farm, {device.key} "
                  f"({platform.processor() or platform.machine()})",
        "description": source, "input_size": args.input_size, "samples": args.samples,
        "configs": len(configs), "records_used": len(records),
        "trials_per_layer": args.trials_per_layer,
        "tuning_note": ("database only: naive untuned kernels" if not args.trials_per_layer
                        else f"{args.trials_per_layer} trial(s) x tuning tasks per layer"),
        "protocol": protocol.describe(),
        "collection_this_run": report.to_dict(),
        **data_figures(records),
        "repeatability": repeatability(records, args.repeat_of) if args.repeat_of else None,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(time.monotonic() - started, 1),
        "predictor_design": predictor.mode,
        "evaluation": evaluation.to_dict(),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(evaluation.table())
    print(f"collected {len(report.measured)} new configs at "
          f"{report.measurements_per_hour:.0f}/hour; result in {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
