"""Shrinking: the dense smaller network computes what the masked network computed."""

from __future__ import annotations

import copy
import json

import pytest
import timm
import torch

from prune.attention import PrunedPvtAttention
from prune.gates import Gates
from prune.groups import build_groups
from prune.shrink import apply_plan, shrink
from helpers.random_gates import randomise_norms
from prune_tiny_nets import TinySegNet
from runner.errors import EdgesegError


def masked_then_shrunk(model, example, unit, prune_outputs=False, scores=None):
    """(masked output, plan, group set); the model is shrunk in place afterwards."""
    groups = build_groups(model, example, unit=unit, prune_outputs=prune_outputs)
    gates = Gates(groups.groups)
    with torch.no_grad():  # random scores: about half the units dropped
        for values in gates.scores:
            values.copy_(torch.randn_like(values))
    for name, values in (scores or {}).items():
        with torch.no_grad():
            gates.scores[gates.names.index(name)].copy_(torch.tensor(values))
    gates.attach(model)
    model.eval()
    with torch.no_grad():
        masked = model(example)
    plan = gates.kept_units()
    gates.detach()
    shrink(groups, plan)
    return masked, plan, groups


def test_tiny_net_shrinks_to_the_masked_function():
    torch.manual_seed(1)
    model, image = randomise_norms(TinySegNet()), torch.randn(2, 3, 16, 16)
    before = sum(p.numel() for p in model.parameters())
    masked, plan, groups = masked_then_shrunk(model, image, unit=4)
    with torch.no_grad():
        shrunk = model(image)
    assert torch.allclose(masked, shrunk, atol=1e-5)
    kept = {name: len(groups[name].channels_of(units)) for name, units in plan.items()}
    assert model.decoder.in_channels == kept["branch_left"] + kept["branch_right"] + kept["stem.0"]
    assert model.block_a[0].out_channels == kept["block_a.0"] < 32
    assert sum(p.numel() for p in model.parameters()) < before


def test_a_json_plan_replays_on_a_fresh_model():
    torch.manual_seed(2)
    model, image = randomise_norms(TinySegNet()), torch.randn(2, 3, 16, 16)
    fresh = copy.deepcopy(model)
    masked, plan, _ = masked_then_shrunk(model, image, unit=4)
    replayed = apply_plan(fresh, image, json.loads(json.dumps(plan)), unit=4).eval()
    with torch.no_grad():
        assert torch.allclose(replayed(image), masked, atol=1e-5)


def test_pvt_v2_b0_backbone_shrinks_to_the_masked_function():
    torch.manual_seed(3)
    model = timm.create_model("pvt_v2_b0", features_only=True, pretrained=False)
    image = torch.randn(2, 3, 64, 64)
    heads = {"stages_2.blocks.0.attn": [1.0, -1.0, 1.0, -1.0, -1.0]}  # keep heads 0 and 2 of 5
    masked, plan, groups = masked_then_shrunk(model, image, unit=8, prune_outputs=True, scores=heads)
    with torch.no_grad():
        shrunk = model(image)
    stage_widths = ["patch_embed.proj"] + [f"stages_{i}.downsample.proj" for i in (1, 2, 3)]
    for feature_masked, feature_shrunk, name in zip(masked, shrunk, stage_widths):
        kept = groups[name].channels_of(plan[name])
        assert feature_shrunk.shape[1] == len(kept)
        assert torch.allclose(feature_masked[:, kept], feature_shrunk, atol=1e-4)
    attention = model.stages_2.blocks[0].attn
    assert isinstance(attention, PrunedPvtAttention)
    assert attention.num_heads == 2 and attention.q.out_features == 64 and attention.kv.out_features == 128


def test_efficientvit_b0_backbone_shrinks_to_the_masked_function():
    torch.manual_seed(5)
    model = randomise_norms(timm.create_model("efficientvit_b0", features_only=True, pretrained=False))
    image = torch.randn(2, 3, 64, 64)
    heads = {"stages_3.blocks.1.context_module.main": [1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -1.0, -1.0]}  # 0, 3, 5
    masked, plan, groups = masked_then_shrunk(model, image, unit=8, prune_outputs=True, scores=heads)
    with torch.no_grad():
        shrunk = model(image)
    stage_widths = [f"stages_{i}.blocks.0.main.point_conv.conv" for i in range(4)]
    for feature_masked, feature_shrunk, name in zip(masked, shrunk, stage_widths):
        kept = groups[name].channels_of(plan[name])
        assert feature_shrunk.shape[1] == len(kept)
        assert torch.allclose(feature_masked[:, kept], feature_shrunk, atol=1e-4)
    # LiteMLA keeps 3 of 8 heads of 16 channels: q/k/v in both branches, 3 x 3 aggregation groups.
    attention = model.stages_3.blocks[1].context_module.main
    assert attention.qkv.conv.out_channels == 144 and attention.aggreg[0][1].groups == 9
    assert attention.aggreg[0][0].groups == 144 and attention.proj.conv.in_channels == 96


def test_plans_for_another_model_are_errors():
    torch.manual_seed(4)
    groups = build_groups(TinySegNet(), torch.randn(1, 3, 16, 16), unit=4)
    with pytest.raises(EdgesegError, match="does not have"):
        shrink(groups, {"encoder.conv": [0]})
    with pytest.raises(EdgesegError, match="has 2 units"):
        shrink(groups, {"branch_right": [0, 5]})
    with pytest.raises(EdgesegError, match="keeps no unit"):
        shrink(groups, {"branch_right": []})
