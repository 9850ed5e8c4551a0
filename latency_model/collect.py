"""Measure layer configs on a device: export, compile (tuned), bench, append one record each.

Each config is exported alone (`latency_model.export`) and compiled for the target preset into
a scratch folder from ONE tuning database, which `tune_layers` filled first for all layers at
once: `trials_per_layer` trials for each anchor kernel (the largest and smallest of each
structure), schedules transferred from them for every other kernel (`compile.transfer`), as a
pruned network's compile gets them. The database is by default the device's
(`runner.workspace.tuning_database_dir`), so a later `python -m compile` of a pruned model finds
those kernels, or donors of their structure. Each layer is timed with
`runner.bench.bench_artifact` under the given protocol. Its record (with the protocol, the
trials per layer, and the model and input size the configs were sampled from) is appended and
fsynced before the next config starts: a crash loses nothing measured, and a rerun skips every
config already in the file for this device key and target preset. A file whose records of this
device and target were taken with another protocol or trials per layer is refused up front:
training refuses mixed settings, so such a collection would be wasted.

Devices: tuning uses every server registered under the key at once (compile's RPCRunner asks
the tracker for any free one); the timed runs are sequential, one config after the other, on
whichever server the tracker hands out, so one layer's timing never shares a device with
another's.

`collect_adaptive` adds nn-Meter's adaptive rounds: train a predictor, find held-out configs it
gets wrong by more than 10%, measure grid neighbours of those, repeat.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm import tqdm

from latency_model.description import ModelDescription
from latency_model.drift_reference import device_drift_reference
from latency_model.export import export_layer
from latency_model.layers import LayerConfig
from latency_model.records import (
    MeasurementLog,
    MeasurementRecord,
    describe_setting,
    installed_versions,
)
from latency_model.sampling import (
    ADAPTIVE_THRESHOLD,
    layer_configs,
    neighbour_configs,
    poorly_predicted,
    sample_kept,
)
from runner.device import Device
from runner.drift import DriftReference
from runner.errors import EdgesegError
from runner.timing import TimingProtocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectReport:
    """What one `collect` call did: records measured now, configs skipped as already measured."""

    out: Path
    measured: tuple[MeasurementRecord, ...]
    skipped: int
    seconds: float
    tuning_seconds: float = 0.0

    @property
    def measurements_per_hour(self) -> float:
        return 3600.0 * len(self.measured) / self.seconds if self.measured else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "measured": len(self.measured), "skipped": self.skipped,
                "seconds": round(self.seconds, 1), "tuning_seconds": round(self.tuning_seconds, 1),
                "measurements_per_hour": round(self.measurements_per_hour, 1)}


def target_dict(preset: Any) -> dict[str, Any]:
    """The TVM target a preset resolves to, as stored in every record."""
    target = preset.tvm_target
    target = dict(target) if isinstance(target, dict) else {"tag": target}
    return {"target": dict(target), "host": preset.tvm_host} if preset.tvm_host else dict(target)


@dataclass(frozen=True)
class Source:
    """The model, input size and class count the configs were sampled from, stored in every
    record (None: configs that come from no model)."""

    model: str | None = None
    input_size: int | None = None
    num_classes: int | None = None


BATCH = 12  # layers compiled, then timed round-robin in one session; a crash loses at most one batch


def in_batches(items: Sequence[Any]) -> list[list[Any]]:
    """`items` in order, in the batches of `BATCH` a collection compiles and times together."""
    return [list(items[i:i + BATCH]) for i in range(0, len(items), BATCH)]


def measure_layers(configs: Sequence[LayerConfig], device: Device, preset: Any, database_dir: Path,
                   trials_per_layer: int, protocol: TimingProtocol, scratch: Path,
                   source: Source = Source(), threads: int | None = None,
                   reference: DriftReference | None = None) -> tuple[list[MeasurementRecord], float]:
    """Export and compile every config (from the database: `tune_layers` ran first; a kernel it
    did not cover gets a transferred schedule, never a search), then time them all round-robin
    in one session, with the device's drift reference when the protocol has one
    (`runner.bench.bench_batch`): their records, and the seconds spent tuning. `threads`: the
    device's thread pool while timing, as the whole network will run (a phone preset's big cores;
    None: the device's default, as `runner bench` leaves it for a network without a preset)."""
    from compile.api import compile_model
    from runner.bench import bench_batch

    built = []
    for index, config in enumerate(configs):
        model, _ = export_layer(config, scratch / f"layer{index}.onnx")
        built.append(compile_model(model, scratch / f"artifact{index}", preset, database_dir=database_dir,
                                   trials=0, device=device, kernel_library=False))
    timings = bench_batch([b.artifact for b in built], device, protocol, reference, threads)
    noisy = [i for i, t in enumerate(timings) if protocol.is_noisy(t.timing)]
    if noisy:  # once more: a burst of other work, or the layer itself?
        log.info("%s: samples spread over the limit %.0f%% of the median; measuring again",
                 ", ".join(configs[i].key for i in noisy), 100 * protocol.max_spread)
        for i, again in zip(noisy, bench_batch([built[i].artifact for i in noisy], device, protocol, reference,
                                               threads)):
            timings[i] = again
    tvm_version, edgeseg_version = installed_versions()
    records = []
    for config, result, timed in zip(configs, built, timings):
        figure = timed.timing
        is_noisy = protocol.is_noisy(figure)
        if is_noisy:
            log.warning("%s: samples spread %.0f%% of the median twice (limit %.0f%%): recorded as noisy, left "
                        "out of training", config.key, 100 * figure.spread, 100 * protocol.max_spread)
        records.append(MeasurementRecord(
            config=config, target_preset=preset.name, target=target_dict(preset),
            device_key=device.key, median_ms=figure.median_ms, std_ms=figure.std_ms,
            run_ms=tuple(figure.samples_ms), tvm_version=tvm_version,
            edgeseg_version=edgeseg_version, tuning_trials=result.tuning.trials, protocol=protocol,
            trials_per_layer=trials_per_layer, model=source.model, input_size=source.input_size,
            num_classes=source.num_classes, threads=timed.threads, noisy=is_noisy,
            reference_ms=timed.reference_ms, reference_nominal_ms=reference.nominal_ms if reference else None))
    return records, sum(b.tuning.seconds for b in built)


