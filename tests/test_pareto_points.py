"""bench/pareto_points.py and the resumable points file of bench/prune_vs_baselines.py, on
synthetic point records (no training); the networks' unit (a drift reference) and re-timing, on
the loopback farm with small artifacts."""

from __future__ import annotations

import json

import pytest

from bench.pareto_points import UNPRUNED, budget_check, goals, plot_pareto, summarize
from bench.prune_vs_baselines import append_line, check_same_settings, plan_points, read_lines
from runner.errors import EdgesegError

FULL = 10.0  # unpruned predicted ms (nominal)


def point(method, fraction, seed, miou, measured, predicted=None):
    budget = fraction * FULL
    return {"key": f"{method}-{budget}-{seed}", "method": method, "seed": seed, "budget_ms": budget,
            "budget_fraction": fraction, "predicted_ms": budget if predicted is None else predicted,
            "measured_median_ms": measured, "miou": miou, "seconds": {"prune": 1.0}}


def records():
    out = [point(UNPRUNED, 1.0, 0, 0.60, 20.0)]
    for seed, noise in ((0, 0.0), (1, 0.02)):
        out += [point("bilevel", 0.5, seed, 0.55 + noise, 10.4), point("uniform", 0.5, seed, 0.50 + noise, 10.0),
                point("bilevel", 0.25, seed, 0.45 + noise, 7.0, predicted=2.0),
                point("uniform", 0.25, seed, 0.40 + noise, 5.0)]
    return out


def test_summary_means_gaps_and_budget_shares():
    summary = summarize(records(), device_units=False)
    rows = {(r["method"], r["budget_fraction"]): r for r in summary["rows"]}
    assert rows[("bilevel", 0.5)]["miou"]["mean"] == pytest.approx(0.56)
    assert rows[("bilevel", 0.5)]["miou"]["std"] == pytest.approx(0.0141421, rel=1e-4)
    assert rows[("bilevel", 0.5)]["seeds"] == [0, 1]
    gaps = {g["budget_fraction"]: g for g in summary["bilevel_vs_uniform"]}
    assert gaps[0.5]["gap_points_same_budget"]["mean"] == pytest.approx(5.0)
    # uniform's curve (5 ms, 0.41) -> (10 ms, 0.51) read at bilevel's 7 ms: 0.45; bilevel 0.46
    assert gaps[0.25]["gap_points_same_measured_ms"] == pytest.approx(1.0)
    # the curve goes on to the unpruned network (20 ms, 0.60): 0.5136 at 10.4 ms; bilevel 0.56
    assert gaps[0.5]["gap_points_same_measured_ms"] == pytest.approx(4.64)
    # with the unpruned network's 0.60 at those ms: 60 - 45 and 60 - 51.36 points
    assert gaps[0.25]["ceiling_points"] == pytest.approx(15.0)
    assert gaps[0.5]["ceiling_points"] == pytest.approx(8.64)
    # measured budgets are fractions of the unpruned 20 ms: 10 ms (10.4 is 4% over) and 5 ms (7 is 40% over)
    shares = summary["bilevel_within_budget"]
    assert shares["share_by_measured"] == 0.5
    assert shares["share_by_predicted"] == 0.5  # the 0.25 networks are predicted at 2 ms for a 2.5 ms budget
    goal = goals(summary, {"ratio_per_step": 1.4})
    assert goal["miou_gap_at_equal_measured_ms"]["met"] is False  # 1.0 point at the 0.25 budget
    assert goal["bilevel_within_5pct_of_budget"]["met"] is False
    assert goal["bilevel_step_cost"]["met"] is True


def test_no_gap_at_equal_latency_for_networks_faster_than_the_whole_uniform_curve():
    faster = [p if p["method"] != "bilevel" else {**p, "measured_median_ms": 4.0} for p in records()]
    summary = summarize(faster, device_units=False)
    assert all(g["gap_points_same_measured_ms"] is None for g in summary["bilevel_vs_uniform"])
    assert goals(summary, None)["miou_gap_at_equal_measured_ms"]["met"] is None


