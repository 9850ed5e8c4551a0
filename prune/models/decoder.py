"""The SegFormer all-MLP decoder (Xie et al., NeurIPS 2021, "SegFormer: Simple and Efficient
Design for Semantic Segmentation with Transformers", github.com/NVlabs/SegFormer `segformer_head.py`).

Each backbone stage is projected to a common width, upsampled to the first (1/4) stage, and the
stack is fused by a 1x1 conv + BN + ReLU, then classified by a 1x1 conv. The per-pixel "linear"
projections of the paper are written as 1x1 convs (the same arithmetic on NCHW maps, without the
flatten/transpose round trip), so every layer here is a Conv2d that a pruner can slice.

The forward pass reads every width from the tensors it gets, never from stored integers: a pruner
may cut channels out of any of these convs in place and the module keeps working.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """1x1 conv without bias, BatchNorm, ReLU: the decoder's fuse layer."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class MLPDecoder(nn.Module):
    """All-MLP decoder over a list of stage maps, finest (1/4) first.

    `in_channels` are the backbone's per-stage widths (the factory reads them from timm's
    `feature_info`). `embed_dim` is the common projection width, or one width per stage for a
    pruned decoder; `fuse_dim` (default: `embed_dim`, or its first entry) is the fuse layer's width.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        embed_dim: int | Sequence[int] = 256,
        fuse_dim: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        proj_dims = [embed_dim] * len(in_channels) if isinstance(embed_dim, int) else list(embed_dim)
        if len(proj_dims) != len(in_channels):
            raise ValueError(f"{len(proj_dims)} projection widths for {len(in_channels)} stages")
        fuse_dim = fuse_dim if fuse_dim is not None else proj_dims[0]
        self.proj = nn.ModuleList(nn.Conv2d(c, d, kernel_size=1) for c, d in zip(in_channels, proj_dims))
        self.fuse = ConvBNReLU(sum(proj_dims), fuse_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(fuse_dim, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at the resolution of `features[0]`."""
        size = features[0].shape[-2:]
        maps = [self.proj[0](features[0])]
        for proj, feat in zip(self.proj[1:], features[1:]):
            maps.append(F.interpolate(proj(feat), size=size, mode="bilinear", align_corners=False))
        # Stage order, finest first (SegFormer puts the coarsest first: a permutation of fuse weights).
        x = self.fuse(torch.cat(maps, dim=1))
        return self.classifier(self.dropout(x))


class MergedDecoder(nn.Module):
    """An MLPDecoder in the form `python -m compile --rewrite-decoder` builds (compile/rewrites.py):
    each stage's projection and its columns of the fuse conv merged into one 1x1 conv at the
    stage's own resolution, then resized and summed. Same outputs up to float rounding, about half
    of segformer-b0's FLOPs at 256 px. Benchmarks time ONNX Runtime and PyTorch on it, so that a
    comparison separates what the rewrite earns from what the compiler earns."""

    def __init__(self, decoder: MLPDecoder) -> None:
        super().__init__()
        fuse_weight = decoder.fuse[0].weight.detach().double()[:, :, 0, 0]  # the fuse conv has no bias
        columns = fuse_weight.split([proj.out_channels for proj in decoder.proj], dim=1)
        self.stages = nn.ModuleList()
        for proj, w in zip(decoder.proj, columns):
            merged = nn.Conv2d(proj.in_channels, fuse_weight.shape[0], kernel_size=1)
            with torch.no_grad():
                merged.weight.copy_((w @ proj.weight.detach().double()[:, :, 0, 0])[:, :, None, None])
                merged.bias.copy_(w @ proj.bias.detach().double())
            self.stages.append(merged)
        self.post = nn.Sequential(*list(decoder.fuse)[1:])  # BN, ReLU
        self.dropout = decoder.dropout
        self.classifier = decoder.classifier

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at the resolution of `features[0]`; a bilinear resize keeps a constant, so each
        stage's bias may go before it."""
        size = features[0].shape[-2:]
        x = self.stages[0](features[0])
        for merged, feat in zip(self.stages[1:], features[1:]):
            x = x + F.interpolate(merged(feat), size=size, mode="bilinear", align_corners=False)
        return self.classifier(self.dropout(self.post(x)))
