"""Learnable gates: one score per unit of every group, and the mask that multiplies it.

Parameterization (one choice, documented): each unit k of a group has a score s_k and a keep
probability p_k = sigmoid(s_k / T). `probabilities()` exposes p per group, differentiable in
the scores; the latency budget turns them into a kept-count distribution.

The mask in the forward pass is hard: by default h_k = [s_k > 0] (equivalently p_k > 0.5), and
when a group would lose every unit its highest-scoring unit stays. A `select` function replaces
that threshold by a projection (BiP's top-k, here under a latency budget: the highest-scoring
units that fit it), so the hard network is at its budget at every step instead of wherever the
scores happen to cross zero. Gradients reach the scores through
p (straight-through estimator, Bengio et al. 2013; BiP's "popup scores" train the same way):
m = h + (p - p.detach()) has exactly the value h and the derivative dp/ds. Hard masks make the
searched network *be* the network `shrink` produces, so the outer loss is measured on the
real pruned architecture and masked == shrunk holds to rounding. `straight_through=False` uses
m = p instead: a smooth relaxation, for checks that need an exact hypergradient.

Where a mask acts: on the *inputs of the consumers* of a group (the convolutions and linears
that read its channels; a forward pre-hook multiplies those input channels), so every consumer
reads exact zeros in dropped channels and cutting them out changes nothing downstream. Masking
there, after any activation, keeps the straight-through gradient of a dropped unit alive
(masking a producer's output instead would put the zero in front of a ReLU, whose derivative
at 0 is 0). Producers keep computing dropped channels; only two things could carry their
values to kept channels, and neither does: BatchNorm and depthwise convolutions are per
channel, and LayerNorm, the one producer that mixes channels, is recomputed by its hook over
the kept channels only (what the shrunk LayerNorm computes; with soft masks, statistics
weighted by p). The LayerNorm statistics follow the hard decision without a gradient of their
own: the scores learn from the consumers' masks, and the norm stays one fused kernel (the
differentiable weighted norm, still used for soft masks, adds about ten full-size element-wise
passes per norm, forward and backward). When outputs are pruned
(a bare backbone), the model output still carries values in dropped channels; compare kept
channels only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prune.groups import PruneGroup
from prune.settings import PruneSettings, default
from runner.errors import EdgesegError


# scores per group name -> kept unit indices per group name (every group keeps at least one)
Select = Callable[[dict[str, torch.Tensor]], dict[str, list[int]]]


@dataclass(frozen=True)
class GateConfig:
    """`temperature` T of p = sigmoid(s/T); `init_score` starts every unit kept (p = sigmoid(init/T)),
    by default the run's `gate_init` (`prune.settings.default`)."""

    temperature: float = 1.0
    init_score: float = default("gate_init")
    straight_through: bool = True

    @classmethod
    def from_settings(cls, settings: PruneSettings) -> GateConfig:
        return cls(init_score=settings.gate_init)

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise EdgesegError(f"gate temperature must be > 0, got {self.temperature}.", "Pass a positive temperature.")


@dataclass(frozen=True)
class _Share:
    """One group's channels in one module's input: `units[i]` masks channel `channels[i]`;
    `channels` is None when the group owns every channel (then `units` is in channel order)."""

    group: int
    units: torch.Tensor
    channels: torch.Tensor | None