def test_device_units_compare_measured_ms_with_the_budget_itself():
    check = budget_check(point("bilevel", 0.5, 0, 0.5, 5.1), unpruned_measured_ms=None, device_units=True)
    assert check["measured_budget_ms"] == 5.0 and check["within_measured"] is True
    flops = budget_check(point("bilevel", 0.5, 0, 0.5, 5.1), unpruned_measured_ms=None, device_units=False)
    assert flops["measured_gap"] is None and flops["within_measured"] is None


def test_plot_is_written(tmp_path):
    path = tmp_path / "pareto.png"
    plot_pareto(summarize(records(), device_units=False), path, "synthetic records")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_points_file_resumes_and_other_settings_are_refused(tmp_path):
    plan = plan_points(["bilevel", "uniform"], [5.0, 2.5], [0, 1], FULL)
    assert len(plan) == 10 and len({p.key for p in plan}) == 10
    assert [(p.budget_ms, p.seed) for p in plan if p.method == UNPRUNED] == [(FULL, 0), (FULL, 1)]
    assert plan[0].method == UNPRUNED and plan[5].method == UNPRUNED  # each seed's block starts with it
    extended = plan_points(["bilevel", "uniform"], [5.0, 2.5], [0, 1], FULL, uniform_budgets_ms=[2.5, 1.5])
    assert extended[:10] == plan  # the comparisons first; 2.5 ms is planned once
    assert [(p.method, p.budget_ms, p.seed) for p in extended[10:]] == [("uniform", 1.5, 0), ("uniform", 1.5, 1)]
    path = tmp_path / "points.jsonl"
    append_line(path, {"key": plan[0].key, "miou": 0.5})
    append_line(path, {"key": plan[1].key, "miou": 0.4})
    assert [p["key"] for p in read_lines(path)] == [plan[0].key, plan[1].key]
    check_same_settings(tmp_path, {"trials": 0})
    check_same_settings(tmp_path, {"trials": 0})  # the same settings resume
    assert json.loads((tmp_path / "settings.json").read_text()) == {"trials": 0}
    with pytest.raises(EdgesegError, match="trials: 0 there, 8 now"):
        check_same_settings(tmp_path, {"trials": 8})


def test_points_measured_before_the_weight_decay_was_a_setting_are_not_mixed_with_new_ones(tmp_path):
    """Such a folder's bilevel points searched with BiP's 1e-3: today's defaults are refused."""
    from prune.settings import PruneSettings

    fixed = {k: v for k, v in PruneSettings(budget_ms=1.0).to_dict().items()
             if k not in ("method", "budget_ms", "fps", "seed")}
    old = {k: v for k, v in fixed.items() if k not in ("weight_decay", "search_weight_decay")}
    (tmp_path / "settings.json").write_text(json.dumps({"prune": old, "trials": 0}))
    with pytest.raises(EdgesegError, match=r"'search_weight_decay': 0.001.*'search_weight_decay': None"):
        check_same_settings(tmp_path, {"prune": fixed, "trials": 0})
    check_same_settings(tmp_path, {"prune": {**fixed, "search_weight_decay": 1e-3}, "trials": 0})  # as they ran


def test_a_last_line_cut_short_by_a_crash_is_measured_again(tmp_path):
    path = tmp_path / "points.jsonl"
    append_line(path, {"key": "a"})
    with open(path, "a") as f:
        f.write('{"key": "b", "mi')
    assert [p["key"] for p in read_lines(path)] == ["a"]
    append_line(path, {"key": "b"})  # on a line of its own, after the cut one
    assert [p["key"] for p in read_lines(path)] == ["a", "b"]


