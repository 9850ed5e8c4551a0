"""Test cases of the latency_model tests: layer configs, a toy description, synthetic measurements.

Real collection needs a device; these tests check the learning machinery instead, on records
made by `synthetic_ms`, a documented analytic cost of a config:

    efficiency = product over channel dims d (cin, cout, hidden if any) of
                 1.0 if d % 16 == 0, 0.8 if d % 8 == 0, 0.65 if d % 4 == 0, else 0.5
    compute_ms = FLOPs / (40 GFLOP/s * efficiency)
    memory_ms  = 4 bytes * mem elements / (8 GB/s)
    ms         = max(compute_ms, memory_ms) + 0.01 ms per layer type's kernel count
    measured   = ms * exp(N(0, 0.01)), the noise seeded by the config key

A roofline with alignment steps: latency steps with alignment as it does on SIMD CPUs, which a
FLOPs-linear model cannot follow and the predictor must learn. No figure here is a measurement.
"""

from __future__ import annotations

import hashlib

import numpy as np

from latency_model import layers as L
from latency_model.description import Group, LayerSlot, ModelDescription
from latency_model.features import feature_dict
from latency_model.records import MeasurementRecord

KERNELS = {"patch_embed": 2, "attention": 6, "mix_ffn": 4, "layer_norm": 1, "decoder_proj": 2,
           "upsample": 1, "decoder_fuse": 2, "conv": 1, "dsconv": 2, "mbconv": 3, "lite_mla": 7}
TARGET = {"kind": "llvm", "num-cores": 2}


def _alignment(d: int) -> float:
    return 1.0 if d % 16 == 0 else 0.8 if d % 8 == 0 else 0.65 if d % 4 == 0 else 0.5


def synthetic_ms(config: L.LayerConfig, noise: bool = True) -> float:
    f = feature_dict(config)
    eff = np.prod([_alignment(f[d]) for d in ("cin", "cout", "hidden") if f[d] > 0])
    compute = f["flops"] / (40e9 * eff) * 1e3
    memory = 4 * f["mem"] / 8e9 * 1e3
    ms = max(compute, memory) + 0.01 * KERNELS[config.kind]
    if noise:
        seed = int(hashlib.sha256(config.key.encode()).hexdigest()[:8], 16)
        ms *= float(np.exp(np.random.default_rng(seed).normal(0.0, 0.01)))
    return ms


def make_record(config: L.LayerConfig, device_key: str = "host-cpu",
                target_preset: str = "host") -> MeasurementRecord:
    ms = synthetic_ms(config)
    return MeasurementRecord(config=config, target_preset=target_preset, target=TARGET,
                             device_key=device_key, median_ms=ms, std_ms=0.01 * ms,
                             run_ms=(0.99 * ms, ms, 1.01 * ms), tvm_version="0.27.0.post1",
                             edgeseg_version="0.1.0", tuning_trials=0)


def toy_description() -> ModelDescription:
    """A small description touching every layer type (not a real model): two pvt stages, a
    SegFormer-style decoder, and a few EfficientViT blocks, on a 64x64 input."""
    g = [Group.aligned("dim1", 32, 4), Group("heads1", 2, (1, 2)), Group.aligned("mlp1", 128, 8),
         Group.aligned("dim2", 64, 4), Group("heads2", 4, (1, 2, 3, 4)),
         Group.aligned("mlp2", 256, 8), Group.aligned("dec", 64, 4), Group.aligned("mb", 96, 4),
         Group("mla_heads", 4, (1, 2, 3, 4)), Group.aligned("ev", 16, 2)]
    S = LayerSlot
    slots = [
        S(L.PatchEmbed(64, 64, 3, 32, 7, 4), {"cout": "dim1"}),
        S(L.LayerNorm(16, 16, 32), {"dim": "dim1"}),
        S(L.Attention(16, 16, 32, 2, 16, 4), {"dim": "dim1", "heads": "heads1"}),
        S(L.MixFFN(16, 16, 32, 128, 32), {"cin": "dim1", "hidden": "mlp1", "cout": "dim1"}),
        S(L.PatchEmbed(16, 16, 32, 64, 3, 2), {"cin": "dim1", "cout": "dim2"}),
        S(L.Attention(8, 8, 64, 4, 16, 2), {"dim": "dim2", "heads": "heads2"}),
        S(L.MixFFN(8, 8, 64, 256, 64), {"cin": "dim2", "hidden": "mlp2", "cout": "dim2"}),
        S(L.LiteMLA(8, 8, 64, 64, 4, 16), {"cin": "dim2", "cout": "dim2", "heads": "mla_heads"}),
        S(L.DecoderProjection(16, 16, 32, 64), {"cin": "dim1", "cout": "dec"}),
        S(L.DecoderProjection(8, 8, 64, 64), {"cin": "dim2", "cout": "dec"}),
        S(L.Upsample(8, 8, 64, 16, 16), {"channels": "dec"}),
        S(L.DecoderFuse(16, 16, 64, 2, 64), {"cin": "dec", "cout": "dec"}),
        S(L.ConvNormAct(16, 16, 64, 19, 1, bias=True, norm="none"), {"cin": "dec"}),
        S(L.Upsample(16, 16, 19, 64, 64), {}),
        S(L.ConvNormAct(64, 64, 3, 16, 3, 2, act="hardswish"), {"cout": "ev"}),
        S(L.DSConv(32, 32, 16, 16), {"cin": "ev", "cout": "ev"}),
        S(L.MBConv(32, 32, 16, 96, 16), {"cin": "ev", "mid": "mb", "cout": "ev"}),
    ]
    return ModelDescription(tuple(g), tuple(slots))



ONE_OF_EACH = [
    L.PatchEmbed(32, 32, 3, 16, 7, 4),
    L.Attention(8, 8, 32, 1, 32, 4),
    L.MixFFN(8, 8, 32, 100, 32),
    L.LayerNorm(8, 8, 32),
    L.DecoderProjection(8, 8, 32, 24),
    L.Upsample(4, 4, 24, 8, 8),
    L.DecoderFuse(8, 8, 24, 4, 24),
    L.ConvNormAct(16, 16, 3, 8, 3, 2, act="hardswish"),
    L.DSConv(16, 16, 8, 8),
    L.MBConv(16, 16, 8, 20, 16, stride=2, fewer_norm=True, residual=False),
    L.LiteMLA(8, 8, 32, 32, 2, 16),
]
