"""Small helpers the graph passes share: a static shape, and a mutator applied to every Relax function."""

from __future__ import annotations

from typing import Any, Callable

from tvm import relax


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """`expr`'s shape as ints, or None when it is unknown or symbolic."""
    shape = getattr(expr.ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    try:
        return tuple(int(v) for v in shape.values)
    except TypeError:  # symbolic
        return None


def mutate_functions(mod: Any, make_mutator: Callable[[Any], Any]) -> Any:
    """`mod` with every Relax function visited by one mutator made from `mod` (a PyExprMutator)."""
    rewriter = make_mutator(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.get()
