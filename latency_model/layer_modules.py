"""Instantiate a layer config as the eval-mode torch module the full model would run.

timm's own modules are used wherever they exist (pvt_v2 `OverlapPatchEmbed`, `Attention`,
`MlpWithDepthwiseConv`, `LayerNorm`; efficientvit `ConvNormAct`, `DSConv`, `MBConv`, `LiteMLA`,
`ResidualBlock`), so the graph TVM imports, and the kernels it fuses, are the ones of the
whole model. The SegFormer decoder pieces have no timm module; they are written here the way
the SegFormer reference decoder computes them. Weights are random: latency does not depend on
their values.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm as TimmLayerNorm
from timm.models import efficientvit_mit as evit
from timm.models import pvt_v2
from torch import nn

from latency_model.pvt_attention import PrunedPvtAttention

from latency_model import layers as L

_ACT_LAYERS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
}


class TokenLayer(nn.Module):
    """Call a pvt_v2 token module `m(x, feat_size)` with a fixed grid; add the residual if asked."""

    def __init__(self, module: nn.Module, feat_size: tuple[int, int], residual: bool) -> None:
        super().__init__()
        self.module = module
        self.feat_size = list(feat_size)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x, self.feat_size)
        return x + y if self.residual else y


class DecoderProjection(nn.Module):
    """SegFormer `MLP` plus the head's reshape: NCHW -> (N, C) tokens -> Linear -> NCHW."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        y = self.proj(x.flatten(2).transpose(1, 2))
        return y.permute(0, 2, 1).reshape(n, -1, h, w)


class Upsample(nn.Module):
    """SegFormer's `resize(..., mode='bilinear', align_corners=False)` to a fixed size."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


class DecoderFuse(nn.Module):
    """SegFormer `linear_fuse` on `torch.cat` of the stage maps; the maps arrive stacked along
    channels and are split and concatenated again so the concat kernel is part of the layer."""

    def __init__(self, cin: int, inputs: int, cout: int) -> None:
        super().__init__()
        self.inputs = inputs
        self.fuse = evit.ConvNormAct(cin * inputs, cout, 1, norm_layer=nn.BatchNorm2d,
                                     act_layer=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat(list(x.chunk(self.inputs, dim=1)), dim=1))


def _tokens(cfg: L.LayerConfig, dim: int) -> tuple[int, ...]:
    return (1, cfg.h * cfg.w, dim)  # type: ignore[attr-defined]


def _nchw(cfg: L.LayerConfig, channels: int) -> tuple[int, ...]:
    return (1, channels, cfg.h, cfg.w)  # type: ignore[attr-defined]


def _patch_embed(c: L.PatchEmbed) -> tuple[nn.Module, tuple[int, ...]]:
    m = pvt_v2.OverlapPatchEmbed(patch_size=c.kernel, stride=c.stride, in_chans=c.cin,
                                 embed_dim=c.cout)
    return m, _nchw(c, c.cin)


def _attention(c: L.Attention) -> tuple[nn.Module, tuple[int, ...]]:
    if c.heads * c.head_dim == c.dim:
        attn: nn.Module = pvt_v2.Attention(c.dim, num_heads=c.heads, sr_ratio=c.sr_ratio,
                                           qkv_bias=True)
    else:
        attn = PrunedPvtAttention.with_heads(c.dim, c.heads, c.head_dim, c.sr_ratio)
    return TokenLayer(attn, (c.h, c.w), c.residual), _tokens(c, c.dim)


def _mix_ffn(c: L.MixFFN) -> tuple[nn.Module, tuple[int, ...]]:
    mlp = pvt_v2.MlpWithDepthwiseConv(c.cin, c.hidden, c.cout)
    return TokenLayer(mlp, (c.h, c.w), c.residual), _tokens(c, c.cin)


def _layer_norm(c: L.LayerNorm) -> tuple[nn.Module, tuple[int, ...]]:
    return TimmLayerNorm(c.dim), _tokens(c, c.dim)


def _decoder_proj(c: L.DecoderProjection) -> tuple[nn.Module, tuple[int, ...]]:
    return DecoderProjection(c.cin, c.cout), _nchw(c, c.cin)


def _upsample(c: L.Upsample) -> tuple[nn.Module, tuple[int, ...]]:
    return Upsample((c.out_h, c.out_w)), _nchw(c, c.channels)


def _decoder_fuse(c: L.DecoderFuse) -> tuple[nn.Module, tuple[int, ...]]:
    return DecoderFuse(c.cin, c.inputs, c.cout), _nchw(c, c.cin * c.inputs)


def _conv(c: L.ConvNormAct) -> tuple[nn.Module, tuple[int, ...]]:
    m = evit.ConvNormAct(c.cin, c.cout, c.kernel, c.stride, groups=c.groups, bias=c.bias,
                         norm_layer=nn.BatchNorm2d if c.norm == "bn" else None,
                         act_layer=_ACT_LAYERS[c.act])
    return m, _nchw(c, c.cin)


def _residual(block: nn.Module, residual: bool) -> nn.Module:
    return evit.ResidualBlock(block, nn.Identity() if residual else None)


def _dsconv(c: L.DSConv) -> tuple[nn.Module, tuple[int, ...]]:
    # Arguments exactly as timm's efficientvit `build_local_block` passes them.
    bn = nn.BatchNorm2d
    block = evit.DSConv(c.cin, c.cout, c.kernel, c.stride,
                        use_bias=(True, False) if c.fewer_norm else False,
                        norm_layer=(None, bn) if c.fewer_norm else bn,
                        act_layer=(_ACT_LAYERS[c.act], None))
    return _residual(block, c.residual), _nchw(c, c.cin)


def _mbconv(c: L.MBConv) -> tuple[nn.Module, tuple[int, ...]]:
    bn = nn.BatchNorm2d
    act = _ACT_LAYERS[c.act]
    block = evit.MBConv(c.cin, c.cout, c.kernel, c.stride, mid_channels=c.mid,
                        use_bias=(True, True, False) if c.fewer_norm else False,
                        norm_layer=(None, None, bn) if c.fewer_norm else bn,
                        act_layer=(act, act, None))
    return _residual(block, c.residual), _nchw(c, c.cin)


def _lite_mla(c: L.LiteMLA) -> tuple[nn.Module, tuple[int, ...]]:
    block = evit.LiteMLA(c.cin, c.cout, heads=c.heads, dim=c.head_dim,
                         norm_layer=(None, nn.BatchNorm2d), scales=c.scales)
    return _residual(block, c.residual), _nchw(c, c.cin)


_BUILDERS: dict[type[L.LayerConfig], Callable] = {
    L.PatchEmbed: _patch_embed,
    L.Attention: _attention,
    L.MixFFN: _mix_ffn,
    L.LayerNorm: _layer_norm,
    L.DecoderProjection: _decoder_proj,
    L.Upsample: _upsample,
    L.DecoderFuse: _decoder_fuse,
    L.ConvNormAct: _conv,
    L.DSConv: _dsconv,
    L.MBConv: _mbconv,
    L.LiteMLA: _lite_mla,
}


def build_layer(config: L.LayerConfig) -> tuple[nn.Module, tuple[int, ...]]:
    """The eval-mode module of `config` and the shape of its single input (batch 1)."""
    module, shape = _BUILDERS[type(config)](config)
    return module.eval(), shape