@dataclass(frozen=True)
class LayerTuning:
    """What `tune_layers` spent: seconds, search trials over all anchors, and the trials that
    went into each config's kernels (by config key; a kernel shared by configs counts for each)."""

    seconds: float = 0.0
    trials: int = 0
    anchors: int = 0
    kernels: int = 0
    trials_by_config: Mapping[str, int] = field(default_factory=dict)


def tune_layers(configs: Sequence[LayerConfig], device: Device, preset: Any, database_dir: Path,
                trials_per_layer: int, progress: bool = True,
                networks: Sequence[Path] = ()) -> LayerTuning:
    """Tune the anchor kernels of all `configs` into the database in ONE MetaSchedule run, then
    give every other kernel a schedule transferred from them.

    Anchors (`anchor_kernels`) are the largest and the smallest kernel of each structure: they
    get `trials_per_layer` trials each (the first round half of them, the rest by latency share),
    then each tries the other anchor's schedule; every other width of that structure takes a schedule
    transferred from its nearest anchor, as `python -m compile` will give a pruned network's
    kernels, so what is measured is what a compile builds, and a collection spends its trials on
    a few kernels instead of a random schedule for each. A tuning run has a fixed cost (task
    contexts, builder workers, cost model: 5-30 s here) that per-layer runs would pay for every
    layer; kernels shared by several layers are tuned once. Records are committed as they are
    measured, so a crash loses none; the per-layer compiles that follow find every kernel in the
    database. `networks` (model files) add their kernels to the pool: a whole network fuses a few
    kernels across layer boundaries (the decoder's resizes with their concat) that no layer alone
    has, and a pruned network's compile needs donors for those too."""
    import tvm_ffi

    from compile.build import lower
    from compile.frontend import load_model
    from compile.tuning import ms, tune_extracted

    if not configs or trials_per_layer == 0:
        return LayerTuning()
    tasks: dict[int, Any] = {}
    kernels_of: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="edgeseg-extract-") as scratch:
        for index, config in enumerate(tqdm(configs, desc="extract kernels", unit="layer",
                                            disable=not progress)):
            model, _ = export_layer(config, Path(scratch) / f"layer-{index}.onnx")
            lowered = lower(load_model(model, None, Path(scratch)).mod, preset)
            for task in ms.relax_integration.extract_tasks(lowered, preset.target()):
                kernel = tvm_ffi.structural_hash(task.dispatched[0])
                tasks.setdefault(kernel, task)
                kernels_of.setdefault(config.key, []).append(kernel)
        for network in networks:
            lowered = lower(load_model(Path(network), None, Path(scratch)).mod, preset)
            for task in ms.relax_integration.extract_tasks(lowered, preset.target()):
                tasks.setdefault(tvm_ffi.structural_hash(task.dispatched[0]), task)
    anchors = anchor_kernels(tasks)
    report = tune_extracted([tasks[k] for k in anchors], preset, lambda: device, database_dir,
                            trials=0, trials_per_task=trials_per_layer)
    # Each anchor also tries its structure's other anchors' schedules: with a few trials a
    # kernel's own search can land far below its neighbour's.
    tune_extracted([tasks[k] for k in anchors], preset, lambda: device, database_dir, trials=0,
                   transfer_tuned=True)
    rest = [k for k in tasks if k not in set(anchors)]
    transfer = tune_extracted([tasks[k] for k in rest], preset, lambda: device, database_dir, trials=0)
    log.info("%d kernels: %d anchors tuned (%d trials), %d of the other %d transferred from them",
             len(tasks), len(anchors), report.trials, transfer.count("transferred"), len(rest))
    spent = {kernel: task.trials for kernel, task in zip(anchors, report.tasks)}
    return LayerTuning(report.seconds + transfer.seconds, report.trials, len(anchors), len(tasks),
                       {key: sum(spent.get(k, 0) for k in kernels) for key, kernels in kernels_of.items()})


