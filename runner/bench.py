"""Benchmark an artifact on a device: architecture probe, numeric check, FPS, per-kernel table.

In one session, in this order: the device type is checked (an OpenCL artifact needs
`remote.cl()`), probe.so is uploaded and run (a library for another architecture is refused
before the large one is uploaded), model.so is uploaded and loaded into a Relax VM, the stored
reference input is checked against the stored output, `main` is timed with the project's
protocol, and with `per_kernel` every kernel of kernels.so is timed alone. A session that drops
is retried once and resumes after what it already measured.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runner.artifact import (
    KERNELS_LIB,
    MODEL_LIB,
    PROBE_FUNC,
    PROBE_LIB,
    Artifact,
    KernelSpec,
    load_artifact,
)
from runner.device import Device
from runner.drift import DriftReference, corrected_samples
from runner.emulator.server import EMULATED_KEY
from runner.errors import ArtifactError, CheckFailed
from runner.kernels import KernelTable, kernel_table, time_kernels
from runner.session import is_dropped_session, run_with_retry
from runner.timing import Timing, TimingProtocol, time_function, time_round_robin

logger = logging.getLogger(__name__)

BIG_CORES = 1  # runtime.config_threadpool mode: TVM's ThreadGroup::kBig (-1 is kLittle)
EMULATED_NOTE = "emulated device: timings are for correctness runs only, not device figures"


@dataclass(frozen=True)
class CheckResult:
    """The device's outputs for the reference input against the stored reference outputs."""

    max_abs_error: float
    max_rel_error: float  # |actual - expected| / max(|expected|, atol), largest element
    atol: float
    rtol: float
    passed: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BaselineComparison:
    """A baseline artifact timed in turns with the benched one, in the same session: the drift
    of a shared machine (speed levels ~20% apart for seconds) hits both alike, so their ratio
    holds where the absolute figures move (bench/results/README.md, repeatability)."""

    artifact: str
    timing: Timing  # the baseline's samples, all rounds
    ratios: tuple[float, ...]  # per round: the benched artifact's median / the baseline's

    @property
    def ratio(self) -> float:
        return float(statistics.median(self.ratios))

    @property
    def ratio_spread(self) -> float:
        """Interquartile range of the per-round ratios over their median."""
        if len(self.ratios) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.ratios, n=4, method="inclusive")
        return float((q3 - q1) / self.ratio)

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, **self.timing.to_dict(), "ratio": self.ratio,
                "ratio_spread": self.ratio_spread, "rounds": len(self.ratios), "ratios": list(self.ratios)}


@dataclass(frozen=True)
class BenchResult:
    """One benchmark of one artifact on one device."""

    artifact: str
    device_key: str
    tracker: str
    target_preset: str
    target_arch: str
    device_type: str
    threads: int  # the device's thread pool size while timing
    threads_requested: int | None
    protocol: TimingProtocol
    timing: Timing
    check: CheckResult | None
    kernels: KernelTable | None
    emulated: bool
    baseline: BaselineComparison | None = None

    @property
    def fps(self) -> float:
        return self.timing.fps

    def to_dict(self) -> dict:
        """bench.json: the frame rate under `fps`, latency statistics in ms, how measured."""
        data = {
            **self.timing.to_dict(),
            "emulated": self.emulated,
            "device": {"key": self.device_key, "tracker": self.tracker,
                       "threads": self.threads, "threads_requested": self.threads_requested,
                       "emulated": self.emulated},
            "target": {"preset": self.target_preset, "arch": self.target_arch,
                       "device_type": self.device_type},
            "artifact": self.artifact,
            "protocol": self.protocol.to_dict(),
            "measured": self.protocol.describe(),
            "check": self.check.to_dict() if self.check else None,
            "kernels": self.kernels.to_dict() if self.kernels else None,
            "baseline": self.baseline.to_dict() if self.baseline else None,
        }  # fmt: skip
        if self.emulated:
            data["note"] = EMULATED_NOTE
        return data


