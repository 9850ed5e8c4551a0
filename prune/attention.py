"""What the pruner must know about attention modules that a dependency trace cannot see.

torch_pruning couples q/k/v/proj channels correctly, but two facts live only in the module's
Python code: which channels form a head (so heads are pruned whole), and which attributes the
forward reads to reshape (`num_heads`, `head_dim`). This file is the one literal registry of
those facts, keyed by module class, never by model.

timm's pvt_v2 `Attention.forward` breaks once heads or the reduction width are pruned;
`shrink` swaps in `PrunedPvtAttention` (latency_model/pvt_attention.py, shared with the latency
model's layer builder), which reads the widths from the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models import pvt_v2
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


def head_layout(module: nn.Module) -> HeadLayout | None:
    """The head layout of an attention module, or None when the class is not registered."""
    return HEAD_LAYOUTS.get(type(module))


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
