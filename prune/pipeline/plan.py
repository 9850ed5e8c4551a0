"""The pipeline's stages for one set of options: which command runs, with what, writing where.

    OUT/latency/data.jsonl, predictor/, scatter.png   collect, train, evaluate
    OUT/unpruned/       the dense reference            python -m prune --method dense
    OUT/pruned-roundK/  round K's network: python -m prune --method bilevel --budget-ms B --latency-scale S;
                        compiled and benched in turns with the reference; if it misses B by more than
                        the landing tolerance, round K+1 projects round 0's search (--reuse-search)
                        onto an aim lower or higher by the factor round K missed by, or between a
                        round over and one under once there are both (prune.pipeline.rounds,
                        docs/pipeline.md)
    OUT/pruned          a link to the round that ships (the first that landed, else the closest)
    OUT/unpruned-x2/    the reference trained as long as the pruned network (same start, same stages)
    OUT/NET/artifact/, OUT/NET/bench.json              python -m compile, python -m runner bench --check

The stages of a round depend on what the rounds before it measured, so they are planned one
round at a time (`prune.pipeline.rounds` runs them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latency_model.predictor import MANIFEST
from prune.pipeline.stages import Stage
from runner.device import Tracker

REFERENCE, PRUNED, LONG_REFERENCE = "unpruned", "pruned", "unpruned-x2"
# Settings of `python -m prune` the pipeline takes and hands on, flag for flag.
TRAINING = ("model", "data", "input_size", "num_classes", "epochs", "search_steps", "finetune_steps",
            "batch_size", "lr", "weight_decay", "search_weight_decay", "unit", "train_scenes", "val_scenes", "seed")
BUDGETS = ("fps", "budget_ms", "budget_fraction")
DEFAULT_LANDING_TOLERANCE = 0.05
# Turns of a round's bench with the reference: the ratio is the median over them (with 4 samples
# in each of 5 turns, main-job runs 11-12 saw per-turn ratios spread 4-19% IQR).
TURNS = 10


@dataclass(frozen=True)
class DeviceChoice:
    """Where the networks run: a target preset or phone preset, and a tracker and key (None:
    the embedded farm of this machine's CPU)."""

    target: str | None = None
    phone: str | None = None
    tracker: Tracker | None = None
    key: str | None = None

    def flags(self, with_target: bool = True) -> list[str]:
        out = []
        if with_target and self.target:
            out += ["--target", self.target]
        if with_target and self.phone:
            out += ["--device", self.phone]
        if self.tracker:
            out += ["--tracker", str(self.tracker), "--key", self.key or ""]
        return out


@dataclass(frozen=True)
class PipelineOptions:
    out: Path
    device: DeviceChoice
    training: dict[str, Any]  # TRAINING settings -> values (None: not given)
    budget: tuple[str, float]  # one of BUDGETS and its value
    method: str
    num_classes: int  # the data's class count (sizes the classifier the collection measures)
    samples: int
    trials_per_layer: int
    compile_trials: int
    repeat: int
    warmup: int
    long_reference: bool = True
    max_rounds: int = 1
    landing_tolerance: float = DEFAULT_LANDING_TOLERANCE


def round_folder(options: PipelineOptions, round_: int) -> Path:
    """Round `round_`'s pruned network; OUT/pruned links to the round that ships."""
    return options.out / f"{PRUNED}-round{round_}"


def predictor_folder(options: PipelineOptions) -> Path:
    """The predictor every round prunes with, trained on the collection."""
    return options.out / "latency" / "predictor"


def _flag(name: str) -> str:
    from prune.cli import FLAGS

    return FLAGS[name].flag or "--" + name.replace("_", "-")


def _prune_args(options: PipelineOptions, predictor: Path) -> list[str]:
    args = ["--predictor", str(predictor)]
    for name in TRAINING:
        if options.training.get(name) is not None:
            args += [_flag(name), str(options.training[name])]
    return args


def _network_outputs(folder: Path) -> tuple[Path, ...]:
    return folder / "pruning.json", folder / "model.onnx"


def network_folders(options: PipelineOptions) -> list[Path]:
    """The networks compared, reference first; OUT/pruned is the round that ships."""
    names = [REFERENCE, *([LONG_REFERENCE] if options.long_reference else []), PRUNED]
    return [options.out / name for name in names]


def _collect_args(options: PipelineOptions) -> tuple[str, ...]:
    t = options.training
    collect_unit = "1" if t["unit"] == "auto" else str(t["unit"])  # auto reads the alignment: every width sampled
    return ("collect", "--model", t["model"], "--input-size", str(t["input_size"]), "--classes",
            str(options.num_classes), "--trials-per-layer", str(options.trials_per_layer), "--unit", collect_unit,
            *options.device.flags(), "-o", str(options.out / "latency" / "data.jsonl"))


def _build_stages(options: PipelineOptions, folder: Path, baseline: Path | None = None) -> list[Stage]:
    """Compile the network in `folder` for the device and bench it there, with the numeric check;
    with `baseline` (the reference's folder), timed in turns with the reference's artifact."""
    artifact, device = folder / "artifact", options.device
    against = ("--baseline", str(baseline / "artifact"), "--rounds", str(TURNS)) if baseline else ()
    return [
        Stage(f"compile-{folder.name}", f"compile the {folder.name} network for the device "
              f"({options.compile_trials} search trials; schedules from the collection, exact or transferred)",
              "compile", (str(folder / "model.onnx"), *device.flags(), "--trials", str(options.compile_trials),
                          "--no-kernel-library", "-o", str(artifact)),  # whole networks only: half the build
              (artifact / "manifest.json",), after=(folder.name,)),
        Stage(f"bench-{folder.name}", "run it on the device with the numeric check against ONNX Runtime"
              + (f", in turns with {baseline.name} in the same session" if baseline else ""), "runner",
              ("bench", str(artifact), "--check", "--repeat", str(options.repeat), "--warmup", str(options.warmup),
               *against, *device.flags(with_target=False), "--out", str(folder / "bench.json")),
              (folder / "bench.json",),
              after=(f"compile-{folder.name}", *([f"compile-{baseline.name}"] if baseline else [])))]


def plan_start(options: PipelineOptions) -> list[Stage]:
    """Collect, train and evaluate the predictor; train, compile and bench the dense reference
    (its measured-over-predicted factor sets round 0's aim; its level is the base of --budget-fraction)."""
    out, t = options.out, options.training
    latency = out / "latency"
    data, predictor, scatter = latency / "data.jsonl", predictor_folder(options), latency / "scatter.png"
    return [
        Stage("collect", f"measure {t['model']}'s layers at {t['input_size']} px on the device and tune their "
              "schedules (resumes: measured layers are kept)", "latency_model",
              (*_collect_args(options), "--samples", str(options.samples)), (data,)),
        Stage("predictor", "train the XGBoost latency predictor on them", "latency_model",
              ("train", str(data), "-o", str(predictor)), (predictor / MANIFEST,), after=("collect",)),
        Stage("predictor-accuracy", "its accuracy on the held-out layers, with the FLOPs line beside it",
              "latency_model", ("evaluate", str(predictor), str(data), "--plot", str(scatter)), (scatter,),
              after=("predictor",)),
        Stage(REFERENCE, "train the unpruned network (the dense reference)", "prune",
              (*_prune_args(options, predictor), "--method", "dense", "-o", str(out / REFERENCE)),
              _network_outputs(out / REFERENCE), after=("predictor",)),
        *_build_stages(options, out / REFERENCE),
    ]


def plan_round(options: PipelineOptions, round_: int, budget_ms: float, latency_scale: float) -> list[Stage]:
    """Round `round_`: prune to `budget_ms` of measured network latency (the predictor's ms times
    `latency_scale`: the search aims at a layer sum of budget / scale), compile, bench in turns
    with the reference (their ratio holds where the device's absolute speed drifts)."""
    folder = round_folder(options, round_)
    previous = (f"bench-{round_folder(options, round_ - 1).name}",) if round_ else ()
    after = ("predictor", f"bench-{REFERENCE}", *previous)  # the stages whose files chose the budget and scale
    reuse: tuple[str, ...] = ()
    if round_ and options.method == "bilevel":  # one ranking of units for every round (prune.reuse_search)
        reuse = ("--reuse-search", str(round_folder(options, 0)))
        after += (round_folder(options, 0).name,)
    prune = Stage(folder.name, f"prune by {options.method} to {budget_ms:.3f} ms measured (latency scale "
                  f"{latency_scale:.3f}), then fine-tune (round {round_}; at most {options.max_rounds} rounds)", "prune",
                  (*_prune_args(options, predictor_folder(options)), "--method", options.method,
                   "--budget-ms", f"{budget_ms:.4f}", "--latency-scale", f"{latency_scale:.4f}", "--weights",
                   str(options.out / REFERENCE / "weights.safetensors"), *reuse, "-o", str(folder)),
                  _network_outputs(folder), after=after)
    return [prune, *_build_stages(options, folder, baseline=options.out / REFERENCE)]


def plan_finish(options: PipelineOptions) -> list[Stage]:
    """The reference trained as long as the shipped network, compiled and benched (if asked for)."""
    if not options.long_reference:
        return []
    out = options.out
    predictor = predictor_folder(options)
    train = Stage(LONG_REFERENCE, "the reference trained as many steps as the pruned network: the dense run "
                  "continued, unpruned, in the same stages", "prune",
                  (*_prune_args(options, predictor), "--method", "dense", "--weights",
                   str(out / REFERENCE / "weights.safetensors"), "-o", str(out / LONG_REFERENCE)),
                  _network_outputs(out / LONG_REFERENCE),
                  after=("predictor", REFERENCE))
    return [train, *_build_stages(options, out / LONG_REFERENCE, baseline=out / REFERENCE)]
