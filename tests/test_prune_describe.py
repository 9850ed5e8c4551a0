"""The model description: layer configs read from the modules, bound to the pruner's groups."""

from __future__ import annotations

import pytest
import torch

from latency_model.layers import Attention, MixFFN, PatchEmbed
from prune.describe import build_priced_groups, check_describable, describe_model, describe_network, prunable_groups
from helpers.random_gates import masked_output_and_plan
from prune.models import create_model
from prune.shrink import shrink
from prune_tiny_nets import TinySegNet
from runner.errors import EdgesegError

SIZE = 64


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    model = create_model("segformer-b0", num_classes=5)
    groups = build_priced_groups(model, SIZE, unit=8)
    return model, groups, describe_network(model, groups, SIZE)


def test_full_configs_match_the_unpruned_modules(b0):
    model, groups, description = b0
    configs = {slot.label: cfg for slot, cfg in zip(description.slots, description.full())}
    backbone = model.backbone
    assert configs["backbone.patch_embed"] == PatchEmbed(SIZE, SIZE, 3, 32, 7, 4)
    attn = backbone.stages_2.blocks[1].attn
    assert configs["backbone.stages_2.blocks.1.attn"] == Attention(4, 4, attn.q.in_features, attn.num_heads,
                                                                   attn.head_dim, 2)
    mlp = backbone.stages_3.blocks[0].mlp
    assert configs["backbone.stages_3.blocks.0.mlp"] == MixFFN(2, 2, 256, mlp.fc1.out_features, 256)
    assert configs["decoder.classifier"].cout == 5
    # 1 stem + 3 downsamples, 2 blocks x 4 layers x 4 stages, 4 stage norms; decoder 4 + 3 + 1 + 1
    assert len(description.slots) == 4 + 32 + 4 + 9
    # every described group is a gateable GroupSet group with one unit per grid step of its unit
    for group, pg in zip(description.groups, prunable_groups(groups, description)):
        assert pg.name == group.name and group.full % pg.num_units == 0
    names = {g.name for g in description.groups}
    assert "backbone.stages_1.blocks.0.attn" in names  # heads
    assert not any(n.endswith("attn.sr") for n in names)
    # the four decoder projections are one tied group: the width DecoderFuse prices as cin
    assert {n for n in names if n.startswith("decoder.proj")} == {"decoder.proj.0"}
    assert description.slots[-2].bindings == {"cin": "decoder.proj.0", "cout": "decoder.fuse.0"}


def test_shrunk_model_is_described_by_config_at_kept(b0):
    _, _, original = b0
    torch.manual_seed(0)
    model = create_model("segformer-b0", num_classes=5)
    groups = build_priced_groups(model, SIZE, unit=8)
    plan, kept = {}, {}
    for i, group in enumerate(prunable_groups(groups, original)):
        units = list(range(0, group.num_units, 2 + i % 2))  # every 2nd or 3rd unit
        plan[group.name] = units
        kept[group.name] = len(units) if group.kind == "heads" else len(group.channels_of(units))
    shrunk = shrink(groups, plan)
    again = describe_network(shrunk, build_priced_groups(shrunk, SIZE, unit=8), SIZE)
    assert again.full() == original.config_at(kept)
    assert again.full() != original.full()


def test_describe_model_by_name_and_unsupported_model():
    assert describe_model("segformer-b0", 32, unit=16).group("decoder.fuse.0").grid == tuple(range(16, 257, 16))
    with pytest.raises(EdgesegError, match="only SegFormer-style models"):
        check_describable(TinySegNet(), "tiny")


def test_tied_decoder_projections_shrink_to_what_the_masks_computed():
    torch.manual_seed(1)
    model = create_model("segformer-b0", num_classes=5).eval()
    groups = build_priced_groups(model, SIZE, unit=8)
    image = torch.randn(2, 3, SIZE, SIZE)
    masked, plan = masked_output_and_plan(model, groups, describe_network(model, groups, SIZE), image)
    shrink(groups, plan)
    kept = 8 * len(plan["decoder.proj.0"])
    assert [p.out_channels for p in model.decoder.proj] == [kept] * 4 and kept < 256
    assert model.decoder.fuse[0].in_channels == 4 * kept
    with torch.no_grad():
        assert torch.allclose(model(image), masked, atol=1e-5)
