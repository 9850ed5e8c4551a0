"""Depthwise convs in NHWC, so that the Mix-FFN's layout copies become reshapes.

SegFormer's Mix-FFN (timm's and Hugging Face's alike) turns its tokens (1, N, C) into NCHW for
a 3x3 depthwise conv and back: `transpose(1, 2).reshape(1, C, H, W)`, then
`flatten(2).transpose(1, 2)`. Legalized, those are two copies of the whole hidden activation per
block. The tokens already are NHWC, so with the conv in NHWC the chain
tokens -> NCHW -> NHWC keeps every element in place: a reshape, which costs nothing.

Two passes, run before legalization: `DepthwiseConvNHWC` writes an NCHW depthwise conv2d whose input
is a layout chain that NHWC turns into a reshape (tokens, not NCHW data) as permute -> NHWC
conv -> permute back (moving a per-channel bias add inside), then
`LayoutChainsAsReshapes` writes every chain of permutes and reshapes whose composite leaves the
memory order unchanged as one reshape of the chain's source. Exact: the same products and sums.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from compile.relax_passes import mutate_functions, static_shape

_TO_NHWC, _TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)
_LAYOUT_OPS = ("relax.permute_dims", "relax.reshape")


def _op_name(expr: Any) -> str | None:
    return expr.op.name if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) else None


def _axes(call: relax.Call, rank: int) -> list[int]:
    axes = call.attrs.axes
    return list(range(rank - 1, -1, -1)) if axes is None else [int(a) % rank for a in axes]


@mutator
class _DepthwiseNHWC(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = super().visit_call_(call)
        name = _op_name(call)
        if name == "relax.nn.conv2d":
            return self._conv(call)
        if name == "relax.add":
            return self._bias_add(call)
        return call

    def _conv(self, call: relax.Call) -> relax.Expr:
        attrs = call.attrs
        x, w = call.args
        shape, wshape = static_shape(x), static_shape(w)
        if (shape is None or wshape is None or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW"
                or attrs.out_layout not in ("NCHW", "") or int(attrs.groups) != shape[1] or wshape[1] != 1):
            return call
        to_nhwc = relax.op.permute_dims(x, _TO_NHWC)
        if as_reshape(to_nhwc, self.lookup_binding, _out_shape(to_nhwc)) is None:
            return call  # its input is NCHW data, not tokens: NHWC would add copies, not remove them
        nhwc = self.builder_.emit(to_nhwc)
        y = self.builder_.emit(relax.op.nn.conv2d(
            nhwc, w, strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation,
            groups=attrs.groups, data_layout="NHWC", kernel_layout="OIHW", out_layout="NHWC",
            out_dtype=attrs.out_dtype if str(attrs.out_dtype) not in ("", "void", "None") else None))  # fmt: skip
        return relax.op.permute_dims(y, _TO_NCHW)

    def _bias_add(self, call: relax.Call) -> relax.Expr:
        """add(permute(nhwc conv), bias (1, C, 1, 1)) -> permute(add(nhwc conv, bias (1, 1, 1, C)))."""
        a, b = call.args
        bound = self.lookup_binding(a) if isinstance(a, relax.Var) else None
        if _op_name(bound) != "relax.permute_dims" or _axes(bound, 4) != list(_TO_NCHW):
            return call
        inner = bound.args[0]
        conv = self.lookup_binding(inner) if isinstance(inner, relax.Var) else None
        bias = self._constant(b)
        if _op_name(conv) != "relax.nn.conv2d" or conv.attrs.data_layout != "NHWC" or bias is None:
            return call
        channels = static_shape(inner)[3]
        if bias.shape != (1, channels, 1, 1):
            return call
        y = self.builder_.emit(relax.op.add(inner, relax.const(bias.reshape(1, 1, 1, channels))))
        return relax.op.permute_dims(y, _TO_NCHW)


    def _constant(self, expr: relax.Expr) -> np.ndarray | None:
        """A constant's value, also through the reshape the ONNX importer puts on a conv bias."""
        if isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        if _op_name(expr) == "relax.reshape" and isinstance(expr.args[0], tvm.ir.expr.Constant):
            shape = _out_shape(expr)
            return None if shape is None else expr.args[0].value.numpy().reshape(shape)
        return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None


def as_reshape(call: relax.Call, lookup: Any, out_shape: tuple[int, ...] | None) -> relax.Expr | None:
    """`call` and the layout ops before it as one reshape of their source, if the longest such
    chain that keeps the memory order has two ops or more; else None."""
    chain = [call]
    while isinstance(chain[-1].args[0], relax.Var):
        bound = lookup(chain[-1].args[0])
        if _op_name(bound) not in _LAYOUT_OPS:
            break
        chain.append(bound)
    if out_shape is None:
        return None
    for depth in range(len(chain), 1, -1):
        source = chain[depth - 1].args[0]
        shape = static_shape(source)
        if shape is not None and _keeps_memory_order(shape, chain[:depth][::-1]):
            return relax.op.reshape(source, out_shape)
    return None


@mutator
class _LayoutChains(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = super().visit_call_(call)
        if _op_name(call) not in _LAYOUT_OPS:
            return call
        reshape = as_reshape(call, self.lookup_binding, _out_shape(call))
        return call if reshape is None else reshape


def _out_shape(call: relax.Call) -> tuple[int, ...] | None:
    """The result shape of a layout op, from its arguments: also for a call not yet normalized (no type)."""
    shape = static_shape(call.args[0])
    if shape is None:
        return None
    if _op_name(call) == "relax.permute_dims":
        return tuple(shape[a] for a in _axes(call, len(shape)))
    values = getattr(call.args[1], "values", None)
    return None if values is None or any(int(v) < 0 for v in values) else tuple(int(v) for v in values)


def _keeps_memory_order(shape: tuple[int, ...], ops: list[relax.Call]) -> bool:
    """Apply the chain to the element indices; a reshape leaves them in order."""
    index = np.arange(int(np.prod(shape))).reshape(shape)
    for op in ops:
        if _op_name(op) == "relax.permute_dims":
            index = index.transpose(_axes(op, index.ndim))
        else:
            shape = _out_shape(op)
            if shape is None:
                return False
            index = index.reshape(shape)
    return bool(np.array_equal(index.ravel(), np.arange(index.size)))


@tvm.transform.module_pass(opt_level=0, name="DepthwiseConvNHWC")
class DepthwiseConvNHWC:
    """Depthwise convs in NHWC, then layout chains that keep the memory order as one reshape."""

    def transform_module(self, mod: Any, _ctx: Any) -> Any:  # noqa: D102
        mod = mutate_functions(mod, _DepthwiseNHWC)
        mod = mutate_functions(mod, _LayoutChains)
        return relax.transform.DeadCodeElimination()(mod)
