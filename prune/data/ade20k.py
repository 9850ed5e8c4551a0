"""ADE20K scene parsing (MIT SceneParsing benchmark, `ADEChallengeData2016`), 150 classes.

Layout: ROOT/images/{training,validation}/*.jpg and ROOT/annotations/{training,validation}/*.png
with the same stem; ROOT is `ADEChallengeData2016` or a folder that contains it. Raw label 0 is
"other" and becomes 255 (ignore); 1..150 become train ids 0..149 (the "reduce zero label" of
mmsegmentation and SegFormer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runner.errors import EdgesegError

from prune.data.folder import INVALID, LabelSpec, PairedFiles, require_folders
from prune.data.transforms import IGNORE_INDEX, SegTransform

NUM_CLASSES = 150
SPLIT_FOLDERS = {"train": "training", "val": "validation"}
LAYOUT_NAME = "ADE20K (ADEChallengeData2016)"


def _label_spec() -> LabelSpec:
    lut = np.full(256, INVALID, dtype=np.int64)
    lut[0] = IGNORE_INDEX
    lut[1 : NUM_CLASSES + 1] = np.arange(NUM_CLASSES)
    return LabelSpec("ADE20K", NUM_CLASSES, lut, f"0..{NUM_CLASSES}")


def ade20k_dataset(root: str | Path, split: str, transform: SegTransform) -> PairedFiles:
    """The ADE20K `split` ("train" or "val") under `root`, every image paired with its annotation."""
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    folder = SPLIT_FOLDERS[split]
    require_folders(root, [f"images/{folder}", f"annotations/{folder}"], LAYOUT_NAME)
    images = sorted((root / "images" / folder).glob("*.jpg"))
    if not images:
        raise EdgesegError(
            f"{root / 'images' / folder} holds no .jpg images.", f"Pass a complete {LAYOUT_NAME} folder."
        )
    pairs = [(image, root / "annotations" / folder / f"{image.stem}.png") for image in images]
    missing = next((label for _, label in pairs if not label.is_file()), None)
    if missing is not None:
        raise EdgesegError(
            f"annotation {missing} is missing for image {missing.stem}.jpg.",
            f"Pass a complete {LAYOUT_NAME} folder (every image needs its annotation PNG).",
        )
    return PairedFiles(pairs, _label_spec(), transform)
