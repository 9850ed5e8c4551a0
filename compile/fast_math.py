"""Fast math: the approximate but vectorisable forms of erf, exp, tanh and softmax.

TVM 0.27 lowers `erf` for llvm to one scalar libm `erff` call per element, with no vector code
(`src/target/intrin_rule.cc`); GELU from ONNX opset 17 arrives as `erf`, so every GELU of a
SegFormer ran scalar. `relax.transform.FastMathTransform` swaps in TOPI's polynomial forms:
`erf` -> `fast_erf`, `exp` -> `fast_exp`, `tanh` -> `fast_tanh`, `nn.softmax` ->
`fast_softmax` (on fast_exp). It does not touch `nn.gelu`, the form the torch.export front end
gives GELU, so `nn.gelu` is first written out with `erf` (as LegalizeOps would), which the
transform then swaps.

Measured here (untuned host builds against ONNX Runtime for .onnx, PyTorch for .pt2, on the
seeded reference input; worst absolute output error with fast math / without): tiny conv net
1.2e-7 / 1.2e-7, tiny attention 7.2e-7 / 7.2e-7, tiny Mix-FFN (GELU) 6.0e-7 / 4.8e-7,
segformer-b0 at 64 px (random weights, logits up to 0.5) 4.8e-7 / 5.2e-7 from ONNX and
5.0e-7 / 5.0e-7 from .pt2: far inside the 1e-4 of `runner bench --check`. TOPI's fast forms
themselves differ from libm by ~3e-7.
"""

from __future__ import annotations

import math
from typing import Any

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from compile.relax_passes import mutate_functions


@mutator
class _GeluAsErf(PyExprMutator):
    """`nn.gelu(x)` -> `x * (0.5 + erf(x / sqrt 2) * 0.5)` for float32 (LegalizeOps' own formula)."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.gelu"):
            return call
        x = call.args[0]
        if getattr(x.ty, "dtype", None) != "float32":
            return call
        half = relax.const(0.5, "float32")
        erf = relax.op.erf(relax.op.multiply(x, relax.const(math.sqrt(0.5), "float32")))
        return relax.op.multiply(x, relax.op.add(half, relax.op.multiply(erf, half)))


@tvm.transform.module_pass(opt_level=0, name="GeluAsErf")
class GeluAsErf:
    """Write every float32 `nn.gelu` with `erf`, so that FastMathTransform reaches it."""

    def transform_module(self, mod: Any, _ctx: Any) -> Any:  # noqa: D102
        return mutate_functions(mod, _GeluAsErf)


def fast_math() -> tvm.transform.Pass:
    """GELU written with erf, then TVM's FastMathTransform. Run before legalization."""
    return tvm.transform.Sequential([GeluAsErf(), relax.transform.FastMathTransform()], name="FastMath")
