"""Rounds of pruning until a network lands on its budget in measured milliseconds.

A predictor sums layers timed alone; a whole network on the device also pays for what lies
between them (launches, thread-pool wake-ups, copies), and the search is drawn to the widths
the predictor under-prices. So every round's network is compiled and benched, and a round that
misses its budget by more than the landing tolerance is followed by another that projects round
0's search onto an aim lower or higher by the factor it missed by (between a round over and one
under, once there are both): a controller on the search's own budget, with the same predictor
and one ranking of units, so that whatever biased round k (the predictor's errors on the widths the search
likes, the network's cost beyond its layers) biases round k+1 alike (docs/pipeline.md, "Landing
on the budget").

    level L         the dense reference's median, over every session that timed it (its own bench
                    and each round's in-turns bench): the device's speed drifts between sessions
    budget B        --budget-ms, 1000 / --fps, or --budget-fraction x L
    measured ms     a round's network timed in turns with the reference in one session: their
                    ratio times L
    aim A_k         the predictor's layer sum round k's search prunes to: A_0 = B x the reference's
                    layer sum / L, A_k+1 = A_k x B / measured_k until one round was over B and one
                    under, then interpolated between the nearest two in log space (`next_aim`;
                    passed to `prune` as --budget-ms B --latency-scale B / A_k)
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from latency_model.layers import LayerConfig
from prune.compare import read_json
from prune.pipeline.plan import (PRUNED, REFERENCE, PipelineOptions, plan_finish, plan_round, plan_start,
                                 predictor_folder, round_folder)
from prune.pipeline.stages import StageRecord, StageRunner
from runner.errors import EdgesegError


@dataclass(frozen=True)
class RoundResult:
    """One round's network: what its search aimed at, and what it measured.

    `measured_ms` is the reference-normalised figure: the network's ratio to the dense reference,
    timed in turns in one session, times the reference's level (its median over every session
    that timed it). The embedded device's absolute speed moves between sessions (levels ~20%
    apart); the ratio holds far better, so a round is judged by it (`raw_ms` is the network's own
    median in that session)."""

    round: int
    folder: Path
    aim_ms: float  # the predictor's layer sum the search pruned to (budget / latency scale)
    latency_scale: float
    predicted_ms: float  # the predictor's sum times the scale: the search's estimate of the network
    measured_ms: float  # ratio to the reference x the reference's level
    raw_ms: float  # the bench's own median in its session
    ratio: float  # to the reference, median over the interleaved turns
    ratio_spread: float  # IQR of the per-turn ratios over their median

    def miss(self, budget_ms: float) -> float:
        """Measured over budget, as a fraction (+0.02: 2% over)."""
        return self.measured_ms / budget_ms - 1

    @classmethod
    def read(cls, round_: int, folder: Path, level_ms: float) -> RoundResult:
        pruning, bench = _read(folder / "pruning.json"), _read(folder / "bench.json")
        baseline = bench.get("baseline") or {}
        ratio = float(baseline.get("ratio", float(bench["median_ms"]) / level_ms))
        scale = float(pruning.get("latency_scale", 1.0))
        return cls(round_, folder, float(pruning["budget_ms"]) / scale, scale, float(pruning["predicted_ms"]),
                   ratio * level_ms, float(bench["median_ms"]), ratio, float(baseline.get("ratio_spread", 0.0)))


def _read(path: Path) -> dict:
    return read_json(path, "the same pipeline command (the stage that writes it runs again)")


def network_layers(folder: Path) -> list[LayerConfig]:
    """The layers of the network `python -m prune` wrote to `folder`, as the collection describes them."""
    from prune.describe import describe_model
    from prune.variants import pruned_kept

    pruning = _read(folder / "pruning.json")
    model, size, classes = pruning["model"], pruning["input_size"], pruning["num_classes"]
    description = describe_model(model, size, num_classes=classes)
    return description.config_at(pruned_kept(folder, description, model, size, classes))


def predicted_layers_ms(folder: Path, predictor: Path) -> float:
    """The predictor's sum over the network's layers (no scale)."""
    from latency_model.predictor import Predictor

    return float(Predictor.load(predictor).predict_ms(network_layers(folder)).sum())


def reference_level(options: PipelineOptions, rounds_done: int) -> float:
    """The dense reference's median over every session that timed it so far: its own bench and
    the in-turns benches of rounds 0 .. rounds_done-1. One session's level can be far off (19.1 ms
    in the reference's own bench of main-job run 12, 12.7-16.7 ms beside its rounds)."""
    levels = [float(_read(options.out / REFERENCE / "bench.json")["median_ms"])]
    for round_ in range(rounds_done):
        levels.append(float(_read(round_folder(options, round_) / "bench.json")["baseline"]["median_ms"]))
    return statistics.median(levels)


