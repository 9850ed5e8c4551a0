"""bench/transfer_ceiling.py end to end on a tiny input with one trial per kernel (a smoke run:
every stage runs and every pair is timed; the figures are the benchmark's, never asserted)."""

from __future__ import annotations

from bench.transfer_ceiling import main
from helpers.bench_scripts import run_bench_script


def test_donors_transfers_and_searches_of_pruned_kernels_are_timed_side_by_side(tmp_path, capsys):
    result = run_bench_script(main, ["--input-size", "32", "--kernels", "2", "--trials-per-task", "1",
                                     "--transfer-candidates", "1,2", "--rounds", "1",
                                     "--every-donor-record", "2"], tmp_path)  # fmt: skip
    assert result["donor_search"]["trials"] >= 1 and result["pruned_search"]["trials"] >= 2
    assert [t["candidates"] for t in result["transfers"]] == [1, 2]
    assert all(t["transferred"] == 2 for t in result["transfers"])
    assert len(result["kernels"]) == 2
    names = {"donor", "transferred-k1", "transferred-k2", "searched"}
    for kernel in result["kernels"]:
        assert kernel["extents"] != kernel["donor_extents"]
        assert set(kernel["us"]) == names and min(kernel["us"].values()) > 0
        assert all(low <= high for low, high in kernel["range_us"].values())
        assert set(kernel["over_searched_time"]) == {"transferred-k1", "transferred-k2"}
    assert result["over_donor_rate"]["searched"]["count"] == 2 and "wrote" in capsys.readouterr().out
    every = result["every_donor_record"]
    assert every["records_per_donor"] == 2 and len(every["kernels"]) == 2
    for kernel in every["kernels"]:
        assert kernel["replayed"] >= 1 and 0 <= kernel["its_rank_in_its_donor"] < 2
        assert kernel["every_record_best_us"] > 0
        assert all(low <= high for low, high in kernel["range_us"].values())
        assert set(kernel["us"]) == {"searched", "transferred-k1", "transferred-k2"}
    assert every["best_over_searched_time"]["count"] == 2
    assert all((tmp_path / "work" / f"{step}.json").is_file()
               for step in ("donors", "transferred-k1", "transferred-k2", "searched"))
