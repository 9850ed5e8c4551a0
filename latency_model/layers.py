"""Layer configs: the shapes of every layer the pruner can change, as the predictor sees them.

A layer config is a frozen, hashable dataclass holding exactly the dimensions the timm module
(or the SegFormer decoder piece) takes, so `layer_modules.build_layer` can instantiate it and
the pruner can describe a pruned model as a list of them. Covered:

- SegFormer / timm `pvt_v2` (`timm/models/pvt_v2.py`): `OverlapPatchEmbed` (conv + LayerNorm),
  `Attention` (efficient self-attention with spatial reduction `sr_ratio`), `MlpWithDepthwiseConv`
  (Mix-FFN), the blocks' LayerNorm; the all-MLP decoder: per-stage projection, bilinear
  upsample, concat + fuse 1x1 conv + BN + ReLU, classifier 1x1 conv.
- timm `efficientvit_mit.py` (EfficientViT-B0/B1): `ConvNormAct` (also depthwise, via `groups`),
  `DSConv`, `MBConv`, `LiteMLA` (lite multi-scale linear attention).

Residual adds belong to the layer that ends in them (`residual=True`), because TVM fuses the add
into that layer's last kernel; measuring it alone would count a kernel the model never runs.

Every config serialises to a JSON dict `{"type": kind, field: value, ...}` and has a stable
string `key` (kind plus every field in declaration order) used to resume a collection. Adding a
field changes keys: do it only with a new feature schema version (see `features.py`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from runner.errors import EdgesegError

_ACTS = ("none", "relu", "relu6", "hardswish")
_NORMS = ("none", "bn")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _valid_value(declared: Any, value: Any) -> bool:
    """Check a field against its declared type (annotations are strings here)."""
    if declared == "bool":
        return isinstance(value, bool)
    if declared == "str":
        return isinstance(value, str)
    if declared == "int":
        return _positive_int(value)
    return isinstance(value, tuple) and bool(value) and all(_positive_int(v) for v in value)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def timm_padding(kernel: int, stride: int) -> int:
    """The static padding timm's `create_conv2d` picks (`timm.layers.padding.get_padding`)."""
    return ((stride - 1) + (kernel - 1)) // 2


