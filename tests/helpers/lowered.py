"""Run a lowered (untuned) Relax module on this CPU: what the graph-pass tests compare numbers with."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from compile.targets import resolve_target

HOST = resolve_target("host")


def run_lowered(lowered: tvm.IRModule, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    vm = relax.VirtualMachine(tvm.compile(lowered, target=HOST.target()), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(x) for x in inputs.values()))
    outs = [out] if hasattr(out, "numpy") else list(out)
    return [o.numpy() for o in outs]
