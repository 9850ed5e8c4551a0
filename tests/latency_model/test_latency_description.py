import pytest

from latency_model import layers as L
from latency_model.description import Group, LayerSlot, ModelDescription
from runner.errors import EdgesegError


def two_layers() -> ModelDescription:
    """A hand-written two-layer description: a Mix-FFN whose hidden width is pruned, followed by
    a decoder projection whose output width is pruned."""
    groups = (Group.aligned("mlp", 64, 16), Group("dec", 32, (8, 16, 32)))
    slots = (LayerSlot(L.MixFFN(8, 8, 16, 64, 16), {"hidden": "mlp"}, name="ffn"),
             LayerSlot(L.DecoderProjection(8, 8, 16, 32), {"cout": "dec"}, name="proj"))
    return ModelDescription(groups, slots)


def test_aligned_grid_includes_the_full_count():
    assert Group.aligned("g", 64, 16).grid == (16, 32, 48, 64)
    assert Group.aligned("g", 100, 16).grid == (16, 32, 48, 64, 80, 96, 100)
    assert Group.aligned("g", 5, 16).grid == (5,)


def test_config_at_sets_the_bound_fields():
    desc = two_layers()
    ffn, proj = desc.config_at({"mlp": 32, "dec": 8})
    assert ffn == L.MixFFN(8, 8, 16, 32, 16) and proj == L.DecoderProjection(8, 8, 16, 8)
    assert desc.config_at({"mlp": 48})[1] == L.DecoderProjection(8, 8, 16, 32)  # dec: full
    assert desc.full() == [s.template for s in desc.slots]


def test_json_round_trip(tmp_path):
    desc = two_layers()
    desc.save(tmp_path / "d.json")
    back = ModelDescription.load(tmp_path / "d.json")
    assert back == desc
    assert back.config_at({"mlp": 16}) == desc.config_at({"mlp": 16})


@pytest.mark.parametrize("kept, match", [({"mlp": 40}, "cannot keep 40"),
                                         ({"heads": 1}, "Unknown groups")])
def test_kept_counts_off_the_grid_or_unknown_are_errors(kept, match):
    with pytest.raises(EdgesegError, match=match):
        two_layers().config_at(kept)


def test_inconsistent_descriptions_are_errors():
    ffn = L.MixFFN(8, 8, 16, 64, 16)
    with pytest.raises(EdgesegError, match="differs from the full count"):
        ModelDescription((Group("mlp", 32, (16, 32)),), (LayerSlot(ffn, {"hidden": "mlp"}),))
    with pytest.raises(EdgesegError, match="unknown group"):
        ModelDescription((), (LayerSlot(ffn, {"hidden": "mlp"}),))
    with pytest.raises(EdgesegError, match="cannot be bound"):
        LayerSlot(ffn, {"residual": "mlp"})
    with pytest.raises(EdgesegError, match="strictly increasing"):
        Group("g", 8, (8, 4))
