"""The per-layer latency predictor: XGBoost on log latency over a FLOPs baseline, valid for one
device and target.

The trees learn log(ms / baseline ms), the baseline a per-type affine fit in FLOPs
(`latency_model.baseline`: trees alone are flat between sampled widths, and the search prices a
unit at what the predictor's slope says); `TrainSettings.target="log_ms"` learns log ms alone,
as predictors before 2026-12-07 did (those load and predict as they were trained).

Training compares two designs on a held-out split of configs (stratified by layer type, so each
type is tested): one model for all layers with the type one-hot among the features ("global"),
and one model per layer type ("per_type"). The one with the lower held-out RMSPE is kept; both
errors and the choice go into the training report. The kept design is then trained again on
every config, and that model is the one that predicts: a split leaves a fifth of the configs
out, among them, by chance, the unpruned network's own widest layers, which trees cannot
extrapolate to (a demo's held-out decoder fuse, 36% of the network, came out 48% low and
mispriced every budget). The model of the training split alone is kept beside it
(`held_out_view`), so held-out configs are still scored by a model that never saw them.
Records of mixed timing settings (protocol or trials per layer) are refused: their latencies
are not one quantity.

A predictor folder holds `predictor.json` (manifest: feature schema, device key, target, mode,
model files; the timing protocol, trials per layer, model and input size when every record
agrees on them), one XGBoost JSON model per design part (`model_*.json`, trained on every config;
`holdout_model_*.json`, on the training split) and `training_report.json`. Loading
checks the feature schema; `check_compatible` refuses a device or target it was not made for,
and `check_timed_alike` networks timed in another unit (raw against drift-corrected, another
drift reference) or on another thread count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xgboost as xgb

from latency_model.baseline import FlopsBaseline
from latency_model.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, feature_matrix
from latency_model.layers import LAYER_TYPES, LayerConfig
from latency_model.metrics import Metrics, compute_metrics
from latency_model.records import MeasurementRecord, check_one_setting, utc_now
from runner.errors import EdgesegError

log = logging.getLogger(__name__)

MANIFEST = "predictor.json"
REPORT = "training_report.json"
FORMAT = "edgeseg-latency-predictor"
MIN_CONFIGS = 10
TARGETS = ("over_baseline", "log_ms")


@dataclass(frozen=True)
class TrainSettings:
    """XGBoost settings; the defaults fit a few thousand configs in seconds on 2 cores."""

    rounds: int = 800
    max_depth: int = 4
    learning_rate: float = 0.05
    subsample: float = 0.9
    colsample_bytree: float = 0.9
    threads: int = 1
    designs: tuple[str, ...] = ("global", "per_type")  # candidates compared on held-out data
    target: str = "over_baseline"  # or "log_ms" (TARGETS)

    def params(self, seed: int) -> dict[str, Any]:
        return {"objective": "reg:squarederror", "tree_method": "hist", "eta": self.learning_rate,
                "max_depth": self.max_depth, "subsample": self.subsample,
                "colsample_bytree": self.colsample_bytree, "nthread": self.threads, "seed": seed}


@dataclass(frozen=True)
class Dataset:
    """Measured configs, one per key (repeated measurements of a key: median of the medians)."""

    configs: tuple[LayerConfig, ...]
    measured_ms: np.ndarray
    device_key: str
    target_preset: str
    target: Mapping[str, Any]


def dataset_from_records(records: Sequence[MeasurementRecord]) -> Dataset:
    """Merge records into one sample per config; records from several devices are an error."""
    if not records:
        raise EdgesegError("No measurement records to learn from.",
                           "Collect measurements with `latency_model collect` first.")
    first = records[0]
    origins = {(r.device_key, r.target_preset, _canonical(r.target)) for r in records}
    if len(origins) > 1:
        listed = "; ".join(f"{d}/{p}" for d, p, _ in sorted(origins))
        raise EdgesegError(f"The records come from several devices or targets ({listed}).",
                           "Train one predictor per device and target: split the data file.")
    by_key: dict[str, list[MeasurementRecord]] = defaultdict(list)
    for record in records:
        by_key[record.key].append(record)
    keys = sorted(by_key)
    medians = [np.median([r.median_ms for r in by_key[k]]) for k in keys]
    return Dataset(configs=tuple(by_key[k][0].config for k in keys),
                   measured_ms=np.array(medians),
                   device_key=first.device_key, target_preset=first.target_preset,
                   target=dict(first.target))


def _without_noisy(records: Sequence[MeasurementRecord]) -> list[MeasurementRecord]:
    """The records to learn from: those `collect` flagged noisy are left out, by name, unless
    every record of a layer type is noisy: a noisy estimate of that type beats a predictor that
    cannot price it at all (a model made of it could then not be pruned or validated)."""
    clean_kinds = {r.config.kind for r in records if not r.noisy}
    left_out = sorted({r.key for r in records if r.noisy and r.config.kind in clean_kinds})
    kept = sorted({r.key for r in records if r.noisy and r.config.kind not in clean_kinds})
    if left_out:
        log.warning("leaving %d noisy measurement(s) out of training (their samples spread beyond the "
                    "protocol's limit twice): %s", len(left_out), ", ".join(left_out))
    if kept:
        log.warning("keeping %d noisy measurement(s) in training: no other measurement of their layer "
                    "type is clean (re-collect them on a quieter device): %s", len(kept), ", ".join(kept))
    return [r for r in records if not r.noisy or r.config.kind not in clean_kinds]


def _canonical(target: Mapping[str, Any]) -> str:
    return json.dumps(target, sort_keys=True, separators=(",", ":"))


def _split(configs: Sequence[LayerConfig], holdout: float, seed: int) -> np.ndarray:
    """Boolean test mask, stratified by layer type (a type with one config stays in training)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(configs), dtype=bool)
    for kind in LAYER_TYPES:
        idx = np.array([i for i, c in enumerate(configs) if c.kind == kind], dtype=int)
        if idx.size < 2:
            continue
        n_test = min(idx.size - 1, max(1, int(round(holdout * idx.size))))
        test[rng.permutation(idx)[:n_test]] = True
    return test


