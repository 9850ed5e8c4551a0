"""How candidate schedules are timed on a device, for tuning and for schedule transfer alike.

MetaSchedule's task scheduler sends a batch to the runner and builds the next batch while the
first is measured. On a device that is also the build machine (the embedded host-cpu device,
and the emulated aarch64 one, which runs on the same cores) those timings share the CPU with
the compiler, and the cost model learns from them: `MeasureAlone` returns from `run` only when
every timing is done, so a timing never overlaps a build. A phone measures on its own cores,
where the overlap costs nothing and saves time, so RPC devices elsewhere keep it.

Every candidate is timed in several repeats, and MetaSchedule is handed their median
(`MedianOfRepeats`, on every device): it ranks, records and learns from the mean of a result's
`run_secs`, and with one sample per candidate one stalled timing (a 1-5 us reshape once recorded
at 21 ms) became the record and steered the task scheduler's trials.
"""

from __future__ import annotations

import logging
import statistics
from typing import Any, Sequence

from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture

from compile.builder import PooledBuilder, remove_candidate
from compile.targets import TargetPreset
from runner.device import HOST_KEY, Device
from runner.emulator import EMULATED_KEY
from runner.session import check_tracker

logger = logging.getLogger(__name__)

BUILD_MACHINE_KEYS = (HOST_KEY, EMULATED_KEY)


def measures_on_build_machine(device: Device) -> bool:
    """Does `device` run on the cores that build the candidates? (the embedded devices)"""
    return device.key in BUILD_MACHINE_KEYS


@derived_object
class _Finished(PyRunnerFuture):
    """A runner future whose result is already in."""

    def __init__(self, result: Any):
        super().__init__()
        self._result = result

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        return self._result


def median_result(result: Any) -> Any:
    """`result` (a RunnerResult) with its repeats replaced by their median, as one timing."""
    if result.error_msg is not None or not result.run_secs:
        return result
    return ms.runner.RunnerResult([statistics.median(float(s) for s in result.run_secs)], None)


@derived_object
class _MedianFuture(PyRunnerFuture):
    """A runner future whose result is the median of the wrapped future's repeats."""

    def __init__(self, future: Any):
        super().__init__()
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> Any:
        return median_result(self.future.result())


@derived_object
class MedianOfRepeats(PyRunner):
    """A runner that reports each candidate's median repeat, so one stall is not its record."""

    def __init__(self, runner: Any):
        super().__init__()
        self.runner = runner

    def run(self, runner_inputs: list[Any]) -> list[Any]:
        return [_MedianFuture(future) for future in self.runner.run(runner_inputs)]


@derived_object
class MeasureAlone(PyRunner):
    """A runner whose `run` waits for its timings, so the scheduler builds only between them."""

    def __init__(self, runner: Any):
        super().__init__()
        self.runner = runner

    def run(self, runner_inputs: list[Any]) -> list[Any]:
        return [_Finished(future.result()) for future in self.runner.run(runner_inputs)]


# Five repeats of at least 10 ms each: the median survives two stalled repeats, and a candidate
# costs ~50 ms of device time (one repeat of 20 ms before).
EVALUATOR = ms.runner.EvaluatorConfig(number=3, repeat=5, min_repeat_ms=10, enable_cpu_cache_flush=False)


def device_runner(device: Device, alone: bool = False) -> Any:
    """MetaSchedule's RPC runner for `device`, reporting medians (`MedianOfRepeats`): how tuning
    times a candidate (a session per candidate); `alone`: wrapped in `MeasureAlone`. Tuning's
    default measure callbacks delete each candidate's build folder once it is timed."""
    runner = ms.runner.RPCRunner(
        ms.runner.RPCConfig(
            tracker_host=device.tracker.host,
            tracker_port=device.tracker.port,
            tracker_key=device.key,
            session_timeout_sec=120,
        ),
        EVALUATOR,
        f_alloc_argument=alloc_arguments_from_host,
    )
    runner = MedianOfRepeats(runner)
    return MeasureAlone(runner) if alone else runner


def close_runner(runner: Any) -> None:
    """Stop the runner's worker pool here, not in a worker thread's garbage collection (where
    it fails with 'cannot join current thread')."""
    while isinstance(runner, (MeasureAlone, MedianOfRepeats)):
        runner = runner.runner
    runner.pool.shutdown()


def measure_schedules(schedules: Sequence[Any], target: Any, preset: TargetPreset,
                      device: Device) -> list[float | None]:
    """Build every schedule, then time each on `device` with tuning's evaluator settings:
    seconds per call (the median repeat), None when its build or run failed. All builds finish
    before the first timing starts (no timing shares the cores with a build), and every
    candidate is timed in ONE session: a session per candidate, as MetaSchedule's runner opens,
    costs more than timing a small kernel."""
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    builder = PooledBuilder(preset, progress="build candidates")
    try:
        built = builder.build([BuilderInput(s.mod, target) for s in schedules])
    finally:
        builder.shutdown()
    seconds: list[float | None] = [None] * len(schedules)
    runnable = []
    for i, b in enumerate(built):
        if b.error_msg is None:
            runnable.append(i)
        else:
            logger.debug("candidate %d did not build: %s", i, b.error_msg)
    if not runnable:
        return seconds
    try:
        _time_built(schedules, built, runnable, seconds, preset, device)
    finally:
        for b in built:
            remove_candidate(b.artifact_path)
    return seconds


def _time_built(schedules, built, runnable, seconds, preset, device) -> None:
    """Time the built candidates `runnable` in one session, filling `seconds`."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

    from runner.session import open_session

    check_tracker(device.tracker)
    with open_session(device) as remote:
        dev = remote.device(preset.device_type, 0)
        for i in tqdm(runnable, desc="time candidates", unit="kernel", leave=False):
            try:
                remote.upload(built[i].artifact_path, f"candidate-{i}.so")
                module = remote.load_module(f"candidate-{i}.so")
                # The arguments as the built kernel takes them: weights in a prepacked layout.
                info = [a.as_json() for a in ArgInfo.from_entry_func(schedules[i].mod, remove_preproc=True)]
                args = alloc_arguments_from_host(remote, dev, info, 1)
                costs = run_evaluator_common(module, dev, EVALUATOR, args)
                seconds[i] = statistics.median(costs)
                del module, args
            except Exception as error:  # noqa: BLE001 - a candidate that fails to run is skipped
                logger.debug("candidate %d did not run: %s", i, error)


def alloc_arguments_from_host(session, device, args_info, alloc_repeat):
    """Fill measurement inputs with random data sent from the host.

    MetaSchedule's default asks the device for `tvm.contrib.random.random_fill_for_measure`,
    which runtime-only TVM builds (the emulated device's, some phone RPC apps) do not have.
    """
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    rng = np.random.default_rng(0)

    def fill(tensor) -> None:
        values = rng.uniform(-1, 1, size=[int(d) for d in tensor.shape])
        tensor.copyfrom(values.astype(str(tensor.dtype)))

    return alloc_argument_common(fill, device, args_info, alloc_repeat)
