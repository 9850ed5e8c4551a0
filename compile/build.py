"""Applying the tuning database and building: the model library and the per-kernel library.

The database is applied with `MetaScheduleApplyDatabase` inside the target, database and pass
contexts (applying it with `compile_relax` to an already-lowered module silently does
nothing). Whether a kernel took its tuned schedule is read from the build itself: a kernel is
tuned when its TIR changed under the pass, and every kernel left untuned is reported loudly,
because untuned CPU code is naive (no parallelism, no vectorization).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import tvm
import tvm_ffi
from tvm import relax

from compile.targets import TargetPreset
from runner.artifact import KernelSpec, TensorSpec
from runner.errors import EdgesegError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoweringOptions:
    """Graph passes run before legalize + fuse; recorded in the artifact's manifest.json.

    `fast_math`: erf/exp/tanh/softmax in their fast approximate forms (compile/fast_math.py).
    `rewrite_decoder`: the all-MLP decoder's projections merged into its fuse conv
    (compile/rewrites.py); off by default while the latency model prices the decoder unrewritten.
    `prepack_weights` (CPU targets): the tuner may choose the layout each kernel reads its weights
    in, and the build rewrites the constant weights into it once (`fold_prepacked_weights`).
    """

    fast_math: bool = True
    rewrite_decoder: bool = False
    prepack_weights: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lower(mod: Any, preset: TargetPreset, options: LoweringOptions = LoweringOptions()) -> Any:
    """The graph passes `options` asks for, then legalize and fuse: the tuning tasks exist only after this."""
    from compile.fast_math import fast_math
    from compile.layout_views import DepthwiseConvNHWC
    from compile.rewrites import rewrite_decoder

    if options.prepack_weights and preset.is_gpu:
        raise EdgesegError(
            f"Weight prepacking is a CPU build option; {preset.name} is a GPU target.",
            "Drop --prepack-weights for GPU targets (MetaSchedule rewrites weight layouts on CPU only).",
        )

    def legalize_and_fuse(graph: Any) -> Any:
        with preset.target():
            # Always: exact, and it removes the Mix-FFN's layout copies (compile/layout_views.py).
            passes = [DepthwiseConvNHWC()] + ([fast_math()] if options.fast_math else [])
            fused = relax.get_pipeline("zero")(tvm.transform.Sequential(passes)(graph))
            # Marks each kernel's constant arguments as free to re-lay-out: the workloads (and
            # their database records) differ from the unmarked ones.
            return relax.transform.AttachAttrLayoutFreeBuffers()(fused) if options.prepack_weights else fused

    if not options.rewrite_decoder:
        return legalize_and_fuse(mod)
    rewritten, decoders = rewrite_decoder(mod)
    lowered = legalize_and_fuse(rewritten)
    if decoders:
        before = model_flops(legalize_and_fuse(mod))
        logger.info("decoder rewrite: model FLOPs %.4g G -> %.4g G (-%.1f%%; TVM's count of the lowered kernels "
                    "times their calls)", before / 1e9, model_flops(lowered) / 1e9,
                    100 * (1 - model_flops(lowered) / before))  # fmt: skip
    else:
        logger.warning("--rewrite-decoder: no all-MLP decoder (1x1 projections, resize, concat, 1x1 fuse) "
                       "found in the model; it is compiled as it is.")
    return lowered


def model_flops(lowered: Any) -> float:
    """FLOPs of one run: TVM's estimate of each kernel times how often `main` calls it."""
    from tvm.s_tir.analysis import estimate_tir_flops

    funcs = _prim_funcs(lowered)
    return sum(float(estimate_tir_flops(tvm.IRModule({"main": funcs[name]}))) * calls
               for name, calls in _call_counts(lowered).items())  # fmt: skip


