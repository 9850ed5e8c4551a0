"""The pipeline's stages for one set of options: which command runs, with what, writing where.

    OUT/latency/data.jsonl, predictor/, scatter.png   collect, train, evaluate
    OUT/unpruned/       the dense reference            python -m prune --method dense
    OUT/pruned/         pruned to the budget           python -m prune --method bilevel ... --weights
    OUT/pruned-roundK/  the rounds before the last: each pruned network's own layers are then
                        measured (collect --pruned), the predictor retrained (latency/predictor-roundK+1)
                        and the network pruned again; the search otherwise picks widths the
                        predictor under-prices (docs/pipeline.md)
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
    refine_rounds: int = 0


def pruned_folder(options: PipelineOptions, round_: int) -> Path:
    """Round `round_`'s pruned network: the last round's is OUT/pruned."""
    return options.out / (PRUNED if round_ == options.refine_rounds else f"{PRUNED}-round{round_}")


def predictor_folder(options: PipelineOptions, round_: int) -> Path:
    """The predictor round `round_` prunes with (round 0: the collection's alone)."""
    return options.out / "latency" / ("predictor" if round_ == 0 else f"predictor-round{round_}")


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
    """The networks compared, reference first."""
    names = [REFERENCE, *([LONG_REFERENCE] if options.long_reference else []), PRUNED]
    return [options.out / name for name in names]


def plan_stages(options: PipelineOptions) -> list[Stage]:
    out, device, t = options.out, options.device, options.training
    latency = out / "latency"
    data, predictor, scatter = latency / "data.jsonl", latency / "predictor", latency / "scatter.png"
    collect_unit = "1" if t["unit"] == "auto" else str(t["unit"])  # auto reads the alignment: every width sampled
    collect_args = ("collect", "--model", t["model"], "--input-size", str(t["input_size"]), "--classes",
                    str(options.num_classes), "--trials-per-layer", str(options.trials_per_layer), "--unit",
                    collect_unit, *device.flags(), "-o", str(data))
    stages = [
        Stage("collect", f"measure {t['model']}'s layers at {t['input_size']} px on the device and tune their "
              "schedules (resumes: measured layers are kept)", "latency_model",
              (*collect_args, "--samples", str(options.samples)), (data,)),
        Stage("predictor", "train the XGBoost latency predictor on them", "latency_model",
              ("train", str(data), "-o", str(predictor)), (predictor / MANIFEST,), after=("collect",)),
        Stage("predictor-accuracy", "its accuracy on the held-out layers, with the FLOPs line beside it",
              "latency_model", ("evaluate", str(predictor), str(data), "--plot", str(scatter)), (scatter,),
              after=("predictor",)),
    ]
    reference_weights = out / REFERENCE / "weights.safetensors"
    budget_name, budget_value = options.budget
    final = predictor_folder(options, options.refine_rounds)
    stages.append(Stage(REFERENCE, "train the unpruned network (the dense reference)", "prune",
                        (*_prune_args(options, predictor), "--method", "dense", "-o", str(out / REFERENCE)),
                        _network_outputs(out / REFERENCE), after=("predictor",)))
    pruning = ["--method", options.method, _flag(budget_name), f"{budget_value:g}", "--weights", str(reference_weights)]
    for round_ in range(options.refine_rounds + 1):
        folder = pruned_folder(options, round_)
        if round_:
            previous, round_predictor = pruned_folder(options, round_ - 1), predictor_folder(options, round_)
            stages += [
                Stage(f"refine-{round_}-collect", f"measure the layers of {previous.name}, the network the search "
                      "chose (most of them never measured)", "latency_model",
                      (*collect_args, "--samples", "0", "--pruned", str(previous)), (data,), after=(previous.name,)),
                Stage(f"refine-{round_}-predictor", "retrain the predictor with them", "latency_model",
                      ("train", str(data), "-o", str(round_predictor)), (round_predictor / MANIFEST,),
                      after=(f"refine-{round_}-collect",))]
        after = ("predictor", REFERENCE) if round_ == 0 else (f"refine-{round_}-predictor", REFERENCE)
        stages.append(Stage(folder.name, f"prune it by {options.method} to {_flag(budget_name)} {budget_value:g}, "
                            f"then fine-tune (round {round_} of {options.refine_rounds})", "prune",
                            (*_prune_args(options, predictor_folder(options, round_)), *pruning, "-o", str(folder)),
                            _network_outputs(folder), after=after))
    if options.long_reference:
        stages.append(Stage(LONG_REFERENCE, "the reference trained as many steps as the pruned network: the dense run "
                            "continued, unpruned, in the same stages", "prune",
                            (*_prune_args(options, final), "--method", "dense", "--weights", str(reference_weights),
                             "-o", str(out / LONG_REFERENCE)), _network_outputs(out / LONG_REFERENCE),
                            after=(f"refine-{options.refine_rounds}-predictor" if options.refine_rounds
                                   else "predictor", REFERENCE)))
    folders = network_folders(options)
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
