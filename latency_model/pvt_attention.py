"""timm's pvt_v2 `Attention` with pruned heads: the one block the pruner and the latency model share.

timm's forward reshapes the attention output, and the spatial-reduction output, to the input
width `C`, which only holds while heads x head_dim == C. `PrunedPvtAttention` is the same
module with those reshapes written as "whatever width is left": `prune.shrink` swaps it in for
a pruned model (same parameters, same state_dict keys), and the latency model builds layers of
any kept head count with `PrunedPvtAttention.with_heads`, so both time the same code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import pvt_v2
from torch import nn


class PrunedPvtAttention(pvt_v2.Attention):
    """timm pvt_v2 Attention whose forward reads the widths from the tensors, not from `C`."""

    @classmethod
    def with_heads(cls, dim: int, heads: int, head_dim: int, sr_ratio: int) -> PrunedPvtAttention:
        """A fresh module with `heads` heads of `head_dim` on `dim`-wide tokens."""
        # timm asserts dim % num_heads == 0: build with one head, then set the kept heads.
        module = cls(dim, num_heads=1, sr_ratio=sr_ratio, qkv_bias=True)
        inner = heads * head_dim
        module.num_heads = heads
        module.head_dim = head_dim
        module.scale = head_dim**-0.5
        module.q = nn.Linear(dim, inner, bias=True)
        module.kv = nn.Linear(dim, 2 * inner, bias=True)
        module.proj = nn.Linear(inner, dim)
        return module

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
