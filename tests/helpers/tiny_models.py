"""Tiny models for compile/runner tests: a conv net, an attention block, a Mix-FFN and Hugging Face's
tiny SegFormer, as ONNX or .pt2."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class TinyConvNet(nn.Module):
    """Conv + BN + ReLU, a depthwise conv and a 1x1 classifier: the shapes of a segmentation head."""

    def __init__(self, channels: int = 8, classes: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.head = nn.Conv2d(channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(x + self.dw(x))


class TinyAttention(nn.Module):
    """Patch embedding + one multi-head self-attention block + layer norm, SegFormer-style."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, c, h, w = x.shape
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return (tokens + out).transpose(1, 2).reshape(b, c, h, w)


class TinyMixFFN(nn.Module):
    """Patch embedding + SegFormer's Mix-FFN (Linear, depthwise 3x3, GELU, Linear): GELU is erf in ONNX."""

    def __init__(self, dim: int = 16, hidden: int = 32):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, c, h, w = x.shape
        tokens = self.fc1(x.flatten(2).transpose(1, 2))
        mixed = self.dw(tokens.transpose(1, 2).reshape(b, -1, h, w)).flatten(2).transpose(1, 2)
        out = self.fc2(nn.functional.gelu(mixed))
        return (out + x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)


class CeluNet(nn.Module):
    """Uses CELU, an ONNX operator TVM 0.27's importer does not convert."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.celu(self.conv(x))


def export_onnx(model: nn.Module, path: Path, shape=(1, 3, 16, 16), dynamic_batch: bool = False) -> Path:
    torch.manual_seed(0)
    model.eval()
    dynamic_axes = {"input": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        model, (torch.randn(*shape),), str(path), input_names=["input"], output_names=["output"],
        opset_version=17, dynamo=False, dynamic_axes=dynamic_axes,
    )  # fmt: skip
    return path


def export_pt2(model: nn.Module, path: Path, shape=(1, 3, 16, 16)) -> Path:
    torch.manual_seed(0)
    program = torch.export.export(model.eval(), (torch.randn(*shape),))
    torch.export.save(program, str(path))
    return path


class SegformerLogits(nn.Module):
    """Hugging Face's model returns an output object; an exporter of it returns the logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def export_tiny_hf_segformer(path: Path) -> Path:
    """Hugging Face's SegformerForSemanticSegmentation (tiny config, random weights, BN statistics
    that make the folded BN a real affine map) as ONNX at 64 px: a graph this project never built."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 48, 64], num_attention_heads=[1, 2, 2, 4],
                             decoder_hidden_size=32, num_labels=5)  # fmt: skip
    segformer = SegformerForSemanticSegmentation(config)
    with torch.no_grad():
        segformer.decode_head.batch_norm.running_mean.uniform_(-0.5, 0.5)
        segformer.decode_head.batch_norm.running_var.uniform_(0.5, 2.0)
    return export_onnx(SegformerLogits(segformer), path, shape=(1, 3, 64, 64))