def anchor_kernels(tasks: Mapping[int, Any]) -> list[int]:
    """The kernels worth tuning: per structure (`compile.workload_structure`), the one with the
    most work and the one with the least (two ends to transfer from), by key of `tasks`."""
    from compile.transfer import work
    from compile.workload_structure import structure_key

    by_structure: dict[str, list[tuple[float, int]]] = {}
    for kernel, task in tasks.items():
        mod = task.dispatched[0]
        by_structure.setdefault(structure_key(mod), []).append((work(mod), kernel))
    anchors: list[int] = []
    for members in by_structure.values():
        members.sort()
        anchors.extend(dict.fromkeys([members[-1][1], members[0][1]]))  # one if they are the same
    return anchors


def _check_settings(trials_per_layer: int, protocol: TimingProtocol, out: Path,
                    earlier: Sequence[MeasurementRecord]) -> None:
    """Refuse a bad trial count, and a collection into a file whose records of this device
    and target were taken with another setting (training would refuse the mixed file)."""
    if trials_per_layer < 0:
        raise EdgesegError(f"trials_per_layer must be 0 or more, got {trials_per_layer}.",
                           "Pass --trials-per-layer 0 (database only) or more.")
    settings = {(r.protocol, r.trials_per_layer) for r in earlier}
    if settings - {(protocol, trials_per_layer)}:
        theirs = describe_setting(*min(settings, key=str))
        ours = describe_setting(protocol, trials_per_layer)
        raise EdgesegError(
            f"{out} holds records of this device and target measured with another timing "
            f"setting ([{theirs}]) than this collection's ([{ours}]); a predictor cannot learn "
            "from the mixed file.",
            "Collect into another file with -o, or use the settings of the records in it.")


def _check_reference(reference: DriftReference, out: Path, earlier: Sequence[MeasurementRecord]) -> None:
    """Refuse a collection into a file whose drift-corrected records are in another reference's unit."""
    nominals = {r.reference_nominal_ms for r in earlier if r.reference_nominal_ms is not None}
    if nominals - {reference.nominal_ms}:
        raise EdgesegError(
            f"{out} holds records scaled to a drift reference of nominal {min(nominals):.4g} ms; this device's "
            f"reference ({reference.artifact}) has {reference.nominal_ms:.4g} ms: the figures would be in two "
            "units.", "Collect into another file with -o (the reference was rebuilt since that file was written).")