@dataclass(frozen=True)
class _Plan:
    """What one benchmark asks for (fixed across a retried session)."""

    device: Device
    artifact: Artifact
    protocol: TimingProtocol
    threads: int | None
    check: bool
    kernels: list[KernelSpec]
    atol: float
    rtol: float
    baseline: Artifact | None = None
    rounds: int = 1


@dataclass
class _Measured:
    """What a benchmark has measured so far; kept across a retried session."""

    threads: int | None = None
    check: CheckResult | None = None
    timing: Timing | None = None
    baseline: BaselineComparison | None = None
    kernel_timings: dict[str, Timing] = field(default_factory=dict)

    def describe(self) -> str:
        parts = []
        if self.check is not None:
            parts.append(f"check {'passed' if self.check.passed else 'FAILED'} "
                         f"(max abs error {self.check.max_abs_error:.3g})")  # fmt: skip
        if self.timing is not None:
            parts.append(f"median {self.timing.median_ms:.4g} ms over {self.timing.runs} "
                         f"samples ({self.timing.fps:.4g} FPS)")  # fmt: skip
        if self.kernel_timings:
            parts.append(f"{len(self.kernel_timings)} kernel(s) timed")
        return "; ".join(parts) or "nothing"


def bench_artifact(
    artifact_dir: str | Path,
    device: Device,
    protocol: TimingProtocol = TimingProtocol(),
    threads: int | None = None,
    check: bool = False,
    per_kernel: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    session_timeout_s: float = 600,
    wait_s: float = 60.0,
    baseline: str | Path | None = None,
    rounds: int = 5,
) -> BenchResult:
    """Run the artifact on `device` and time it; see the module docstring for the steps. With
    `baseline` (another artifact for the same device), the two are timed in `rounds` turns in
    the session, the protocol's samples split between the rounds, and the result holds the
    baseline's timing and the per-round ratios.

    Raises ArtifactError (bad artifact, or one the device cannot run), CheckFailed (outputs
    differ from the reference), DeviceError (tracker/device unreachable, busy, or dropped twice).
    """
    artifact = load_artifact(artifact_dir, with_kernels=per_kernel)
    target = artifact.manifest.target
    emulated = device.emulated or device.key == EMULATED_KEY
    if emulated and not target.emulated_ok:
        raise ArtifactError(
            f"artifact {artifact.folder} (target preset {target.preset!r}) cannot run on the "
            "emulated aarch64 device, which runs glibc Linux code only.",
            "Compile with --target linux-arm64 for the emulated device, or run this artifact "
            "on a real device with --tracker/--key.",
        )
    kernels = artifact.kernels() if per_kernel else []
    if threads is None and artifact.manifest.runtime.get("threads"):
        threads = int(artifact.manifest.runtime["threads"])  # a phone preset's big cores
        logger.info("running on %d big-core threads, as the artifact's %s preset says", threads,
                    artifact.manifest.runtime.get("device", "device"))  # fmt: skip
    if rounds < 1:
        raise ArtifactError(f"{rounds} rounds: a comparison with a baseline needs at least one.",
                            "Pass --rounds 1 or more.")
    other = load_artifact(baseline) if baseline is not None else None
    if other is not None and other.manifest.target.preset != target.preset:
        raise ArtifactError(f"baseline {other.folder} is built for target {other.manifest.target.preset!r}, the "
                            f"benched artifact for {target.preset!r}: they cannot run on one device.",
                            "Compile the baseline for the same --target.")
    plan = _Plan(device, artifact, protocol, threads, check, kernels, atol, rtol, other, rounds)
    measured = _Measured()
    run_with_retry(
        device,
        lambda remote: _bench_in_session(remote, plan, measured),
        what=f"benchmarking {artifact.folder.name}",
        measured_so_far=measured.describe,
        session_timeout_s=session_timeout_s,
        wait_s=wait_s,
    )
    table = kernel_table(kernels, measured.kernel_timings, measured.timing.median_ms)
    return BenchResult(
        artifact=str(artifact.folder),
        device_key=device.key,
        tracker=str(device.tracker),
        target_preset=target.preset,
        target_arch=target.arch,
        device_type=target.device_type,
        threads=measured.threads,
        threads_requested=threads,
        protocol=protocol,
        timing=measured.timing,
        check=measured.check,
        kernels=table if per_kernel else None,
        emulated=emulated,
        baseline=measured.baseline,
    )