def _prim_funcs(mod: Any) -> dict[str, Any]:
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def apply_database(lowered: Any, preset: TargetPreset, db: Any) -> tuple[Any, dict[str, bool]]:
    """Replace every kernel the database has a schedule for; say which kernels changed."""
    target = preset.target()
    with target, db, tvm.transform.PassContext(opt_level=3):
        tuned = relax.transform.MetaScheduleApplyDatabase()(lowered)
    before = _prim_funcs(lowered)
    after = _prim_funcs(tuned)
    status = {name: not tvm_ffi.structural_equal(before[name], after[name]) for name in after}
    untuned = sorted(name for name, ok in status.items() if not ok)
    if untuned:
        fallback = (
            "get DLight's default GPU schedules (correct, rarely fast)" if preset.is_gpu
            else "will run naive code (no parallelism, no vectorization)"
        )  # fmt: skip
        logger.warning(
            "UNTUNED: %d of %d kernels have no tuned schedule and %s: %s. Tune with more "
            "--trials, or reuse a --database that has them or kernels of their structure "
            "(schedule transfer measures on the device: name one with --tracker/--key).",
            len(untuned), len(status), fallback, ", ".join(untuned),
        )  # fmt: skip
    return tuned, status


def fold_prepacked_weights(tuned: Any, preset: TargetPreset) -> Any:
    """Run the weight-layout rewrites the tuned schedules chose, now, on the constant weights.

    A schedule made with layout-free weights (`LoweringOptions.prepack_weights`) starts with a
    block that copies the weight into the tiled layout its loops read; that block is split into a
    kernel of its own and evaluated at compile time, so the shipped model holds the weights
    already packed and no call pays for the copy."""
    with preset.target():
        return tvm.transform.Sequential(
            [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant()]
        )(tuned)


def schedule_gpu_defaults(tuned: Any, preset: TargetPreset, status: dict[str, bool]) -> Any:
    """Give every GPU kernel without a tuned schedule one of DLight's default schedules.

    An unscheduled GPU kernel would run on one thread, or not build at all; tuned kernels are
    marked scheduled first so DLight leaves them as MetaSchedule made them.
    """
    from tvm.s_tir import dlight as dl

    mod = tuned
    for name, is_tuned in status.items():
        if is_tuned:
            gv = mod.get_global_var(name)
            mod[gv] = mod[gv].with_attr("tirx.is_scheduled", True)
    with preset.target():
        mod = dl.ApplyDefaultSchedule(
            dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
            dl.gpu.Transpose(), dl.gpu.Fallback(),
        )(mod)  # fmt: skip
    unbound = sorted(name for name, f in _prim_funcs(mod).items() if not _thread_bound(f))
    if unbound:
        raise EdgesegError(
            f"No GPU schedule (tuned or DLight default) binds these kernels to threads: {unbound}.",
            "Tune them on the phone's GPU (--tracker/--key with --trials), or report the model.",
        )
    return mod


def _thread_bound(func: Any) -> bool:
    text = func.script()
    return "threadIdx." in text or "blockIdx." in text


def _call_counts(mod: Any) -> dict[str, int]:
    """How often `main` calls each kernel (a kernel shared by identical layers counts once each)."""
    counts: dict[str, int] = {}
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            name = expr.args[0].name_hint
            counts[name] = counts.get(name, 0) + 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return counts


def _arg_specs(func: Any) -> tuple[TensorSpec, ...]:
    # TVM 0.27: a PrimFunc's params are the buffers themselves.
    return tuple(TensorSpec(tuple(int(d) for d in p.shape), str(p.dtype)) for p in func.params)


def build_model(tuned: Any, preset: TargetPreset) -> Any:
    """The Relax VM executable of the whole model."""
    return tvm.compile(tuned, target=preset.target())


def build_kernels(tuned: Any, preset: TargetPreset, status: dict[str, bool]) -> tuple[Any, list[KernelSpec]]:
    """Every fused kernel compiled alone into one library, so the runner can time each."""
    funcs = _prim_funcs(tuned)
    counts = _call_counts(tuned)
    kernel_mod = tvm.IRModule(
        {name: f.with_attr("global_symbol", name) for name, f in funcs.items() if name in counts}
    )
    infos = [
        KernelSpec(name, _arg_specs(funcs[name]), counts[name], status.get(name, False))
        for name in sorted(counts)
    ]
    return tvm.compile(kernel_mod, target=preset.target()), infos


def device_source(executable: Any) -> str:
    """The OpenCL kernel source a GPU build ships to the phone (empty for CPU builds)."""
    modules = executable.mod._collect_from_import_tree(lambda m: True)
    return "\n".join(m.inspect_source() for m in modules if m.kind == "opencl")
