import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from latency_cases import ONE_OF_EACH, TARGET, make_record
from latency_model.predictor import MANIFEST, Predictor, TrainSettings, train_predictor
from prune.describe import describe_model
from runner.errors import EdgesegError
from runner.timing import TimingProtocol

FAST_PER_TYPE = TrainSettings(rounds=50, designs=("per_type",))
FAST_GLOBAL = TrainSettings(rounds=20, designs=("global",))


def test_training_saves_a_complete_predictor_folder(trained_predictor):
    folder = trained_predictor.directory
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["device_key"] == "host-cpu" and manifest["target_preset"] == "host"
    assert manifest["target"] == TARGET and manifest["feature_names"]
    assert manifest["target_transform"] == "log(ms / baseline ms)"  # latency_model.baseline, one per fit
    assert set(manifest["baseline"]) >= {"mix_ffn", "*"} and set(manifest["holdout_baseline"]) >= {"mix_ffn", "*"}
    for name in [*manifest["models"].values(), *manifest["holdout_models"].values()]:
        assert (folder / name).exists()
    report = trained_predictor.report
    assert report["chosen"] == trained_predictor.mode in ("global", "per_type")
    assert set(report["candidates"]) == {"global", "per_type"}
    chosen, other = report["chosen"], {"global": "per_type", "per_type": "global"}[report["chosen"]]
    assert report["candidates"][chosen]["rmspe"] <= report["candidates"][other]["rmspe"]
    assert report["n_test"] == len(trained_predictor.holdout_keys) > 0


def test_loaded_predictor_predicts_the_same(trained_predictor):
    again = Predictor.load(trained_predictor.directory)
    np.testing.assert_allclose(again.predict_ms(ONE_OF_EACH),
                               trained_predictor.predict_ms(ONE_OF_EACH), rtol=1e-6)
    assert again.fingerprint == trained_predictor.fingerprint


def test_predictions_on_held_out_configs_are_accurate(trained_predictor, synthetic_records):
    held = [r for r in synthetic_records if r.key in trained_predictor.holdout_keys]
    pred = trained_predictor.held_out_view().predict_ms([r.config for r in held])
    meas = np.array([r.median_ms for r in held])
    # Synthetic data: checks learning, not a device. 1% noise, so most should be within 10%.
    assert np.mean(np.abs(pred - meas) / meas <= 0.10) >= 0.85


def test_the_predicting_model_learnt_every_config_and_its_split_fit_is_kept_for_scoring(
        trained_predictor, synthetic_records):
    """The held-out configs are in the predicting model's data (a held-out widest layer would
    otherwise be extrapolated by trees), but not in the split fit's, which scores them."""
    held = [r for r in synthetic_records if r.key in trained_predictor.holdout_keys]
    meas = np.array([r.median_ms for r in held])

    def error(predictor):
        return np.median(np.abs(predictor.predict_ms([r.config for r in held]) / meas - 1))

    assert error(trained_predictor) < error(trained_predictor.held_out_view())
    again = Predictor.load(trained_predictor.directory)
    np.testing.assert_allclose(again.held_out_view().predict_ms([r.config for r in held]),
                               trained_predictor.held_out_view().predict_ms([r.config for r in held]), rtol=1e-6)
    assert trained_predictor.report["predicting_model"].startswith(f"the {trained_predictor.mode} design")


def test_a_predictor_saved_before_the_refit_scores_held_out_configs_with_its_only_model(trained_predictor,
                                                                                       tmp_path):
    for f in trained_predictor.directory.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    del manifest["holdout_models"]
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    old = Predictor.load(tmp_path)
    assert old.held_out_view() is old


def test_a_damaged_flops_baseline_in_the_manifest_is_refused_naming_it(trained_predictor, tmp_path):
    for f in trained_predictor.directory.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["baseline"] = {"mix_ffn": "fast"}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(EdgesegError, match="damaged: its FLOPs baseline"):
        Predictor.load(tmp_path)


def test_other_device_or_target_is_refused(trained_predictor):
    trained_predictor.check_compatible("host-cpu", "host")
    trained_predictor.check_compatible("host-cpu", TARGET)
    with pytest.raises(EdgesegError, match="trained for device key 'host-cpu'"):
        trained_predictor.check_compatible("pixel-7", "host")
    with pytest.raises(EdgesegError):
        trained_predictor.check_compatible("host-cpu", "android-arm64")
    with pytest.raises(EdgesegError):
        trained_predictor.check_compatible("host-cpu", {**TARGET, "num-cores": 8})


def test_mixed_devices_and_tiny_data_are_refused(tmp_path):
    mixed = [make_record(ONE_OF_EACH[0]), make_record(ONE_OF_EACH[1], device_key="phone")]
    with pytest.raises(EdgesegError, match="several devices"):
        train_predictor(mixed, tmp_path, seed=0)
    with pytest.raises(EdgesegError, match="at least"):
        train_predictor([make_record(c) for c in ONE_OF_EACH[:5]], tmp_path, seed=0)


def test_an_old_feature_schema_is_refused(trained_predictor, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    for f in trained_predictor.directory.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "feature_schema_version": 0}))
    with pytest.raises(EdgesegError, match="feature schema"):
        Predictor.load(folder)
    with pytest.raises(EdgesegError, match="Missing"):
        Predictor.load(tmp_path / "nothing-here")


def test_per_type_predictor_refuses_a_type_it_never_saw(synthetic_records, tmp_path):
    only_two = [r for r in synthetic_records if r.config.kind in ("mix_ffn", "decoder_proj")]
    predictor = train_predictor(only_two, tmp_path, seed=1, settings=FAST_PER_TYPE)
    assert predictor.mode == "per_type" and set(predictor.report["candidates"]) == {"per_type"}
    assert predictor.predict_ms([only_two[0].config])[0] > 0
    with pytest.raises(EdgesegError, match="no model for layer type"):
        predictor.predict_ms([ONE_OF_EACH[0]])


