"""bench/synthetic_learnability.py: a smoke run on synthetic-hard (tiny input, one step; the
figures themselves are the benchmark's, never asserted here) and its width-scaled variants."""

from __future__ import annotations

import json

import torch

from bench.synthetic_learnability import build_variant, capacity_checks, main


def test_a_width_variant_scales_every_stage_and_the_decoder_and_keeps_the_heads():
    model = build_variant("segformer-b0@0.75", num_classes=40)
    assert model.backbone.feature_info.channels() == [24, 48, 120, 192]  # 0.75 x (32, 64, 160, 256)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 40, 8, 8)
    full = build_variant("segformer-b0", num_classes=40)
    assert sum(p.numel() for p in model.parameters()) < 0.7 * sum(p.numel() for p in full.parameters())


def test_the_learnability_bench_compares_the_models_on_synthetic_hard(tmp_path, capsys):
    out = tmp_path / "learn.json"
    assert main(["--data", "synthetic-hard", "--models", "segformer-b0,segformer-b0@0.75", "--steps", "1",
                 "--batch-size", "1", "--val-size", "2", "--input-size", "32", "--threads", "1", "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["data"] == "synthetic-hard" and report["num_classes"] == 40 and report["budget"] == "1 steps"
    assert [r["model"] for r in report["rows"]] == ["segformer-b0", "segformer-b0@0.75"]
    assert all(r["steps"] == 1 and len(r["iou_per_class"]) == 40 for r in report["rows"])
    assert set(report["capacity_mIoU_points"]) == {"b0_minus_b0@0.75"}
    assert "capacity (mIoU points): b0_minus_b0@0.75" in capsys.readouterr().out
    assert capacity_checks([{"model": "segformer-b1", "miou": 0.5}, {"model": "segformer-b0", "miou": 0.4}]) == {
        "b1_minus_b0": 10.0}
