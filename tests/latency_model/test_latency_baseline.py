"""The FLOPs baseline under the predictor's trees, and the slope between sampled widths it gives."""

import numpy as np
import pytest

from latency_cases import make_record
from latency_model import layers as L
from latency_model.baseline import EVERY_TYPE, FlopsBaseline
from latency_model.features import flops
from latency_model.predictor import TrainSettings, train_predictor


def _fuse(cin: int) -> L.DecoderFuse:
    return L.DecoderFuse(h=32, w=32, cin=cin, inputs=4, cout=256)


def test_the_fit_recovers_an_affine_cost_and_refuses_negative_terms():
    configs = [_fuse(c) for c in (8, 64, 128, 256)]
    work = np.array([flops(c) for c in configs], dtype=float)
    fit = FlopsBaseline.fit(configs, 0.02 + 3e-9 * work)
    a, b = fit.coefficients["decoder_fuse"]
    assert a == pytest.approx(0.02, rel=1e-6) and b == pytest.approx(3e-9, rel=1e-6)
    assert fit.ms([_fuse(100)])[0] == pytest.approx(0.02 + 3e-9 * flops(_fuse(100)))
    falling = FlopsBaseline.fit(configs, np.array([0.4, 0.3, 0.2, 0.1]))  # b < 0: a constant instead
    assert falling.coefficients["decoder_fuse"][1] == 0.0
    once = FlopsBaseline.fit([_fuse(8)], np.array([0.003]))  # one width measured: in proportion to the work
    assert once.ms([_fuse(256)])[0] == pytest.approx(0.003 * flops(_fuse(256)) / flops(_fuse(8)))
    assert FlopsBaseline.from_dict(fit.to_dict()) == fit
    upsample = L.Upsample(h=8, w=8, channels=64, out_h=32, out_w=32)  # a type it never saw: the fit over all
    assert fit.ms([upsample])[0] == pytest.approx(sum(np.multiply(fit.coefficients[EVERY_TYPE], (1, flops(upsample)))))


def test_between_sampled_widths_the_prediction_follows_the_work_where_trees_alone_are_flat(tmp_path):
    """The decoder fuse of main-job run 20: sampled at a few widths, priced in between. Trees on
    log ms give every width between two samples one value (a unit there costs nothing to the
    search); over the baseline the prediction grows with the width, as the synthetic cost does."""
    sampled = [make_record(_fuse(c)) for c in (8, 16, 32, 48, 96, 128, 256)]
    sampled += [make_record(L.LayerNorm(h=32, w=32, dim=d)) for d in (16, 32, 64, 128, 256)]
    between = [_fuse(c) for c in (144, 176, 208, 240)]
    truth = np.array([make_record(c).median_ms for c in between])
    predicted = {}
    for target in ("log_ms", "over_baseline"):
        predictor = train_predictor(sampled, tmp_path / target, seed=0,
                                    settings=TrainSettings(rounds=200, designs=("global",), target=target))
        predicted[target] = predictor.predict_ms(between)
    steps = np.diff(truth) / truth[:-1]
    assert np.all(np.diff(predicted["log_ms"]) / predicted["log_ms"][:-1] < 0.25 * steps)  # flat
    assert np.all(np.diff(predicted["over_baseline"]) / predicted["over_baseline"][:-1] > 0.5 * steps)
    assert np.max(np.abs(predicted["over_baseline"] / truth - 1)) < 0.15
