"""compile's graph passes before legalization: fast math, depthwise convs in NHWC.

Every build here is untuned (`tvm.compile` of the lowered module, run on this CPU): the passes
change what is computed, not how it is scheduled, so the numbers are what these tests check.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax

from compile.build import LoweringOptions, _prim_funcs, lower
from compile.frontend import load_model
from compile.layout_views import DepthwiseConvNHWC
from compile.reference import reference_inputs, reference_outputs
from helpers.lowered import HOST, run_lowered
from helpers.tiny_models import TinyAttention, TinyConvNet, TinyMixFFN, export_onnx, export_pt2


def llvm_ir(lowered) -> str:
    """The LLVM IR of every kernel of a lowered module."""
    funcs = _prim_funcs(lowered)
    kernels = tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
    built = tvm.compile(kernels, target=HOST.target()).mod
    return "\n".join(m.inspect_source("ll") for m in built._collect_from_import_tree(lambda m: True)
                     if m.kind == "llvm")  # fmt: skip


def erff_calls(ir: str) -> int:
    return sum(1 for line in ir.splitlines() if "call" in line and "@erff(" in line)


@pytest.mark.parametrize("export", [export_onnx, export_pt2], ids=["onnx", "pt2"])
def test_fast_math_replaces_scalar_erf_calls_and_keeps_the_reference(tmp_path, export):
    """GELU is `erf` from ONNX and `nn.gelu` from torch.export: both lose their libm erff calls."""
    model = load_model(export(TinyMixFFN(), tmp_path / f"m.{export.__name__[7:]}"), None, tmp_path / "w")
    exact = lower(model.mod, HOST, LoweringOptions(fast_math=False))
    fast = lower(model.mod, HOST)  # the default
    assert "T.erf(" in exact.script() and "T.erf(" not in fast.script()
    assert erff_calls(llvm_ir(exact)) > 0 and erff_calls(llvm_ir(fast)) == 0
    inputs = reference_inputs(model)
    (reference,) = reference_outputs(model, inputs)
    (out,) = run_lowered(fast, inputs)
    assert np.abs(out - reference).max() < 1e-5


@pytest.mark.parametrize("make", [TinyConvNet, TinyAttention], ids=["conv", "attention"])
def test_fast_math_keeps_the_reference_of_the_tiny_models(tmp_path, make):
    model = load_model(export_onnx(make(), tmp_path / "m.onnx"), None, tmp_path / "w")
    inputs = reference_inputs(model)
    (reference,) = reference_outputs(model, inputs)
    (out,) = run_lowered(lower(model.mod, HOST), inputs)
    assert np.abs(out - reference).max() < 1e-5


def test_fast_math_is_recorded_in_the_manifest_and_can_be_turned_off(tmp_path):
    from compile.api import compile_model

    path = export_onnx(TinyConvNet(), tmp_path / "m.onnx")
    for fast_math in (True, False):
        result = compile_model(path, tmp_path / f"art-{fast_math}", HOST, tmp_path / "db", trials=0,
                               kernel_library=False, fast_math=fast_math)  # fmt: skip
        manifest = json.loads((result.artifact / "manifest.json").read_text())
        assert manifest["lowering"]["fast_math"] is fast_math


def test_cli_no_fast_math_reaches_compile_model(tmp_path, monkeypatch):
    import compile.api
    from compile.cli import main

    calls = []

    def fake_compile_model(**kwargs):
        calls.append(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(compile.api, "compile_model", fake_compile_model)
    path = export_onnx(TinyConvNet(), tmp_path / "m.onnx")
    for argv, expected in (([], True), (["--no-fast-math"], False)):
        with pytest.raises(SystemExit):
            main([str(path), "--target", "host", "--trials", "0", "-o", str(tmp_path / "o"), *argv])
        assert calls[-1]["fast_math"] is expected



def _kernels(lowered) -> set[str]:
    return set(_prim_funcs(lowered))


def test_a_mix_ffns_depthwise_conv_runs_in_nhwc_without_layout_copies(tmp_path):
    """Tokens already are NHWC: with the depthwise conv in NHWC, both copies become reshapes."""
    model = load_model(export_onnx(TinyMixFFN(), tmp_path / "m.onnx", shape=(1, 3, 32, 32)), None, tmp_path / "w")
    plain = relax.get_pipeline("zero")(model.mod)  # legalized and fused without edgeseg's passes
    lowered = lower(model.mod, HOST)
    assert [k for k in _kernels(plain) if "transpose" in k and "erf" in k]  # the copy back, fused with GELU
    assert not [k for k in _kernels(lowered) if "transpose" in k and "erf" in k]
    assert len([k for k in _kernels(lowered) if "transpose" in k]) == len([k for k in _kernels(plain) if "transpose" in k]) - 2
    assert 'data_layout="NHWC"' in DepthwiseConvNHWC()(model.mod).script()
    inputs = reference_inputs(model)
    (expected,) = reference_outputs(model, inputs)
    (actual,) = run_lowered(lowered, inputs)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_a_depthwise_conv_on_nchw_data_stays_nchw(tmp_path):
    """NHWC there would add two copies instead of removing them."""
    model = load_model(export_onnx(TinyConvNet(), tmp_path / "m.onnx"), None, tmp_path / "w")
    assert tvm_ffi.structural_equal(DepthwiseConvNHWC()(model.mod), model.mod)
