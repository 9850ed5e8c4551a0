"""What the pruner must know about attention modules that a dependency trace cannot see.

torch_pruning couples q/k/v/proj channels correctly, but two facts live only in the module's
Python code: which channels form a head (so heads are pruned whole), and which attributes the
forward reads to reshape (`num_heads`, `head_dim`). This file is the one literal registry of
those facts, keyed by module class, never by model.

timm's pvt_v2 `Attention.forward` reshapes the attention output to the *input* width `C`
(`reshape(B, N, C)`) and the spatial-reduction output to `C` as well, so once heads or the
reduction width are pruned the stock forward breaks. `PrunedPvtAttention` is the same module
with those two reshapes written as "whatever width is left"; `shrink` swaps it in (same
parameters, same state_dict keys, still an instance of timm's class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models import pvt_v2
from torch import nn


@dataclass(frozen=True)
class HeadLayout:
    """Where the heads of an attention class are: output channel c of `query` is in head
    c // head_dim; `num_heads` is the attribute the forward reads for the head count."""

    query: str
    num_heads: str = "num_heads"
    head_dim: str = "head_dim"


class PrunedPvtAttention(pvt_v2.Attention):
    """timm pvt_v2 Attention whose forward reads the widths from the tensors, not from `C`."""

    def forward(self, x: torch.Tensor, feat_size: list[int]) -> torch.Tensor:
        B, N, C = x.shape
        H, W = feat_size
        q = self.q(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        if self.sr is not None:
            x = x.permute(0, 2, 1).reshape(B, C, H, W)
            if self.pool is not None:
                x = self.pool(x)
            x = self.sr(x).flatten(2).permute(0, 2, 1)
            x = self.norm(x)
            if self.act is not None:
                x = self.act(x)
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(B, N, -1)
        return self.proj_drop(self.proj(x))


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
