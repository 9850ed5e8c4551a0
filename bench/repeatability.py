"""Do identical layers and networks measure the same twice? (issue: latency you can trust)

One scratch database is filled as a collection fills it (`tune_layers`: anchors tuned, the rest
transferred), every layer config of the unpruned model and `--samples` pruned variants is
compiled ONCE from it, and so are the unpruned network and the variants. Then the same
artifacts are timed twice under each protocol:
- `burst` (the protocol before drift correction): each layer's samples one after the other,
  pass A over every layer, then pass B (`runner.bench.bench_artifact`);
- `rounds` (collect's protocol): batches of layers timed round-robin in `--timing-rounds` rounds
  beside the device's drift reference (`runner.bench.bench_batch`), pass A over every batch,
  then pass B; reported raw and drift-corrected (`runner.drift`);
- `interleaved`: each batch timed twice in a row (A and B seconds apart), corrected.
For each pair it reports the share of layers whose two figures agree within ±5% and ±10%, per
layer kind and per size class, for three statistics of the same samples (median, minimum,
20% trimmed mean); and each network's spread over `--network-runs` drift-corrected benches taken
between the passes, minutes apart (raw beside them).

    PYTHONPATH=. python bench/repeatability.py [--input-size 64 --samples 1 --trials-per-layer 1] \\
        [--min-repeat-ms 10 --repeat 20 --timing-rounds 20] [-o bench/results/repeatability.json]

Identical code from one database: any disagreement is the measurement's. Run it alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from compile.api import compile_model
from compile.targets import resolve_target
from latency_model.collect import BATCH, in_batches, tune_layers
from latency_model.drift_reference import device_drift_reference
from latency_model.export import export_layer
from latency_model.sampling import layer_configs, sample_kept
from prune.describe import describe_model
from prune.export import export_onnx
from prune.models import create_model
from prune.variants import build_variants
from runner.bench import bench_artifact, bench_batch
from runner.drift import round_speeds
from runner.cli_support import DRIFT_SESSIONS, setup_logging
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
    parser.add_argument("--timing-rounds", type=int, default=None,
                        help="as latency_model collect (default: --repeat, one sample a round)")
    parser.add_argument("--timing-sessions", type=int, default=DRIFT_SESSIONS, help="as latency_model collect")
    parser.add_argument("--network-runs", type=int, default=4, help="benches of each network, minutes apart")
    parser.add_argument("-o", "--out", type=Path, default=Path("bench/results/repeatability.json"))
    args = parser.parse_args()
    setup_logging(False)
    preset = resolve_target("host")
    description = describe_model(args.model, args.input_size, num_classes=8)
    configs = layer_configs(description, sample_kept(description, args.samples, seed=0))
    burst = TimingProtocol(warmup=args.warmup, repeat=args.repeat, min_repeat_ms=args.min_repeat_ms)
    one_session = dataclasses.replace(burst, rounds=args.timing_rounds or args.repeat, drift_reference=True)
    rounds = dataclasses.replace(one_session, sessions=args.timing_sessions)
    load_before, started = os.getloadavg(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeseg-repeat-") as scratch, use_device(None, HOST_KEY) as device:
        scratch, db = Path(scratch), Path(scratch) / "db"
        unpruned = export_onnx(create_model(args.model, num_classes=8), args.input_size, scratch / "unpruned.onnx")
        variants = build_variants(args.model, args.input_size, args.samples, 1000, scratch, num_classes=8)
        tune_layers(configs, device, preset, db, args.trials_per_layer, networks=[unpruned])
        reference = device_drift_reference(device, preset, db, one_session, args.trials_per_layer)
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
        network_benches: dict[str, list] = {name: [] for name in network_artifacts}

        def bench_networks() -> None:
            for name, artifact in network_artifacts.items():
                network_benches[name] += bench_batch([artifact], device, rounds, reference)

        def time_burst() -> list[dict]:
            return [statistics_of(list(bench_artifact(a, device, burst).timing.samples_ms)) for _, a in layers]

        def time_rounds(protocol: TimingProtocol = rounds) -> list:
            return [t for batch in in_batches([a for _, a in layers])
                    for t in bench_batch(batch, device, protocol, reference)]

        passes = {"burst_a": time_burst()}
        passes["burst_b"] = time_burst()
        single = [time_rounds(one_session), time_rounds(one_session)]
        bench_networks()
        rounds_a = time_rounds()
        bench_networks()
        rounds_b = time_rounds()
        bench_networks()
        interleaved = [pair for batch in in_batches([a for _, a in layers])
                       for pair in zip(bench_batch(batch, device, rounds, reference),
                                       bench_batch(batch, device, rounds, reference))]
        while min(len(b) for b in network_benches.values()) < args.network_runs:
            bench_networks()
    kinds = [c.kind for c, _ in layers]
    sizes = [_size_class(statistics.median(t.timing.samples_ms)) for t in rounds_a]

    def paired(a: list[dict], b: list[dict]) -> dict:
        return agreement([(k, s, x, y) for k, s, x, y in zip(kinds, sizes, a, b)])

    def stats(timings: list, corrected: bool) -> list[dict]:
        return [statistics_of(list((t.corrected if corrected else t.raw).samples_ms)) for t in timings]

    def network_row(benches: list) -> dict:
        out = {}
        for label, pick in (("corrected", lambda b: b.timing), ("raw", lambda b: b.raw)):
            ms = [pick(b).median_ms for b in benches]
            out[label] = {"medians_ms": [round(m, 4) for m in ms],
                          "spread": round((max(ms) - min(ms)) / statistics.median(ms), 4)}
        return out

    speeds = [round_speeds(t.reference_ms, reference.nominal_ms) for t in rounds_a + rounds_b]
    result = {
        "what": f"{len(layers)} layer configs of {args.model} at {args.input_size} px and {len(networks)} networks, "
                "compiled once from one database, timed twice under each protocol",
        "protocols": {"burst": burst.describe(), "rounds_one_session": one_session.describe(),
                      "rounds": rounds.describe(), "batch": BATCH},
        "drift_reference": {**reference.to_dict(), "device_speed_in_rounds": {
            "min": round(min(s["min"] for s in speeds), 3), "max": round(max(s["max"] for s in speeds), 3)}},
        "threads": rounds_a[0].threads,
        "burst_back_to_back": paired(passes["burst_a"], passes["burst_b"]),
        "rounds_one_session_back_to_back_raw": paired(stats(single[0], False), stats(single[1], False)),
        "rounds_one_session_back_to_back_corrected": paired(stats(single[0], True), stats(single[1], True)),
        "rounds_back_to_back_raw": paired(stats(rounds_a, False), stats(rounds_b, False)),
        "rounds_back_to_back_corrected": paired(stats(rounds_a, True), stats(rounds_b, True)),
        "rounds_interleaved_corrected": paired(stats([a for a, _ in interleaved], True),
                                               stats([b for _, b in interleaved], True)),
        "networks": {name: network_row(benches) for name, benches in network_benches.items()},
    }  # fmt: skip
    write_result(args.out, result, load_before, started)
    print(f"{result['what']}; burst: {burst.describe()}; rounds: {rounds.describe()}")
    for order in ("burst_back_to_back", "rounds_one_session_back_to_back_raw",
                  "rounds_one_session_back_to_back_corrected", "rounds_back_to_back_raw",
                  "rounds_back_to_back_corrected", "rounds_interleaved_corrected"):
        for stat, groups in result[order].items():
            a = groups["all"]
            print(f"{order:42s} {stat:12s} within ±5% {100 * a['within_5']:5.1f}%  ±10% {100 * a['within_10']:5.1f}%  "
                  f"worst {100 * a['worst']:.0f}%  ({a['layers']} layers)")
    for name, row in result["networks"].items():
        for label, r in row.items():
            print(f"network {name:9s} {label:9s} medians {r['medians_ms']} ms, spread {100 * r['spread']:.1f}%")
    print(f"device speed in the rounds (nominal 1.0): {result['drift_reference']['device_speed_in_rounds']}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
