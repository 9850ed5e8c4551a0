"""SegFormer-style segmentation models: a timm backbone with `features_only=True` and the all-MLP
decoder (prune/models/decoder.py) sized from the backbone's `feature_info`.

The model returns logits at 1/4 of the input resolution (the resolution of the first backbone
stage), as SegFormer does; callers upsample them to the label size for the loss and for mIoU
(`prune.metrics.ConfusionMatrix.update` does it for metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from prune.models.decoder import MLPDecoder

OUTPUT_STRIDE = 4


class SegmentationModel(nn.Module):
    """Backbone (list of stage maps, finest first) followed by the decoder."""

    def __init__(self, backbone: nn.Module, decoder: MLPDecoder) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes, H/4, W/4] for an image batch [N, 3, H, W]."""
        return self.decoder(self.backbone(x))


def build_segmentation_model(
    backbone: str,
    num_classes: int,
    embed_dim: int | list[int] = 256,
    fuse_dim: int | None = None,
    dropout: float = 0.1,
    pretrained_file: Path | None = None,
    **backbone_kwargs: Any,
) -> SegmentationModel:
    """A timm `features_only` backbone plus a decoder whose input widths come from `feature_info`.

    `pretrained_file` is a local file of timm's own pretrained weights for `backbone` (see
    `weights.cached_backbone_file`); timm loads it before it strips the classifier head.
    """
    if pretrained_file is not None:
        backbone_kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained_file)})
    trunk = timm.create_model(backbone, features_only=True, **backbone_kwargs)
    reductions = trunk.feature_info.reduction()
    if reductions[0] != OUTPUT_STRIDE:
        raise ValueError(f"{backbone}'s first feature stage has stride {reductions[0]}, not {OUTPUT_STRIDE}")
    decoder = MLPDecoder(
        trunk.feature_info.channels(), num_classes, embed_dim=embed_dim, fuse_dim=fuse_dim, dropout=dropout
    )
    return SegmentationModel(trunk, decoder)
