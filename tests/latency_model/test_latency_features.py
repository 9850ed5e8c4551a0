import numpy as np

from latency_cases import ONE_OF_EACH
from latency_model import layers as L
from latency_model.features import (FEATURE_NAMES, FEATURE_SCHEMA_VERSION, feature_dict,
                                    feature_matrix, flops)


def test_conv_flops_match_a_hand_count():
    # 3x3 conv 16 -> 32, stride 1, 8x8 output, no bias/norm/act: 8*8*32 outputs, each 16*9 MACs.
    conv = L.ConvNormAct(8, 8, 16, 32, 3, norm="none")
    assert flops(conv) == 2 * (8 * 8 * 32) * (16 * 9)
    # depthwise 3x3 on 16 channels, stride 2 from 8x8 (out 4x4), with bias: 9 MACs per output.
    dw = L.ConvNormAct(8, 8, 16, 16, 3, stride=2, groups=16, bias=True, norm="none")
    assert flops(dw) == 2 * (4 * 4 * 16) * 9 + 4 * 4 * 16


def test_linear_flops_match_a_hand_count():
    # 4x4 = 16 tokens, Linear(32 -> 24) with bias: 16*24 outputs, 32 MACs + 1 bias add each.
    proj = L.DecoderProjection(4, 4, 32, 24)
    assert flops(proj) == 16 * 24 * (2 * 32 + 1)


def test_alignment_flags_cover_every_channel_dim():
    f = feature_dict(L.MixFFN(4, 4, 24, 40, 24))
    assert (f["cin_mod4"], f["cin_mod8"], f["cin_mod16"]) == (1, 1, 0)
    assert (f["hidden_mod4"], f["hidden_mod8"], f["hidden_mod16"]) == (1, 1, 0)
    g = feature_dict(L.LayerNorm(4, 4, 6))
    assert (g["cout_mod4"], g["hidden_mod4"]) == (0, 0)  # 6 is unaligned; no hidden dim


def test_transformer_dims():
    f = feature_dict(L.Attention(16, 16, 64, 2, 32, 4))
    assert (f["tokens"], f["heads"], f["head_dim"], f["sr_ratio"], f["reduced_tokens"]) == \
        (256, 2, 32, 4, 16)
    assert f["hidden"] == 64 and f["type_attention"] == 1 and f["type_mix_ffn"] == 0


def test_matrix_follows_the_versioned_schema():
    x = feature_matrix(ONE_OF_EACH)
    assert FEATURE_SCHEMA_VERSION >= 1 and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert x.shape == (len(ONE_OF_EACH), len(FEATURE_NAMES))
    assert np.all(x[:, FEATURE_NAMES.index("flops")] > 0)
    assert np.all(x[:, [i for i, n in enumerate(FEATURE_NAMES) if n.startswith("type_")]]
                  .sum(axis=1) == 1)