def _fit(x: np.ndarray, y: np.ndarray, margin: np.ndarray | None, settings: TrainSettings, seed: int) -> xgb.Booster:
    """`margin`: the log baseline the trees correct; None: they learn log ms from XGBoost's base
    score (a margin of zeros would drop that score, and an old model's predictions with it)."""
    data = xgb.DMatrix(x, label=y, base_margin=margin, feature_names=list(FEATURE_NAMES))
    return xgb.train(settings.params(seed), data, num_boost_round=settings.rounds)


@dataclass(frozen=True)
class _Model:
    """One fit: the trees (one part, or one per layer type) and the baseline they correct."""

    boosters: Mapping[str, xgb.Booster]
    baseline: FlopsBaseline | None  # None: the trees learnt log ms


def _fit_model(mode: str, configs: Sequence[LayerConfig], measured_ms: np.ndarray, settings: TrainSettings,
               seed: int) -> _Model:
    x, y = feature_matrix(configs), np.log(measured_ms)
    baseline = FlopsBaseline.fit(configs, measured_ms) if settings.target == "over_baseline" else None
    margin = np.log(baseline.ms(configs)) if baseline else None
    if mode == "global":
        return _Model({"all": _fit(x, y, margin, settings, seed)}, baseline)
    kinds = np.array([c.kind for c in configs])
    return _Model({kind: _fit(x[kinds == kind], y[kinds == kind], _rows(margin, kinds == kind), settings, seed)
                   for kind in LAYER_TYPES if np.any(kinds == kind)}, baseline)


