"""How tuning times a candidate: several repeats on the device, one median handed to MetaSchedule."""

from __future__ import annotations

from tvm.s_tir import meta_schedule as ms

from compile.builder import PooledBuilder, remove_candidate
from compile.measure import EVALUATOR, close_runner, device_runner, median_result
from compile.targets import resolve_target
from helpers.tuning_records import matmul


def test_a_stalled_repeat_does_not_become_the_record():
    stalled = ms.runner.RunnerResult([10e-6, 21e-3, 10.5e-6, 12e-6, 11e-6], None)
    (secs,) = median_result(stalled).run_secs
    assert abs(float(secs) - 11e-6) < 1e-9  # the mean, which MetaSchedule would use, is 4.2 ms


def test_a_failed_candidate_keeps_its_error():
    failed = median_result(ms.runner.RunnerResult(None, "it crashed"))
    assert failed.error_msg == "it crashed" and failed.run_secs is None


def test_the_device_times_repeats_and_tuning_sees_their_median(host_farm):
    preset = resolve_target("host")
    target = preset.target()
    builder = PooledBuilder(preset)
    try:
        (built,) = builder.build([ms.builder.BuilderInput(matmul(64, 64, 64), target)])
    finally:
        builder.shutdown()
    assert built.error_msg is None
    args = ms.arg_info.ArgInfo.from_prim_func(matmul(64, 64, 64)["main"])
    runner = device_runner(host_farm.device, alone=True)
    try:
        runner_input = ms.runner.RunnerInput(built.artifact_path, "cpu", args)
        (repeats,) = [f.result() for f in runner.runner.runner.run([runner_input])]
        (reported,) = [f.result() for f in runner.run([runner_input])]
    finally:
        close_runner(runner)
        remove_candidate(built.artifact_path)
    assert repeats.error_msg is None and len(repeats.run_secs) == EVALUATOR.repeat >= 3
    assert reported.error_msg is None and len(reported.run_secs) == 1 and float(reported.run_secs[0]) > 0