@dataclass(frozen=True)
class LayerConfig:
    """Base of all layer configs; subclasses are frozen dataclasses with int/bool/str fields."""

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _valid_value(f.type, value):
                raise EdgesegError(
                    f"Layer config {self.kind}: field {f.name}={value!r} is not a valid {f.type} "
                    "(integers must be positive, tuples non-empty).",
                    "Fix the layer config (the model description or the data file).",
                )
        self._check()

    def _check(self) -> None:
        """Type-specific consistency checks; raise EdgesegError."""

    def _fail(self, problem: str) -> None:
        raise EdgesegError(f"Layer config {self.key}: {problem}.", "Fix the layer config.")

    @property
    def key(self) -> str:
        """Stable, human-readable identity: `kind:f1=v1,f2=v2,...` in declaration order."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, tuple):
                text = "-".join(str(v) for v in value)
            else:
                text = str(value)
            parts.append(f"{f.name}={text}")
        return f"{self.kind}:" + ",".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def out_hw(self) -> tuple[int, int]:
        """Spatial size of the output (token layers keep their grid)."""
        return self.h, self.w  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PatchEmbed(LayerConfig):
    """timm pvt_v2 `OverlapPatchEmbed`: conv k x k, stride s, padding k//2, then LayerNorm(cout).

    Input NCHW (1, cin, h, w); output NHWC. The stem is k=7, s=4; later stages k=3, s=2.
    """

    kind: ClassVar[str] = "patch_embed"
    h: int
    w: int
    cin: int
    cout: int
    kernel: int
    stride: int

    def _check(self) -> None:
        if self.kernel <= self.stride:
            self._fail("timm's OverlapPatchEmbed needs kernel > stride")

    @property
    def out_hw(self) -> tuple[int, int]:
        p = self.kernel // 2
        return (_conv_out(self.h, self.kernel, self.stride, p),
                _conv_out(self.w, self.kernel, self.stride, p))


@dataclass(frozen=True)
class Attention(LayerConfig):
    """timm pvt_v2 `Attention` (efficient self-attention) on h*w tokens of width `dim`.

    q: dim -> heads*head_dim; spatial reduction (sr_ratio > 1): conv k=s=sr_ratio dim -> dim and
    LayerNorm(dim); kv: dim -> 2*heads*head_dim; proj: heads*head_dim -> dim; qkv bias on.
    Pruning heads makes heads*head_dim differ from dim, which timm's module cannot express,
    so `layer_modules` widens it in that case. Input (1, h*w, dim).
    """

    kind: ClassVar[str] = "attention"
    h: int
    w: int
    dim: int
    heads: int
    head_dim: int
    sr_ratio: int
    residual: bool = True

    def _check(self) -> None:
        if self.sr_ratio > min(self.h, self.w):
            self._fail("sr_ratio is larger than the token grid")

    @property
    def reduced_hw(self) -> tuple[int, int]:
        if self.sr_ratio == 1:
            return self.h, self.w
        return self.h // self.sr_ratio, self.w // self.sr_ratio


@dataclass(frozen=True)
class MixFFN(LayerConfig):
    """timm pvt_v2 `MlpWithDepthwiseConv`: fc1 cin->hidden, 3x3 depthwise conv on hidden, GELU,
    fc2 hidden->cout. Input (1, h*w, cin)."""

    kind: ClassVar[str] = "mix_ffn"
    h: int
    w: int
    cin: int
    hidden: int
    cout: int
    residual: bool = True

    def _check(self) -> None:
        if self.residual and self.cin != self.cout:
            self._fail("a residual Mix-FFN needs cin == cout")


@dataclass(frozen=True)
class LayerNorm(LayerConfig):
    """timm `LayerNorm` (eps 1e-6) over `dim` on h*w tokens: pvt_v2 norm1/norm2/stage norm."""

    kind: ClassVar[str] = "layer_norm"
    h: int
    w: int
    dim: int


@dataclass(frozen=True)
class DecoderProjection(LayerConfig):
    """SegFormer all-MLP decoder, per stage: NCHW -> tokens -> Linear(cin, cout) -> NCHW."""

    kind: ClassVar[str] = "decoder_proj"
    h: int
    w: int
    cin: int
    cout: int


@dataclass(frozen=True)
class Upsample(LayerConfig):
    """Bilinear resize (align_corners=False) of `channels` maps from h x w to out_h x out_w."""

    kind: ClassVar[str] = "upsample"
    h: int
    w: int
    channels: int
    out_h: int
    out_w: int

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.out_h, self.out_w


@dataclass(frozen=True)
class DecoderFuse(LayerConfig):
    """SegFormer decoder fuse: concat of `inputs` maps of `cin` channels each, then 1x1 conv
    (no bias) to cout + BatchNorm + ReLU. The concat is measured here, where it is consumed."""

    kind: ClassVar[str] = "decoder_fuse"
    h: int
    w: int
    cin: int
    inputs: int
    cout: int


@dataclass(frozen=True)
class ConvNormAct(LayerConfig):
    """timm efficientvit `ConvNormAct`: conv (timm padding, `groups`; groups == cin is a depthwise
    conv) + optional BatchNorm + optional activation. Also the SegFormer classifier
    (k=1, bias, no norm, no act) and EfficientViT's stem conv."""

    kind: ClassVar[str] = "conv"
    h: int
    w: int
    cin: int
    cout: int
    kernel: int
    stride: int = 1
    groups: int = 1
    bias: bool = False
    norm: str = "bn"
    act: str = "none"

    def _check(self) -> None:
        if self.cin % self.groups or self.cout % self.groups:
            self._fail("groups must divide cin and cout")
        if self.norm not in _NORMS or self.act not in _ACTS:
            self._fail(f"norm must be one of {_NORMS} and act one of {_ACTS}")

    @property
    def out_hw(self) -> tuple[int, int]:
        p = timm_padding(self.kernel, self.stride)
        return (_conv_out(self.h, self.kernel, self.stride, p),
                _conv_out(self.w, self.kernel, self.stride, p))


