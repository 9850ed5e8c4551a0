"""Groups come out of the trace as the graph's couplings dictate, named by their leaders."""

from __future__ import annotations

import pytest
import timm
import torch

from prune.groups import build_groups
from prune_tiny_nets import TinySegNet
from runner.errors import EdgesegError


@pytest.fixture(scope="module")
def tiny_groups():
    torch.manual_seed(0)
    return build_groups(TinySegNet(), torch.randn(1, 3, 16, 16), unit=4)


def test_tiny_net_groups_are_named_by_leaders(tiny_groups):
    assert tiny_groups.names == ("stem.0", "block_a.0", "down", "branch_left", "branch_right", "decoder")
    assert [g.num_units for g in tiny_groups.groups] == [4, 8, 6, 4, 2, 4]


def test_residual_add_puts_both_convs_in_one_group(tiny_groups):
    group = tiny_groups["stem.0"]
    assert {m.module for m in group.producers} == {"stem.0", "stem.1", "block_b.0", "block_b.1"}
    consumers = {m.module for m in group.members if not m.producer}
    assert {"block_a.0", "down", "decoder"} <= consumers


def test_concatenation_maps_each_branch_to_its_offset(tiny_groups):
    def decoder_channels(name):
        (member,) = [m for m in tiny_groups[name].members if m.module == "decoder"]
        return member.channels

    assert decoder_channels("branch_left") == tuple(range(0, 16))
    assert decoder_channels("branch_right") == tuple(range(16, 24))
    assert decoder_channels("stem.0") == tuple(range(24, 40))


def test_the_output_layer_stays_whole(tiny_groups):
    assert tiny_groups.fixed == {"classifier": "reaches the model output"}


def test_pvt_v2_b0_groups():
    model = timm.create_model("pvt_v2_b0", features_only=True, pretrained=False)
    groups = build_groups(model, torch.randn(1, 3, 64, 64), unit=8, prune_outputs=True)
    embed = ["patch_embed.proj"] + [f"stages_{i}.downsample.proj" for i in (1, 2, 3)]
    blocks = [f"stages_{i}.blocks.{j}" for i in range(4) for j in range(2)]
    heads = [f"{b}.attn" for b in blocks if not b.startswith("stages_0")]
    reductions = [f"{b}.attn.sr" for b in blocks if not b.startswith("stages_3")]
    hidden = [f"{b}.mlp.fc1" for b in blocks]
    assert set(groups.names) == set(embed + heads + reductions + hidden)
    assert all(groups[h].kind == "heads" and groups[h].unit == 32 for h in heads)
    assert [groups[h].num_units for h in heads[::2]] == [2, 5, 8]
    # The stage width is one group across both blocks' residual adds.
    stage1 = {m.module for m in groups["stages_1.downsample.proj"].producers}
    assert {"stages_1.blocks.0.attn.proj", "stages_1.blocks.1.mlp.fc2", "stages_1.norm"} <= stage1
    # q, k/v and the projection input share the head group; heads of one head cannot be pruned.
    members = {m.module for m in groups["stages_2.blocks.0.attn"].members}
    assert members == {f"stages_2.blocks.0.attn.{n}" for n in ("q", "kv", "proj")}
    assert "single unit" in groups.fixed["stages_0.blocks.0.attn"]


def test_efficientvit_b0_groups():
    model = timm.create_model("efficientvit_b0", features_only=True, pretrained=False)
    groups = build_groups(model, torch.randn(1, 3, 64, 64), unit=8, prune_outputs=True)
    widths = [f"stages_{i}.blocks.0.main.point_conv.conv" for i in range(4)]  # stage widths across residuals
    hidden = [f"stages_{i}.blocks.{j}.main.inverted_conv.conv" for i in (0, 1) for j in (0, 1)]
    hidden += [f"stages_{i}.blocks.0.main.inverted_conv.conv" for i in (2, 3)]
    hidden += [f"stages_{i}.blocks.{j}.local_module.main.inverted_conv.conv" for i in (2, 3) for j in (1, 2)]
    heads = [f"stages_{i}.blocks.{j}.context_module.main" for i in (2, 3) for j in (1, 2)]
    assert set(groups.names) == set(widths + hidden + heads)
    assert groups.fixed == {"stem_in_conv.conv": "a single unit (width 8, unit 8)"}
    # Stage 2's width: the downsample's output and every residual branch's output (conv and norm).
    ends = ["blocks.0.main.point_conv"] + [f"blocks.{j}.{part}" for j in (1, 2)
                                           for part in ("context_module.main.proj", "local_module.main.point_conv")]
    assert {m.module for m in groups[widths[2]].producers} == {
        f"stages_2.{end}.{layer}" for end in ends for layer in ("conv", "norm")}
    # The inverted bottleneck: expand conv, depthwise conv, project conv's input.
    mb = groups["stages_3.blocks.1.local_module.main.inverted_conv.conv"]
    assert {m.module: m.producer for m in mb.members} == {
        "stages_3.blocks.1.local_module.main.inverted_conv.conv": True,
        "stages_3.blocks.1.local_module.main.depth_conv.conv": True,
        "stages_3.blocks.1.local_module.main.point_conv.conv": False}
    # LiteMLA heads (16 channels each): q, k, v in qkv and both branches, proj input of both branches.
    attn = groups["stages_3.blocks.2.context_module.main"]
    assert (attn.kind, attn.num_units, attn.unit, attn.traced) == ("heads", 8, 48, False)
    members = {m.module.removeprefix("stages_3.blocks.2.context_module.main."): m for m in attn.members}
    assert set(members) == {"qkv.conv", "aggreg.0.0", "aggreg.0.1", "proj.conv"}
    proj = members["proj.conv"]
    assert not proj.producer and [c for c, u in zip(proj.channels, proj.units) if u == 1] == [
        *range(16, 32), *range(144, 160)]


def test_groups_trace_under_no_grad_and_reject_a_zero_unit():
    with torch.no_grad():
        groups = build_groups(TinySegNet(), torch.randn(1, 3, 16, 16), unit=4)
    assert len(groups.groups) == 6
    with pytest.raises(EdgesegError, match="unit must be >= 1"):
        build_groups(TinySegNet(), torch.randn(1, 3, 16, 16), unit=0)
