"""Schedule transfer: tiles refitted to new extents, traces replayed on other shapes, and a
pruned width that was never tuned compiled with `trials=0` from a donor of its structure."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from compile.transfer import outputs_match, refit_tiles, replay


def test_refit_tiles_multiply_to_the_extent_and_keep_what_divides():
    rng = random.Random(0)
    for _ in range(500):
        donor = [rng.choice([1, 2, 3, 4, 8, 16, 32]) for _ in range(rng.choice([2, 3, 4]))]
        extent = rng.randint(1, 600)
        tiles = refit_tiles(extent, donor)
        assert int(np.prod(tiles)) == extent and len(tiles) == len(donor)
    assert refit_tiles(256, [4, 4, 16]) == [4, 4, 16]  # the donor's own extent: unchanged
    assert refit_tiles(192, [4, 4, 16]) == [3, 4, 16]  # only the outermost absorbs the change
    assert refit_tiles(7, [1, 7]) == [1, 7]


def test_refit_keeps_a_power_of_two_vector_tile():
    """N=200 from an innermost 16: 8 (measured 85 GFLOP/s), not 20 or 40 (about 10)."""
    assert refit_tiles(200, [2, 8, 16])[-1] == 8
    assert refit_tiles(200, [2, 8, 16], max_innermost=4)[-1] == 4
    assert refit_tiles(97, [4, 16]) == [97, 1] or refit_tiles(97, [4, 16])[-1] in (1, 97)


def _dense(m: int, k: int, n: int):
    """The fused matmul + bias workload of a Linear layer, as MetaSchedule extracts it."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    x = relax.Var("x", relax.TensorType((1, m, k), "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            w = relax.const(np.ones((k, n), "float32"))
            b = relax.const(np.ones((n,), "float32"))
            out = builder.emit_output(builder.emit(relax.op.add(relax.op.matmul(x, w), b)))
        builder.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    with target:
        lowered = relax.get_pipeline("zero")(builder.get())
    (task,) = ms.relax_integration.extract_tasks(lowered, target)
    return task.dispatched[0], target


def _sampled_trace(mod, target):
    """A schedule of `mod` from MetaSchedule's design space, with its decisions sampled."""
    from compile.transfer import postprocessors
    from tvm.s_tir import meta_schedule as ms

    posts = postprocessors(mod, target)  # first: it registers only the CPU intrinsics
    context = ms.TuneContext(mod=mod, target=target, space_generator=ms.space_generator.PostOrderApply(),
                             task_name="donor", rand_state=3, num_threads=1)
    return context.generate_design_space()[0].trace, posts


def test_a_trace_replays_on_other_extents_and_computes_the_same():
    from compile.workload_structure import structure_key

    donor, target = _dense(64, 64, 256)
    trace, posts = _sampled_trace(donor, target)
    for k, n in [(48, 200), (56, 192), (64, 256)]:
        mod, _ = _dense(64, k, n)
        assert structure_key(mod) == structure_key(donor)
        sch = replay(trace, mod, posts)
        assert sch is not None, (k, n)
        assert "T.parallel" in sch.mod.script() or "T.vectorized" in sch.mod.script()
        assert outputs_match(sch.mod, mod)


def test_a_trace_of_another_structure_is_skipped_not_raised():
    import tvm
    from tvm import te

    donor, target = _dense(64, 64, 256)
    trace, posts = _sampled_trace(donor, target)
    a = te.placeholder((64, 64), name="a")
    other = tvm.IRModule({"main": te.create_prim_func([a, te.compute((64, 64), lambda i, j: a[j, i])])})
    assert replay(trace, other, posts) is None


def test_the_numeric_check_sees_a_kernel_that_computes_something_else():
    import tvm
    from tvm import te

    a = te.placeholder((32,), name="a")
    relu = tvm.IRModule({"main": te.create_prim_func([a, te.compute((32,), lambda i: tvm.te.max(a[i], 0.0))])})
    absolute = tvm.IRModule({"main": te.create_prim_func([a, te.compute((32,), lambda i: tvm.te.abs(a[i]))])})
    assert outputs_match(relu, relu)
    assert not outputs_match(absolute, relu)