def test_retimed_medians_replace_the_timings_taken_after_each_build():
    from bench.pareto_points import apply_retimes

    points = [{"key": "a", "measured_median_ms": 10.0}, {"key": "b", "measured_median_ms": 20.0}]
    retimed = apply_retimes(points, {"a": [12.0, 11.0, 30.0], "b": []})
    assert retimed[0]["measured_median_ms"] == 12.0 and retimed[0]["measured_at_build_ms"] == 10.0
    assert retimed[0]["retimed_ms"] == [12.0, 11.0, 30.0]
    assert retimed[1] == points[1] and points[0]["measured_median_ms"] == 10.0  # inputs untouched


def test_pooled_retimings_judge_each_network_by_the_median_of_every_session():
    from bench.pareto_points import apply_retimes, pool_retimes, pooled_summary

    # two re-timings: alone, the second puts the 0.5 network 10% over its 5 ms budget
    history = [{"times_ms": {"u": [20.0, 20.0], "b": [5.0, 5.1, 4.9]}}, {"times_ms": {"u": [20.0], "b": [5.5, 5.5]}}]
    assert pool_retimes(history) == {"u": [20.0, 20.0, 20.0], "b": [5.0, 5.1, 4.9, 5.5, 5.5]}
    points = [{**point(UNPRUNED, 1.0, 0, 0.6, 0.0), "key": "u"}, {**point("bilevel", 0.5, 0, 0.5, 0.0), "key": "b"}]
    latest = summarize(apply_retimes(points, history[-1]["times_ms"]), device_units=True)
    assert latest["bilevel_within_budget"]["share_by_measured"] == 0.0
    pooled = pooled_summary(summarize(apply_retimes(points, pool_retimes(history)), device_units=True), len(history))
    assert pooled["timings"] == 2 and pooled["bilevel_within_budget"]["share_by_measured"] == 1.0
    assert pooled["bilevel"]["b"]["sessions"] == 5 and pooled["bilevel"]["b"]["measured_ms"] == 5.1
    assert pooled["bilevel"]["b"]["measured_gap"] == pytest.approx(0.02)


def test_the_comparison_says_what_every_point_was_trained_with():
    from bench.prune_vs_baselines import trained_with
    from prune.settings import PruneSettings

    said = trained_with(PruneSettings(budget_ms=1.0, epochs=2, search_steps=40, finetune_steps=30,
                                      search_weight_decay=1e-3))
    assert "2 x (40 search + 30 fine-tuning) steps" in said
    assert "weight decay 0.001 in the search and 0.0001 in the fine-tuning" in said


def test_the_base_snapshot_is_taken_once_so_a_resumed_run_starts_every_network_alike(tmp_path):
    from bench.prune_vs_baselines import base_snapshot
    from compile.database import open_database
    from helpers.tuning_records import TARGET, best, matmul, record

    workspace = open_database(tmp_path / "workspace", TARGET)
    workspace.commit_tuning_record(record(workspace, matmul(16, 8, 8), [1e-4]))
    folder = tmp_path / "out" / "base"
    assert base_snapshot(tmp_path / "workspace", folder) == 1
    workspace.commit_tuning_record(record(workspace, matmul(24, 8, 8), [1e-4]))  # other work goes on meanwhile
    assert base_snapshot(tmp_path / "workspace", folder) == 1
    assert best(open_database(folder, TARGET), matmul(24, 8, 8)) is None


def test_a_database_that_does_not_exist_is_refused_before_anything_is_written(tmp_path):
    from bench.prune_vs_baselines import parse_args, run

    with pytest.raises(EdgesegError, match="does not exist"):
        run(parse_args(["--database", str(tmp_path / "typo"), "-o", str(tmp_path / "out")]))
    assert not (tmp_path / "out").exists()


def _predictor_manifest(folder, drift: bool, nominal=None):
    from latency_model.predictor import MANIFEST
    from runner.timing import TimingProtocol

    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"protocol": TimingProtocol(drift_reference=drift).to_dict(), "threads": 2}
    if nominal is not None:
        manifest["reference_nominal_ms"] = nominal
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return str(folder)


