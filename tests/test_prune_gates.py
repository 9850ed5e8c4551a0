"""Gates: masked channels are exact zeros downstream, a unit always survives, p is differentiable."""

from __future__ import annotations

import pytest
import torch

from prune.gates import GateConfig, Gates
from prune.groups import build_groups
from prune.settings import default
from prune_tiny_nets import TinySegNet, seg_loss
from runner.errors import EdgesegError


@pytest.fixture()
def gated():
    torch.manual_seed(0)
    model = TinySegNet()
    groups = build_groups(model, torch.randn(1, 3, 16, 16), unit=4)
    gates = Gates(groups.groups)
    gates.attach(model)
    yield model, gates
    gates.detach()


def set_scores(gates: Gates, name: str, values: list[float]) -> None:
    with torch.no_grad():
        gates.scores[gates.names.index(name)].copy_(torch.tensor(values))


def test_masked_channels_are_zero_downstream(gated):
    model, gates = gated
    set_scores(gates, "stem.0", [1.0, -1.0, 1.0, -1.0])  # drop channels 4..7 and 12..15
    set_scores(gates, "branch_right", [-1.0, 1.0])  # drop channels 0..3 of branch_right
    seen = {}
    for name in ("block_a.0", "down", "decoder"):
        module = dict(model.named_modules())[name]
        module.register_forward_pre_hook(lambda _m, inputs, name=name: seen.__setitem__(name, inputs[0]))
    model(torch.randn(2, 3, 16, 16))
    dropped_stem = [*range(4, 8), *range(12, 16)]
    assert seen["block_a.0"][:, dropped_stem].abs().max() == 0
    assert seen["down"][:, dropped_stem].abs().max() == 0
    assert seen["decoder"][:, [24 + c for c in dropped_stem]].abs().max() == 0
    assert seen["decoder"][:, 16:20].abs().max() == 0  # branch_right's dropped unit, after the concat
    kept = seen["decoder"][:, 20:24]  # branch_right's kept unit: every channel of it still carries signal
    assert (kept.abs().amax(dim=(0, 2, 3)) > 0).all()


def test_at_least_one_unit_is_kept(gated):
    _, gates = gated
    with torch.no_grad():
        for scores in gates.scores:
            scores.copy_(-torch.arange(1.0, len(scores) + 1))
    kept = gates.kept_units()
    assert all(units == [0] for units in kept.values())
    assert gates.kept_channels()["block_a.0"] == 4


def test_keep_probabilities_are_differentiable(gated):
    _, gates = gated
    probs = gates.probabilities()
    start = torch.sigmoid(torch.tensor(default("gate_init")))  # the run's gate_init is the default
    assert torch.allclose(probs["down"], start.expand(6))
    sum(p.sum() for p in probs.values()).backward()
    assert all(s.grad is not None and s.grad.abs().min() > 0 for s in gates.scores)


def test_loss_gradient_reaches_dropped_units_through_the_straight_through_mask(gated):
    model, gates = gated
    set_scores(gates, "block_a.0", [1.0] * 4 + [-1.0] * 4)
    images, labels = torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    seg_loss(model, (images, labels)).backward()
    grad = gates.scores[gates.names.index("block_a.0")].grad
    assert grad[4:].abs().min() > 0  # dropped units still learn whether to come back


def test_soft_masks_scale_instead_of_cutting():
    torch.manual_seed(0)
    model = TinySegNet().eval()
    groups = build_groups(model, torch.randn(1, 3, 16, 16), unit=4)
    gates = Gates(groups.groups, GateConfig(straight_through=False, init_score=0.0))
    gates.attach(model)
    seen = []  # registered after the gates' hooks, so it sees what the layer reads
    model.block_a[0].register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    image = torch.randn(1, 3, 16, 16)
    model(image)
    gates.detach()
    model(image)
    assert torch.allclose(seen[0], 0.5 * seen[1])


def test_attaching_twice_is_an_error(gated):
    model, gates = gated
    with pytest.raises(EdgesegError, match="already attached"):
        gates.attach(model)


def test_the_configs_of_a_run_take_their_defaults_and_values_from_its_settings():
    from prune.bilevel import BilevelConfig
    from prune.settings import PruneSettings

    settings = PruneSettings(budget_ms=1.0)
    assert GateConfig.from_settings(settings) == GateConfig()
    assert BilevelConfig.from_settings(settings) == BilevelConfig()
    changed = PruneSettings(budget_ms=1.0, gate_init=2.0, outer_lr=0.3, lr=0.2, search_weight_decay=1e-3,
                            implicit_gradient="neumann", neumann_steps=2, neumann_alpha=0.05, implicit_scale=3.0)
    assert GateConfig.from_settings(changed).init_score == 2.0
    assert BilevelConfig.from_settings(changed) == BilevelConfig(
        method="neumann", inner_lr=0.2, outer_lr=0.3, weight_decay_lambda=1e-3, neumann_steps=2,
        neumann_alpha=0.05, implicit_scale=3.0)
