"""The pipeline's stages for one set of options: which command runs, with what, writing where.

    OUT/latency/data.jsonl, predictor/, scatter.png   collect, train, evaluate
    OUT/unpruned/       the dense reference            python -m prune --method dense
    OUT/pruned/         pruned to the budget           python -m prune --method bilevel ... --weights
    OUT/unpruned-x2/    the reference trained as long as the pruned network (same start, same stages)
    OUT/NET/artifact/, OUT/NET/bench.json              python -m compile, python -m runner bench --check
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


def _flag(name: str) -> str:
    from prune.cli import FLAGS

    return FLAGS[name].flag or "--" + name.replace("_", "-")


def _prune_args(options: PipelineOptions, predictor: Path) -> list[str]:
    args = ["--predictor", str(predictor)]
    for name in TRAINING:
        if options.training.get(name) is not None:
            args += [_flag(name), str(options.training[name])]
    return args


def network_folders(options: PipelineOptions) -> list[Path]:
    """The networks compared, reference first."""
    names = [REFERENCE, *([LONG_REFERENCE] if options.long_reference else []), PRUNED]
    return [options.out / name for name in names]


def plan_stages(options: PipelineOptions) -> list[Stage]:
    out, device, t = options.out, options.device, options.training
    latency = out / "latency"
    data, predictor, scatter = latency / "data.jsonl", latency / "predictor", latency / "scatter.png"
    collect_unit = "1" if t["unit"] == "auto" else str(t["unit"])  # auto reads the alignment: every width sampled
    stages = [
        Stage("collect", f"measure {t['model']}'s layers at {t['input_size']} px on the device and tune their "
              "schedules (resumes: measured layers are kept)", "latency_model",
              ("collect", "--model", t["model"], "--input-size", str(t["input_size"]),
               "--classes", str(options.num_classes), "--samples", str(options.samples),
               "--trials-per-layer", str(options.trials_per_layer), "--unit", collect_unit,
               *device.flags(), "-o", str(data)), (data,)),
        Stage("predictor", "train the XGBoost latency predictor on them", "latency_model",
              ("train", str(data), "-o", str(predictor)), (predictor / MANIFEST,), after=("collect",)),
        Stage("predictor-accuracy", "its accuracy on the held-out layers, with the FLOPs line beside it",
              "latency_model", ("evaluate", str(predictor), str(data), "--plot", str(scatter)), (scatter,),
              after=("predictor",)),
    ]
    common = _prune_args(options, predictor)
    reference_weights = out / REFERENCE / "weights.safetensors"
    budget_name, budget_value = options.budget
    trainings = {
        REFERENCE: ("train the unpruned network (the dense reference)", ["--method", "dense"], ("predictor",)),
        PRUNED: (f"prune it by {options.method} to {_flag(budget_name)} {budget_value:g}, then fine-tune",
                 ["--method", options.method, _flag(budget_name), f"{budget_value:g}",
                  "--weights", str(reference_weights)], ("predictor", REFERENCE)),
        LONG_REFERENCE: ("the reference trained as many steps as the pruned network: the dense run continued, "
                         "unpruned, in the same stages", ["--method", "dense", "--weights", str(reference_weights)],
                         ("predictor", REFERENCE)),
    }
    folders = network_folders(options)
    for folder in [folders[0], *sorted(folders[1:], key=lambda f: f.name != PRUNED)]:  # pruned before x2
        purpose, extra, after = trainings[folder.name]
        stages.append(Stage(folder.name, purpose, "prune", (*common, *extra, "-o", str(folder)),
                            (folder / "pruning.json", folder / "model.onnx"), after=after))
    for folder in folders:
        artifact = folder / "artifact"
        stages.append(Stage(f"compile-{folder.name}", f"compile the {folder.name} network for the device "
                            f"({options.compile_trials} search trials; schedules from the collection, exact or "
                            "transferred)", "compile",
                            (str(folder / "model.onnx"), *device.flags(), "--trials", str(options.compile_trials),
                             "-o", str(artifact)), (artifact / "manifest.json",), after=(folder.name,)))
        stages.append(Stage(f"bench-{folder.name}", f"run it on the device with the numeric check against ONNX "
                            "Runtime", "runner",
                            ("bench", str(artifact), "--check", "--repeat", str(options.repeat), "--warmup",
                             str(options.warmup), *device.flags(with_target=False), "--out",
                             str(folder / "bench.json")), (folder / "bench.json",),
                            after=(f"compile-{folder.name}",)))
    return stages
