"""Register only the tensor intrinsics a CPU target can use, before MetaSchedule asks for all.

`TuneContext` imports `tvm.s_tir.tensor_intrin`, whose package import parses every CUDA, ROCm,
Hexagon and RISC-V intrinsic as TVMScript: 30-90 s of CPU on this 2-core machine, more than a
small tuning run itself. CPU targets (llvm) can only tensorize with the x86 and ARM intrinsics,
so for them the package is entered with just those submodules; GPU targets get the full import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

PACKAGE = "tvm.s_tir.tensor_intrin"
CPU_SUBMODULES = ("x86", "arm_cpu")


def register_for(target_kind: str) -> None:
    """Make `import tvm.s_tir.tensor_intrin` cheap for llvm targets; a no-op once imported."""
    if PACKAGE in sys.modules:
        return
    if target_kind != "llvm":
        importlib.import_module(PACKAGE)
        return
    spec = importlib.util.find_spec(PACKAGE)
    package = types.ModuleType(PACKAGE, "CPU tensor intrinsics only (see compile/intrinsics.py)")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules[PACKAGE] = package
    for name in CPU_SUBMODULES:
        importlib.import_module(f"{PACKAGE}.{name}")
