import itertools
import time

import numpy as np
import pytest
import torch

from latency_cases import toy_description
from latency_model import layers as L
from latency_model.budget import LatencyBudget, kept_count_distribution, poisson_binomial
from latency_model.description import Group, LayerSlot, ModelDescription
from latency_model.predictor import Predictor
from runner.errors import EdgesegError


class CountingPredictor(Predictor):
    """The real predictor, counting how often it is asked."""

    calls = 0

    def predict_ms(self, configs):
        type(self).calls += 1
        return super().predict_ms(configs)


@pytest.fixture()
def counting(trained_predictor):
    CountingPredictor.calls = 0
    return CountingPredictor.load(trained_predictor.directory)


def small_description() -> ModelDescription:
    """Two stages: a Mix-FFN (cin/cout on `dim`, hidden on `mlp`) and a projection to `dec`."""
    groups = (Group("dim", 32, (8, 16, 24, 32)), Group("mlp", 64, (16, 32, 48, 64)),
              Group("dec", 16, (8, 16)))
    slots = (LayerSlot(L.MixFFN(8, 8, 32, 64, 32), {"cin": "dim", "hidden": "mlp", "cout": "dim"}),
             LayerSlot(L.LayerNorm(8, 8, 32), {"dim": "dim"}),
             LayerSlot(L.DecoderProjection(8, 8, 32, 16), {"cin": "dim", "cout": "dec"}),
             LayerSlot(L.Upsample(8, 8, 16, 16, 16), {}))
    return ModelDescription(groups, slots)