def budget_ms(options: PipelineOptions, level_ms: float) -> float:
    """The budget in measured ms; a fraction is of the dense reference's level."""
    name, value = options.budget
    if name == "budget_ms":
        return float(value)
    if name == "fps":
        return 1000.0 / float(value)
    return float(value) * level_ms


def first_aim(options: PipelineOptions, budget: float, level_ms: float) -> float:
    """Round 0's layer sum: the budget over the reference's network-over-layers factor."""
    return budget * predicted_layers_ms(options.out / REFERENCE, predictor_folder(options)) / level_ms


def next_aim(results: Sequence[RoundResult], budget: float) -> float:
    """The next round's layer sum. Once one round measured over the budget and another under,
    between the nearest of each, interpolated in log space (their measured ms against their aims);
    else the last round's, scaled by the factor it missed by. The scaling assumes the network's
    ms move in proportion to the aim; in main-job runs 18-19 they moved about twice as far, and
    the one correction overshot (+15% then -12%, +8% then -11%)."""
    last = results[-1]
    over = [r for r in results if r.measured_ms > budget]
    under = [r for r in results if r.measured_ms <= budget]
    if not over or not under:
        return last.aim_ms * budget / last.measured_ms
    high, low = min(over, key=lambda r: r.measured_ms), max(under, key=lambda r: r.measured_ms)
    if high.aim_ms <= low.aim_ms:  # ms did not grow with the aim: halve the bracket
        return math.sqrt(high.aim_ms * low.aim_ms)
    share = math.log(budget / low.measured_ms) / math.log(high.measured_ms / low.measured_ms)
    return low.aim_ms * (high.aim_ms / low.aim_ms) ** share


def landed(result: RoundResult, budget: float, tolerance: float) -> bool:
    return abs(result.miss(budget)) <= tolerance


def shipped(results: Sequence[RoundResult], budget: float, tolerance: float) -> RoundResult:
    """The first round that landed; if none did, the one closest to the budget."""
    for result in results:
        if landed(result, budget, tolerance):
            return result
    return min(results, key=lambda r: abs(r.miss(budget)))


def read_rounds(options: PipelineOptions, count: int) -> tuple[float, float, list[RoundResult]]:
    """The reference's level over the sessions of the first `count` rounds, the budget at that
    level, and those rounds' results at it."""
    level = reference_level(options, count)
    return level, budget_ms(options, level), [RoundResult.read(k, round_folder(options, k), level)
                                              for k in range(count)]


def run_rounds(options: PipelineOptions, record: StageRecord) -> tuple[float, list[RoundResult], RoundResult]:
    """Every stage of the pipeline, round by round: the budget, each round's result, the one shipped
    (OUT/pruned links to it). A round's stages depend only on files of the stages before it, so a
    rerun plans the same commands and skips them."""
    runner = StageRunner(record)
    runner.run(plan_start(options))
    level, budget, results = read_rounds(options, 0)
    aim = first_aim(options, budget, level)
    for round_ in range(options.max_rounds):
        runner.run(plan_round(options, round_, budget, budget / aim))
        level, budget, results = read_rounds(options, round_ + 1)
        last = results[-1]
        print(f"== round {round_}: {last.measured_ms:.3f} ms measured ({last.ratio:.4f} x the reference's "
              f"{level:.3f} ms, timed in turns; {last.raw_ms:.3f} ms in its own session) for a {budget:.3f} ms "
              f"budget ({100 * last.miss(budget):+.1f}%; landing tolerance ±{100 * options.landing_tolerance:g}%)")
        if landed(last, budget, options.landing_tolerance):
            break
        aim = next_aim(results, budget)
    chosen = shipped(results, budget, options.landing_tolerance)
    _link(options.out / PRUNED, chosen.folder)
    runner.run(plan_finish(options))
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
