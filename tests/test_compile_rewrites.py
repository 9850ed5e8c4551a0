"""The SegFormer decoder rewrite (compile/rewrites.py): found by structure, exact, and nowhere else.

Two decoders: ours (prune/models, 1x1-conv projections, no resize on the finest stage) on a timm
pvt_v2_b0 backbone, and a small independent one written here the way Hugging Face's
`SegformerDecodeHead` is (Linear on flattened tokens, every stage resized, the concat coarsest
first, fuse conv + BN + ReLU), so the pass is not tied to one model's graph; and Hugging Face
transformers' own SegformerForSemanticSegmentation, compiled end to end against ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compile.build import LoweringOptions, lower, model_flops
from compile.frontend import load_model
from compile.reference import reference_inputs
from compile.rewrites import rewrite_decoder
from helpers.lowered import HOST, run_lowered
from helpers.tiny_models import TinyAttention, TinyConvNet, export_onnx, export_pt2, export_tiny_hf_segformer


class TokenMLPDecoder(nn.Module):
    """A SegFormer-style decoder as Hugging Face writes it, on a toy 4-stage conv backbone."""

    def __init__(self, widths=(8, 12, 16, 24), embed: int = 16, classes: int = 5):
        super().__init__()
        chans = (3, *widths)
        self.stages = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], 3, stride=4 if i == 0 else 2, padding=1) for i in range(4)
        )
        self.mlps = nn.ModuleList(nn.Linear(c, embed) for c in widths)
        self.fuse = nn.Conv2d(4 * embed, embed, 1, bias=False)
        self.bn = nn.BatchNorm2d(embed)
        self.classifier = nn.Conv2d(embed, classes, 1)
        with torch.no_grad():  # running statistics that make the folded BN a real affine map
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for stage in self.stages:
            x = torch.relu(stage(x))
            features.append(x)
        size = features[0].shape[2:]
        maps = []
        for feat, mlp in zip(features, self.mlps):
            b, _, h, w = feat.shape
            tokens = mlp(feat.flatten(2).transpose(1, 2))
            maps.append(F.interpolate(tokens.permute(0, 2, 1).reshape(b, -1, h, w), size=size,
                                      mode="bilinear", align_corners=False))  # fmt: skip
        fused = torch.relu(self.bn(self.fuse(torch.cat(maps[::-1], dim=1))))
        return self.classifier(fused)


def _segformer_b0():
    from prune.models import create_model

    torch.manual_seed(0)
    return create_model("segformer-b0", num_classes=7)


def _token_decoder():
    torch.manual_seed(0)
    return TokenMLPDecoder()


def _check_rewrite(model, min_flop_saving: float) -> float:
    """The rewrite applies once, keeps the outputs, saves FLOPs; returns the worst abs error."""
    rewritten, decoders = rewrite_decoder(model.mod)
    assert decoders == 1
    inputs = reference_inputs(model)
    original, new = lower(model.mod, HOST), lower(rewritten, HOST)
    assert model_flops(new) < (1 - min_flop_saving) * model_flops(original)
    (expected,) = run_lowered(original, inputs)
    (actual,) = run_lowered(new, inputs)
    error = float(np.abs(actual - expected).max())
    assert error < 1e-4 * max(1.0, float(np.abs(expected).max()))
    return error


@pytest.mark.parametrize(
    "make, size, saving, export",
    [(_segformer_b0, 64, 0.4, export_onnx), (_token_decoder, 64, 0.3, export_onnx),
     (_token_decoder, 64, 0.3, export_pt2)],  # the pt2 importer's graph once, on the small model (segformer-b0's takes 30 s)
    ids=["segformer-b0-onnx", "token-mlp-decoder-onnx", "token-mlp-decoder-pt2"],
)
def test_decoder_rewrite_is_exact_and_saves_flops(tmp_path, make, size, saving, export):
    path = export(make(), tmp_path / f"m.{export.__name__[7:]}", shape=(1, 3, size, size))
    _check_rewrite(load_model(path, None, tmp_path / "w"), saving)


@pytest.mark.parametrize("make", [TinyConvNet, TinyAttention], ids=["conv", "attention"])
def test_graphs_without_the_decoder_are_left_alone(tmp_path, make):
    model = load_model(export_onnx(make(), tmp_path / "m.onnx"), None, tmp_path / "w")
    rewritten, decoders = rewrite_decoder(model.mod)
    assert decoders == 0 and rewritten is model.mod


class NotADecoder(nn.Module):
    """Concat + 1x1 conv, but one branch is a 3x3 conv: not a per-pixel map, so no rewrite."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.fuse = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.fuse(torch.cat([self.a(x), self.b(x)], dim=1))


def test_a_near_miss_is_left_alone(tmp_path):
    model = load_model(export_onnx(NotADecoder(), tmp_path / "m.onnx"), None, tmp_path / "w")
    assert rewrite_decoder(model.mod)[1] == 0


def test_compile_rewrites_only_when_asked_and_records_it(tmp_path, caplog):
    import json
    import logging

    from compile.api import compile_model

    path = export_onnx(_token_decoder(), tmp_path / "m.onnx", shape=(1, 3, 64, 64))
    caplog.set_level(logging.INFO, logger="compile.build")
    for rewrite in (False, True):
        result = compile_model(path, tmp_path / f"art-{rewrite}", HOST, tmp_path / "db", trials=0,
                               kernel_library=False, rewrite_decoder=rewrite)  # fmt: skip
        manifest = json.loads((result.artifact / "manifest.json").read_text())
        assert manifest["lowering"] == {"fast_math": True, "rewrite_decoder": rewrite, "prepack_weights": False}
    assert caplog.text.count("decoder rewrite: model FLOPs") == 1


def test_a_third_party_segformer_compiles_with_the_rewrite_and_matches_onnxruntime(host_farm, tmp_path, caplog):
    """Hugging Face transformers' SegformerForSemanticSegmentation (tiny config, random weights),
    exported to ONNX as a user of that library would: a graph this project never built."""
    import logging

    from compile.api import compile_model
    from runner.bench import bench_artifact
    from runner.timing import TimingProtocol

    path = export_tiny_hf_segformer(tmp_path / "hf-segformer.onnx")
    caplog.set_level(logging.INFO, logger="compile.rewrites")
    result = compile_model(path, tmp_path / "artifact", HOST, tmp_path / "db", trials=0, kernel_library=False,
                           transfer_candidates=0, rewrite_decoder=True)  # fmt: skip
    assert "into the fuse conv of 1 decoder(s)" in caplog.text
    check = bench_artifact(result.artifact, host_farm.device, TimingProtocol(warmup=0, repeat=1), check=True).check
    assert check.passed and check.max_abs_error < 1e-4
