import numpy as np

from latency_cases import toy_description
from latency_model import layers as L
from latency_model.sampling import (layer_configs, neighbour_configs, poorly_predicted,
                                    sample_kept)


def test_samples_are_deterministic_on_the_grid_and_start_with_both_ends():
    desc = toy_description()
    a, b = sample_kept(desc, 30, seed=3), sample_kept(desc, 30, seed=3)
    assert a == b and a != sample_kept(desc, 30, seed=4)
    assert a[:2] == [desc.full_kept(), desc.minimal_kept()] and len(a) == 32
    for kept in a:
        assert all(kept[g.name] in g.grid for g in desc.groups)


def test_samples_cover_each_grid_roughly_uniformly():
    desc = toy_description()
    values = [k["heads2"] for k in sample_kept(desc, 400, seed=0, include_ends=False)]
    counts = np.bincount(values)[1:]
    assert len(counts) == 4 and counts.min() > 60  # 100 expected per value


def test_layer_configs_are_distinct():
    desc = toy_description()
    configs = layer_configs(desc, sample_kept(desc, 10, seed=0))
    assert len({c.key for c in configs}) == len(configs)
    assert set(c.key for c in desc.full()) <= {c.key for c in configs}


def test_poorly_predicted_uses_relative_error():
    configs = [L.LayerNorm(4, 4, d) for d in (8, 16, 24)]
    bad = poorly_predicted(configs, np.array([1.05, 1.2, 0.8]), np.array([1.0, 1.0, 1.0]))
    assert bad == configs[1:]


def test_neighbours_stay_in_the_slot_on_the_grid_within_the_radius():
    desc = toy_description()
    mlp, dim = desc.group("mlp1"), desc.group("dim1")
    centre = L.MixFFN(16, 16, 16, 64, 16)  # dim1 = 16, mlp1 = 64
    out = neighbour_configs(desc, [centre], per_config=5, seed=0)
    assert out == neighbour_configs(desc, [centre], per_config=5, seed=0)
    assert 0 < len(out) <= 5 and centre not in out
    for c in out:
        assert isinstance(c, L.MixFFN) and c.cin == c.cout and (c.h, c.w) == (16, 16)
        assert abs(dim.index(c.cin) - dim.index(16)) <= 1
        assert abs(mlp.index(c.hidden) - mlp.index(64)) <= 1


def test_configs_no_slot_produces_get_no_neighbours():
    desc = toy_description()
    assert neighbour_configs(desc, [L.LayerNorm(3, 3, 7)], per_config=3, seed=0) == []
