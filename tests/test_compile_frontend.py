"""Importing models into Relax, and every bad-input error of the front end (no tuning here)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from compile.frontend import load_model, parse_input_shapes
from compile.reference import reference_inputs, reference_outputs
from compile.targets import list_presets, resolve_target
from runner.errors import EdgesegError
from helpers.tiny_models import CeluNet, TinyAttention, TinyConvNet, export_onnx, export_pt2


def test_parse_input_shapes():
    assert parse_input_shapes("1,3,64,64") == {None: (1, 3, 64, 64)}
    assert parse_input_shapes("a:1,2;b:3") == {"a": (1, 2), "b": (3,)}
    with pytest.raises(ValueError, match="not a shape"):
        parse_input_shapes("1x3x64")


@pytest.mark.parametrize("make", [TinyConvNet, TinyAttention], ids=["conv", "attention"])
def test_onnx_and_pt2_import_with_reference(tmp_path, make):
    net = make()  # one set of weights, exported twice
    onnx_model = load_model(export_onnx(net, tmp_path / "m.onnx"), None, tmp_path / "w1")
    pt2_model = load_model(export_pt2(net, tmp_path / "m.pt2"), None, tmp_path / "w2")
    for model in (onnx_model, pt2_model):
        assert [s.shape for s in model.inputs] == [(1, 3, 16, 16)]
        assert "main" in [gv.name_hint for gv in model.mod.get_global_vars()]
    inputs = reference_inputs(onnx_model)
    # Two reference engines on the same weights: ONNX Runtime and PyTorch agree.
    np.testing.assert_allclose(
        reference_outputs(onnx_model, inputs)[0], reference_outputs(pt2_model, inputs)[0], atol=1e-4
    )


def test_missing_file(tmp_path):
    with pytest.raises(EdgesegError, match="does not exist"):
        load_model(tmp_path / "nope.onnx", None, tmp_path)


def test_not_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(EdgesegError, match="not a valid ONNX model"):
        load_model(bad, None, tmp_path)


def test_unsupported_op_is_named(tmp_path):
    with pytest.raises(EdgesegError, match="Celu"):
        load_model(export_onnx(CeluNet(), tmp_path / "celu.onnx"), None, tmp_path / "w")


def test_a_graph_onnxruntime_rejects_names_the_node_and_a_fix(tmp_path):
    """An Add of a float input and an int64 constant: valid protobuf, refused by ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["input", "offset"], ["output"], name="bad_add")], "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("offset", TensorProto.INT64, [1, 4], [1, 2, 3, 4])],
    )  # fmt: skip
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(EdgesegError) as caught:
        load_model(path, None, tmp_path / "w")
    assert "node 'bad_add' (Add" in caught.value.problem and "int64" in caught.value.problem
    assert "Cast" in caught.value.fix and "ONNXRuntimeError" not in caught.value.problem
    assert not list((tmp_path / "w").glob("*.fixed.onnx"))  # the scratch copy is cleaned up


def test_dynamic_input_needs_shape(tmp_path):
    path = export_onnx(TinyConvNet(), tmp_path / "dyn.onnx", dynamic_batch=True)
    with pytest.raises(EdgesegError, match="dynamic shape.*--input-shape"):
        load_model(path, None, tmp_path / "w")
    with pytest.raises(EdgesegError, match="does not fit"):
        load_model(path, {None: (1, 4, 16, 16)}, tmp_path / "w")
    model = load_model(path, {None: (2, 3, 16, 16)}, tmp_path / "w")
    assert model.inputs[0].shape == (2, 3, 16, 16)


def test_unknown_target_lists_known():
    with pytest.raises(EdgesegError, match="Unknown target 'pixel9'.*host"):
        resolve_target("pixel9")
    assert "host" in list_presets()


def test_cli_unknown_target_exit_code_and_message(tmp_path):
    path = export_onnx(TinyConvNet(), tmp_path / "m.onnx")
    run = subprocess.run(
        [sys.executable, "-m", "compile", str(path), "--target", "pixel9"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    assert "Unknown target 'pixel9'" in run.stderr and "Traceback" not in run.stderr