def test_repeated_measurements_of_a_config_are_merged(tmp_path):
    configs = ONE_OF_EACH * 2  # 22 records, 11 configs
    predictor = train_predictor([make_record(c) for c in configs], tmp_path, seed=0,
                                settings=TrainSettings(rounds=20))
    assert predictor.report["n_records"] == 22 and predictor.report["n_configs"] == 11


def _with(records, **fields):
    return [dataclasses.replace(r, **fields) for r in records]


def test_records_of_mixed_timing_settings_are_refused_naming_both(tmp_path):
    records = [make_record(c) for c in ONE_OF_EACH]  # 11 configs of an unknown setting
    fast, slow = TimingProtocol(warmup=1, repeat=3), TimingProtocol(repeat=20, min_repeat_ms=10)
    mixed_protocols = _with(records[:6], protocol=fast, trials_per_layer=8) + _with(
        records[6:], protocol=slow, trials_per_layer=8)
    with pytest.raises(EdgesegError, match=r"repeat 3.*\] and \[.*repeat 20.*") as err:
        train_predictor(mixed_protocols, tmp_path / "a", seed=0, settings=FAST_GLOBAL)
    assert "its own file" in err.value.fix and "filter" in err.value.fix
    mixed_trials = _with(records[:6], protocol=fast, trials_per_layer=8) + _with(
        records[6:], protocol=fast, trials_per_layer=0)
    with pytest.raises(EdgesegError, match="trials per layer 8.*trials per layer 0"):
        train_predictor(mixed_trials, tmp_path / "b", seed=0, settings=FAST_GLOBAL)
    unknown_and_known = records[:6] + _with(records[6:], protocol=fast, trials_per_layer=8)
    with pytest.raises(EdgesegError, match="unknown"):
        train_predictor(unknown_and_known, tmp_path / "c", seed=0, settings=FAST_GLOBAL)
    assert not any((tmp_path / d).exists() for d in "abc")


def test_manifest_names_the_setting_model_and_size_all_records_share(tmp_path):
    records = _with([make_record(c) for c in ONE_OF_EACH], protocol=TimingProtocol(repeat=5),
                    trials_per_layer=2, model="segformer-b0", input_size=64, num_classes=8, threads=2)
    train_predictor(records, tmp_path / "one", seed=0, settings=FAST_GLOBAL)
    manifest = json.loads((tmp_path / "one" / MANIFEST).read_text())
    assert manifest["model"] == "segformer-b0" and manifest["input_size"] == 64
    assert manifest["num_classes"] == 8 and manifest["threads"] == 2
    assert manifest["trials_per_layer"] == 2 and manifest["protocol"]["repeat"] == 5
    records[0] = dataclasses.replace(records[0], input_size=128)
    train_predictor(records, tmp_path / "two", seed=0, settings=FAST_GLOBAL)
    manifest = json.loads((tmp_path / "two" / MANIFEST).read_text())
    assert manifest["model"] == "segformer-b0" and "input_size" not in manifest


def test_records_of_an_unknown_setting_only_train(trained_predictor):
    """Files written before settings were stored: one (unknown) setting, nothing claimed."""
    assert not {"protocol", "trials_per_layer", "model", "input_size"} & set(
        trained_predictor.manifest)


def test_noisy_measurements_are_left_out_of_training_by_name(tmp_path, caplog):
    records = [make_record(c) for c in ONE_OF_EACH * 2]  # every config twice
    noisy = dataclasses.replace(records[0], noisy=True, median_ms=records[0].median_ms * 50)
    predictor = train_predictor([noisy, *records[1:]], tmp_path, seed=0, settings=FAST_GLOBAL)
    assert predictor.report["n_records"] == len(records) - 1  # the noisy one is not in the data
    assert f"noisy measurement(s) out of training" in caplog.text and noisy.key in caplog.text


def test_a_layer_type_measured_only_noisily_keeps_its_measurements(tmp_path, caplog):
    """CI once lost the one upsample measurement of a collection to noise, and the predictor could
    then not price segformer at all: a type with no clean record learns from its noisy ones."""
    records = [make_record(c) for c in ONE_OF_EACH * 2]
    kind = ONE_OF_EACH[0].kind
    records = [dataclasses.replace(r, noisy=True) if r.config.kind == kind else r for r in records]
    predictor = train_predictor(records, tmp_path, seed=0, settings=FAST_GLOBAL)
    assert predictor.report["n_records"] == len(records)
    assert "keeping" in caplog.text and ONE_OF_EACH[0].key in caplog.text
    assert predictor.predict_ms([ONE_OF_EACH[0]])[0] > 0


def test_a_predictor_trained_on_log_ms_before_the_baseline_predicts_what_it_did():
    """The committed predictor of the predictor-accuracy bench (target log(ms), 2026-12-07)
    priced the unpruned network 4.6075932660 ms in the Pareto run's points.jsonl. A margin of
    zeros would drop XGBoost's base score from its predictions (26x off)."""
    root = Path(__file__).resolve().parents[2] / "bench" / "results"
    predictor = Predictor.load(root / "predictor_accuracy" / "predictor")
    assert predictor.manifest["target_transform"] == "log(ms)"
    recorded = json.loads((root / "prune_vs_baselines_device" / "points.jsonl").read_text().splitlines()[0])
    description = describe_model("segformer-b0", 128, num_classes=predictor.manifest["num_classes"])
    unpruned = predictor.predict_ms(description.config_at(description.full_kept())).sum()
    assert unpruned == pytest.approx(recorded["unpruned_predicted_ms"], rel=1e-6)
