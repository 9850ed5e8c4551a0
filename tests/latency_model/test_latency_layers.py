import json

import pytest

from latency_cases import ONE_OF_EACH
from latency_model import layers as L
from runner.errors import EdgesegError


def test_one_config_per_registered_type():
    assert sorted(c.kind for c in ONE_OF_EACH) == sorted(L.LAYER_TYPES)


@pytest.mark.parametrize("config", ONE_OF_EACH, ids=lambda c: c.kind)
def test_json_round_trip_keeps_config_and_key(config):
    back = L.layer_from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config and back.key == config.key and hash(back) == hash(config)


def test_keys_are_readable_and_distinct():
    a = L.Attention(8, 8, 64, 2, 32, 2)
    assert a.key == "attention:h=8,w=8,dim=64,heads=2,head_dim=32,sr_ratio=2,residual=true"
    assert L.Attention(8, 8, 64, 1, 32, 2).key != a.key
    assert len({c.key for c in ONE_OF_EACH}) == len(ONE_OF_EACH)


@pytest.mark.parametrize("make", [
    lambda: L.ConvNormAct(8, 8, 0, 8, 3),            # zero channels
    lambda: L.ConvNormAct(8, 8, "8", 8, 3),          # wrong type
    lambda: L.ConvNormAct(8, 8, 6, 8, 3, groups=4),  # groups must divide
    lambda: L.ConvNormAct(8, 8, 8, 8, 3, act="gelu"),
    lambda: L.PatchEmbed(8, 8, 3, 8, 2, 2),          # timm needs kernel > stride
    lambda: L.MixFFN(8, 8, 32, 64, 16),              # residual needs cin == cout
    lambda: L.MBConv(8, 8, 8, 16, 8, stride=2),      # residual needs stride 1
    lambda: L.LiteMLA(8, 8, 8, 8, 1, 8, scales=(4,)),
])
def test_invalid_configs_are_edgeseg_errors(make):
    with pytest.raises(EdgesegError):
        make()


def test_unknown_type_and_fields_are_edgeseg_errors():
    with pytest.raises(EdgesegError, match="Unknown layer type"):
        L.layer_from_dict({"type": "transformer", "h": 1})
    data = L.LayerNorm(4, 4, 8).to_dict()
    with pytest.raises(EdgesegError, match="unknown fields"):
        L.layer_from_dict({**data, "eps": 1})


def test_output_sizes_follow_timm_padding():
    assert L.PatchEmbed(64, 64, 3, 32, 7, 4).out_hw == (16, 16)
    assert L.PatchEmbed(15, 15, 32, 64, 3, 2).out_hw == (8, 8)
    assert L.ConvNormAct(15, 16, 3, 8, 3, 2).out_hw == (8, 8)
    assert L.Attention(16, 16, 32, 1, 32, 8).reduced_hw == (2, 2)