def _bench_in_session(remote: Any, plan: _Plan, measured: _Measured) -> None:
    """The benchmark's steps in one session, skipping what `measured` already holds."""
    import tvm

    dev = _compute_device(remote, plan.device, plan.artifact)
    _run_probe(remote, plan.device, plan.artifact)
    if plan.threads is not None:
        remote.get_function("runtime.config_threadpool")(BIG_CORES, plan.threads)
    measured.threads = int(remote.get_function("runtime.NumThreads")())
    if plan.threads is not None and measured.threads != plan.threads:
        logger.warning("asked for %d threads; the device runs %d", plan.threads,
                       measured.threads)  # fmt: skip
    is_cpu = dev.dlpack_device_type() == remote.cpu().dlpack_device_type()
    vm = _load_vm(remote, dev, is_cpu, plan.artifact, MODEL_LIB)
    expected = plan.artifact.reference()[1]
    if plan.check and measured.check is None:
        vm.invoke_stateful("main")
        measured.check = _compare(_flatten(vm.get_outputs("main")), expected, plan.atol,
                                  plan.rtol)  # fmt: skip
        if not measured.check.passed:
            raise _check_failed(plan, measured.check)
    if measured.timing is None and plan.baseline is None:
        measured.timing = time_function(vm, "invoke_stateful", dev, ("main",), plan.protocol)
    elif measured.timing is None:
        measured.timing, measured.baseline = _time_in_turns(remote, dev, is_cpu, vm, plan)
    if plan.kernels:
        library = _upload_and_load(remote, plan.artifact.path(KERNELS_LIB))
        time_kernels(library, dev, plan.kernels, plan.protocol, measured.kernel_timings,
                     lambda array: tvm.runtime.tensor(array, dev))  # fmt: skip


def _time_in_turns(remote: Any, dev: Any, is_cpu: bool, vm: Any, plan: _Plan) -> tuple[Timing, BaselineComparison]:
    """The artifact and its baseline timed in turns: both warmed up, then `rounds` rounds of
    each, the protocol's samples split between the rounds."""
    other = _load_vm(remote, dev, is_cpu, plan.baseline, "baseline-" + MODEL_LIB)
    ours, theirs = time_round_robin([vm, other], dev, plan.protocol, plan.rounds)
    ratios = tuple(mine.median_ms / base.median_ms for mine, base in zip(ours, theirs))
    return _joined(ours), BaselineComparison(str(plan.baseline.folder), _joined(theirs), ratios)


def _joined(rounds: Sequence[Timing]) -> Timing:
    return Timing(tuple(sample for timing in rounds for sample in timing.samples_ms))


