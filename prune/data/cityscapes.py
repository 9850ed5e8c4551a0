"""Cityscapes fine annotations, the 19 evaluation classes (train ids).

Layout: ROOT/leftImg8bit/{train,val}/CITY/*_leftImg8bit.png and
ROOT/gtFine/{train,val}/CITY/*_gtFine_labelIds.png. Label ids (0..33, and 255 for the license
plate's -1) map to train ids 0..18 as in cityscapesScripts' `labels.py`; the rest become 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runner.errors import EdgesegError

from prune.data.folder import INVALID, LabelSpec, PairedFiles, require_folders
from prune.data.transforms import IGNORE_INDEX, SegTransform

# label id -> train id for the 19 evaluated classes (cityscapesScripts helpers/labels.py).
TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
NUM_CLASSES = 19
NUM_LABEL_IDS = 34
SPLITS = ("train", "val")
LAYOUT_NAME = "Cityscapes (leftImg8bit/gtFine)"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def _label_spec() -> LabelSpec:
    lut = np.full(256, INVALID, dtype=np.int64)
    lut[:NUM_LABEL_IDS] = IGNORE_INDEX
    lut[255] = IGNORE_INDEX  # license plate (-1) as written into uint8 PNGs
    for label_id, train_id in TRAIN_IDS.items():
        lut[label_id] = train_id
    return LabelSpec("Cityscapes", NUM_CLASSES, lut, f"label ids 0..{NUM_LABEL_IDS - 1} or 255")


def cityscapes_dataset(root: str | Path, split: str, transform: SegTransform) -> PairedFiles:
    """The Cityscapes `split` ("train" or "val") under `root`, every image paired with its labelIds PNG."""
    root = Path(root)
    require_folders(root, [f"leftImg8bit/{split}", f"gtFine/{split}"], LAYOUT_NAME)
    images = sorted((root / "leftImg8bit" / split).glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise EdgesegError(
            f"{root / 'leftImg8bit' / split} holds no CITY/*{IMAGE_SUFFIX} images.",
            f"Pass a complete {LAYOUT_NAME} folder.",
        )
    pairs = [
        (image, root / "gtFine" / split / image.parent.name / image.name.replace(IMAGE_SUFFIX, LABEL_SUFFIX))
        for image in images
    ]
    missing = next((label for _, label in pairs if not label.is_file()), None)
    if missing is not None:
        raise EdgesegError(
            f"annotation {missing} is missing.",
            f"Pass a complete {LAYOUT_NAME} folder with the gtFine *{LABEL_SUFFIX} files.",
        )
    return PairedFiles(pairs, _label_spec(), transform)
