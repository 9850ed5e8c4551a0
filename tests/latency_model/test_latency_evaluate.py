import json

import numpy as np
import pytest

from latency_cases import make_record
from latency_model.baseline import FlopsBaseline
from latency_model.evaluate import evaluate_predictor
from latency_model.metrics import compute_metrics
from latency_model import layers as L
from runner.errors import EdgesegError


def test_metrics_match_a_hand_computation():
    meas = np.array([1.0, 2.0, 4.0, 8.0])
    pred = np.array([1.04, 2.3, 4.0, 7.0])  # relative errors 4%, 15%, 0%, 12.5%
    m = compute_metrics(pred, meas)
    assert m.n == 4 and m.within_5 == 0.5 and m.within_10 == 0.5
    assert m.rmse_ms == pytest.approx(np.sqrt((0.04**2 + 0.3**2 + 0 + 1.0) / 4))
    assert m.rmspe == pytest.approx(np.sqrt((0.04**2 + 0.15**2 + 0 + 0.125**2) / 4))
    assert m.spearman == pytest.approx(1.0)


def test_flops_baseline_is_exact_on_linear_data():
    configs = [L.DecoderProjection(8, 8, c, 32) for c in (16, 32, 48, 64)]
    from latency_model.features import flops
    ms = np.array([3e-9 * flops(c) + 0.05 for c in configs])
    np.testing.assert_allclose(FlopsBaseline.fit_least_squares(configs, ms).ms(configs), ms)


def test_evaluate_writes_report_and_plot_and_beats_flops(trained_predictor, synthetic_records,
                                                        tmp_path):
    held = [r for r in synthetic_records if r.key in trained_predictor.holdout_keys]
    report = evaluate_predictor(trained_predictor.held_out_view(), held, tmp_path)
    assert (tmp_path / "scatter.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["predictor"]["overall"]["n"] == len(held)
    assert set(report.per_type) == {r.config.kind for r in held}
    assert "in-sample" in report.baseline_fit
    # The synthetic latency steps with channel alignment; FLOPs cannot follow that.
    assert report.overall.rmspe < report.baseline_overall.rmspe
    assert report.overall.spearman > 0.98
    table = report.table()
    assert "all" in table and "mix_ffn" in table and "FLOPs" in table


def test_evaluating_on_another_devices_data_is_an_error(trained_predictor, synthetic_records):
    foreign = [make_record(r.config, device_key="pixel-7") for r in synthetic_records[:20]]
    with pytest.raises(EdgesegError, match="not for 'pixel-7'"):
        evaluate_predictor(trained_predictor, foreign)
