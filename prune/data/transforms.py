"""The one image/label transform every data set shares.

Resize the shorter side to `input_size` (image bilinear with antialiasing, label nearest, pixel centres aligned; for
training times a random factor from `scale_range`, as SegFormer's 0.5-2.0 ratio range), then crop
a square of `input_size` (random position for training, centred otherwise), pad where the image
is smaller (image 0 after normalisation, i.e. the mean colour; label 255 = ignore), flip
left-right at random for training, and normalise with ImageNet mean/std (timm's backbones were
trained with it). Images come in as uint8 HWC arrays, labels as int64 HW arrays already mapped
to train ids; out go a float CHW tensor and an int64 HW tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from prune.metrics import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8-range float CHW image -> ImageNet-normalised CHW image."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255.0
    return (image - mean) / std


@dataclass(frozen=True)
class SegTransform:
    """Resize shorter side, square crop/pad to `input_size`; `train` adds a random crop position and
    flip, and a random rescale from `scale_range` (relative to the shorter side = `input_size`)."""

    input_size: int
    train: bool = False
    scale_range: tuple[float, float] = (1.0, 1.0)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.tensor(image).permute(2, 0, 1).float()  # a copy: PIL-backed arrays are read-only
        lab = torch.tensor(label).long()
        height, width = lab.shape
        scale = self.input_size / min(height, width)
        if self.train:
            low, high = self.scale_range
            scale *= low + (high - low) * float(torch.rand(()))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        lab = F.interpolate(lab[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
        img = normalize(img)
        img, lab = self._crop_or_pad(img, lab)
        if self.train and torch.rand(()) < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        return img.contiguous(), lab.contiguous()

    def _crop_or_pad(self, img: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        side = self.input_size
        out_img = torch.zeros(3, side, side)
        out_lab = torch.full((side, side), IGNORE_INDEX, dtype=torch.long)
        height, width = lab.shape
        top, left = self._offset(height - side), self._offset(width - side)
        crop_h, crop_w = min(side, height), min(side, width)
        out_img[:, :crop_h, :crop_w] = img[:, top : top + crop_h, left : left + crop_w]
        out_lab[:crop_h, :crop_w] = lab[top : top + crop_h, left : left + crop_w]
        return out_img, out_lab

    def _offset(self, slack: int) -> int:
        """Where the crop starts along one axis (0 when the image is no larger than the crop)."""
        if slack <= 0:
            return 0
        return int(torch.randint(0, slack + 1, ())) if self.train else slack // 2
