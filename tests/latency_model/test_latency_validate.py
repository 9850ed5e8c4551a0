"""Adaptive collection and model-level validation on the loopback farm, on a hand-written
two-layer description (a PatchEmbed and a MixFFN sharing one width) at a tiny size, and
`python -m latency_model validate` on random pruned variants of segformer-b0 at 64 px.

All build from the database alone (trials 0) so each layer costs about a second; tuning is
covered by test_latency_collect."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from compile.targets import resolve_target
from helpers.tiny_models import export_onnx
from latency_model import layers as L
from latency_model.collect import collect_adaptive
from latency_model.description import Group, LayerSlot, ModelDescription
from latency_model.features import flops
from latency_model.layer_modules import build_layer
from latency_model.cli import main
from latency_model.predictor import Predictor
from latency_model.records import read_records
from latency_model.sampling import layer_configs, sample_kept
from latency_model.validate import (
    MEASUREMENTS,
    Variant,
    leave_one_out_flops_line,
    leave_one_out_overhead,
    validate_variants,
)
from prune.describe import describe_model
from prune.variants import first_units_plan
from runner.errors import EdgesegError
from runner.timing import TimingProtocol

FAST = TimingProtocol(warmup=1, repeat=3)
TWO_LAYERS = ModelDescription(
    (Group.aligned("dim", 32, 4), Group.aligned("hidden", 64, 8)),
    (LayerSlot(L.PatchEmbed(16, 16, 3, 32, 3, 2), {"cout": "dim"}, "embed"),
     LayerSlot(L.MixFFN(8, 8, 32, 64, 32), {"cin": "dim", "hidden": "hidden", "cout": "dim"},
               "ffn")),
)


class TwoLayerNet(nn.Module):
    """The described model: patch embedding (NHWC out), flattened to tokens, then the Mix-FFN."""

    def __init__(self, configs: list[L.LayerConfig]) -> None:
        super().__init__()
        self.embed, _ = build_layer(configs[0])
        self.ffn, _ = build_layer(configs[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.embed(x).flatten(1, 2))


def test_validate_compares_whole_variants_with_the_predicted_sum(trained_predictor, host_farm,
                                                                 tmp_path):
    variants = []
    for i, kept in enumerate(sample_kept(TWO_LAYERS, 0, seed=3)):  # the two ends
        configs = TWO_LAYERS.config_at(kept)
        path = export_onnx(TwoLayerNet(configs), tmp_path / f"v{i}.onnx", shape=(1, 3, 16, 16))
        variants.append(Variant(f"v{i}", tuple(configs), path))
    report = validate_variants(trained_predictor, variants, host_farm.device,
                               resolve_target("host"), tmp_path / "db", trials=0,
                               protocol=FAST, out_dir=tmp_path / "out", progress=False)
    assert report.names == ("v0", "v1") and all(0 < m < 100 for m in report.measured_ms)
    sums = trained_predictor.predict_ms(list(variants[0].configs)).sum()
    assert report.layer_sum_ms[0] == pytest.approx(sums)
    # leave-one-out: v0's overhead is v1's residual
    assert report.predicted_ms[0] == pytest.approx(
        max(report.layer_sum_ms[0] + report.measured_ms[1] - report.layer_sum_ms[1], 1e-6))
    assert report.database_hits == (0.0, 0.0)  # an empty database, nothing tuned
    # beside it, the FLOPs line: with two variants each one's line is the other's ms per FLOP
    variant_flops = [sum(flops(c) for c in v.configs) for v in variants]
    assert report.flops_predicted_ms[0] == pytest.approx(report.measured_ms[1] * variant_flops[0] / variant_flops[1])
    assert report.flops_metrics.n == 2 and "FLOPs line: +-5%" in report.table()
    assert report.metrics.n == 2 and (tmp_path / "out" / "validation.png").stat().st_size > 0
    assert (tmp_path / "out" / "validation.json").exists()
    # a rerun (after a crash, or with another predictor) reuses every measurement
    measured = (tmp_path / "out" / MEASUREMENTS).read_text()
    again = validate_variants(trained_predictor, variants, host_farm.device,
                              resolve_target("host"), tmp_path / "db", trials=0, protocol=FAST,
                              out_dir=tmp_path / "out", progress=False)
    assert again.resumed == 2 and again.measured_ms == report.measured_ms
    table = again.table()
    assert "v0 " in table and "v1 " in table and "2 of 2 measurements reused" in table
    assert (tmp_path / "out" / MEASUREMENTS).read_text() == measured
    # the same folder with another protocol: refused before anything is measured
    with pytest.raises(EdgesegError, match="measurements.jsonl holds a measurement of variant v0"):
        validate_variants(trained_predictor, variants, host_farm.device, resolve_target("host"),
                          tmp_path / "db", trials=0, protocol=TimingProtocol(repeat=2),
                          out_dir=tmp_path / "out", progress=False)
    assert (tmp_path / "out" / MEASUREMENTS).read_text() == measured


def test_leave_one_out_overhead_excludes_each_variants_own_residual():
    measured, sums = np.array([3.0, 5.0, 10.0]), np.array([1.0, 2.0, 4.0])
    assert leave_one_out_overhead(measured, sums).tolist() == [4.5, 4.0, 2.5]
    assert leave_one_out_overhead(measured[:1], sums[:1]).tolist() == [0.0]


def test_leave_one_out_flops_line_fits_each_variant_on_the_others():
    variant_flops = np.array([1.0, 2.0, 3.0, 4.0])
    measured = 2.0 * variant_flops + 1.0
    measured[3] = 100.0  # an outlier moves every line but its own
    predicted = leave_one_out_flops_line(measured, variant_flops)
    assert predicted[3] == pytest.approx(9.0)  # 2 x 4 + 1, from the three points on the line
    assert all(abs(p - m) > 1 for p, m in zip(predicted[:3], measured[:3]))


def test_adaptive_round_measures_neighbours_of_poorly_predicted_configs(host_farm, tmp_path):
    data = tmp_path / "data.jsonl"
    first, rounds = collect_adaptive(
        TWO_LAYERS, host_farm.device, resolve_target("host"), data, tmp_path / "db",
        trials_per_layer=0, protocol=FAST, samples=6, rounds=1, predictor_dir=tmp_path / "p",
        seed=0, progress=False)
    initial = {c.key for c in layer_configs(TWO_LAYERS, sample_kept(TWO_LAYERS, 6, seed=0))}
    assert {r.key for r in first.measured} == initial
    assert (tmp_path / "p" / "round-1" / "predictor.json").exists()
    keys = [r.key for r in read_records(data)]
    assert len(keys) == len(set(keys))  # nothing measured twice
    for done in rounds:  # a round exists only when some held-out config was off by > 10%
        assert 0 < done.poorly_predicted <= done.held_out
        assert all(r.key not in initial for r in done.report.measured)
    assert set(keys) == initial | {r.key for d in rounds for r in d.report.measured}


def test_validate_command_measures_random_pruned_variants(segformer_b0_predictor, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.setenv("EDGESEG_WORKSPACE", str(tmp_path / "workspace"))  # the tuning database
    out = tmp_path / "validation"
    assert main(["validate", str(segformer_b0_predictor), "--model", "segformer-b0",
                 "--input-size", "64", "--variants", "1", "--trials-per-task", "0",
                 "--warmup", "1", "--repeat", "3", "--min-repeat-ms", "0", "--seed", "1",
                 "--no-drift-reference", "--json", "-o", str(out)]) == 0  # its layers were timed raw
    report = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in report["variants"]] == ["v00"] and report["resumed"] == 0
    predictor = Predictor.load(segformer_b0_predictor)
    description = describe_model("segformer-b0", 64)
    full = description.full_kept()
    for variant, onnx in zip(report["variants"], sorted((out / "variants").glob("*.onnx"))):
        assert 0 < variant["measured_ms"] < 10_000 and variant["database_hit_rate"] == 0.0
        assert set(variant["kept"]) == set(full)
        assert any(variant["kept"][g] < full[g] for g in full)  # pruned, not the whole model
        configs = description.config_at(variant["kept"])
        assert variant["layer_sum_ms"] == pytest.approx(predictor.predict_ms(configs).sum())
        assert onnx.name.startswith(variant["name"])
    assert report["metrics"]["n"] == 1 and report["protocol"]["repeat"] == 3
    assert report["device_key"] == "host-cpu" and report["trials"] == 0
    assert len((out / MEASUREMENTS).read_text().splitlines()) == 1  # kept as it was taken
    assert (out / "validation.png").stat().st_size > 0
    assert json.loads((out / "validation.json").read_text()) == report


def test_validate_refuses_a_predictor_of_another_device_or_target_before_any_work(
        segformer_b0_predictor, tmp_path, capsys):
    out = tmp_path / "validation"
    common = [str(segformer_b0_predictor), "--model", "segformer-b0", "--input-size", "64",
              "-o", str(out)]
    assert main(["validate", *common, "--tracker", "127.0.0.1:9", "--key", "s21"]) == 2
    assert "trained for device key 'host-cpu'" in capsys.readouterr().err
    assert main(["validate", *common, "--target", "linux-arm64"]) == 2
    assert "'linux-arm64'" in capsys.readouterr().err
    assert main(["validate", *common]) == 2  # drift-corrected networks against raw layer timings
    assert "layer timings raw; these networks would be timed scaled by a drift reference: two units" \
        in capsys.readouterr().err
    assert not out.exists()


def test_a_predictor_refuses_networks_timed_in_another_unit_or_on_other_threads(tmp_path):
    manifest = {"protocol": TimingProtocol(drift_reference=True).to_dict(), "reference_nominal_ms": 0.25,
                "threads": 2}
    predictor = Predictor("global", {}, manifest, {}, tmp_path, "fingerprint")
    predictor.check_timed_alike(True, 0.25, 2)
    predictor.check_timed_alike(True, None, None)  # what the caller does not know yet is not compared
    with pytest.raises(EdgesegError, match="two units") as error:
        predictor.check_timed_alike(False, None, 2)
    assert "leave out --no-drift-reference" in error.value.fix
    with pytest.raises(EdgesegError, match="rebuilt since"):
        predictor.check_timed_alike(True, 0.3, 2)
    with pytest.raises(EdgesegError, match="timed on 2 threads, not 4"):
        predictor.check_timed_alike(True, 0.25, 4)
    Predictor("global", {}, {}, {}, tmp_path, "old").check_timed_alike(False, None, 4)  # a manifest naming none


def test_kept_counts_become_the_first_units_of_each_group():
    from prune.groups import PruneGroup

    channels = PruneGroup("backbone.stages_0.blocks.0.mlp.fc1", "channels", "x", 64, 8, ())
    heads = PruneGroup("backbone.stages_1.blocks.0.attn", "heads", "x", 64, 32, ())
    assert first_units_plan([channels, heads], {channels.name: 24, heads.name: 1}) == {
        channels.name: [0, 1, 2], heads.name: [0]}
    with pytest.raises(EdgesegError, match="cannot keep 20"):
        first_units_plan([channels], {channels.name: 20})  # off the unit grid
    with pytest.raises(EdgesegError, match="cannot keep 72"):
        first_units_plan([channels], {channels.name: 72})
