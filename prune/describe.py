"""The bridge between the pruner and the latency model: a model as a `ModelDescription`.

`describe_network(model, group_set, input_size)` walks a SegFormer-style model (a timm `pvt_v2` or
`efficientvit_mit` backbone with `features_only`, the all-MLP decoder of
`prune.models.decoder`) and writes every layer as a `latency_model.layers` config whose widths
are read from the modules, so the same function describes the unpruned and the shrunk model.
Each channel or head field is bound to the `GroupSet` group that owns it (the names
`build_groups` gives, so the budget's distributions come straight from
`Gates.probabilities()`); a field whose width no group owns stays constant.

Groups and their grids: a channel group keeps multiples of its unit up to its full width; an
attention group keeps 1..num_heads heads (its units are heads). Only groups whose every layer
the layer configs can express are bound, and only bound groups are gated (`prunable_groups`).
The decoder projections feed one concatenation that `DecoderFuse` prices as `inputs` maps of one
common width, so `build_priced_groups` ties their groups into one (the decoder width). The
spatial-reduction width of an attention (`attn.sr` output) has no field of its own in
`latency_model.layers.Attention` (it is priced as dim -> dim), so it stays whole. The
EfficientViT walker lives in `prune/describe_efficientvit.py`; both share `prune.binding`.
"""

from __future__ import annotations

from typing import Iterator

import torch
from timm.models import pvt_v2
from torch import nn

from latency_model.description import LayerSlot, ModelDescription
from latency_model.layers import (Attention, ConvNormAct, DecoderFuse, DecoderProjection, LayerNorm, MixFFN,
                                  PatchEmbed, Upsample)
from prune.binding import Binder, slot
from prune.describe_efficientvit import Stage, efficientvit_slots, is_efficientvit
from prune.groups import GroupSet, PruneGroup, build_groups, tie
from prune.models import SegmentationModel, create_model
from prune.models.decoder import MLPDecoder
from runner.errors import EdgesegError


def describe_model(name: str, input_size: int, unit: int = 8, num_classes: int = 150) -> ModelDescription:
    """The description of registry model `name` at `input_size` x `input_size` (unpruned)."""
    model = create_model(name, num_classes=num_classes)
    check_describable(model, name)
    return describe_network(model, build_priced_groups(model, input_size, unit), input_size)


def build_priced_groups(model: nn.Module, input_size: int, unit: int) -> GroupSet:
    """`build_groups` with the decoder projections' groups tied into one (see module doc)."""
    group_set = build_groups(model, torch.zeros(1, 3, input_size, input_size), unit=unit)
    owners = []
    for index, proj in enumerate(model.decoder.proj):
        module = f"decoder.proj.{index}"
        owners.append(next((g.name for g in group_set.groups if g.kind == "channels" and g.width == proj.out_channels
                            and any(m.producer and m.module == module for m in g.members)), None))
    if None in owners or len(set(owners)) < 2:
        return group_set
    return tie(group_set, owners)


def describe_network(model: nn.Module, group_set: GroupSet, input_size: int) -> ModelDescription:
    """Every layer of `model` at `input_size` x `input_size` as a slot bound to `group_set`'s groups."""
    check_describable(model, "this model")
    binder = Binder(model, group_set)
    if is_efficientvit(model.backbone):
        slots, stages = efficientvit_slots(model.backbone, input_size, binder)
    else:
        slots = list(_pvt_slots(model.backbone, input_size, binder))
        stages = [(s.template.out_hw, s.bindings.get("cout")) for s in slots if isinstance(s.template, PatchEmbed)]
    slots += _decoder_slots(model.decoder, stages, binder)
    return ModelDescription(tuple(binder.groups.values()), tuple(slots))


def prunable_groups(group_set: GroupSet, description: ModelDescription) -> list[PruneGroup]:
    """The groups of `group_set` the description prices: the ones to gate."""
    return [group_set[g.name] for g in description.groups]