def _load_vm(remote: Any, dev: Any, is_cpu: bool, artifact: Artifact, remote_name: str) -> Any:
    """The artifact's model loaded into a Relax VM on the device, its reference input set."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    vm = VirtualMachine(_upload_and_load(remote, artifact.path(MODEL_LIB), remote_name),
                        [dev] if is_cpu else [dev, remote.cpu()])  # fmt: skip
    vm.set_input("main", *[tvm.runtime.tensor(value, dev) for value in artifact.reference()[0].values()])
    return vm


@dataclass(frozen=True)
class BatchTiming:
    """One artifact of a batch timed round-robin: its raw samples and, with a drift reference,
    the reference's median in every round and the samples scaled to the reference's nominal
    speed (`runner.drift`)."""

    artifact: str
    raw: Timing
    threads: int  # the device's thread pool while timing
    reference_ms: tuple[float, ...] = ()
    corrected: Timing | None = None

    @property
    def timing(self) -> Timing:
        """The figure: drift-corrected when a reference was timed, else raw."""
        return self.corrected or self.raw


def bench_batch(
    artifact_dirs: Sequence[str | Path],
    device: Device,
    protocol: TimingProtocol,
    reference: DriftReference | None = None,
    threads: int | None = None,
    session_timeout_s: float = 600,
    wait_s: float = 60.0,
) -> list[BatchTiming]:
    """Time several artifacts for one target together, round-robin over the protocol's rounds,
    with the device's drift reference in every round when the protocol asks for it: every
    artifact meets the same machine states, and the reference puts them in one unit with
    figures taken at other times. The rounds are spread over the protocol's `sessions`, each
    session timing every artifact. No numeric check (`bench_artifact --check` has one)."""
    if protocol.drift_reference != (reference is not None):
        raise ArtifactError(
            f"the timing protocol {'asks for' if protocol.drift_reference else 'has no'} a drift reference, "
            f"and {'none' if reference is None else 'one'} was given.",
            "Pass the device's drift reference with a protocol that uses it (latency_model builds one per "
            "device), or a protocol without it.")
    artifacts = [load_artifact(folder) for folder in artifact_dirs]
    extra = [load_artifact(reference.artifact)] if reference is not None else []
    presets = {a.manifest.target.preset for a in artifacts + extra}
    if len(presets) > 1:
        raise ArtifactError(f"a batch holds artifacts for several targets ({', '.join(sorted(presets))}); one "
                            "device runs one.", "Time each target's artifacts on its own device.")
    if not artifacts:
        return []

    per_session = -(-protocol.rounds // protocol.sessions)
    share = replace(protocol, repeat=per_session * -(-protocol.repeat // protocol.rounds), rounds=per_session,
                    sessions=1)

    def in_session(remote: Any) -> tuple[int, list[list[Timing]]]:
        first = artifacts[0]
        dev = _compute_device(remote, device, first)
        _run_probe(remote, device, first)
        if threads is not None:
            remote.get_function("runtime.config_threadpool")(BIG_CORES, threads)
        is_cpu = dev.dlpack_device_type() == remote.cpu().dlpack_device_type()
        machines = [_load_vm(remote, dev, is_cpu, a, f"batch{i}-{MODEL_LIB}") for i, a in enumerate(artifacts + extra)]
        return int(remote.get_function("runtime.NumThreads")()), time_round_robin(machines, dev, share, per_session)

    rounds: list[list[Timing]] = [[] for _ in artifacts + extra]
    for _ in range(protocol.sessions):  # each session is a process of its own on the device: a figure spans several
        pool, timed = run_with_retry(device, in_session, what=f"timing a batch of {len(artifacts)} artifacts",
                                     session_timeout_s=session_timeout_s, wait_s=wait_s)  # fmt: skip
        for own, more in zip(rounds, timed):
            own.extend(more)
    if reference is None:
        return [BatchTiming(str(a.folder), _joined(own), pool) for a, own in zip(artifacts, rounds)]
    reference_ms = tuple(t.median_ms for t in rounds[-1])
    return [BatchTiming(str(a.folder), _joined(own), pool, reference_ms,
                        Timing(corrected_samples([t.samples_ms for t in own], reference_ms, reference.nominal_ms)))
            for a, own in zip(artifacts, rounds[:-1])]


def _check_failed(plan: _Plan, check: CheckResult) -> CheckFailed:
    return CheckFailed(
        f"device {plan.device.key} computed outputs that differ from the reference of "
        f"{plan.artifact.folder}: max abs error {check.max_abs_error:.3g}, max rel error "
        f"{check.max_rel_error:.3g} (allowed: atol {check.atol}, rtol {check.rtol}).",
        "If the difference is expected (reduced precision), raise --atol/--rtol; otherwise "
        "the build is wrong for this device: recompile it and report the target and TVM "
        "version.",
    )


def _compute_device(remote: Any, device: Device, artifact: Artifact) -> Any:
    """The remote device the artifact's kernels run on; checked before anything is uploaded."""
    if artifact.manifest.target.device_type == "cpu":
        return remote.cpu()
    dev = remote.cl()
    if not dev.exist:
        raise ArtifactError(
            f"device {device.key} has no OpenCL device, but artifact {artifact.folder} "
            f"(target preset {artifact.manifest.target.preset!r}) runs its kernels with OpenCL.",
            "Run it on a phone whose RPC server has OpenCL (TVM's Android RPC app built with "
            "OpenCL), or compile for a CPU target.",
        )
    return dev