def _rows(margin: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if margin is None else margin[rows]


def check_timed_alike(manifest: Mapping[str, Any], where: str | os.PathLike, drift_reference: bool,
                      reference_nominal_ms: float | None, threads: int | None) -> None:
    """Raise EdgesegError unless whole networks timed beside a drift reference or not
    (`drift_reference`), of nominal `reference_nominal_ms`, on `threads`, come out in the unit of
    the layers of the predictor whose manifest this is (in `where`). What the manifest or the
    caller does not know is not compared."""
    protocol = manifest.get("protocol")
    theirs = bool(protocol.get("drift_reference")) if isinstance(protocol, dict) else None
    if theirs is not None and theirs != drift_reference:
        kinds = {True: "scaled by a drift reference", False: "raw"}
        raise EdgesegError(
            f"The predictor in {where} was trained on layer timings {kinds[theirs]}; these networks "
            f"would be timed {kinds[drift_reference]}: two units.",
            "Time the networks as its layers were (" + ("leave out --no-drift-reference" if theirs
                                                        else "pass --no-drift-reference") + ").")
    nominal = manifest.get("reference_nominal_ms")
    if drift_reference and None not in (nominal, reference_nominal_ms) \
            and abs(nominal - reference_nominal_ms) > 1e-9 * nominal:
        raise EdgesegError(
            f"The predictor in {where} is in the unit of a drift reference of nominal {nominal:.6g} ms; "
            f"the device's reference now has {reference_nominal_ms:.6g} ms (rebuilt since): two units.",
            "Pass the tuning database its layers were collected into, or collect and train again "
            "with the device's current reference.")
    made_on = manifest.get("threads")
    if None not in (made_on, threads) and made_on != threads:
        raise EdgesegError(
            f"The predictor in {where} learnt layers timed on {made_on} threads, not {threads}.",
            f"Time the networks on {made_on} threads, or collect on {threads} and train again.")


class Predictor:
    """Predicts per-layer latency (ms) on the device and target it was trained for."""

    def __init__(self, mode: str, boosters: Mapping[str, xgb.Booster], manifest: Mapping[str, Any],
                 report: Mapping[str, Any], directory: Path, fingerprint: str,
                 held_out: _Model | None = None, baseline: FlopsBaseline | None = None) -> None:
        self.mode = mode
        self._boosters = dict(boosters)
        self._baseline = baseline
        self._held_out = held_out
        self.manifest = dict(manifest)
        self.report = dict(report)
        self.directory = directory
        self.fingerprint = fingerprint

    @property
    def device_key(self) -> str:
        return self.manifest["device_key"]

    @property
    def target_preset(self) -> str:
        return self.manifest["target_preset"]

    @property
    def holdout_keys(self) -> frozenset[str]:
        """Config keys held out of training (for an unbiased `evaluate` on the same data)."""
        return frozenset(self.report.get("holdout_keys", ()))

    def held_out_view(self) -> "Predictor":
        """This predictor as trained on the training split only: the one to score `holdout_keys`
        with (the predicting model saw them). A predictor saved before the refit on every config
        is its own view."""
        if self._held_out is None:
            return self
        return Predictor(self.mode, self._held_out.boosters, self.manifest, self.report, self.directory,
                         self.fingerprint, baseline=self._held_out.baseline)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Predictor":
        directory = Path(directory)
        manifest = _load_json(directory / MANIFEST)
        required = {"format", "mode", "models", "device_key", "target_preset", "target"}
        if manifest.get("format") != FORMAT or not required <= set(manifest):
            raise EdgesegError(f"{directory / MANIFEST} is not an edgeseg latency predictor.",
                               "Point to a folder written by `latency_model train`.")
        if (manifest.get("feature_schema_version") != FEATURE_SCHEMA_VERSION
                or tuple(manifest.get("feature_names", ())) != FEATURE_NAMES):
            raise EdgesegError(
                f"The predictor in {directory} uses feature schema "
                f"{manifest.get('feature_schema_version')}, this edgeseg uses "
                f"{FEATURE_SCHEMA_VERSION}.",
                "Retrain it with `latency_model train` on its measurements.")
        digest = hashlib.sha256((directory / MANIFEST).read_bytes())
        boosters = _load_boosters(directory, manifest["models"], digest)
        try:
            baselines = {key: FlopsBaseline.from_dict(manifest[key]) if key in manifest else None
                         for key in ("baseline", "holdout_baseline")}
        except ValueError as err:
            raise EdgesegError(f"{directory / MANIFEST} is damaged: its FLOPs baseline is {err}.",
                               "Retrain the predictor with `latency_model train` on its measurements.") from err
        held_out = None
        if "holdout_models" in manifest:
            held_out = _Model(_load_boosters(directory, manifest["holdout_models"], digest), baselines["holdout_baseline"])
        report_path = directory / REPORT
        report = _load_json(report_path) if report_path.exists() else {}
        return cls(manifest["mode"], boosters, manifest, report, directory, digest.hexdigest(), held_out,
                   baselines["baseline"])

    def check_compatible(self, device_key: str, target: str | Mapping[str, Any]) -> None:
        """Raise EdgesegError unless this predictor was made for `device_key` and `target`
        (a preset name, or the resolved TVM target dict)."""
        if isinstance(target, str):
            same_target = target == self.target_preset
        else:
            same_target = _canonical(target) == _canonical(self.manifest["target"])
        if device_key != self.device_key or not same_target:
            raise EdgesegError(
                f"The predictor in {self.directory} was trained for device key "
                f"{self.device_key!r} and target {self.target_preset!r} "
                f"({_canonical(self.manifest['target'])}), not for {device_key!r} and {target!r}.",
                "Use the predictor trained on that device and target, or collect measurements "
                "there and train one.")

    def check_timed_alike(self, drift_reference: bool, reference_nominal_ms: float | None,
                          threads: int | None) -> None:
        """Raise EdgesegError unless networks timed so come out in this predictor's unit
        (see the module's `check_timed_alike`)."""
        check_timed_alike(self.manifest, self.directory, drift_reference, reference_nominal_ms, threads)

    def predict_ms(self, configs: Sequence[LayerConfig]) -> np.ndarray:
        """Predicted latency in ms of each config, in order."""
        out = np.empty(len(configs), dtype=np.float64)
        if not configs:
            return out
        x = feature_matrix(configs)
        margin = np.log(self._baseline.ms(configs)) if self._baseline else None
        if self.mode == "global":
            out[:] = self._predict_log(self._boosters["all"], x, margin)
            return np.exp(out)
        kinds = np.array([c.kind for c in configs])
        for kind in np.unique(kinds):
            if kind not in self._boosters:
                raise EdgesegError(
                    f"The predictor in {self.directory} has no model for layer type {kind!r} "
                    f"(trained on: {', '.join(sorted(self._boosters))}).",
                    f"Collect measurements of {kind} layers and retrain.")
            rows = kinds == kind
            out[rows] = self._predict_log(self._boosters[kind], x[rows], _rows(margin, rows))
        return np.exp(out)

    @staticmethod
    def _predict_log(booster: xgb.Booster, x: np.ndarray, margin: np.ndarray | None) -> np.ndarray:
        return booster.predict(xgb.DMatrix(x, base_margin=margin, feature_names=list(FEATURE_NAMES)))


def _load_boosters(directory: Path, files: Mapping[str, str], digest: Any) -> dict[str, xgb.Booster]:
    """The models named in the manifest, by part; each file also goes into `digest`."""
    boosters = {}
    for part, name in sorted(files.items()):
        booster = xgb.Booster()
        try:
            booster.load_model(str(directory / name))
        except xgb.core.XGBoostError as err:
            raise EdgesegError(f"Cannot read model {directory / name}: {err}.",
                               "Retrain the predictor; its folder is incomplete.") from err
        boosters[part] = booster
        digest.update((directory / name).read_bytes())
    return boosters


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise EdgesegError(f"Missing {path}.",
                           "Point to a predictor folder written by `latency_model train`.") from err
    except json.JSONDecodeError as err:
        raise EdgesegError(f"{path} is not valid JSON: {err}.",
                           "Retrain the predictor; the file is damaged.") from err


def _holdout_metrics(mode: str, model: _Model, configs: Sequence[LayerConfig], measured: np.ndarray) -> Metrics:
    probe = Predictor(mode, model.boosters, {}, {}, Path("."), "", baseline=model.baseline)
    return compute_metrics(probe.predict_ms(configs), measured)


def train_predictor(records: Sequence[MeasurementRecord], out_dir: str | os.PathLike, seed: int,
                    holdout: float = 0.2, settings: TrainSettings = TrainSettings()) -> Predictor:
    """Train both designs, keep the better on held-out configs, train it again on every config,
    save both fits of it to `out_dir` (the one on every config predicts)."""
    if not settings.designs or set(settings.designs) - {"global", "per_type"}:
        raise EdgesegError(f"Unknown predictor designs {settings.designs}.",
                           "Use 'global' and/or 'per_type'.")
    if settings.target not in TARGETS:
        raise EdgesegError(f"Unknown predictor target {settings.target!r}.", f"Use one of: {', '.join(TARGETS)}.")
    if not 0.0 < holdout < 1.0:
        raise EdgesegError(f"holdout must be a fraction in (0, 1), got {holdout}.",
                           "Pass e.g. holdout=0.2.")
    records = _without_noisy(records)
    data = dataset_from_records(records)
    check_one_setting(records, "the training data")
    if len(data.configs) < MIN_CONFIGS:
        raise EdgesegError(f"Only {len(data.configs)} distinct configs were measured; "
                           f"a predictor needs at least {MIN_CONFIGS}.",
                           "Collect more samples (`latency_model collect --samples N`).")
    test = _split(data.configs, holdout, seed)
    train_cfg = [c for c, t in zip(data.configs, test) if not t]
    test_cfg = [c for c, t in zip(data.configs, test) if t]
    candidates: dict[str, tuple[_Model, Metrics]] = {}
    for mode in settings.designs:
        model = _fit_model(mode, train_cfg, data.measured_ms[~test], settings, seed)
        candidates[mode] = (model, _holdout_metrics(mode, model, test_cfg, data.measured_ms[test]))
        log.info("%s model: held-out RMSPE %.4f, +-10%% accuracy %.3f", mode,
                 candidates[mode][1].rmspe, candidates[mode][1].within_10)
    chosen = min(candidates, key=lambda m: (candidates[m][1].rmspe, m != "global"))
    report = {
        "chosen": chosen,
        "choice_metric": "held-out RMSPE",
        "candidates": {m: metrics.to_dict() for m, (_, metrics) in candidates.items()},
        "n_records": len(records), "n_configs": len(data.configs),
        "n_train": int((~test).sum()), "n_test": int(test.sum()),
        "configs_per_type": {k: sum(c.kind == k for c in data.configs) for k in LAYER_TYPES},
        "holdout_keys": sorted(c.key for c in test_cfg),
        "predicting_model": f"the {chosen} design trained again on all {len(data.configs)} configs; the held-out "
                            "figures are of its fit on the training split",
        "seed": seed, "holdout": holdout, "settings": dataclasses.asdict(settings),
    }
    every = _fit_model(chosen, data.configs, data.measured_ms, settings, seed)
    return _save(Path(out_dir), chosen, every, candidates[chosen][0], data, report, records)


def _shared_origin(records: Sequence[MeasurementRecord]) -> dict[str, Any]:
    """Manifest entries every record agrees on: the timing protocol and trials per layer (one
    setting, `check_one_setting`), the model, input size and class count the layers were
    sampled from (`prune` refuses a predictor made for another), and the nominal time of the drift
    reference the samples were scaled to (the unit of the predictor's ms). Unknown or mixed values
    are left out."""
    out: dict[str, Any] = {}
    for key, value in (("protocol", lambda r: r.protocol.to_dict() if r.protocol else None),
                       ("trials_per_layer", lambda r: r.trials_per_layer),
                       ("model", lambda r: r.model), ("input_size", lambda r: r.input_size),
                       ("num_classes", lambda r: r.num_classes), ("threads", lambda r: r.threads),
                       ("reference_nominal_ms", lambda r: r.reference_nominal_ms)):
        values = {json.dumps(value(r), sort_keys=True) for r in records}
        if len(values) == 1 and (found := json.loads(values.pop())) is not None:
            out[key] = found
    return out


def _save_boosters(out_dir: Path, prefix: str, boosters: Mapping[str, xgb.Booster]) -> dict[str, str]:
    for stale in out_dir.glob(f"{prefix}_*.json"):  # a previous training's other design
        stale.unlink()
    files = {}
    for part, booster in boosters.items():
        files[part] = f"{prefix}_{part}.json"
        booster.save_model(str(out_dir / files[part]))
    return files


def _save(out_dir: Path, mode: str, model: _Model, held_out: _Model, data: Dataset, report: Mapping[str, Any],
          records: Sequence[MeasurementRecord]) -> Predictor:
    out_dir.mkdir(parents=True, exist_ok=True)
    models = _save_boosters(out_dir, "model", model.boosters)
    holdout_models = _save_boosters(out_dir, "holdout_model", held_out.boosters)
    baselines = {"baseline": model.baseline.to_dict(), "holdout_baseline": held_out.baseline.to_dict()} \
        if model.baseline and held_out.baseline else {}
    manifest = {
        "format": FORMAT, "format_version": 1,
        "feature_schema_version": FEATURE_SCHEMA_VERSION, "feature_names": list(FEATURE_NAMES),
        "target_transform": "log(ms / baseline ms)" if baselines else "log(ms)", **baselines,
        "mode": mode, "models": models, "holdout_models": holdout_models,
        "device_key": data.device_key, "target_preset": data.target_preset,
        "target": dict(data.target),
        "tvm_versions": sorted({r.tvm_version for r in records}),
        "trained_utc": utc_now(),
        **_shared_origin(records),
    }
    (out_dir / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("saved a %s predictor to %s", mode, out_dir)
    return Predictor.load(out_dir)
