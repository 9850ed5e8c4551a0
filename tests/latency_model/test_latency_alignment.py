"""latency_model.alignment on analytic devices whose answer is known, and the commands that use it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latency_cases import synthetic_ms, toy_description
from latency_model.alignment import TOLERANCE, choose_alignment
from latency_model.cli import main as latency_main
from latency_model.features import feature_dict
from prune.cli import main as prune_main

CHANNEL_GROUPS = ("dim1", "mlp1", "dim2")  # the toy description's channel groups (heads excluded)


class AnalyticDevice:
    """A device given by a formula: `synthetic_ms` without noise (kernels step with 4, 8 and
    16 channels), or latency proportional to FLOPs (every channel pays)."""

    def __init__(self, stepped: bool) -> None:
        self.stepped = stepped
        self.fingerprint = f"analytic-{stepped}"

    def predict_ms(self, configs) -> np.ndarray:
        if self.stepped:
            return np.array([synthetic_ms(c, noise=False) for c in configs])
        return np.array([feature_dict(c)["flops"] * 1e-9 for c in configs])


def test_a_device_whose_kernels_step_by_16_channels_gets_units_of_16():
    choice = choose_alignment(toy_description(), AnalyticDevice(stepped=True), CHANNEL_GROUPS)
    assert choice.unit == 16
    assert choice.given_up[16] == min(choice.given_up.values()) and choice.given_up[16] + TOLERANCE < choice.given_up[32]
    assert choice.given_up[1] > 0.1  # off the step, keeping exactly the widths is slower than rounding up
    assert "16" in choice.table() and "<- chosen" in choice.table()


def test_latency_linear_in_flops_gives_up_latency_at_every_coarser_step():
    choice = choose_alignment(toy_description(), AnalyticDevice(stepped=False), CHANNEL_GROUPS)
    losses = list(choice.given_up.values())
    assert losses[0] == pytest.approx(0.0, abs=1e-12) and losses == sorted(losses)
    assert choice.unit < 16


def test_the_alignment_command_and_prune_unit_auto_read_a_trained_predictor(trained_predictor, capsys):
    directory = str(trained_predictor.directory)
    assert latency_main(["alignment", directory, "--model", "segformer-b0", "--input-size", "64", "--json"]) == 0
    choice = json.loads(capsys.readouterr().out)
    assert choice["unit"] in (1, 2, 4, 8, 16, 32) and len(choice["groups"]) >= 10

    from prune.cli import _auto_unit
    from prune.settings import PruneSettings

    settings = PruneSettings(budget_ms=1.0, predictor=directory, input_size=64)
    assert _auto_unit(settings) == choice["unit"]


def test_the_alignment_command_says_when_the_predictor_was_made_for_another_model(trained_predictor, tmp_path,
                                                                                 caplog):
    import shutil

    folder = tmp_path / "predictor"
    shutil.copytree(trained_predictor.directory, folder)
    manifest = json.loads((folder / "predictor.json").read_text())
    (folder / "predictor.json").write_text(json.dumps({**manifest, "model": "segformer-b1", "input_size": 512}))
    assert latency_main(["alignment", str(folder), "--model", "segformer-b0", "--input-size", "64", "--json"]) == 0
    assert "made with model segformer-b1; asking it about segformer-b0" in caplog.text
    assert "made with input_size 512; asking it about 64" in caplog.text


def test_unit_auto_without_a_device_predictor_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert prune_main(["--budget-ms", "0.05", "--unit", "auto", "--input-size", "32", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--unit auto reads the alignment from a device predictor" in err and "--unit 8" in err
    assert not out.exists()
