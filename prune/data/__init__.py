"""Data sets by spec string, as the command line takes them: `synthetic`, `synthetic-hard`, `ade20k:PATH`,
`cityscapes:PATH`.

Every data set yields (image, label): a float32 [3, S, S] image normalised with ImageNet mean/std
and an int64 [S, S] label of train ids, 255 where ignored; every one has `num_classes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from runner.errors import EdgesegError

from prune.data import ade20k, cityscapes, synthetic_hard
from prune.data.ade20k import ade20k_dataset
from prune.data.cityscapes import cityscapes_dataset
from prune.data.splits import inner_outer_split
from prune.data.synthetic import SyntheticScenes
from prune.data.synthetic_hard import HardSyntheticScenes
from prune.data.transforms import SegTransform

SPLITS = ("train", "val")
FOLDER_DATA_SETS = {"ade20k": ade20k_dataset, "cityscapes": cityscapes_dataset}
SYNTHETIC = "synthetic"
SYNTHETIC_HARD = "synthetic-hard"  # 40 classes, long tail, thin and small things, context and texture pairs
# Scenes are free to make; these lengths keep an epoch short on a CPU.
SYNTHETIC_LENGTHS = {"train": 2000, "val": 200}
# Random rescale of real training images (SegFormer's ratio range), relative to the input size.
TRAIN_SCALE_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: the data set's kind and, for real data sets, its root folder."""

    kind: str
    root: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> DataSpec:
        kind, sep, path = spec.partition(":")
        known = f"{SYNTHETIC}, {SYNTHETIC_HARD}, " + ", ".join(f"{k}:PATH" for k in FOLDER_DATA_SETS)
        if kind in (SYNTHETIC, SYNTHETIC_HARD) and not sep:
            return cls(kind)
        if kind in FOLDER_DATA_SETS and path:
            return cls(kind, Path(path).expanduser())
        if kind in FOLDER_DATA_SETS:
            raise EdgesegError(f"data spec {spec!r} has no path.", f"Write it as {kind}:PATH.")
        raise EdgesegError(f"unknown data spec {spec!r}.", f"Use one of: {known}.")


def data_classes(spec: str | DataSpec, num_classes: int = 8) -> int:
    """The class count a network trained on `spec` has (`num_classes` counts for `synthetic`
    alone): it sizes the classifier, so the layers a latency predictor is collected on need it."""
    spec = spec if isinstance(spec, DataSpec) else DataSpec.parse(spec)
    fixed = {SYNTHETIC_HARD: synthetic_hard.NUM_CLASSES, "ade20k": ade20k.NUM_CLASSES,
             "cityscapes": cityscapes.NUM_CLASSES}
    return fixed.get(spec.kind, num_classes)


def build_dataset(
    spec: str | DataSpec,
    split: str,
    input_size: int,
    *,
    augment: bool | None = None,
    num_classes: int = 8,
    length: int | None = None,
    seed: int = 0,
) -> Dataset:
    """The `split` ("train" or "val") of the data set `spec` at `input_size` x `input_size`.

    `augment` (random rescale, crop position and flip; default: on for "train") applies to real data sets.
    `num_classes`, `length` (default 2000 train / 200 val) and `seed` apply to synthetic scenes;
    `synthetic-hard` has its own 40 classes and ignores `num_classes`.
    """
    spec = spec if isinstance(spec, DataSpec) else DataSpec.parse(spec)
    if split not in SPLITS:
        raise EdgesegError(f"unknown split {split!r}.", f"Use one of: {', '.join(SPLITS)}.")
    if input_size < 8:
        raise EdgesegError(f"input size {input_size} is too small.", "Use an input size of at least 8 pixels.")
    if spec.kind == SYNTHETIC:
        if num_classes < 2:
            raise EdgesegError(f"{num_classes} synthetic classes leave no foreground.", "Use at least 2 classes.")
        return SyntheticScenes(length or SYNTHETIC_LENGTHS[split], input_size, num_classes, seed, split)
    if spec.kind == SYNTHETIC_HARD:
        return HardSyntheticScenes(length or SYNTHETIC_LENGTHS[split], input_size, seed, split)
    train = split == "train" if augment is None else augment
    transform = SegTransform(input_size, train=train, scale_range=TRAIN_SCALE_RANGE if train else (1.0, 1.0))
    return FOLDER_DATA_SETS[spec.kind](spec.root, split, transform)


__all__ = ["DataSpec", "HardSyntheticScenes", "SegTransform", "SyntheticScenes", "build_dataset", "data_classes",
           "inner_outer_split"]