def test_candidates_past_the_nearest_donors_are_their_other_design_spaces(tmp_path):
    """One donor workload with two design spaces recorded: one candidate is the donor's best
    record, a second is its other sketch's best, and both compute what the kernel computes."""
    import types

    from tvm.s_tir import meta_schedule as ms

    from compile.database import open_database
    from compile.transfer import _candidates, find_donors, postprocessors

    donor, target = _dense(64, 64, 256)
    postprocessors(donor, target)  # registers only the CPU intrinsics before the context does
    context = ms.TuneContext(mod=donor, target=target, space_generator=ms.space_generator.PostOrderApply(),
                             task_name="donor", rand_state=3, num_threads=1)
    spaces = context.generate_design_space()
    assert len(spaces) >= 2
    db = open_database(tmp_path / "db", target)
    args = ms.arg_info.ArgInfo.from_prim_func(donor["main"])
    for space, seconds in zip(spaces[:2], (2e-5, 1e-5)):  # the second design space is the faster
        db.commit_tuning_record(ms.database.TuningRecord(space.trace, db.commit_workload(donor), [seconds],
                                                         target, args))  # fmt: skip
    mod, _ = _dense(64, 48, 200)
    found = find_donors(db, mod, target, limit=2, sketches=2)
    assert [d.sketch for d in found] == [0, 1] and [d.seconds for d in found] == [1e-5, 2e-5]
    assert len(find_donors(db, mod, target, limit=2)) == 1
    task = types.SimpleNamespace(dispatched=[mod], task_name="dense")
    assert [c.donor.sketch for c in _candidates([task], db, target, 1)] == [0]
    two = _candidates([task], db, target, 2)
    assert [c.donor.sketch for c in two] == [0, 1]
    assert all(outputs_match(c.schedule.mod, mod) for c in two)


@pytest.fixture(scope="module")
def donor_database(host_farm, tmp_path_factory):
    """The tiny conv net at 8 channels, tuned (random search, 3 trials a kernel): the donors."""
    from compile.api import compile_model
    from compile.targets import resolve_target
    from helpers.tiny_models import TinyConvNet, export_onnx

    work = tmp_path_factory.mktemp("donors")
    model = export_onnx(TinyConvNet(channels=8), work / "conv8.onnx")
    compile_model(model, work / "artifact", resolve_target("host"), database_dir=work / "db", trials=9,
                  device=host_farm.device)
    return work / "db"


def test_a_width_never_tuned_compiles_with_zero_trials_from_transferred_schedules(
        donor_database, host_farm, tmp_path, monkeypatch):
    import shutil

    from compile.api import compile_model
    from compile.targets import resolve_target
    from helpers.tiny_models import TinyConvNet, export_onnx
    from runner.bench import bench_artifact
    from runner.timing import TimingProtocol

    db = tmp_path / "db"
    shutil.copytree(donor_database, db)
    model = export_onnx(TinyConvNet(channels=12), tmp_path / "conv12.onnx")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # where the build workers put the candidates
    result = compile_model(model, tmp_path / "artifact", resolve_target("host"), database_dir=db, trials=0,
                           device=host_farm.device)
    assert result.untuned == 0 and result.tuning.trials == 0
    assert result.tuning.count("transferred") == 3
    assert not list((tmp_path / "tmp").glob("edgeseg-build-*"))  # every candidate built was deleted once timed
    for task in result.tuning.tasks:
        assert task.transfer["donor_extents"] and task.transfer["us"] > 0
        assert 0 < task.transfer["relative_speed"]
    manifest = json.loads((result.artifact / "manifest.json").read_text())
    assert manifest["tuning"]["sources"]["transferred"] == 3
    assert bench_artifact(result.artifact, host_farm.device, TimingProtocol(warmup=1, repeat=3),
                          check=True).check.passed
    # The transferred records are records of their own now: a rebuild finds them, measures nothing.
    again = compile_model(model, tmp_path / "again", resolve_target("host"), database_dir=db, trials=0,
                          device=host_farm.device)
    assert all(t.had_record and t.source == "transferred" for t in again.tuning.tasks)
    assert again.tuning.transfer_seconds == 0


def test_a_transfer_that_fails_the_numeric_check_is_discarded(donor_database, host_farm, tmp_path,
                                                               monkeypatch, caplog):
    import shutil

    import compile.transfer
    from compile.api import compile_model
    from compile.targets import resolve_target
    from helpers.tiny_models import TinyConvNet, export_onnx

    db = tmp_path / "db"
    shutil.copytree(donor_database, db)
    monkeypatch.setattr(compile.transfer, "outputs_match", lambda scheduled, reference: False)
    model = export_onnx(TinyConvNet(channels=12), tmp_path / "conv12.onnx")
    result = compile_model(model, tmp_path / "artifact", resolve_target("host"), database_dir=db, trials=0,
                           device=host_farm.device)
    assert result.untuned == 3 and result.tuning.count("transferred") == 0
    assert "fails the numeric check; discarded" in caplog.text


