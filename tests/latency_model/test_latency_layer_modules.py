import pytest
import torch
from timm.models import pvt_v2

from latency_cases import ONE_OF_EACH
from latency_model import layers as L
from latency_model.features import feature_dict
from latency_model.layer_modules import build_layer
from latency_model.pvt_attention import PrunedPvtAttention

EXTRA = [
    L.Attention(8, 8, 64, 3, 32, 2),     # pruned heads: 3 * 32 != 64
    L.Attention(8, 8, 64, 2, 32, 1),     # no spatial reduction
    L.ConvNormAct(16, 16, 8, 8, 3, groups=8, bias=True, norm="none"),  # depthwise, classifier-like
    L.DSConv(16, 16, 8, 8, fewer_norm=True),
    L.LiteMLA(8, 8, 32, 48, 3, 8, scales=(3, 5), residual=False),
]


@pytest.mark.parametrize("config", ONE_OF_EACH + EXTRA, ids=lambda c: c.key)
def test_build_layer_runs_and_matches_the_config(config):
    module, shape = build_layer(config)
    assert not module.training
    with torch.no_grad():
        y = module(torch.randn(shape))
    f = feature_dict(config)
    out_h, out_w = config.out_hw
    assert y.numel() == out_h * out_w * f["cout"]
    assert sum(p.numel() for p in module.parameters()) == f["params"]


def test_head_pruned_attention_computes_what_timm_computes_unpruned():
    timm_attn = pvt_v2.Attention(64, num_heads=2, sr_ratio=2).eval()
    ours = PrunedPvtAttention.with_heads(64, heads=2, head_dim=32, sr_ratio=2).eval()
    ours.load_state_dict(timm_attn.state_dict())
    x = torch.randn(1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, [8, 8]), timm_attn(x, [8, 8]))


def test_unpruned_attention_uses_timms_own_module():
    module, _ = build_layer(L.Attention(8, 8, 64, 2, 32, 2))
    assert type(module.module) is pvt_v2.Attention


def test_pruned_attention_exports_with_torch_export():
    module, shape = build_layer(L.Attention(8, 8, 64, 3, 32, 2))
    exported = torch.export.export(module, (torch.randn(shape),))
    assert any(n.op == "call_function" for n in exported.graph.nodes)
