"""What the pruner must know about attention modules that a dependency trace cannot see.

torch_pruning couples q/k/v/proj channels correctly for pvt_v2 attention, but two facts live
only in the module's Python code: which channels form a head (so heads are pruned whole), and
which attributes the forward reads to reshape (`num_heads`, `head_dim`). `HEAD_LAYOUTS` is the
literal registry of those facts, keyed by module class, never by model.

timm's pvt_v2 `Attention.forward` breaks once heads or the reduction width are pruned;
`shrink` swaps in `PrunedPvtAttention` (latency_model/pvt_attention.py, shared with the latency
model's layer builder), which reads the widths from the tensors.

timm's efficientvit `LiteMLA` (multi-scale linear attention) is beyond the trace: its forward
reshapes the concatenated multi-scale q/k/v to (B, heads, 3*head_dim, H*W) and chunks the last
axis, and torch_pruning maps a head's qkv channels to indices outside the layer; the grouped
aggregation convs (3*heads groups) are not plain channel couplings either. `UNTRACED_HEADS`
lists, per class, every layer's channels of each head (`HeadSlice`); `prune.groups` builds the
head group from them and `prune.shrink` cuts those channel lists directly. LiteMLA's own forward
already reads the head count from the tensor widths, so no forward is swapped for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from timm.models import efficientvit_mit, pvt_v2
from torch import nn

from latency_model.pvt_attention import PrunedPvtAttention


@dataclass(frozen=True)
class HeadLayout:
    """Where the heads of an attention class are: output channel c of `query` is in head
    c // head_dim; `num_heads` is the attribute the forward reads for the head count."""

    query: str
    num_heads: str = "num_heads"
    head_dim: str = "head_dim"


HEAD_LAYOUTS: dict[type, HeadLayout] = {
    pvt_v2.Attention: HeadLayout(query="q"),
    PrunedPvtAttention: HeadLayout(query="q"),
}

# Classes whose stock forward assumes unpruned inner widths -> the drop-in that does not.
PRUNED_FORWARDS: dict[type, type] = {
    pvt_v2.Attention: PrunedPvtAttention,
}


@dataclass(frozen=True)
class HeadSlice:
    """One layer's share of every head: `channels[h]` are head h's output channels of `layer`
    (`producer`) or its input channels (a consumer); `layer` is a path below the attention."""

    layer: str
    producer: bool
    channels: tuple[tuple[int, ...], ...]


def lite_mla_heads(attention: efficientvit_mit.LiteMLA) -> tuple[HeadSlice, ...]:
    """Head h of a LiteMLA: qkv channels [3dh, 3d(h+1)) (its q, k and v), the same channels of
    every aggregation branch (depthwise conv, then the grouped conv whose groups 3h..3h+2 they
    are), and proj input channels s*heads*d + [dh, d(h+1)) for each branch s (the qkv itself
    first, then each scale). The first slice is the group's root."""
    d = attention.dim
    heads = attention.qkv.conv.out_channels // (3 * d)
    qkv = tuple(tuple(range(3 * d * h, 3 * d * (h + 1))) for h in range(heads))
    slices = [HeadSlice("qkv.conv", True, qkv)]
    if isinstance(attention.qkv.norm, nn.BatchNorm2d):
        slices.append(HeadSlice("qkv.norm", True, qkv))
    for i, branch in enumerate(attention.aggreg):
        slices += [HeadSlice(f"aggreg.{i}.{j}", True, qkv) for j in range(len(branch))]
    branches = 1 + len(attention.aggreg)
    proj = tuple(tuple(s * heads * d + h * d + j for s in range(branches) for j in range(d)) for h in range(heads))
    slices.append(HeadSlice("proj.conv", False, proj))
    return tuple(slices)


UNTRACED_HEADS: dict[type, Callable[[nn.Module], tuple[HeadSlice, ...]]] = {
    efficientvit_mit.LiteMLA: lite_mla_heads,
}


def head_layout(module: nn.Module) -> HeadLayout | None:
    """The head layout of an attention module, or None when the class is not registered."""
    return HEAD_LAYOUTS.get(type(module))


def untraced_heads(module: nn.Module) -> tuple[HeadSlice, ...] | None:
    """Each layer's channels per head of an attention the trace cannot follow, else None."""
    slices = UNTRACED_HEADS.get(type(module))
    return slices(module) if slices is not None else None


def adopt_pruned_forwards(model: nn.Module) -> int:
    """Swap in the width-agnostic forward for every registered attention module; returns how many."""
    swapped = 0
    for module in model.modules():
        replacement = PRUNED_FORWARDS.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
            swapped += 1
        if isinstance(module, pvt_v2.Attention):
            module.dim = module.q.in_features
    return swapped