@dataclass(frozen=True)
class DSConv(LayerConfig):
    """timm efficientvit `DSConv` (as `build_local_block` makes it for expand_ratio == 1):
    depthwise k x k (stride) + [BN] + act, then 1x1 cin->cout + BN. `fewer_norm` swaps the first
    BN for a conv bias (the ViT stages). Optional residual add (stem blocks)."""

    kind: ClassVar[str] = "dsconv"
    h: int
    w: int
    cin: int
    cout: int
    kernel: int = 3
    stride: int = 1
    fewer_norm: bool = False
    act: str = "hardswish"
    residual: bool = True

    def _check(self) -> None:
        _check_block(self)

    @property
    def out_hw(self) -> tuple[int, int]:
        return _block_out_hw(self)


@dataclass(frozen=True)
class MBConv(LayerConfig):
    """timm efficientvit `MBConv`: 1x1 cin->mid + act, depthwise k x k on mid (stride) + act,
    1x1 mid->cout + BN; `fewer_norm` (ViT stages, EfficientVitBlock) uses biases instead of the
    first two BNs. Optional residual add."""

    kind: ClassVar[str] = "mbconv"
    h: int
    w: int
    cin: int
    mid: int
    cout: int
    kernel: int = 3
    stride: int = 1
    fewer_norm: bool = False
    act: str = "hardswish"
    residual: bool = True

    def _check(self) -> None:
        _check_block(self)

    @property
    def out_hw(self) -> tuple[int, int]:
        return _block_out_hw(self)


@dataclass(frozen=True)
class LiteMLA(LayerConfig):
    """timm efficientvit `LiteMLA` (lite multi-scale linear attention): qkv 1x1 conv cin ->
    3*heads*head_dim; per scale a depthwise k=scale conv + grouped 1x1 (3*heads groups); ReLU
    linear attention; proj 1x1 conv heads*head_dim*(1+len(scales)) -> cout + BN. timm's
    `dim` argument is `head_dim` here. Optional residual add (EfficientVitBlock)."""

    kind: ClassVar[str] = "lite_mla"
    h: int
    w: int
    cin: int
    cout: int
    heads: int
    head_dim: int
    scales: tuple[int, ...] = (5,)
    residual: bool = True

    def _check(self) -> None:
        if any(s % 2 == 0 for s in self.scales):
            self._fail("LiteMLA scales must be odd kernel sizes")
        if self.residual and self.cin != self.cout:
            self._fail("a residual LiteMLA needs cin == cout")


def _check_block(cfg: DSConv | MBConv) -> None:
    if cfg.act not in _ACTS:
        cfg._fail(f"act must be one of {_ACTS}")
    if cfg.residual and (cfg.stride != 1 or cfg.cin != cfg.cout):
        cfg._fail("a residual block needs stride 1 and cin == cout")


def _block_out_hw(cfg: DSConv | MBConv) -> tuple[int, int]:
    p = timm_padding(cfg.kernel, cfg.stride)
    return _conv_out(cfg.h, cfg.kernel, cfg.stride, p), _conv_out(cfg.w, cfg.kernel, cfg.stride, p)


LAYER_TYPES: dict[str, type[LayerConfig]] = {
    "patch_embed": PatchEmbed,
    "attention": Attention,
    "mix_ffn": MixFFN,
    "layer_norm": LayerNorm,
    "decoder_proj": DecoderProjection,
    "upsample": Upsample,
    "decoder_fuse": DecoderFuse,
    "conv": ConvNormAct,
    "dsconv": DSConv,
    "mbconv": MBConv,
    "lite_mla": LiteMLA,
}


def layer_from_dict(data: Mapping[str, Any]) -> LayerConfig:
    """Inverse of `LayerConfig.to_dict`; unknown types or fields are an EdgesegError."""
    kind = data.get("type")
    cls = LAYER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EdgesegError(
            f"Unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}.",
            "Use a layer config written by this version of edgeseg.",
        )
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k != "type"}
    unknown = set(values) - names
    missing = {f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING} - set(values)
    if unknown or missing:
        raise EdgesegError(
            f"Layer config of type {kind}: unknown fields {sorted(unknown)}, "
            f"missing fields {sorted(missing)}.",
            "Use a layer config written by this version of edgeseg.",
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values)


def int_fields(config: LayerConfig) -> tuple[str, ...]:
    """Names of the integer fields a model description may bind to a prunable group."""
    return tuple(f.name for f in dataclasses.fields(config) if f.type == "int")
