"""Do identical layers and networks measure the same twice? (issue: latency you can trust)

One scratch database is filled as a collection fills it (`tune_layers`: anchors tuned, the rest
transferred), every layer config of the unpruned model and `--samples` pruned variants is
compiled ONCE from it, and so are the unpruned network and the variants. Then the same
artifacts are timed in passes:
- back to back: pass A over every layer, then pass B over every layer;
- interleaved: layer by layer, A then B at once.
For each pair it reports the share of layers whose two figures agree within ±5% and ±10%, per
layer kind and per size class, for three statistics of the same samples (median, minimum,
20% trimmed mean), and the networks' spread over `--network-runs` benches.

    PYTHONPATH=. python bench/repeatability.py [--input-size 64 --samples 1 --trials-per-layer 1] \\
        [--min-repeat-ms 10 --repeat 20] [-o bench/results/repeatability.json]

Identical code from one database: any disagreement is the measurement's. Run it alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from compile.api import compile_model
from compile.targets import resolve_target
from latency_model.collect import tune_layers
from latency_model.export import export_layer
from latency_model.sampling import layer_configs, sample_kept
from prune.describe import describe_model
from prune.export import export_onnx
from prune.models import create_model
from prune.variants import build_variants
from runner.bench import bench_artifact
from runner.cli_support import setup_logging
from runner.machine import write_result
from runner.farm import use_device
from runner.device import HOST_KEY
from runner.timing import TimingProtocol

SIZE_CLASSES = ((0.05, "< 0.05 ms"), (0.5, "0.05-0.5 ms"), (float("inf"), ">= 0.5 ms"))


def statistics_of(samples: list[float]) -> dict[str, float]:
    ordered = np.sort(np.asarray(samples))
    cut = int(0.2 * len(ordered))
    trimmed = ordered[cut:len(ordered) - cut] if len(ordered) > 2 * cut else ordered
    return {"median": float(np.median(ordered)), "min": float(ordered[0]), "trimmed_mean": float(trimmed.mean())}


def agreement(pairs: list[tuple[str, str, dict, dict]]) -> dict:
    """Share within ±5% / ±10% per statistic, overall, per kind and per size class."""
    out: dict = {}
    for stat in ("median", "min", "trimmed_mean"):
        groups: dict[str, list[float]] = defaultdict(list)
        for kind, size_class, a, b in pairs:
            ratio = abs(a[stat] / b[stat] - 1)
            for group in ("all", f"kind {kind}", f"size {size_class}"):
                groups[group].append(ratio)
        out[stat] = {g: {"layers": len(r), "within_5": round(float(np.mean(np.asarray(r) <= 0.05)), 3),
                         "within_10": round(float(np.mean(np.asarray(r) <= 0.10)), 3),
                         "worst": round(max(r), 3)} for g, r in sorted(groups.items())}
    return out


def _size_class(ms: float) -> str:
    return next(name for bound, name in SIZE_CLASSES if ms < bound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segformer-b0")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1, help="random pruned variants besides the unpruned model")
    parser.add_argument("--trials-per-layer", type=int, default=1, help="trials per anchor kernel")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--min-repeat-ms", type=int, default=TimingProtocol().min_repeat_ms,
                        help="as every command that times")
    parser.add_argument("--network-runs", type=int, default=4, help="benches of each network")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/repeatability.json"))
    args = parser.parse_args()
    setup_logging(False)
    preset = resolve_target("host")
    description = describe_model(args.model, args.input_size, num_classes=8)
    configs = layer_configs(description, sample_kept(description, args.samples, seed=0))
    protocol = TimingProtocol(warmup=args.warmup, repeat=args.repeat, min_repeat_ms=args.min_repeat_ms)
    load_before, started = os.getloadavg(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeseg-repeat-") as scratch, use_device(None, HOST_KEY) as device:
        scratch, db = Path(scratch), Path(scratch) / "db"
        unpruned = export_onnx(create_model(args.model, num_classes=8), args.input_size, scratch / "unpruned.onnx")
        variants = build_variants(args.model, args.input_size, args.samples, 1000, scratch, num_classes=8)
        tune_layers(configs, device, preset, db, args.trials_per_layer, networks=[unpruned])
        layers = []
        for index, config in enumerate(configs):
            model, _ = export_layer(config, scratch / f"layer{index}.onnx")
            built = compile_model(model, scratch / f"layer{index}", preset, db, trials=0, device=device,
                                  kernel_library=False)
            layers.append((config, built.artifact))
        networks = {"unpruned": unpruned, **{v.name: v.model_path for v in variants}}
        network_artifacts = {name: compile_model(path, scratch / f"net-{name}", preset, db, trials=0,
                                                 device=device, kernel_library=False).artifact
                             for name, path in networks.items()}

        def time_layer(artifact) -> dict:
            return statistics_of(list(bench_artifact(artifact, device, protocol).timing.samples_ms))

        passes = {"back_to_back_a": [time_layer(a) for _, a in layers]}
        passes["back_to_back_b"] = [time_layer(a) for _, a in layers]
        interleaved = [(time_layer(a), time_layer(a)) for _, a in layers]
        network_benches = {name: [bench_artifact(a, device, protocol) for _ in range(args.network_runs)]
                           for name, a in network_artifacts.items()}
    network_medians = {name: [b.timing.median_ms for b in benches] for name, benches in network_benches.items()}
    kinds = [c.kind for c, _ in layers]
    sizes = [_size_class(s["median"]) for s in passes["back_to_back_a"]]
    result = {
        "what": f"{len(layers)} layer configs of {args.model} at {args.input_size} px and {len(networks)} networks, "
                "compiled once from one database, timed twice",
        "protocol": protocol.describe(), "threads": next(iter(network_benches.values()))[0].threads,
        "back_to_back": agreement([(k, s, a, b) for k, s, a, b in
                                   zip(kinds, sizes, passes["back_to_back_a"], passes["back_to_back_b"])]),
        "interleaved": agreement([(k, s, a, b) for k, s, (a, b) in zip(kinds, sizes, interleaved)]),
        "networks": {name: {"medians_ms": [round(m, 4) for m in ms],
                            "spread": round((max(ms) - min(ms)) / statistics.median(ms), 4)}
                     for name, ms in network_medians.items()},
    }  # fmt: skip
    write_result(args.out, result, load_before, started)
    print(f"{result['what']}; layers and networks: {result['protocol']}")
    for order in ("back_to_back", "interleaved"):
        for stat, groups in result[order].items():
            a = groups["all"]
            print(f"{order:13s} {stat:12s} within ±5% {100 * a['within_5']:5.1f}%  ±10% {100 * a['within_10']:5.1f}%  "
                  f"worst {100 * a['worst']:.0f}%  ({a['layers']} layers)")
    for name, row in result["networks"].items():
        print(f"network {name:9s} medians {row['medians_ms']} ms, spread {100 * row['spread']:.1f}% of the median")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
