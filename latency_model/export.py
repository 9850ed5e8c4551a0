"""Write one layer config as a model file that `compile` imports: ONNX, the format the pruned
model is exported in (`prune.export`), so the layer's fused kernels, and their tuning-database
entries, are the ones `compile` later finds in the pruned model.

The legacy exporter (dynamo=False, opset 17) is deliberate: it is the exporter whose graphs TVM's
importer was checked on, and it imports for every layer type
(tests/latency_model/test_latency_export.py).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from latency_model.layers import LayerConfig

INPUT_NAME = "input"
OPSET = 17


def export_layer(config: LayerConfig, path: Path, seed: int = 0) -> tuple[Path, tuple[int, ...]]:
    """Write `config`'s module as ONNX at `path`; return the path and the input shape."""
    import onnx
    import torch

    from latency_model.layer_modules import build_layer

    torch.manual_seed(seed)
    module, shape = build_layer(config)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        torch.onnx.export(module, (torch.randn(*shape),), buffer, dynamo=False,
                          opset_version=OPSET, input_names=[INPUT_NAME], output_names=["output"],
                          do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path, shape
