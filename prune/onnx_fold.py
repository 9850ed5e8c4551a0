"""Fold the constant arithmetic the legacy ONNX exporter leaves in a static-shape graph.

The legacy exporter (`torch.onnx.export(..., dynamo=False)`) writes every `F.pad` as a subgraph
that computes the pads from constants (ConstantOfShape -> Concat -> Reshape -> Slice -> Transpose
-> Reshape -> Cast), and every `x.shape`/`chunk` as `Shape -> Gather -> ...` arithmetic, even when
the input shape is fixed; its own constant folding leaves both in place. TVM's ONNX importer
rejects the result ("Dynamic pads are not supported yet", then dynamic strided slices), e.g. for
EfficientViT, whose linear attention pads and chunks its values. Here every node whose inputs
are constants, and every `Shape` of a tensor whose shape ONNX shape inference knows, becomes a
`Constant` node, repeated until nothing changes. Weights (initializers) are never touched, so
shared weights are not duplicated.
"""

from __future__ import annotations

from itertools import chain
from typing import Iterable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

# Never evaluate these at export time: their value must be drawn when the model runs.
NONDETERMINISTIC_OPS = {
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
}  # fmt: skip
MAX_ROUNDS = 8


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with its constant subgraphs and static `Shape` nodes evaluated."""
    for _ in range(MAX_ROUNDS):
        model, changed = _fold_once(model)
        if not changed:
            break
    return model


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes that ONNX shape inference fully knows, by value name."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes = {}
    for info in chain(graph.input, graph.value_info, graph.output):
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def _foldable(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> bool:
    return (
        node.domain in ("", "ai.onnx")
        and node.op_type not in NONDETERMINISTIC_OPS
        and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        and all(i in values for i in node.input if i)
    )


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray], opset: int) -> list[np.ndarray]:
    outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output]
    node_model = helper.make_model(
        helper.make_graph([node], "fold", [], outputs), opset_imports=[helper.make_opsetid("", opset)]
    )
    return [np.asarray(v) for v in ReferenceEvaluator(node_model).run(None, {i: values[i] for i in node.input if i})]


def _shape_value(node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return np.array(shape, dtype=np.int64)[attrs.get("start", 0) : attrs.get("end", len(shape))]


def _inputs_used(nodes: Iterable[onnx.NodeProto]) -> Iterator[str]:
    """Every value name the nodes read, including from inside If/Loop bodies."""
    for node in nodes:
        yield from node.input
        for attr in node.attribute:
            for graph in [attr.g] if attr.HasField("g") else attr.graphs:
                yield from _inputs_used(graph.node)


def _fold_once(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    shapes = _static_shapes(model)
    values: dict[str, np.ndarray] = {}
    nodes, changed = [], False
    for node in model.graph.node:
        if node.op_type == "Shape" and node.input[0] in shapes:
            outputs = [_shape_value(node, shapes[node.input[0]])]
        elif node.op_type == "Constant" or _foldable(node, values):
            outputs = _evaluate(node, values, opset)
        else:
            nodes.append(node)
            continue
        changed |= node.op_type != "Constant"
        for name, value in zip(node.output, outputs):
            values[name] = value
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name)))
    used = set(_inputs_used(nodes)) | {o.name for o in model.graph.output}
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    del folded.graph.node[:]
    folded.graph.node.extend(n for n in nodes if n.op_type != "Constant" or n.output[0] in used)
    return folded, changed
