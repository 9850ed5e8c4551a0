"""Image/label file pairs on disk, the part ADE20K and Cityscapes share.

Each data set lists its pairs and gives a lookup table from the raw label values in its PNGs to
train ids (255 = ignore, -1 = a value that must not occur). Labels are checked when an item is
loaded: a value the table rejects is an `EdgesegError` naming the file and the value, so a
corrupt or foreign annotation stops the run at the first batch instead of poisoning the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from runner.errors import EdgesegError

from prune.data.transforms import SegTransform

INVALID = -1


@dataclass(frozen=True)
class LabelSpec:
    """How a data set's label PNGs map to train ids."""

    name: str
    num_classes: int
    lut: np.ndarray  # 256 entries: raw value -> train id, 255 (ignore) or INVALID
    valid_values: str  # how a user would describe the allowed raw values, for errors


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """An image file as an array (converted to `mode` if given); an unreadable file is an EdgesegError."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode) if mode else image)
    except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise EdgesegError(
            f"image file {path} could not be read ({err}).", "Replace it with the data set's original file."
        ) from err


def read_label(path: Path, spec: LabelSpec) -> np.ndarray:
    """A label PNG mapped to train ids (int64 HW), checked against `spec`."""
    raw = read_image(path)
    if raw.ndim != 2:
        raise EdgesegError(
            f"label image {path} has {raw.shape[-1]} channels, not one.",
            f"Use {spec.name}'s single-channel PNG annotations of class ids ({spec.valid_values}).",
        )
    top = int(raw.max(initial=0))
    mapped = spec.lut[raw] if top < len(spec.lut) else None
    if mapped is None or (mapped == INVALID).any():
        bad = top if mapped is None else int(raw[mapped == INVALID][0])
        raise EdgesegError(
            f"label image {path} contains the value {bad}, outside {spec.name}'s class range ({spec.valid_values}).",
            f"Check that the annotations are {spec.name}'s original PNGs (not colour maps or another data set's).",
        )
    return mapped


class PairedFiles(Dataset):
    """(image, label) pairs through the shared transform; `num_classes` as the model needs it."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], spec: LabelSpec, transform: SegTransform) -> None:
        self.pairs = list(pairs)
        self.spec = spec
        self.transform = transform
        self.num_classes = spec.num_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.pairs[index]
        image = read_image(image_path, "RGB")
        label = read_label(label_path, self.spec)
        if image.shape[:2] != label.shape:
            raise EdgesegError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its label {label_path} "
                f"is {label.shape[1]}x{label.shape[0]}.",
                f"Use {self.spec.name}'s matching image and annotation files.",
            )
        return self.transform(image, label)


def require_folders(root: Path, folders: Sequence[str], layout: str) -> None:
    """Raise an `EdgesegError` naming every expected folder when one of them is missing."""
    missing = [f for f in folders if not (root / f).is_dir()]
    if missing:
        expected = ", ".join(str(root / f) for f in folders)
        problem = (
            f"is not in the {layout} layout ({', '.join(missing)} missing)" if root.is_dir() else "does not exist"
        )
        raise EdgesegError(
            f"data folder {root} {problem}; expected the folders {expected}.",
            f"Pass the {layout} folder that contains {' and '.join(sorted({f.split('/')[0] for f in folders}))}.",
        )
