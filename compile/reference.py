"""A reference input/output pair computed outside TVM, so any device can check its numbers.

ONNX models run in ONNX Runtime on the same folded graph TVM imported; `.pt2` programs run in
PyTorch. The input is seeded random data: deterministic, and it exercises every channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compile.frontend import ImportedModel


def reference_inputs(model: ImportedModel, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        spec.name: rng.standard_normal(spec.shape).astype(spec.dtype) for spec in model.inputs
    }


def reference_outputs(model: ImportedModel, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    if model.kind == "onnx":
        return _run_onnxruntime(model.source, inputs)
    return _run_exported_program(model.source, inputs)


def _run_onnxruntime(path: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(out) for out in session.run(None, inputs)]


def _run_exported_program(path: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    program = torch.export.load(str(path))
    with torch.no_grad():
        out = program.module()(*(torch.from_numpy(x) for x in inputs.values()))
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o.detach().numpy() for o in outs]
