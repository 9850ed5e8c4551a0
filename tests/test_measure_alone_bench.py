"""bench/measure_alone.py end to end on a tiny input with no trials (a smoke run: both arms build,
both builds and ONNX Runtime are timed in rounds; the figures are the benchmark's, never
asserted here). Its first 444-trial run died in the timing rounds on a bug no test reached."""

from __future__ import annotations

from bench.measure_alone import main
from helpers.bench_scripts import run_bench_script


def test_both_arms_build_check_and_are_timed_beside_onnxruntime(tmp_path, capsys):
    result = run_bench_script(main, ["--size", "32", "--trials", "0", "--rounds", "1", "--repeat", "2",
                                     "--warmup", "0"], tmp_path)  # fmt: skip
    assert set(result["rows"]) == {"overlap", "alone", "onnxruntime"}
    for arm in ("overlap", "alone"):
        row = result["rows"][arm]
        assert row["check_passed"] and row["runs"] == 2 and row["median_ms"] > 0
        assert (tmp_path / "work" / f"artifact-{arm}").is_dir()  # kept for a rerun
    assert result["alone_over_overlap"] > 0 and "wrote" in capsys.readouterr().out
