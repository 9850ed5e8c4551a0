"""Segmentation accuracy from a confusion matrix: per-class IoU and mIoU, ignore index 255.

The matrix counts pixels by (ground-truth class, predicted class), rows are ground truth. Pixels
labelled 255 are skipped. IoU of class c = TP / (TP + FP + FN). The mean (mIoU) is taken over the
classes that occur in the ground truth or in the prediction; a class absent from both has no IoU
(NaN) and is left out of the mean, so a small evaluation set that lacks some classes is not
scored as if the model had failed on them. (A class that is predicted but absent from the
ground truth has IoU 0 and does count.) Accumulating the matrix and dividing once at the end
gives the data-set mIoU of mmsegmentation and the Cityscapes scripts, not a mean of per-image scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [num_classes, num_classes] counts of (target, pred) pairs over non-ignored pixels."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {list(pred.shape)} differs from target shape {list(target.shape)}")
    keep = target != IGNORE_INDEX
    pred, target = pred[keep].long(), target[keep].long()
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target holds class {int(target.max())} outside 0..{num_classes - 1} (and not {IGNORE_INDEX})")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(matrix: torch.Tensor) -> torch.Tensor:
    """float64 IoU per class; NaN for a class absent from both ground truth and prediction."""
    matrix = matrix.double()
    true_pos = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - true_pos
    return torch.where(union > 0, true_pos / union.clamp(min=1), torch.full_like(union, float("nan")))


def mean_iou(matrix: torch.Tensor) -> float:
    """Mean IoU over the classes present in ground truth or prediction (NaN if there are none)."""
    return float(iou_per_class(matrix).nanmean())


@dataclass(frozen=True)
class SegScores:
    """What an evaluation reports: mIoU, per-class IoU (None = absent) and pixel accuracy."""

    miou: float
    iou: tuple[float | None, ...]
    pixel_accuracy: float
    pixels: int


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches; `scores()` summarises it.

    `matrix` is a plain tensor, so data-parallel workers can `all_reduce` it before `scores()`.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: `output` is logits [N, C, h, w] (upsampled bilinearly to the target size,
        as the models give 1/4 resolution) or class predictions [N, H, W]; `target` is [N, H, W]."""
        output, target = output.detach().cpu(), target.detach().cpu()
        if output.dim() == target.dim() + 1:
            if output.shape[-2:] != target.shape[-2:]:
                output = F.interpolate(output.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
            output = output.argmax(1)
        self.matrix += confusion_matrix(output, target, self.num_classes)

    def scores(self) -> SegScores:
        ious = iou_per_class(self.matrix)
        pixels = int(self.matrix.sum())
        return SegScores(
            miou=mean_iou(self.matrix),
            iou=tuple(None if torch.isnan(v) else float(v) for v in ious),
            pixel_accuracy=float(self.matrix.diag().sum()) / pixels if pixels else float("nan"),
            pixels=pixels,
        )
