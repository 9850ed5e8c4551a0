"""Export a segmentation model for `compile/`: ONNX (checked against PyTorch with ONNX Runtime)
or a `torch.export` program (`.pt2`).

Shapes are static (batch 1, the given input size): TVM compiles one shape per artifact. The ONNX
graph has one input named `input` [1, 3, H, W] and one output named `logits` [1, C, H/4, W/4].
The legacy exporter leaves some shape and padding arithmetic in the graph (EfficientViT's pads);
`compile` folds it with ONNX Runtime before TVM imports the file (compile/frontend.py).
"""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import torch
from torch import nn

from runner.errors import EdgesegError

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# float32 kernels in ONNX Runtime and PyTorch sum in different orders; real breakage is far larger.
ATOL = 1e-4
RTOL = 1e-3


def _example_input(input_size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout, BN running stats) for the export, then the caller's mode back."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def export_onnx(model: nn.Module, input_size: int | tuple[int, int], path: str | Path, opset: int = 17) -> Path:
    """Write `model` (in eval mode) as ONNX with static shapes, check it, and verify it with ONNX Runtime.

    Raises `EdgesegError`, and writes nothing, when the ONNX output differs from PyTorch's beyond
    float32 noise.
    """
    import onnxruntime as ort

    example = _example_input(input_size)
    buffer = io.BytesIO()
    with _eval_mode(model), torch.no_grad(), warnings.catch_warnings():
        # the exporter's own folding gives up on reversed slices; compile folds those on import
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        # the legacy exporter is deliberate: its graphs are the ones TVM's importer was checked on
        warnings.filterwarnings("ignore", category=DeprecationWarning, message="You are using the legacy")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message="The feature will be removed")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            do_constant_folding=True,
        )
        expected = model(example).numpy()
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    serialized = proto.SerializeToString()
    session = ort.InferenceSession(serialized, providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: example.numpy()})
    if actual.shape != expected.shape or not np.allclose(actual, expected, atol=ATOL, rtol=RTOL):
        diff = np.abs(actual - expected).max() if actual.shape == expected.shape else float("nan")
        raise EdgesegError(
            f"the ONNX export of the model computes different logits than PyTorch "
            f"(shapes {list(actual.shape)} vs {list(expected.shape)}, max |diff| {diff:.3g}); {path} not written.",
            "Export with torch.export instead (export_program), or report the model and opset.",
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(serialized)
    log.info("exported %s (opset %d), ONNX Runtime matches PyTorch", path, opset)
    return path


def export_program(model: nn.Module, input_size: int | tuple[int, int], path: str | Path) -> Path:
    """Write `model` (in eval mode) as a `torch.export` program (`.pt2`) with a static input shape."""
    with _eval_mode(model):
        program = torch.export.export(model, (_example_input(input_size),))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    log.info("exported %s", path)
    return path
