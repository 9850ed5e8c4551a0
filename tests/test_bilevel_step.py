"""Bi-level steps on a tiny segmentation net lower the outer objective."""

from __future__ import annotations

import pytest
import timm
import torch

from prune.bilevel import BilevelConfig, BilevelOptimizer
from prune.gates import Gates
from prune.groups import build_groups
from prune_tiny_nets import TinySegNet, seg_loss
from runner.errors import EdgesegError


def teacher_split(seed: int):
    """Labels from a random teacher, so what the training split teaches carries to the held-out one."""
    torch.manual_seed(seed)
    teacher = TinySegNet().eval()
    images = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        labels = teacher(images).argmax(1)
    return (images[:4], labels[:4]), (images[4:], labels[4:])


def expected_fraction(gates: Gates) -> torch.Tensor:
    probs = list(gates.probabilities().values())
    return sum(p.mean() for p in probs) / len(probs)


@pytest.mark.parametrize("settings", [{"method": "first_order"}, {"method": "neumann", "neumann_steps": 2}])
def test_steps_reduce_the_outer_objective(settings):
    train, val = teacher_split(seed=0)
    model = TinySegNet()
    gates = Gates(build_groups(model, train[0], unit=4).groups)
    gates.attach(model)
    config = BilevelConfig(inner_lr=0.05, outer_lr=0.1, **settings)
    optimizer = BilevelOptimizer(model, gates, seg_loss, config)
    penalty = lambda g: 0.1 * expected_fraction(g)  # noqa: E731
    scores_before = [s.detach().clone() for s in gates.scores]
    outer = [optimizer.step(train, val, penalty) for _ in range(8)]
    objective = [s.val_loss + s.penalty for s in outer]
    assert objective[-1] < objective[0]
    assert outer[-1].train_loss < outer[0].train_loss
    assert any(not torch.equal(a, b) for a, b in zip(scores_before, gates.scores))


@pytest.mark.parametrize("method", ["first_order", "neumann"])
def test_a_step_without_a_held_out_batch_moves_the_weights_alone(method):
    train, val = teacher_split(seed=2)
    model = TinySegNet()
    gates = Gates(build_groups(model, train[0], unit=4).groups)
    gates.attach(model)
    optimizer = BilevelOptimizer(model, gates, seg_loss, BilevelConfig(method=method, neumann_steps=1))
    optimizer.step(train, val)
    scores = [s.detach().clone() for s in gates.scores]
    weights = [w.detach().clone() for w in optimizer.weights]
    stats = optimizer.step(train)
    assert stats.val_loss is None and stats.penalty is None and stats.train_loss > 0
    assert all(torch.equal(a, b) for a, b in zip(scores, gates.scores))
    assert any(not torch.equal(a, b) for a, b in zip(weights, optimizer.weights))
    assert optimizer.outer.state_dict()["state"][0]["step"] == 1  # one outer update, two inner ones
    assert optimizer.inner.state_dict()["state"][0]["momentum_buffer"] is not None


def test_neumann_runs_through_fused_attention():
    """pvt_v2 uses scaled_dot_product_attention, whose fused CPU kernel has no double backward."""
    torch.manual_seed(0)
    model = timm.create_model("pvt_v2_b0", features_only=True, pretrained=False)
    image = torch.randn(1, 3, 32, 32)
    gates = Gates(build_groups(model, image, unit=8, prune_outputs=True).groups)
    gates.attach(model)
    loss = lambda m, x: sum(f.pow(2).mean() for f in m(x))  # noqa: E731
    optimizer = BilevelOptimizer(model, gates, loss, BilevelConfig(method="neumann", neumann_steps=1))
    grads = optimizer.hypergradient(image, image)
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().max() > 0 for g in grads)


def test_state_round_trips():
    train, val = teacher_split(seed=1)
    model = TinySegNet()
    gates = Gates(build_groups(model, train[0], unit=4).groups)
    gates.attach(model)
    optimizer = BilevelOptimizer(model, gates, seg_loss)
    optimizer.step(train, val)
    resumed = BilevelOptimizer(model, gates, seg_loss)
    resumed.load_state_dict(optimizer.state_dict())
    assert resumed.outer.state_dict()["state"][0]["step"] == 1


def test_unknown_method_is_an_error():
    with pytest.raises(EdgesegError, match="Unknown bi-level method"):
        BilevelConfig(method="second_order")