def collect(configs: Sequence[LayerConfig], device: Device, preset: Any, out: Path,
            database_dir: Path, trials_per_layer: int, protocol: TimingProtocol,
            progress: bool = True, source: Source = Source(),
            networks: Sequence[Path] = (), threads: int | None = None) -> CollectReport:
    """Measure every config not yet in `out` for this device key and preset, in order;
    `networks`: whole models whose kernels join the tuning (`tune_layers`); `threads`: as
    `measure_layers`. Layers are measured in batches of `BATCH`, each record appended (fsynced)
    when its batch is timed; with a protocol that has a drift reference, the device's reference
    (`device_drift_reference`, built on first use) is timed in every round."""
    started = time.monotonic()
    measurements = MeasurementLog(out)
    earlier = [r for r in measurements.read()
               if r.device_key == device.key and r.target_preset == preset.name]
    _check_settings(trials_per_layer, protocol, Path(out), earlier)
    done = {r.key for r in earlier}
    unique = list({c.key: c for c in configs}.values())
    todo = [c for c in unique if c.key not in done]
    log.info("%d configs: %d already measured in %s, %d to measure on %s (%s)", len(unique),
             len(unique) - len(todo), out, len(todo), device, preset.name)
    measured: list[MeasurementRecord] = []
    reference = None
    if todo and protocol.drift_reference:  # before any tuning: a file in another unit is refused at once
        reference = device_drift_reference(device, preset, database_dir, protocol, trials_per_layer)
        _check_reference(reference, Path(out), earlier)
    pretuned = tune_layers(todo, device, preset, database_dir, trials_per_layer, progress,
                           networks if todo else ())
    tuning_seconds = pretuned.seconds
    with tqdm(total=len(todo), desc="collect", unit="layer", disable=not progress) as bar:
        for batch in in_batches(todo):
            with tempfile.TemporaryDirectory(prefix="edgeseg-collect-") as scratch:
                records, tuned_s = measure_layers(batch, device, preset, database_dir, trials_per_layer, protocol,
                                                  Path(scratch), source, threads, reference)
            for record in records:
                record = replace(record, tuning_trials=(record.tuning_trials or 0)
                                 + pretuned.trials_by_config.get(record.key, 0))
                measurements.append(record)
                measured.append(record)
                log.debug("%s: %.4f ms", record.key, record.median_ms)
            tuning_seconds += tuned_s
            bar.update(len(batch))
    return CollectReport(Path(out), tuple(measured), len(unique) - len(todo),
                         time.monotonic() - started, tuning_seconds)


@dataclass(frozen=True)
class AdaptiveRound:
    """One adaptive round: held-out configs, those predicted off by > 10%, neighbours measured."""

    round: int
    held_out: int
    poorly_predicted: int
    report: CollectReport
    poorly_keys: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "held_out": self.held_out,
                "poorly_predicted": self.poorly_predicted, **self.report.to_dict()}


def collect_adaptive(description: ModelDescription, device: Device, preset: Any, out: Path,
                     database_dir: Path, trials_per_layer: int, protocol: TimingProtocol,
                     samples: int, rounds: int, predictor_dir: Path, seed: int = 0,
                     neighbours_per_config: int = 2, progress: bool = True,
                     source: Source = Source(), networks: Sequence[Path] = (),
                     threads: int | None = None) -> tuple[CollectReport, list[AdaptiveRound]]:
    """The initial sample of `samples` pruned variants (plus the unpruned and the smallest network), then up to
    `rounds` nn-Meter rounds; each round's predictor is written under `predictor_dir/round-N`.
    Stops early when no held-out config is predicted off by more than 10%."""
    from latency_model.predictor import MIN_CONFIGS, train_predictor

    configs = layer_configs(description, sample_kept(description, samples, seed))
    first = collect(configs, device, preset, out, database_dir, trials_per_layer, protocol,
                    progress, source, networks, threads)
    done: list[AdaptiveRound] = []
    for r in range(1, rounds + 1):
        records = [rec for rec in MeasurementLog(out).read()
                   if rec.device_key == device.key and rec.target_preset == preset.name]
        if len({rec.key for rec in records}) < MIN_CONFIGS:
            log.warning("adaptive rounds need at least %d measured configs, %s has %d; stopping",
                        MIN_CONFIGS, out, len({rec.key for rec in records}))
            break
        predictor = train_predictor(records, Path(predictor_dir) / f"round-{r}", seed=seed + r)
        held = {rec.key: rec for rec in records if rec.key in predictor.holdout_keys}
        held_configs = [rec.config for rec in held.values()]
        predicted = predictor.held_out_view().predict_ms(held_configs)
        poor = poorly_predicted(held_configs, predicted,
                                [held[c.key].median_ms for c in held_configs])
        log.info("round %d: %d of %d held-out configs off by more than %.0f%%", r, len(poor),
                 len(held_configs), 100 * ADAPTIVE_THRESHOLD)
        if not poor:
            break
        around = neighbour_configs(description, poor, neighbours_per_config, seed=seed + r)
        report = collect(around, device, preset, out, database_dir, trials_per_layer, protocol,
                         progress, source, threads=threads)
        done.append(AdaptiveRound(r, len(held_configs), len(poor), report,
                                  tuple(c.key for c in poor)))
        if not report.measured:
            break
    return first, done
