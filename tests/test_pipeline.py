"""`python -m prune.pipeline`: its stages and their commands, resume, errors before any stage,
and one tiny real run on the embedded device."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from prune.pipeline.cli import build_parser, main, options_from
from prune.pipeline.plan import TURNS, plan_finish, plan_round, plan_start
from prune.pipeline.rounds import (RoundResult, budget_ms, first_aim, landed, next_aim, predicted_layers_ms,
                                   reference_level, shipped)
from prune.pipeline.stages import RECORD, Stage, StageRecord, StageRunner
from runner.errors import EdgesegError


def _options(*argv: str, out: str = "runs/x"):
    return options_from(build_parser().parse_args([*argv, "-o", out]))


def _stage(stages, name) -> Stage:
    return next(s for s in stages if s.name == name)


def _planned(options, rounds: int = 1, budget: float = 33.3333, scale: float = 1.2):
    stages = plan_start(options)
    for round_ in range(rounds + 1):
        stages += plan_round(options, round_, budget, scale)
    return stages + plan_finish(options)


def test_a_phone_behind_a_tracker_reaches_every_stage_that_measures_and_the_data_sizes_the_classifier(monkeypatch):
    monkeypatch.setenv("TVM_NDK_CC", "/opt/ndk/clang")  # only looked up: nothing links here
    stages = _planned(_options("--data", "synthetic-hard", "--fps", "30", "--device", "s21-snapdragon",
                               "--tracker", "10.0.0.2:9190", "--key", "s21", "--unit", "auto"))
    collect = _stage(stages, "collect").args
    assert collect[collect.index("--classes") + 1] == "40"  # synthetic-hard's own, not --classes' 8
    assert collect[collect.index("--unit") + 1] == "1"  # --unit auto reads the alignment of every width
    for name in ("collect", "compile-pruned-round0", "compile-pruned-round1"):
        args = " ".join(_stage(stages, name).args)
        assert "--device s21-snapdragon" in args and "--tracker 10.0.0.2:9190 --key s21" in args
    bench = " ".join(_stage(stages, "bench-pruned-round1").args)
    assert "--tracker 10.0.0.2:9190 --key s21" in bench and "--check" in bench and "--device" not in bench
    assert f"--baseline runs/x/unpruned/artifact --rounds {TURNS}" in bench  # timed in turns with the reference
    pruned = " ".join(_stage(stages, "pruned-round0").args)
    assert "--budget-ms 33.3333 --latency-scale 1.2000" in pruned and "--fps" not in pruned  # measured ms, scaled
    assert "--unit auto" in pruned and "--weights runs/x/unpruned/weights.safetensors" in pruned
    assert [s.name for s in stages][:9] == ["collect", "predictor", "predictor-accuracy", "unpruned",
                                            "compile-unpruned", "bench-unpruned", "pruned-round0",
                                            "compile-pruned-round0", "bench-pruned-round0"]


def test_every_round_prunes_with_the_one_predictor_and_is_stale_when_a_bench_that_chose_its_budget_reruns():
    options = _options("--budget-fraction", "0.5", "--max-rounds", "3", "--samples", "7")
    stages = _planned(options, rounds=2)
    names = [s.name for s in stages]
    assert names[9:15] == ["pruned-round1", "compile-pruned-round1", "bench-pruned-round1", "pruned-round2",
                           "compile-pruned-round2", "bench-pruned-round2"]
    for name in ("pruned-round0", "pruned-round2", "unpruned-x2"):
        assert "--predictor runs/x/latency/predictor " in " ".join(_stage(stages, name).args) + " "
    assert _stage(stages, "pruned-round0").after == ("predictor", "bench-unpruned")
    assert _stage(stages, "pruned-round2").after == ("predictor", "bench-unpruned", "bench-pruned-round1",
                                                     "pruned-round0")
    # later rounds project round 0's search onto their aim: one ranking of units for every round
    assert "--reuse-search" not in _stage(stages, "pruned-round0").args
    assert " --reuse-search runs/x/pruned-round0 " in " ".join(_stage(stages, "pruned-round2").args)
    long_reference = " ".join(_stage(stages, "unpruned-x2").args)
    assert "--latency-scale" not in long_reference
    assert "--baseline runs/x/unpruned/artifact" in " ".join(_stage(stages, "bench-unpruned-x2").args)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fps", "30", "--max-rounds", "0", "-o", "x"])


def _result(round_: int, measured: float, aim: float = 8.0) -> RoundResult:
    return RoundResult(round_, Path(f"runs/x/pruned-round{round_}"), aim, 1.2, 9.5, measured, measured * 1.1,
                       measured / 20, 0.01)


def test_the_first_round_that_lands_ships_and_otherwise_the_closest_and_a_fraction_is_of_measured_ms():
    budget = 10.0
    rounds = [_result(0, 12.0), _result(1, 10.3), _result(2, 9.9)]
    assert _result(0, 10.49).miss(budget) == pytest.approx(0.049)
    assert landed(rounds[1], budget, 0.05) and not landed(rounds[0], budget, 0.05)
    assert shipped(rounds, budget, 0.05).round == 1  # the first that landed, not the closest
    assert shipped(rounds[:1] + [_result(1, 8.0), _result(2, 11.0)], budget, 0.05).round == 2  # none: closest
    assert budget_ms(_options("--budget-fraction", "0.4"), 12.5) == pytest.approx(5.0)
    assert budget_ms(_options("--fps", "50"), 12.5) == pytest.approx(20.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fps", "30", "--landing-tolerance", "1.5", "-o", "x"])


def _write(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def test_the_reference_level_is_its_median_over_every_session_that_timed_it(tmp_path):
    options = _options("--budget-fraction", "0.5", out=str(tmp_path))
    _write(tmp_path / "unpruned" / "bench.json", {"median_ms": 19.1})  # its own session, on a slow level
    for round_, level in enumerate((14.4, 12.7)):
        _write(tmp_path / f"pruned-round{round_}" / "bench.json", {"median_ms": 9.0, "baseline": {"median_ms": level}})
    assert reference_level(options, 0) == pytest.approx(19.1)
    assert reference_level(options, 1) == pytest.approx((19.1 + 14.4) / 2)
    assert reference_level(options, 2) == pytest.approx(14.4)


def test_round_zero_aims_at_the_budget_over_the_references_factor_and_each_round_corrects_by_its_miss(
        segformer_b0_predictor, tmp_path):
    from latency_model.predictor import Predictor
    from prune.describe import describe_model

    description = describe_model("segformer-b0", 64, num_classes=150)
    latency = tmp_path / "latency"
    latency.mkdir()
    (latency / "predictor").symlink_to(segformer_b0_predictor)
    _write(tmp_path / "unpruned" / "pruning.json", {"model": "segformer-b0", "input_size": 64, "num_classes": 150,
                                                    "kept_counts": description.full_kept()})
    layers = float(Predictor.load(segformer_b0_predictor).predict_ms(description.config_at(description.full_kept())).sum())
    assert predicted_layers_ms(tmp_path / "unpruned", latency / "predictor") == pytest.approx(layers)
    options = _options("--budget-fraction", "0.5", out=str(tmp_path))
    # the reference measures 1.5x its layers: round 0 aims at half its layers
    assert first_aim(options, 0.5 * 1.5 * layers, 1.5 * layers) == pytest.approx(0.5 * layers)
    # a device where a searched network measures 1.9x the layer sum it was aimed at: one correction lands
    aim0 = 4.0
    aim1 = next_aim([_result(0, 1.9 * aim0, aim=aim0)], budget=6.0)
    assert 1.9 * aim1 == pytest.approx(6.0)
    assert next_aim([_result(1, 5.0, aim=aim1)], budget=6.0) == pytest.approx(aim1 * 6.0 / 5.0)  # under: aims higher


def test_once_the_budget_is_bracketed_the_next_aim_lies_between_the_nearest_rounds_over_and_under():
    # main-job run 18: the ms moved about twice as far as the aim, so the one correction overshot
    rounds = [_result(0, 5.452, aim=2.982), _result(1, 3.508, aim=2.588)]
    aim = next_aim(rounds, budget=3.968)  # the run's budget
    assert 2.588 < aim < 2.982
    # on a device where ms = c * aim**2 the interpolation lands exactly
    rounds = [_result(0, 2.0 * 3.0 ** 2, aim=3.0), _result(1, 2.0 * 2.0 ** 2, aim=2.0), _result(2, 30.0, aim=3.8)]
    aim = next_aim(rounds, budget=12.5)
    assert 2.0 * aim ** 2 == pytest.approx(12.5)  # from the nearest pair (18 over, 8 under), not 30
    # measured ms that fell as the aim rose (noise): the middle of the bracket
    assert next_aim([_result(0, 12.0, aim=2.0), _result(1, 8.0, aim=3.0)], budget=10.0) == pytest.approx(6 ** 0.5)


def test_bad_device_options_fail_before_any_stage(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    out = tmp_path / "run"
    cases = {("--target", "android-arm64", "--tracker", "127.0.0.1:9190", "--key", "s21"): "TVM_NDK_CC",
             ("--target", "linux-arm64"): "no embedded device that measures speed",
             ("--tracker", "127.0.0.1:9190"): "--tracker and --key go together",
             ("--target", "android-gameboy"): "android-gameboy",
             ("--data", "kitti:/x"): "unknown data spec"}
    for argv, message in cases.items():
        assert main([*argv, "--budget-fraction", "0.5", "-o", str(out)]) != 0
        assert message in capsys.readouterr().err
    assert not out.exists()  # nothing ran, nothing written


def _zip_stage(tmp_path: Path, name: str, source: Path, after: tuple[str, ...] = ()) -> Stage:
    target = tmp_path / f"{name}.zip"
    return Stage(name, f"zip {source.name}", "zipfile", ("-c", str(target), str(source)), (target,), after=after)


def test_a_rerun_skips_finished_stages_and_reruns_a_changed_one_and_what_follows_it(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    first = _zip_stage(tmp_path, "first", tmp_path / "a.txt")
    second = _zip_stage(tmp_path, "second", tmp_path / "a.txt", after=("first",))
    lone = _zip_stage(tmp_path, "lone", tmp_path / "a.txt")
    record = StageRecord.load(tmp_path / RECORD)
    assert StageRunner(record, say=lambda _: None).run([first, second, lone]) == ["first", "second", "lone"]
    saved = json.loads((tmp_path / RECORD).read_text())["stages"]
    assert saved["first"]["command"].startswith("python -m zipfile -c") and len(saved["lone"]["load_average_after"]) == 3
    again = StageRecord.load(tmp_path / RECORD)
    assert StageRunner(again, say=lambda _: None).run([first, second, lone]) == []
    changed = _zip_stage(tmp_path, "first", tmp_path / "b.txt")  # another command: stale, and so is `second`
    assert StageRunner(again, say=lambda _: None).run([changed, second, lone]) == ["first", "second"]
    (tmp_path / "lone.zip").unlink()  # an output gone: stale
    fresh = StageRunner(StageRecord.load(tmp_path / RECORD), say=lambda _: None)
    assert fresh.run([changed, second, lone]) == ["lone"]


def test_a_failing_stage_is_named_and_the_stages_before_it_stay_done(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    good = _zip_stage(tmp_path, "good", tmp_path / "a.txt")
    bad = Stage("bad", "test a missing zip", "zipfile", ("-t", str(tmp_path / "missing.zip")), ())
    with pytest.raises(EdgesegError, match=r"Stage 2 bad failed .*python -m zipfile -t"):
        StageRunner(StageRecord.load(tmp_path / RECORD), say=lambda _: None).run([good, bad])
    assert list(json.loads((tmp_path / RECORD).read_text())["stages"]) == ["good"]
    (tmp_path / RECORD).write_text("{not json")
    with pytest.raises(EdgesegError, match="not a pipeline record"):
        StageRecord.load(tmp_path / RECORD)


def test_the_pipeline_runs_end_to_end_on_the_embedded_device_and_a_rerun_skips_every_stage(pipeline_run):
    """Tiny scale; one round: a later round is the same three commands with the aim the unit tests check."""
    out = pipeline_run.out
    report = (out / "report.md").read_text()
    assert "real measurements of this CPU, not of a phone" in report and "unpruned" in report and "pruned" in report
    stages = json.loads((out / RECORD).read_text())["stages"]
    assert list(stages) == ["collect", "predictor", "predictor-accuracy", "unpruned", "compile-unpruned",
                            "bench-unpruned", "pruned-round0", "compile-pruned-round0", "bench-pruned-round0"]
    assert "## Rounds of pruning" in report and "| 0 | " in report
    records = [json.loads(line) for line in (out / "latency" / "data.jsonl").read_text().splitlines()]
    assert {r["num_classes"] for r in records} == {4}  # the classifier measured is the one pruned
    reference = json.loads((out / "unpruned" / "bench.json").read_text())["median_ms"]
    pruning = json.loads((out / "pruned-round0" / "pruning.json").read_text())
    assert pruning["budget_ms"] == pytest.approx(0.6 * reference, rel=1e-3) and pruning["latency_scale"] > 0
    assert json.loads((out / "pruned-round0" / "bench.json").read_text())["baseline"]["rounds"] == TURNS  # in turns
    assert (out / "pruned").is_symlink() and os.readlink(out / "pruned") == "pruned-round0"
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["unpruned", "pruned"] and all(r["measured_ms"] > 0 for r in rows)
    for name in ("unpruned", "pruned"):
        assert json.loads((out / name / "bench.json").read_text())["check"]["passed"]
    again = pipeline_run.rerun()
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before, skipped") == len(stages)
