"""Rounds of pruning until a network lands on its budget in measured milliseconds.

A predictor sums layers timed alone; a whole network on the device also pays for what lies
between them (launches, thread-pool wake-ups, copies), and the search is drawn to the widths
the predictor under-prices. So every round's network is compiled and benched, and the round
that misses its budget by more than the landing tolerance is followed by another: its own
layers measured, the predictor retrained, and the network-over-layers scale measured again on
it (docs/pipeline.md, "Landing on the budget").

    budget B        --budget-ms, 1000 / --fps, or --budget-fraction x the dense reference's
                    measured latency
    measured ms     a round's network timed in turns with the reference in one session: their
                    ratio times the reference's own median (the device's speed drifts between
                    sessions; the ratio holds)
    scale S_k       measured ms / layers predicted by round k's predictor, pooled (geometric
                    mean) over the reference and every round before k
    round k         prune to B with the predictor of round k times S_k, compile, bench
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from latency_model.layers import LayerConfig
from prune.pipeline.plan import (PRUNED, REFERENCE, PipelineOptions, plan_finish, plan_refinement, plan_round,
                                 plan_start, predictor_folder, round_folder)
from prune.pipeline.stages import StageRecord, StageRunner
from runner.errors import EdgesegError


@dataclass(frozen=True)
class RoundResult:
    """One round's network: the scale it was pruned with, its predicted and measured latency.

    `measured_ms` is the reference-normalised figure: the network's ratio to the dense reference,
    timed in turns in one session, times the reference's own bench median. The embedded device's
    absolute speed moves between sessions (levels ~20% apart); the ratio holds far better, so a
    round is judged by it (`raw_ms` is the network's own median in that session)."""

    round: int
    folder: Path
    latency_scale: float
    predicted_ms: float  # the predictor's sum times the scale: the search's estimate of the network
    measured_ms: float  # ratio to the reference x the reference's median
    raw_ms: float  # the bench's own median in its session
    ratio: float  # to the reference, median over the interleaved rounds
    ratio_spread: float  # IQR of the per-round ratios over their median

    def miss(self, budget_ms: float) -> float:
        """Measured over budget, as a fraction (+0.02: 2% over)."""
        return self.measured_ms / budget_ms - 1

    @classmethod
    def read(cls, round_: int, folder: Path, reference_ms: float) -> RoundResult:
        pruning, bench = _read_json(folder / "pruning.json"), _read_json(folder / "bench.json")
        baseline = bench.get("baseline") or {}
        ratio = float(baseline.get("ratio", float(bench["median_ms"]) / reference_ms))
        return cls(round_, folder, float(pruning.get("latency_scale", 1.0)), float(pruning["predicted_ms"]),
                   ratio * reference_ms, float(bench["median_ms"]), ratio, float(baseline.get("ratio_spread", 0.0)))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EdgesegError(f"{path} could not be read ({err}).",
                           "Rerun the same pipeline command: the stage that writes it runs again.") from None


def network_layers(folder: Path) -> list[LayerConfig]:
    """The layers of the network `python -m prune` wrote to `folder`, as the collection describes them."""
    from prune.describe import describe_model
    from prune.variants import pruned_kept

    pruning = _read_json(folder / "pruning.json")
    model, size, classes = pruning["model"], pruning["input_size"], pruning["num_classes"]
    description = describe_model(model, size, num_classes=classes)
    return description.config_at(pruned_kept(folder, description, model, size, classes))


def predicted_layers_ms(folder: Path, predictor: Path) -> float:
    """The predictor's sum over the network's layers (no scale)."""
    from latency_model.predictor import Predictor

    return float(Predictor.load(predictor).predict_ms(network_layers(folder)).sum())


def network_scale(networks: Sequence[tuple[Path, float]], predictor: Path) -> float:
    """Measured ms per ms the predictor gives the layers, pooled over the networks measured so far
    ((folder, measured ms) pairs): the geometric mean of their ratios. One network's ratio moves
    with the schedules it happened to get (0.95 to 1.40 in main job run 10), so the scale of the
    next round comes from all of them, not from the last one alone."""
    logs = [math.log(ms / predicted_layers_ms(folder, predictor)) for folder, ms in networks]
    return math.exp(sum(logs) / len(logs))


def reference_ms(options: PipelineOptions) -> float:
    """The dense reference's measured median (its own bench): the level every round is normalised to."""
    return float(_read_json(options.out / REFERENCE / "bench.json")["median_ms"])


def budget_ms(options: PipelineOptions) -> float:
    """The budget in measured ms; a fraction is of the dense reference's measured latency."""
    name, value = options.budget
    if name == "budget_ms":
        return float(value)
    if name == "fps":
        return 1000.0 / float(value)
    return float(value) * reference_ms(options)


def landed(result: RoundResult, budget: float, tolerance: float) -> bool:
    return abs(result.miss(budget)) <= tolerance


def shipped(results: Sequence[RoundResult], budget: float, tolerance: float) -> RoundResult:
    """The first round that landed; if none did, the one closest to the budget."""
    for result in results:
        if landed(result, budget, tolerance):
            return result
    return min(results, key=lambda r: abs(r.miss(budget)))


def run_rounds(options: PipelineOptions, record: StageRecord) -> tuple[float, list[RoundResult], RoundResult]:
    """Every stage of the pipeline, round by round: the budget, each round's result, the one shipped
    (OUT/pruned links to it)."""
    runner = StageRunner(record)
    runner.run(plan_start(options))
    budget, reference = budget_ms(options), reference_ms(options)
    measured = [(options.out / REFERENCE, reference)]  # every network benched so far, and its ms
    results: list[RoundResult] = []
    for round_ in range(options.refine_rounds + 1):
        if round_:
            runner.run(plan_refinement(options, round_))
        scale = network_scale(measured, predictor_folder(options, round_))
        runner.run(plan_round(options, round_, budget, scale))
        results.append(RoundResult.read(round_, round_folder(options, round_), reference))
        measured.append((results[-1].folder, results[-1].measured_ms))
        last = results[-1]
        print(f"== round {round_}: {last.measured_ms:.3f} ms measured ({last.ratio:.4f} x the reference's "
              f"{reference:.3f} ms, timed in turns; {last.raw_ms:.3f} ms in its own session) for a {budget:.3f} ms "
              f"budget ({100 * last.miss(budget):+.1f}%; landing tolerance ±{100 * options.landing_tolerance:g}%)")
        if landed(results[-1], budget, options.landing_tolerance):
            break
    chosen = shipped(results, budget, options.landing_tolerance)
    _link(options.out / PRUNED, chosen.folder)
    runner.run(plan_finish(options, chosen.round))
    return budget, results, chosen


def _link(link: Path, target: Path) -> None:
    """Point OUT/pruned at the shipped round (relative, so the folder can be moved whole)."""
    if link.is_symlink() or not link.exists():
        staging = link.with_name(link.name + ".link")
        staging.unlink(missing_ok=True)
        staging.symlink_to(target.name)
        os.replace(staging, link)
        return
    raise EdgesegError(f"{link} exists and is not a link: it holds a network of an earlier version of the pipeline.",
                       f"Move it away (or use a new output folder); the pipeline links {link.name} to the round "
                       "that ships.")