class Gates(nn.Module):
    """Scores for every unit of `groups`; `attach(model)` makes the masks act on the model.
    `select` (optional) chooses the kept units from the scores instead of the sign threshold."""

    def __init__(self, groups: Sequence[PruneGroup], config: GateConfig = GateConfig(), select: Select | None = None) -> None:
        super().__init__()
        if not groups:
            raise EdgesegError(
                "The model has no prunable groups.",
                "Check GroupSet.fixed for why each structure is kept whole, or use a smaller unit.",
            )
        self.groups = tuple(groups)
        self.config = config
        self.scores = nn.ParameterList(
            nn.Parameter(torch.full((g.num_units,), float(config.init_score))) for g in self.groups
        )
        self.select = select
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._current: list[torch.Tensor] = []

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Keep probability per unit, per group name (differentiable in the scores)."""
        return {g.name: torch.sigmoid(s / self.config.temperature) for g, s in zip(self.groups, self.scores)}

    def hard_masks(self) -> list[torch.Tensor]:
        """0/1 keep decision per unit (no gradient), at least one unit per group."""
        if self.select is not None:
            return self._selected_masks()
        masks = []
        for scores in self.scores:
            hard = (scores.detach() > 0).to(scores.dtype)
            if hard.sum() == 0:
                hard[scores.detach().argmax()] = 1.0
            masks.append(hard)
        return masks

    def _selected_masks(self) -> list[torch.Tensor]:
        kept = self.select({g.name: s.detach() for g, s in zip(self.groups, self.scores)})
        masks = []
        for group, scores in zip(self.groups, self.scores):
            mask = torch.zeros_like(scores.detach())
            mask[list(kept[group.name])] = 1.0
            masks.append(mask)
        return masks

    def masks(self) -> list[torch.Tensor]:
        """The masks that multiply the units now: straight-through hard masks, or p when soft."""
        probs = list(self.probabilities().values())
        if not self.config.straight_through:
            return probs
        return [hard + (p - p.detach()) for hard, p in zip(self.hard_masks(), probs)]

    def kept_units(self) -> dict[str, list[int]]:
        """The replay data for `shrink`: kept unit indices per group (JSON-able)."""
        return {g.name: hard.nonzero().flatten().tolist() for g, hard in zip(self.groups, self.hard_masks())}

    def kept_channels(self) -> dict[str, int]:
        """Channels the hard masks keep, per group."""
        return {g.name: len(g.channels_of(units)) for g, units in zip(self.groups, self.kept_units().values())}

    def attach(self, model: nn.Module) -> None:
        """Hook the masks into `model` (the model the groups were built from)."""
        if self._handles:
            raise EdgesegError("These gates are already attached to a model.", "Call detach() first.")
        modules = dict(model.named_modules())
        shares: dict[str, list[_Share]] = {}
        for index, group in enumerate(self.groups):
            for member in group.members:
                if member.producer and not isinstance(modules.get(member.module), nn.LayerNorm):
                    continue
                if member.module not in modules:
                    raise EdgesegError(
                        f"Group {group.name} names module {member.module}, which this model does not have.",
                        "Attach the gates to the model the groups were built from.",
                    )
                module = modules[member.module]
                device = next(module.parameters()).device
                channels = torch.tensor(member.channels, dtype=torch.long, device=device)
                units = torch.tensor(member.units, dtype=torch.long, device=device)
                if len(channels) == _in_width(module):
                    units, channels = units[torch.argsort(channels)], None
                shares.setdefault(member.module, []).append(_Share(index, units, channels))
        self._handles.append(model.register_forward_pre_hook(self._refresh))
        for name, module_shares in shares.items():
            module = modules[name]
            if isinstance(module, nn.LayerNorm):
                handle = module.register_forward_hook(self._norm_hook(module, module_shares))
            else:
                handle = module.register_forward_pre_hook(self._input_hook(module, module_shares))
            self._handles.append(handle)

    def detach(self) -> None:
        """Remove every hook; the model computes unmasked again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._current = []

    def _refresh(self, _module: nn.Module, _inputs: tuple) -> None:
        self._current = self.masks()

    def _channel_mask(self, width: int, shares: list[_Share]) -> torch.Tensor:
        """The mask over all `width` channels of one module (ones where no group applies)."""
        full = None
        for share in shares:
            values = self._current[share.group][share.units]
            if share.channels is not None:
                ones = torch.ones(width, dtype=values.dtype, device=values.device)
                values = ones.index_copy(0, share.channels, values)
            full = values if full is None else full * values
        return full

    def _input_hook(self, module: nn.Module, shares: list[_Share]):
        width = _in_width(module)
        channels_first = isinstance(module, (nn.Conv1d, nn.Conv2d))

        def hook(_mod: nn.Module, inputs: tuple) -> tuple:
            x, *rest = inputs
            mask = self._channel_mask(width, shares)
            if channels_first:
                mask = mask.view(1, -1, *([1] * (x.dim() - 2)))
            return (x * mask, *rest)

        return hook

    def _norm_hook(self, module: nn.LayerNorm, shares: list[_Share]):
        width = _in_width(module)
        soft = not self.config.straight_through

        def hook(mod: nn.LayerNorm, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            mask = self._channel_mask(width, shares)
            if soft:
                return _weighted_layer_norm(mod, inputs[0], mask)
            kept = mask.detach().nonzero().flatten()
            if len(kept) == width:
                return output
            return output.index_copy(-1, kept, _layer_norm_of(mod, inputs[0], kept))

        return hook


def _in_width(module: nn.Module) -> int:
    """Input channels of a consumer, or the normalised width of a LayerNorm."""
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[0]
    if isinstance(module, nn.Linear):
        return module.in_features
    return module.in_channels


def _layer_norm_of(norm: nn.LayerNorm, x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """What the shrunk LayerNorm computes: the norm of the kept channels alone."""
    weight = None if norm.weight is None else norm.weight[kept]
    bias = None if norm.bias is None else norm.bias[kept]
    return F.layer_norm(x.index_select(-1, kept), (len(kept),), weight, bias, norm.eps)


def _weighted_layer_norm(norm: nn.LayerNorm, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Soft masks: LayerNorm with mean and variance weighted by the keep probabilities."""
    kept = mask.sum()
    mean = (x * mask).sum(-1, keepdim=True) / kept
    centred = x - mean
    var = (centred * centred * mask).sum(-1, keepdim=True) / kept
    y = centred * torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        y = y * norm.weight
    if norm.bias is not None:
        y = y + norm.bias
    return y
