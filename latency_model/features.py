"""Feature vectors of layer configs: what the latency predictor sees.

Schema (version `FEATURE_SCHEMA_VERSION`, names in `FEATURE_NAMES`, saved with every predictor):

- nn-Meter kernel features: `h`, `w` (input), `out_h`, `out_w`, `cin`, `cout`, `hidden` (expanded
  or inner width: Mix-FFN hidden, MBConv mid, attention heads*head_dim, 0 if none), `kernel`,
  `stride`, `groups`, `flops`, `params`, `mem` (input + output + parameter elements);
- transformer dimensions: `tokens` (h*w), `heads`, `head_dim`, `sr_ratio`, `reduced_tokens`
  (keys/values after spatial reduction), 0 where they do not apply;
- channel alignment, since vectorised kernels step with it: `{cin,cout,hidden}_mod{4,8,16}` is 1
  when the dim is a positive multiple of 4/8/16;
- the layer type, one-hot: `type_<kind>` for every kind of `layers.LAYER_TYPES`.

FLOPs are counted analytically: a multiply-accumulate is 2 FLOPs, a bias add 1 per output;
element-wise work counts `ELEMENTWISE_FLOPS` per element (a convention, documented so that the
numbers are comparable, not a claim about any device). Params count learnable weights only.
Change anything above -> bump `FEATURE_SCHEMA_VERSION` (predictors check it on load).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from latency_model import layers as L

FEATURE_SCHEMA_VERSION = 1

ELEMENTWISE_FLOPS = {
    "layer_norm": 8, "batch_norm": 2, "gelu": 8, "relu": 1, "relu6": 1, "hardswish": 4,
    "none": 0, "add": 1, "softmax": 5, "bilinear": 7, "divide": 1, "scale": 1,
}

_BASE = ("h", "w", "out_h", "out_w", "cin", "cout", "hidden", "kernel", "stride", "groups",
         "flops", "params", "mem", "tokens", "heads", "head_dim", "sr_ratio", "reduced_tokens")
_ALIGNED = ("cin", "cout", "hidden")
_MODULI = (4, 8, 16)

FEATURE_NAMES: tuple[str, ...] = (
    _BASE
    + tuple(f"{dim}_mod{m}" for dim in _ALIGNED for m in _MODULI)
    + tuple(f"type_{kind}" for kind in L.LAYER_TYPES)
)


def conv_flops(out_h: int, out_w: int, cin: int, cout: int, kernel: int, groups: int = 1,
               bias: bool = False) -> int:
    """2 FLOPs per multiply-accumulate of a k x k conv, plus one add per output for the bias."""
    outputs = out_h * out_w * cout
    return 2 * outputs * (cin // groups) * kernel * kernel + (outputs if bias else 0)


def conv_params(cin: int, cout: int, kernel: int, groups: int = 1, bias: bool = False) -> int:
    return cout * (cin // groups) * kernel * kernel + (cout if bias else 0)


def linear_flops(tokens: int, cin: int, cout: int, bias: bool = True) -> int:
    return 2 * tokens * cin * cout + (tokens * cout if bias else 0)


def linear_params(cin: int, cout: int, bias: bool = True) -> int:
    return cin * cout + (cout if bias else 0)


def _ew(op: str, elements: int) -> int:
    return ELEMENTWISE_FLOPS[op] * elements


def _bn_params(norm: bool, channels: int) -> int:
    return 2 * channels if norm else 0


def _patch_embed(c: L.PatchEmbed) -> dict[str, int]:
    oh, ow = c.out_hw
    out = oh * ow * c.cout
    return dict(cin=c.cin, cout=c.cout, kernel=c.kernel, stride=c.stride,
                flops=(conv_flops(oh, ow, c.cin, c.cout, c.kernel, bias=True)
                       + _ew("layer_norm", out)),
                params=conv_params(c.cin, c.cout, c.kernel, bias=True) + 2 * c.cout)


def _attention(c: L.Attention) -> dict[str, int]:
    n = c.h * c.w
    inner = c.heads * c.head_dim
    rh, rw = c.reduced_hw
    nr = rh * rw
    flops = linear_flops(n, c.dim, inner) + linear_flops(nr, c.dim, 2 * inner)
    params = linear_params(c.dim, inner) + linear_params(c.dim, 2 * inner)
    if c.sr_ratio > 1:
        flops += conv_flops(rh, rw, c.dim, c.dim, c.sr_ratio, bias=True)
        flops += _ew("layer_norm", nr * c.dim)
        params += conv_params(c.dim, c.dim, c.sr_ratio, bias=True) + 2 * c.dim
    flops += _ew("scale", n * inner) + 2 * (2 * n * nr * inner) + _ew("softmax", c.heads * n * nr)
    flops += linear_flops(n, inner, c.dim) + (_ew("add", n * c.dim) if c.residual else 0)
    params += linear_params(inner, c.dim)
    return dict(cin=c.dim, cout=c.dim, hidden=inner, kernel=c.sr_ratio, stride=c.sr_ratio,
                flops=flops, params=params, tokens=n, heads=c.heads, head_dim=c.head_dim,
                sr_ratio=c.sr_ratio, reduced_tokens=nr)


def _mix_ffn(c: L.MixFFN) -> dict[str, int]:
    n = c.h * c.w
    flops = (linear_flops(n, c.cin, c.hidden) + conv_flops(c.h, c.w, c.hidden, c.hidden, 3,
                                                            c.hidden, bias=True)
             + _ew("gelu", n * c.hidden) + linear_flops(n, c.hidden, c.cout)
             + (_ew("add", n * c.cout) if c.residual else 0))
    params = (linear_params(c.cin, c.hidden) + conv_params(c.hidden, c.hidden, 3, c.hidden, True)
              + linear_params(c.hidden, c.cout))
    return dict(cin=c.cin, cout=c.cout, hidden=c.hidden, kernel=3, groups=c.hidden,
                flops=flops, params=params, tokens=n)


def _layer_norm(c: L.LayerNorm) -> dict[str, int]:
    n = c.h * c.w
    return dict(cin=c.dim, cout=c.dim, flops=_ew("layer_norm", n * c.dim), params=2 * c.dim,
                tokens=n)


def _decoder_proj(c: L.DecoderProjection) -> dict[str, int]:
    n = c.h * c.w
    return dict(cin=c.cin, cout=c.cout, flops=linear_flops(n, c.cin, c.cout),
                params=linear_params(c.cin, c.cout), tokens=n)


def _upsample(c: L.Upsample) -> dict[str, int]:
    return dict(cin=c.channels, cout=c.channels,
                flops=_ew("bilinear", c.out_h * c.out_w * c.channels), params=0)


def _decoder_fuse(c: L.DecoderFuse) -> dict[str, int]:
    cin = c.cin * c.inputs
    out = c.h * c.w * c.cout
    return dict(cin=cin, cout=c.cout, kernel=1,
                flops=(conv_flops(c.h, c.w, cin, c.cout, 1) + _ew("batch_norm", out)
                       + _ew("relu", out)),
                params=conv_params(cin, c.cout, 1) + 2 * c.cout)


def _conv(c: L.ConvNormAct) -> dict[str, int]:
    oh, ow = c.out_hw
    out = oh * ow * c.cout
    norm = c.norm == "bn"
    flops = (conv_flops(oh, ow, c.cin, c.cout, c.kernel, c.groups, c.bias)
             + (_ew("batch_norm", out) if norm else 0) + _ew(c.act, out))
    return dict(cin=c.cin, cout=c.cout, kernel=c.kernel, stride=c.stride, groups=c.groups,
                flops=flops,
                params=(conv_params(c.cin, c.cout, c.kernel, c.groups, c.bias)
                        + _bn_params(norm, c.cout)))


def _conv_stage(out_h: int, out_w: int, cin: int, cout: int, kernel: int, groups: int,
                bias: bool, norm: bool, act: str) -> tuple[int, int]:
    """(flops, params) of one timm `ConvNormAct` inside an EfficientViT block."""
    out = out_h * out_w * cout
    flops = conv_flops(out_h, out_w, cin, cout, kernel, groups, bias)
    flops += (_ew("batch_norm", out) if norm else 0) + _ew(act, out)
    return flops, conv_params(cin, cout, kernel, groups, bias) + _bn_params(norm, cout)


def _dsconv(c: L.DSConv) -> dict[str, int]:
    oh, ow = c.out_hw
    f1, p1 = _conv_stage(oh, ow, c.cin, c.cin, c.kernel, c.cin, c.fewer_norm, not c.fewer_norm,
                         c.act)
    f2, p2 = _conv_stage(oh, ow, c.cin, c.cout, 1, 1, False, True, "none")
    add = _ew("add", oh * ow * c.cout) if c.residual else 0
    return dict(cin=c.cin, cout=c.cout, kernel=c.kernel, stride=c.stride, groups=c.cin,
                flops=f1 + f2 + add, params=p1 + p2)


def _mbconv(c: L.MBConv) -> dict[str, int]:
    oh, ow = c.out_hw
    bias, norm = c.fewer_norm, not c.fewer_norm
    f1, p1 = _conv_stage(c.h, c.w, c.cin, c.mid, 1, 1, bias, norm, c.act)
    f2, p2 = _conv_stage(oh, ow, c.mid, c.mid, c.kernel, c.mid, bias, norm, c.act)
    f3, p3 = _conv_stage(oh, ow, c.mid, c.cout, 1, 1, False, True, "none")
    add = _ew("add", oh * ow * c.cout) if c.residual else 0
    return dict(cin=c.cin, cout=c.cout, hidden=c.mid, kernel=c.kernel, stride=c.stride,
                groups=c.mid, flops=f1 + f2 + f3 + add, params=p1 + p2 + p3)


def _lite_mla(c: L.LiteMLA) -> dict[str, int]:
    n = c.h * c.w
    total = c.heads * c.head_dim
    branches = 1 + len(c.scales)
    flops, params = _conv_stage(c.h, c.w, c.cin, 3 * total, 1, 1, False, False, "none")
    for scale in c.scales:
        flops += conv_flops(c.h, c.w, 3 * total, 3 * total, scale, 3 * total)
        flops += conv_flops(c.h, c.w, 3 * total, 3 * total, 1, 3 * c.heads)
        params += conv_params(3 * total, 3 * total, scale, 3 * total)
        params += conv_params(3 * total, 3 * total, 1, 3 * c.heads)
    heads = c.heads * branches
    d = c.head_dim
    flops += _ew("relu", 2 * n * total * branches)              # kernel_func on q and k
    flops += heads * (2 * 2 * n * d * (d + 1) + _ew("divide", n * d))  # k^T v, q (k^T v), divide
    f_proj, p_proj = _conv_stage(c.h, c.w, total * branches, c.cout, 1, 1, False, True, "none")
    add = _ew("add", n * c.cout) if c.residual else 0
    return dict(cin=c.cin, cout=c.cout, hidden=total, kernel=max(c.scales), groups=3 * total,
                flops=flops + f_proj + add, params=params + p_proj, tokens=n, heads=c.heads,
                head_dim=c.head_dim)


_COUNTERS: dict[type[L.LayerConfig], Callable[..., dict[str, int]]] = {
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


def flops(config: L.LayerConfig) -> int:
    """Analytic FLOPs of one layer (see the module docstring for the convention)."""
    return _COUNTERS[type(config)](config)["flops"]


def feature_dict(config: L.LayerConfig) -> dict[str, int]:
    """All features of one config, by name (the schema's order is `FEATURE_NAMES`)."""
    counted = _COUNTERS[type(config)](config)
    out_h, out_w = config.out_hw
    feats = dict.fromkeys(_BASE, 0)
    feats.update(h=config.h, w=config.w, out_h=out_h, out_w=out_w,  # type: ignore[attr-defined]
                 kernel=1, stride=1, groups=1)
    feats.update(counted)
    feats["mem"] = (config.h * config.w * feats["cin"]  # type: ignore[attr-defined]
                    + out_h * out_w * feats["cout"] + feats["params"])
    for dim in _ALIGNED:
        for m in _MODULI:
            feats[f"{dim}_mod{m}"] = int(feats[dim] > 0 and feats[dim] % m == 0)
    for kind in L.LAYER_TYPES:
        feats[f"type_{kind}"] = int(kind == config.kind)
    return feats


def feature_matrix(configs: Sequence[L.LayerConfig]) -> np.ndarray:
    """Rows of features in `FEATURE_NAMES` order, float64 (FLOPs exceed float32's exact range)."""
    rows = np.empty((len(configs), len(FEATURE_NAMES)), dtype=np.float64)
    for i, config in enumerate(configs):
        feats = feature_dict(config)
        rows[i] = [feats[name] for name in FEATURE_NAMES]
    return rows