def brute_force_poisson_binomial(p: np.ndarray) -> np.ndarray:
    out = np.zeros(len(p) + 1)
    for bits in itertools.product((0, 1), repeat=len(p)):
        out[sum(bits)] += np.prod([pi if b else 1 - pi for pi, b in zip(p, bits)])
    return out


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_poisson_binomial_is_exact(n):
    p = np.random.default_rng(n).uniform(size=n)
    got = poisson_binomial(torch.tensor(p, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, brute_force_poisson_binomial(p), atol=1e-12)


def test_kept_counts_map_to_the_grid_and_zero_to_its_smallest_entry():
    # 4 units of 8 channels on grid (16, 32): 0 or 1 or 2 units -> 16, 3 or 4 units -> 32.
    probs = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    np.testing.assert_allclose(kept_count_distribution(probs, (16, 32)).numpy(), [1.0, 0.0])
    probs = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    np.testing.assert_allclose(kept_count_distribution(probs, (16, 32)).numpy(), [0.0, 1.0])
    none_kept = kept_count_distribution(torch.zeros(4, dtype=torch.float64), (8, 16, 24, 32))
    np.testing.assert_allclose(none_kept.numpy(), [1.0, 0.0, 0.0, 0.0])
    soft = kept_count_distribution(torch.full((4,), 0.5, dtype=torch.float64), (8, 16, 24, 32))
    assert soft.sum().item() == pytest.approx(1.0)
    with pytest.raises(EdgesegError, match="cannot tile"):
        kept_count_distribution(torch.full((3,), 0.5), (8, 16, 32))


def _dists(desc, probs):
    return {g.name: kept_count_distribution(probs[g.name], g.grid) for g in desc.groups}


def test_gradients_match_finite_differences(counting):
    desc = small_description()
    budget = LatencyBudget(desc, counting)
    names = [g.name for g in desc.groups]
    units = {"dim": 4, "mlp": 8, "dec": 2}
    rng = np.random.default_rng(0)
    inputs = tuple(torch.tensor(rng.uniform(0.1, 0.9, units[n]), dtype=torch.float64,
                                requires_grad=True) for n in names)

    def expected(*probs):
        return budget.expected_ms(_dists(desc, dict(zip(names, probs))))

    assert torch.autograd.gradcheck(expected, inputs)


def test_hard_gates_give_the_latency_of_the_hard_configuration(counting):
    desc = toy_description()
    budget = LatencyBudget(desc, counting)
    rng = np.random.default_rng(1)
    for _ in range(3):
        probs, kept = {}, {}
        for g in desc.groups:
            units = g.full // (4 if g.full % 4 == 0 and g.full > 4 else 1)
            bits = rng.integers(0, 2, size=units).astype(np.float64)
            probs[g.name] = torch.tensor(bits)
            size = g.full // units
            kept[g.name] = min(v for v in g.grid if v >= bits.sum() * size)
        value = budget.expected_ms(_dists(desc, probs)).item()
        assert value == pytest.approx(budget.latency_ms(kept), rel=1e-9)
        configs = desc.config_at(kept)
        assert value == pytest.approx(float(counting.predict_ms(configs).sum()), rel=1e-5)


def test_unit_probabilities_give_the_same_as_their_distributions(counting):
    desc = small_description()
    budget = LatencyBudget(desc, counting)
    probs = {"dim": torch.tensor([0.9, 0.2, 0.5, 0.7]), "mlp": torch.full((4,), 0.3)}
    direct = budget.expected_ms({g: kept_count_distribution(p, desc.group(g).grid)
                                 for g, p in probs.items()})
    assert budget.expected_ms_from_probs(probs).item() == pytest.approx(direct.item())
    with pytest.raises(EdgesegError, match="Unknown groups"):
        budget.expected_ms_from_probs({"nope": torch.ones(2)})


def test_evaluations_are_table_lookups(counting):
    desc = toy_description()
    budget = LatencyBudget(desc, counting)
    assert counting.calls == 1  # one batched call fills every table
    dists = {g.name: torch.full((len(g.grid),), 1.0 / len(g.grid), requires_grad=True)
             for g in desc.groups}
    start = time.perf_counter()
    for _ in range(200):
        budget.expected_ms(dists).backward()
    per_call = (time.perf_counter() - start) / 200
    assert counting.calls == 1
    assert per_call < 0.05  # loose: far below a predictor call, never a tight timing


def test_min_latency_is_the_smallest_network(counting):
    desc = small_description()
    budget = LatencyBudget(desc, counting)
    smallest = budget.min_latency_ms()
    assert smallest == pytest.approx(float(counting.predict_ms(
        desc.config_at(desc.minimal_kept())).sum()), rel=1e-5)
    assert 0 < smallest < budget.full_latency_ms()


def test_uniform_distributions_give_the_mean_over_the_grid(counting):
    desc = small_description()
    budget = LatencyBudget(desc, counting)
    uniform = {g.name: torch.full((len(g.grid),), 1.0 / len(g.grid), dtype=torch.float64)
               for g in desc.groups}
    grids = [g.grid for g in desc.groups]
    mean = np.mean([budget.latency_ms(dict(zip([g.name for g in desc.groups], combo)))
                    for combo in itertools.product(*grids)])
    assert budget.expected_ms(uniform).item() == pytest.approx(mean, rel=1e-9)


def test_bad_inputs_are_errors(counting):
    budget = LatencyBudget(small_description(), counting)
    with pytest.raises(EdgesegError, match="Unknown groups"):
        budget.expected_ms({"heads": torch.ones(2)})
    with pytest.raises(EdgesegError, match="shape"):
        budget.expected_ms({"dim": torch.ones(3)})
    with pytest.raises(EdgesegError, match="cannot keep"):
        budget.latency_ms({"dim": 12})


def test_a_tally_changed_group_by_group_gives_the_same_float_as_a_fresh_lookup(counting):
    """The projection's fill moves one group at a time; its decisions must be the ones
    `latency_ms` would make, so the tally is compared with it for equality, not closeness."""
    desc = small_description()
    budget = LatencyBudget(desc, counting)
    kept = desc.full_kept()
    tally = budget.tally(kept)
    rng = np.random.default_rng(0)
    for _ in range(30):
        group = desc.groups[rng.integers(len(desc.groups))]
        count = int(rng.choice(group.grid))
        changed = {**kept, group.name: count}
        assert tally.ms_with(group.name, count) == budget.latency_ms(changed)
        assert tally.ms == budget.latency_ms(kept)  # asking changes nothing
        if rng.random() < 0.5:
            tally.set(group.name, count)
            kept = changed
        assert tally.ms == budget.latency_ms(kept)
    with pytest.raises(EdgesegError, match="cannot keep 12: allowed counts are"):
        tally.ms_with("dim", 12)
    with pytest.raises(EdgesegError, match="no such group"):
        tally.set("heads", 1)
