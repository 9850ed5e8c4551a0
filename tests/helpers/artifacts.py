"""Small real artifacts in the format of `runner.artifact`, for tests of any package.

`build_artifact(folder)` compiles a tiny Relax conv net (or any Relax module passed in) with
`tvm.compile`, exports model.so, builds every fused kernel alone into kernels.so, builds
probe.so, computes the reference output on the host and writes the manifest, as `compile`
does for a real model, in about a second for the host and a few for aarch64.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from runner.artifact import (
    KERNELS_LIB,
    MODEL_LIB,
    PROBE_LIB,
    TUNING_DIR,
    ArtifactTarget,
    KernelSpec,
    TensorSpec,
    build_probe,
    write_kernels,
    write_manifest,
    write_reference,
)

HOST_TARGET = {"kind": "llvm", "num-cores": 2}
AARCH64_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "num-cores": 2}
AARCH64_CC = "aarch64-linux-gnu-gcc"


def tiny_convnet(size: int = 16, seed: int = 0) -> Any:
    """Relax `main(x: 1x3xSxS) -> 1x4xSxS`: conv3x3 + relu, conv3x3 + bias (two fused kernels)."""
    from tvm import relax

    rng = np.random.default_rng(seed)
    x = relax.Var("x", relax.TensorType((1, 3, size, size), "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            w1 = relax.const(rng.standard_normal((8, 3, 3, 3)).astype("float32"))
            w2 = relax.const(rng.standard_normal((4, 8, 3, 3)).astype("float32"))
            bias = relax.const(rng.standard_normal((1, 4, 1, 1)).astype("float32"))
            hidden = builder.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, w1, padding=1)))
            out = builder.emit(relax.op.add(relax.op.nn.conv2d(hidden, w2, padding=1), bias))
            out = builder.emit_output(out)
        builder.emit_func_output(out)
    return builder.get()


def kernel_specs(lowered: Any) -> list[KernelSpec]:
    """Every PrimFunc of a lowered module with its argument shapes and its calls from `main`."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    call_tir = tvm.ir.Op.get("relax.call_tir")
    calls: dict[str, int] = {}
    for block in lowered["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if getattr(value, "op", None) is not None and value.op.same_as(call_tir):
                name = value.args[0].name_hint
                calls[name] = calls.get(name, 0) + 1
    specs = []
    for gvar, func in lowered.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            args = tuple(TensorSpec(tuple(int(d) for d in info.shape), str(info.dtype))
                         for info in ms.arg_info.ArgInfo.from_prim_func(func))  # fmt: skip
            specs.append(KernelSpec(gvar.name_hint, args, calls.get(gvar.name_hint, 0), False))
    return sorted(specs, key=lambda spec: spec.name)


def build_artifact(
    folder: Path,
    mod: Any = None,
    target: dict = HOST_TARGET,
    preset: str = "host",
    arch: str | None = None,
    cc: str | None = None,
    emulated_ok: bool = False,
    device_type: str = "cpu",
    seed: int = 0,
) -> Path:
    """Compile `mod` (default `tiny_convnet()`) into an artifact folder and return the folder.

    `cc` links the libraries (e.g. aarch64-linux-gnu-gcc); the reference output always comes
    from a host build of the same module. `device_type` is recorded as given (tests of the
    OpenCL refusal record "opencl" for a CPU build).
    """
    import tvm
    from tvm import relax

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mod = tiny_convnet() if mod is None else mod
    tvm_target = tvm.target.Target(target)
    with tvm_target:
        lowered = relax.get_pipeline("zero")(mod)
    export = {"cc": cc} if cc else {}
    tvm.compile(lowered, target=tvm_target).export_library(str(folder / MODEL_LIB), **export)
    kernels = kernel_specs(lowered)
    primfuncs = tvm.IRModule({spec.name: lowered[spec.name].with_attr("global_symbol", spec.name)
                              for spec in kernels})  # fmt: skip
    tvm.compile(primfuncs, target=tvm_target).export_library(str(folder / KERNELS_LIB), **export)
    write_kernels(folder, kernels)
    build_probe(tvm_target, folder / PROBE_LIB, **export)

    params = lowered["main"].params
    rng = np.random.default_rng(seed)
    inputs = {param.name: rng.standard_normal(_shape(param)).astype(_dtype(param))
              for param in params}  # fmt: skip
    outputs = run_on_host(lowered, list(inputs.values()))
    write_reference(folder, inputs, outputs)
    tuning = folder / TUNING_DIR
    tuning.mkdir(exist_ok=True)
    for name in ("database_workload.json", "database_tuning_record.json"):
        (tuning / name).write_text("")
    write_manifest(
        folder,
        target=ArtifactTarget(preset=preset, tvm=dict(target), host=None,
                              device_type=device_type, arch=arch or platform.machine(),
                              emulated_ok=emulated_ok),  # fmt: skip
        inputs=[TensorSpec(_shape(p), _dtype(p), p.name) for p in params],
        outputs=[TensorSpec(o.shape, str(o.dtype)) for o in outputs],
        tuning={"tasks": len(kernels), "trials": 0, "tuned_kernels": 0,
                "untuned_kernels": len(kernels)},  # fmt: skip
    )
    return folder


def run_on_host(lowered: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """`main(*inputs)` of a lowered Relax module, built for and run on this machine's CPU."""
    import tvm
    from tvm import relax

    executable = tvm.compile(lowered, target=tvm.target.Target(HOST_TARGET))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    results = result if isinstance(result, (list, tuple)) else [result]
    return [r.numpy() for r in results]


def _shape(param: Any) -> tuple[int, ...]:
    return tuple(int(dim) for dim in param.ty.shape)


def _dtype(param: Any) -> str:
    return str(param.ty.dtype)