def check_describable(model: nn.Module, label: str) -> None:
    """Raise EdgesegError unless `describe_network` knows the model's architecture."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(model, SegmentationModel) or not (is_efficientvit(backbone) or any(
            isinstance(m, pvt_v2.PyramidVisionTransformerStage) for m in backbone.modules())):
        raise EdgesegError(
            f"{label}: only SegFormer-style models (timm pvt_v2 or EfficientViT backbones with the all-MLP "
            "decoder) can be described for the latency model.",
            "Use a model of prune.models.list_models().")


def _embed_slot(embed: pvt_v2.OverlapPatchEmbed, h: int, w: int, binder: Binder, name: str) -> LayerSlot:
    conv = embed.proj
    cfg = PatchEmbed(h, w, conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0])
    return slot(cfg, name, cout=binder.channels(conv, conv.out_channels))


def _pvt_slots(backbone: nn.Module, input_size: int, binder: Binder) -> Iterator[LayerSlot]:
    """Slots of the stem and every stage, in execution order; sizes follow the convs."""
    h = w = input_size
    stem = _embed_slot(backbone.patch_embed, h, w, binder, "backbone.patch_embed")
    yield stem
    h, w = stem.template.out_hw
    width_owner = stem.bindings.get("cout")
    stages = [(n, m) for n, m in backbone.named_children() if isinstance(m, pvt_v2.PyramidVisionTransformerStage)]
    for stage_name, stage in stages:
        prefix = f"backbone.{stage_name}"
        if isinstance(stage.downsample, pvt_v2.OverlapPatchEmbed):
            down = _embed_slot(stage.downsample, h, w, binder, f"{prefix}.downsample")
            yield slot(down.template, down.label, cin=width_owner, cout=down.bindings.get("cout"))
            h, w = down.template.out_hw
            width_owner = down.bindings.get("cout")
        for index, block in enumerate(stage.blocks):
            yield from _block_slots(block, h, w, width_owner, binder, f"{prefix}.blocks.{index}")
        dim = stage.norm.normalized_shape[0]
        yield slot(LayerNorm(h, w, dim), f"{prefix}.norm", dim=width_owner)


def _block_slots(block: pvt_v2.Block, h: int, w: int, dim_owner: str | None, binder: Binder,
                 name: str) -> Iterator[LayerSlot]:
    attn, mlp = block.attn, block.mlp
    dim = attn.q.in_features
    yield slot(LayerNorm(h, w, dim), f"{name}.norm1", dim=dim_owner)
    sr_ratio = attn.sr.kernel_size[0] if getattr(attn, "sr", None) is not None else 1
    heads = attn.num_heads
    yield slot(Attention(h, w, dim, heads, attn.head_dim, sr_ratio), f"{name}.attn",
                dim=dim_owner, heads=binder.heads(attn, heads))
    yield slot(LayerNorm(h, w, dim), f"{name}.norm2", dim=dim_owner)
    hidden = mlp.fc1.out_features
    yield slot(MixFFN(h, w, dim, hidden, dim), f"{name}.mlp", cin=dim_owner, cout=dim_owner,
                hidden=binder.channels(mlp.fc1, hidden))


def _decoder_slots(decoder: MLPDecoder, stages: list[Stage], binder: Binder) -> list[LayerSlot]:
    """Projections at each stage's size, upsampling to the first, fuse and classifier."""
    stage_sizes = [size for size, _ in stages]
    stage_owners = [owner for _, owner in stages]
    if len(stage_sizes) != len(decoder.proj):
        raise EdgesegError(f"The decoder has {len(decoder.proj)} projections for {len(stage_sizes)} stages.",
                           "Describe a model built by prune.models.create_model.")
    (h0, w0), slots = stage_sizes[0], []
    for i, (proj, (h, w), owner) in enumerate(zip(decoder.proj, stage_sizes, stage_owners)):
        width_owner = binder.channels(proj, proj.out_channels)
        slots.append(slot(DecoderProjection(h, w, proj.in_channels, proj.out_channels),
                           f"decoder.proj.{i}", cin=owner, cout=width_owner))
        if i:
            slots.append(slot(Upsample(h, w, proj.out_channels, h0, w0), f"decoder.upsample.{i}",
                               channels=width_owner))
    widths = {p.out_channels for p in decoder.proj}
    width_owners = {binder.channels(p, p.out_channels) for p in decoder.proj}
    cin_owner = width_owners.pop() if len(width_owners) == 1 else None  # tied, or none bound
    if len(widths) != 1:
        raise EdgesegError(f"The decoder projections have different widths {sorted(widths)}; DecoderFuse "
                           "prices one common width.", "Give every decoder projection the same width.")
    fuse = decoder.fuse[0]
    fuse_owner = binder.channels(fuse, fuse.out_channels)
    slots.append(slot(DecoderFuse(h0, w0, widths.pop(), len(decoder.proj), fuse.out_channels),
                       "decoder.fuse", cin=cin_owner, cout=fuse_owner))
    cls = decoder.classifier
    slots.append(slot(ConvNormAct(h0, w0, cls.in_channels, cls.out_channels, 1, bias=True, norm="none"),
                       "decoder.classifier", cin=fuse_owner))
    return slots