def test_a_predictor_collected_beside_a_drift_reference_is_measured_in_its_unit(tmp_path):
    from bench.prune_vs_baselines import predictor_reference
    from latency_model.drift_reference import FOLDER
    from runner.drift import DriftReference

    database = tmp_path / "database"
    assert predictor_reference("flops", database, 2) is None
    raw = _predictor_manifest(tmp_path / "raw", drift=False)
    assert predictor_reference(raw, database, 2) is None
    with pytest.raises(EdgesegError, match="timed on 2 threads, not 1"):
        predictor_reference(raw, database, 1)
    drifting = _predictor_manifest(tmp_path / "drift", drift=True, nominal=0.25)
    with pytest.raises(EdgesegError, match="has no drift_reference/") as error:
        predictor_reference(drifting, database, 2)
    assert "--database" in error.value.fix
    (database / FOLDER).mkdir(parents=True)
    DriftReference(database / FOLDER, 0.25, "linear").save()
    assert predictor_reference(drifting, database, 2).nominal_ms == 0.25
    assert predictor_reference(drifting, database, None).nominal_ms == 0.25  # all threads: not compared
    DriftReference(database / FOLDER, 0.3, "linear").save()  # rebuilt since the collection
    with pytest.raises(EdgesegError, match="two units") as error:
        predictor_reference(drifting, database, 2)
    assert "tuning database its layers were collected into" in error.value.fix


def test_retiming_beside_the_reference_gives_every_network_a_corrected_median_per_session(
        host_farm, host_artifact, artifact_copy):
    from bench.prune_vs_baselines import retime
    from runner.drift import DriftReference
    from runner.timing import TimingProtocol

    points = [{"key": "a", "paths": {"artifact": str(host_artifact)}},
              {"key": "b", "paths": {"artifact": str(artifact_copy)}}]
    protocol = TimingProtocol(warmup=1, repeat=3)
    raw = retime(points, host_farm.device, protocol, None, rounds=2, progress=False)
    # the reference is the same code as network a: corrected, a runs at the nominal time in every round
    corrected = retime(points, host_farm.device, protocol, None, rounds=2, progress=False,
                       reference=DriftReference(host_artifact, 0.5))
    for times in (raw, corrected):
        assert sorted(times) == ["a", "b"] and all(len(t) == 2 and min(t) > 0 for t in times.values())
    assert corrected["a"] == pytest.approx([0.5, 0.5], rel=0.5)


def test_networks_are_also_judged_by_their_ratio_to_the_unpruned_network_in_the_same_sessions():
    from bench.pareto_points import apply_retimes

    unpruned = point(UNPRUNED, 1.0, 0, 0.60, 20.0)
    on_budget = point("bilevel", 0.5, 0, 0.55, 10.0)  # half the unpruned network in every session
    under = point("bilevel", 0.5, 1, 0.55, 10.0)  # 0.45 of it in the median session
    # the sessions run at different speeds; a network and the unpruned one move together
    times = {unpruned["key"]: [20.0, 26.0, 22.0], on_budget["key"]: [10.0, 13.0, 11.0],
             under["key"]: [9.0, 11.7, 9.9]}
    summary = summarize(apply_retimes([unpruned, on_budget, under], times), device_units=True)
    checked = {p["key"]: p for p in summary["points"]}
    assert checked[on_budget["key"]]["session_ratio"] == pytest.approx(0.5)
    assert checked[on_budget["key"]]["within_fraction"] is True
    assert checked[under["key"]]["fraction_gap"] == pytest.approx(-0.1)
    assert checked[under["key"]]["within_fraction"] is False
    assert summary["bilevel_within_budget"]["share_by_session_ratio"] == 0.5
    assert goals(summary, None)["bilevel_within_5pct_of_budget"]["by_ratio_to_unpruned_in_session"] == 0.5
    # without re-timings there is no session to compare in
    assert summarize([unpruned, on_budget], device_units=True)["bilevel_within_budget"]["share_by_session_ratio"] is None
