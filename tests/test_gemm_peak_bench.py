"""bench/gemm_peak.py measures a real matmul in torch, ONNX Runtime and a TVM build on the
embedded device (a smoke run: a small matmul, no tuning, few runs; the rates themselves are the
benchmark's, never asserted here)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from bench.gemm_peak import main, matmul_onnx
from helpers.bench_scripts import run_bench_script


def test_the_matmul_model_is_one_matmul_by_its_constant_weight(tmp_path):
    path = matmul_onnx(16, tmp_path / "matmul.onnx")
    model = onnx.load(path)
    assert [node.op_type for node in model.graph.node] == ["MatMul"]
    weight = onnx.numpy_helper.to_array(model.graph.initializer[0])
    x = np.random.default_rng(0).standard_normal((16, 16)).astype("float32")
    (out,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    np.testing.assert_allclose(out, x @ weight, rtol=1e-5, atol=1e-5)


def test_the_peak_is_the_best_of_three_engines_timed_on_one_matmul(tmp_path, capsys):
    report = run_bench_script(main, ["--gemm-n", "64", "--gemm-trials", "0", "--rounds", "2", "--repeat", "2",
                                     "--warmup", "0"], tmp_path)  # fmt: skip
    assert set(report["engines"]) == {"tvm", "onnxruntime", "torch"}
    assert all(row["runs"] == 4 and row["gflops"] > 0 for row in report["engines"].values())
    best = max(report["engines"].values(), key=lambda row: row["gflops"])
    assert report["peak_gflops"] == best["gflops"] == report["engines"][report["peak_engine"]]["gflops"]
    assert report["tvm_check_max_abs_error"] < 1e-3  # the TVM build computes the same matmul
    assert "load_average_before" in report["machine"] and "measured peak" in capsys.readouterr().out
