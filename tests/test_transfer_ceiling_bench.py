"""bench/transfer_ceiling.py end to end on a tiny input with one trial per kernel (a smoke run:
every stage runs and every pair is timed; the figures are the benchmark's, never asserted)."""

from __future__ import annotations

from bench.transfer_ceiling import main
from helpers.bench_scripts import run_bench_script


def test_donors_transfers_and_searches_of_pruned_kernels_are_timed_side_by_side(tmp_path, capsys):
    result = run_bench_script(main, ["--input-size", "32", "--kernels", "2", "--trials-per-task", "1",
                                     "--rounds", "1"], tmp_path)  # fmt: skip
    assert result["donor_search"]["trials"] >= 1 and result["pruned_search"]["trials"] >= 2
    assert result["transfer"]["transferred"] == 2
    assert len(result["kernels"]) == 2
    for kernel in result["kernels"]:
        assert kernel["extents"] != kernel["donor_extents"]
        assert min(kernel["donor_us"], kernel["transferred_us"], kernel["searched_us"]) > 0
        assert all(low <= high for low, high in kernel["range_us"].values())
    assert result["transferred_over_donor_rate"]["count"] == 2 and "wrote" in capsys.readouterr().out
    assert all((tmp_path / "work" / f"{step}.json").is_file() for step in ("donors", "transferred", "searched"))