def _run_probe(remote: Any, device: Device, artifact: Artifact) -> None:
    """Load and run probe.so: refuses an artifact the device's CPU cannot run, cheaply."""
    import tvm

    target = artifact.manifest.target
    try:
        module = _upload_and_load(remote, artifact.path(PROBE_LIB))
        dev = remote.cpu()
        out = tvm.runtime.empty((4,), "float32", dev)
        module.get_function(PROBE_FUNC)(tvm.runtime.tensor(np.arange(4, dtype="float32"), dev),
                                        out)  # fmt: skip
        result = out.numpy()
    except Exception as err:  # noqa: BLE001 - any failure to load or run means "cannot run"
        if is_dropped_session(err):
            raise
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise _cannot_run(device, artifact, f"loading {PROBE_LIB} failed: {reason}") from None
    if not np.array_equal(result, np.arange(1, 5, dtype="float32")):
        raise _cannot_run(device, artifact, f"{PROBE_LIB} computed {result.tolist()}")
    logger.debug("%s runs on %s (%s code)", PROBE_LIB, device.key, target.arch)


def _cannot_run(device: Device, artifact: Artifact, detail: str) -> ArtifactError:
    target = artifact.manifest.target
    fix = (f"Compile for this device's architecture (`python -m compile --target ...`), or "
           f"run the artifact on an {target.arch} device with --tracker/--key.")  # fmt: skip
    if target.emulated_ok:
        fix += " For a correctness check only: --emulate aarch64."
    return ArtifactError(
        f"device {device.key} cannot run artifact {artifact.folder}, built for {target.arch} "
        f"(target preset {target.preset!r}): {detail}. Nothing else was uploaded.",
        fix,
    )


def _upload_and_load(remote: Any, path: Path, remote_name: str | None = None) -> Any:
    """Upload a library and load it; `remote_name` for a second one of the same file name (a
    baseline's model.so: overwriting a loaded library would pull it from under the first)."""
    name = remote_name or path.name
    logger.debug("uploading %s (%.1f KiB, from %s)", name, path.stat().st_size / 1024, path)
    remote.upload(str(path), target=name)
    return remote.load_module(name)


def _flatten(value: Any) -> list[np.ndarray]:
    if isinstance(value, (tuple, list)):
        return [array for item in value for array in _flatten(item)]
    return [value.numpy()]


def _compare(
    actual: list[np.ndarray], expected: list[np.ndarray], atol: float, rtol: float
) -> CheckResult:
    actual_shapes, expected_shapes = [a.shape for a in actual], [e.shape for e in expected]
    if actual_shapes != expected_shapes:
        raise CheckFailed(
            f"the device returned outputs of shapes {actual_shapes}; the reference has "
            f"{expected_shapes}.",
            "The artifact's model.so and reference.npz do not belong together: recompile it.",
        )
    abs_errors = [np.abs(a.astype(np.float64) - e.astype(np.float64)) for a, e in
                  zip(actual, expected)]  # fmt: skip
    max_abs = max((float(err.max()) for err in abs_errors if err.size), default=0.0)
    max_rel = max((float((err / np.maximum(np.abs(e), atol)).max()) for err, e in
                   zip(abs_errors, expected) if err.size), default=0.0)  # fmt: skip
    passed = all(np.allclose(a, e, atol=atol, rtol=rtol) for a, e in zip(actual, expected))
    return CheckResult(max_abs, max_rel, atol, rtol, passed)