def test_kernels_named_after_other_variables_share_a_structure_and_replay():
    """A LayerNorm's blocks are named after its input variable (`x_sum`, `lv1_sum`): the same
    kernel deeper in a model is still the same structure, and a trace's blocks are renamed."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from compile.workload_structure import rename_blocks
    from compile.workload_structure import block_names, structure_key

    x = relax.Var("x", relax.TensorType((1, 64, 32), "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            norm = builder.emit(relax.op.nn.layer_norm(x, relax.const(np.ones(32, "float32")),
                                                       relax.const(np.zeros(32, "float32")), axes=[-1]))
            wide = builder.emit(relax.op.matmul(norm, relax.const(np.ones((32, 48), "float32"))))
            out = builder.emit_output(builder.emit(relax.op.nn.layer_norm(
                wide, relax.const(np.ones(48, "float32")), relax.const(np.zeros(48, "float32")), axes=[-1])))
        builder.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    with target:
        lowered = relax.get_pipeline("zero")(builder.get())
    norms = [t.dispatched[0] for t in ms.relax_integration.extract_tasks(lowered, target)
             if t.task_name.startswith("layer_norm")]
    first, second = norms
    assert structure_key(first) == structure_key(second)
    assert block_names(first) != block_names(second)
    trace, posts = _sampled_trace(first, target)
    assert replay(trace, second, posts) is None  # the donor's block names are not the kernel's
    sch = replay(rename_blocks(trace, first, second), second, posts)
    assert sch is not None and outputs_match(sch.mod, second)
    # a block the schedule made from one of the workload's (rfactor's `..._rf`), fetched again by name
    made = tvm.s_tir.Schedule(first)
    sum_block = next(n for n in block_names(first) if n.endswith("_sum"))
    made.rfactor(made.get_loops(made.get_sblock(sum_block))[-1], 0)
    made.get_sblock(sum_block + "_rf")
    renamed = tvm.s_tir.Schedule(second)
    rename_blocks(made.trace, first, second).apply_to_schedule(renamed, remove_postproc=False)
    assert any(n.endswith("_sum_rf") for n in block_names(renamed.mod))


def test_a_record_of_a_kernel_named_otherwise_is_kept_as_a_record_of_the_stored_one(tmp_path):
    """Structural equality ignores names: a record tuned on `lv_sum`'s LayerNorm lands on the
    stored `x_sum` workload, with its trace renamed, so the database can replay it (it raised)."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    import tvm_ffi

    from compile.database import DeviceDatabase
    from compile.workload_structure import block_names

    def layer_norm_kernel(input_name: str):
        x = relax.Var(input_name, relax.TensorType((1, 64, 32), "float32"))
        builder = relax.BlockBuilder()
        with builder.function("main", [x]):
            with builder.dataflow():
                out = builder.emit_output(builder.emit(relax.op.nn.layer_norm(
                    x, relax.const(np.ones(32, "float32")), relax.const(np.zeros(32, "float32")), axes=[-1])))
            builder.emit_func_output(out)
        with target:
            lowered = relax.get_pipeline("zero")(builder.get())
        return ms.relax_integration.extract_tasks(lowered, target)[0].dispatched[0]

    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    stored, tuned = layer_norm_kernel("x"), layer_norm_kernel("lv")
    assert tvm_ffi.structural_equal(stored, tuned) and block_names(stored) != block_names(tuned)
    db = DeviceDatabase(tmp_path / "db")
    db.commit_workload(stored)
    trace, _ = _sampled_trace(tuned, target)
    args = ms.arg_info.ArgInfo.from_prim_func(tuned["main"])
    db.commit_tuning_record(ms.database.TuningRecord(trace, ms.database.Workload(tuned), [1e-4], target, args))
    # as MetaSchedule's measure callback and schedule transfer do: the workload from commit_workload
    db.commit_tuning_record(ms.database.TuningRecord(trace, db.commit_workload(tuned), [2e-4], target, args))
    assert db.query_schedule(stored, target, "main") is not None
    assert db.query_schedule(tuned, target, "main") is not None
    assert len(db.get_top_k(db.commit_workload(stored), 5)) == 2 and not db._unreplayable  # both replay
