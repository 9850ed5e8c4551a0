"""An EfficientViT backbone (timm `efficientvit_mit`, `features_only`) as latency-model slots.

timm's modules map one to one onto `latency_model.layers` configs: the stem `ConvNormAct` ->
`ConvNormAct`, a `ResidualBlock` around `DSConv`/`MBConv` -> `DSConv`/`MBConv` (with the
residual add when the block has a shortcut), and an `EfficientVitBlock` -> `LiteMLA` + `MBConv`.
Every width is read from the modules (so the shrunk model is described by the same code) and
bound to its `GroupSet` group: a block's input to the width owner of what came before, its
output to the group of its last conv, an MBConv's `mid` to its expand conv's group, a LiteMLA's
`heads` to its head group.
"""

from __future__ import annotations

from typing import Iterator

from timm.models import efficientvit_mit as evit
from torch import nn

from latency_model.description import LayerSlot
from latency_model.layers import ConvNormAct, DSConv, LiteMLA, MBConv
from prune.binding import Binder, slot
from runner.errors import EdgesegError

# Activation modules -> the `act` names of the layer configs.
_ACTS: dict[type, str] = {nn.Identity: "none", nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish"}

Stage = tuple[tuple[int, int], str | None]  # a feature map's (h, w) and the group owning its width


def is_efficientvit(backbone: nn.Module) -> bool:
    return any(isinstance(m, evit.EfficientVitStage) for m in backbone.modules())


def efficientvit_slots(backbone: nn.Module, input_size: int, binder: Binder) -> tuple[list[LayerSlot], list[Stage]]:
    """Slots of the stem and every stage in execution order, and each stage's output map."""
    walker = _Walker(binder, input_size)
    slots: list[LayerSlot] = []
    stages: list[Stage] = []
    for name, child in backbone.named_children():
        prefix = f"backbone.{name}"
        if isinstance(child, evit.EfficientVitStage):
            for index, block in enumerate(child.blocks):
                slots += walker.block(block, f"{prefix}.blocks.{index}")
            stages.append(((walker.h, walker.w), walker.owner))
        else:
            slots += walker.block(child, prefix)
    return slots, stages


class _Walker:
    """Follows the spatial size and the width owner from layer to layer."""

    def __init__(self, binder: Binder, input_size: int) -> None:
        self.binder, self.h, self.w, self.owner = binder, input_size, input_size, None

    def block(self, block: nn.Module, name: str) -> Iterator[LayerSlot]:
        if isinstance(block, evit.EfficientVitBlock):
            yield from self.block(block.context_module, f"{name}.context_module")
            yield from self.block(block.local_module, f"{name}.local_module")
            return
        if isinstance(block, evit.ConvNormAct):
            yield self._advance(_conv(block, self.h, self.w), name, block.conv)
            return
        main = block.main if isinstance(block, evit.ResidualBlock) else None
        residual = block.shortcut is not None if main is not None else False
        if isinstance(main, evit.MBConv):
            yield self._advance(_mbconv(main, self.h, self.w, residual), name, main.point_conv.conv,
                                mid=self.binder.channels(main.inverted_conv.conv, main.inverted_conv.conv.out_channels))
        elif isinstance(main, evit.DSConv):
            yield self._advance(_dsconv(main, self.h, self.w, residual), name, main.point_conv.conv)
        elif isinstance(main, evit.LiteMLA):
            config = _lite_mla(main, self.h, self.w, residual)
            yield self._advance(config, name, main.proj.conv, heads=self.binder.heads(main, config.heads))
        else:
            raise EdgesegError(f"{name}: no layer config describes a {type(main or block).__name__} yet.",
                               "Describe EfficientViT-B models built by prune.models.create_model.")

    def _advance(self, config, name: str, last: nn.Conv2d, **bindings: str | None) -> LayerSlot:
        """The slot of `config` (input bound to the current owner), then move past it."""
        cin, self.owner = self.owner, self.binder.channels(last, last.out_channels)
        self.h, self.w = config.out_hw
        return slot(config, name, cin=cin, cout=self.owner, **bindings)


def _act(module: nn.Module) -> str:
    if type(module) not in _ACTS:
        raise EdgesegError(f"no layer config has the activation {type(module).__name__}.",
                           "Describe EfficientViT-B models built by prune.models.create_model.")
    return _ACTS[type(module)]


def _conv(block: evit.ConvNormAct, h: int, w: int) -> ConvNormAct:
    conv = block.conv
    return ConvNormAct(h, w, conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.groups,
                       conv.bias is not None, "bn" if isinstance(block.norm, nn.BatchNorm2d) else "none",
                       _act(block.act))


def _fewer_norm(first: evit.ConvNormAct) -> bool:
    """timm's `fewer_norm` blocks (ViT stages) trade the first norms for conv biases."""
    return not isinstance(first.norm, nn.BatchNorm2d)


def _mbconv(block: evit.MBConv, h: int, w: int, residual: bool) -> MBConv:
    expand, depth = block.inverted_conv, block.depth_conv.conv
    return MBConv(h, w, expand.conv.in_channels, expand.conv.out_channels, block.point_conv.conv.out_channels,
                  depth.kernel_size[0], depth.stride[0], _fewer_norm(expand), _act(expand.act), residual)


def _dsconv(block: evit.DSConv, h: int, w: int, residual: bool) -> DSConv:
    depth = block.depth_conv
    return DSConv(h, w, depth.conv.in_channels, block.point_conv.conv.out_channels, depth.conv.kernel_size[0],
                  depth.conv.stride[0], _fewer_norm(depth), _act(depth.act), residual)


def _lite_mla(block: evit.LiteMLA, h: int, w: int, residual: bool) -> LiteMLA:
    qkv = block.qkv.conv
    scales = tuple(branch[0].kernel_size[0] for branch in block.aggreg)
    return LiteMLA(h, w, qkv.in_channels, block.proj.conv.out_channels, qkv.out_channels // (3 * block.dim),
                   block.dim, scales, residual)
