"""Model files into Relax: ONNX (the main path) and `torch.export` programs (`.pt2`).

ONNX graphs are first passed through ONNX Runtime's basic optimizer, which folds constant
subgraphs: exporters often compute pads or shapes at run time (EfficientViT's ONNX does), and
TVM's importer rejects those ("Dynamic pads are not supported yet"). Folding keeps the graph in
the standard ONNX domain, and ONNX Runtime also computes the reference output, so both see the
same graph.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

from runner.artifact import TensorSpec
from runner.errors import EdgesegError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImportedModel:
    """A Relax module (weights embedded as constants) and what it takes."""

    mod: Any  # tvm.IRModule
    inputs: tuple[TensorSpec, ...]
    source: Path  # the file the reference output is computed from (folded ONNX or .pt2)
    kind: str  # "onnx" or "pt2"


def parse_input_shapes(text: str) -> dict[str | None, tuple[int, ...]]:
    """`1,3,512,512` (the only input) or `input:1,3,512,512;mask:1,1,64,64` (by name)."""
    shapes: dict[str | None, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, dims = part.rpartition(":")
        if not re.fullmatch(r"\d+(,\d+)*", dims.replace(" ", "")):
            raise ValueError(f"'{part}' is not a shape like 1,3,512,512 or NAME:1,3,512,512")
        shapes[name or None] = tuple(int(d) for d in dims.replace(" ", "").split(","))
    if not shapes:
        raise ValueError("empty input shape")
    return shapes


def load_model(
    path: Path, input_shapes: dict[str | None, tuple[int, ...]] | None, work_dir: Path
) -> ImportedModel:
    """Import an ONNX or `.pt2` file into Relax with static input shapes."""
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"Model file {path} does not exist.", "Check the path.")
    if path.suffix == ".pt2":
        return _load_exported_program(path)
    return _load_onnx(path, input_shapes or {}, work_dir)


def _read_onnx(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:  # protobuf raises DecodeError, the checker ValidationError
        raise EdgesegError(
            f"{path} is not a valid ONNX model ({type(err).__name__}: {err}).",
            "Pass an .onnx file (e.g. from torch.onnx.export) or a torch.export .pt2 file.",
        ) from err
    return model


def _onnx_inputs(model, shapes: dict[str | None, tuple[int, ...]]) -> tuple[TensorSpec, ...]:
    """Graph inputs (not initializers) with static shapes, taking user shapes where given."""
    import onnx

    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if None in shapes and len(graph_inputs) != 1:
        names = ", ".join(i.name for i in graph_inputs)
        raise EdgesegError(
            f"The model has {len(graph_inputs)} inputs ({names}); a bare --input-shape is ambiguous.",
            "Name each input: --input-shape 'NAME:1,3,512,512;OTHER:...'.",
        )
    unknown = set(shapes) - {None} - {i.name for i in graph_inputs}
    if unknown:
        raise EdgesegError(
            f"--input-shape names {sorted(unknown)}, which the model has no input called.",
            f"Its inputs are: {', '.join(i.name for i in graph_inputs)}.",
        )
    specs = []
    for inp in graph_inputs:
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in inp.type.tensor_type.shape.dim]  # fmt: skip
        given = shapes.get(inp.name, shapes.get(None))
        if given is not None:
            if len(given) != len(dims) or any(
                isinstance(d, int) and d != g for d, g in zip(dims, given)
            ):
                raise EdgesegError(
                    f"--input-shape {list(given)} does not fit input '{inp.name}' of shape {dims}.",
                    "Give one size per dimension and keep the static ones as the model has them.",
                )
            dims = list(given)
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise EdgesegError(
                f"Input '{inp.name}' has dynamic shape {dims}.",
                "Fix it with --input-shape, e.g. --input-shape 1,3,512,512.",
            )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type).name
        specs.append(TensorSpec(tuple(dims), dtype, inp.name))
    return tuple(specs)


def fold_constants(model_path: Path, inputs: tuple[TensorSpec, ...], out_path: Path) -> Path:
    """Fix input shapes and fold constant subgraphs with ONNX Runtime's basic optimizer."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    by_name = {s.name: s for s in inputs}
    for inp in model.graph.input:
        if inp.name in by_name:
            for dim, size in zip(inp.type.tensor_type.shape.dim, by_name[inp.name].shape):
                dim.Clear()
                dim.dim_value = size
    fixed = out_path.with_suffix(".fixed.onnx")
    onnx.save(model, str(fixed))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out_path)
    try:
        ort.InferenceSession(str(fixed), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's pybind errors (Fail, InvalidGraph, ...) share no base
        raise _onnxruntime_rejects(model_path, model, err) from err
    finally:
        fixed.unlink()
    return out_path


def _onnxruntime_rejects(model_path: Path, model: Any, err: Exception) -> EdgesegError:
    """ONNX Runtime refused to load the graph: name the node it blames, as the importer's errors do."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    message = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Load model from \S+ failed:)?", "", message).strip()
    blamed = re.search(r"(?:in node|Node) \(([^)]*)\)", message)
    nodes = {n.name: n for n in model.graph.node}
    if blamed and blamed.group(1) in nodes:
        node = nodes[blamed.group(1)]
        where = f"node '{node.name}' ({node.op_type}, inputs {list(node.input)})"
    elif blamed:
        where = f"node '{blamed.group(1)}'"
    else:
        where = "a node it does not name"
    return EdgesegError(
        f"ONNX Runtime, which folds the constants of {model_path.name} before TVM imports it, rejects "
        f"{where}: {message}",
        "Fix that node in the exporter (give the operator the input types and shapes the ONNX "
        "operator spec allows, e.g. a Cast to float before an Add with a float tensor; "
        "onnx.checker.check_model(model, full_check=True) finds many such errors), "
        "or export a torch.export .pt2 file and compile that instead.",
    )


def _load_onnx(path: Path, shapes: dict[str | None, tuple[int, ...]], work_dir: Path) -> ImportedModel:
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    model = _read_onnx(path)
    inputs = _onnx_inputs(model, shapes)
    work_dir.mkdir(parents=True, exist_ok=True)
    folded_path = fold_constants(path, inputs, work_dir / "model.folded.onnx")
    folded = _read_onnx(folded_path)
    try:
        mod = from_onnx(
            folded,
            shape_dict={s.name: list(s.shape) for s in inputs},
            dtype_dict={s.name: s.dtype for s in inputs},
        )
    except tvm.error.OpNotImplemented as err:
        ops = str(err).split(":")[-1].strip()
        raise EdgesegError(
            f"TVM's ONNX importer cannot convert these operators of {path.name}: {ops}.",
            "Re-export the model without them (another opset, or a module rewrite in PyTorch), "
            "or export it with torch.export to a .pt2 file and compile that instead.",
        ) from err
    except (ValueError, NotImplementedError) as err:
        raise EdgesegError(
            f"TVM's ONNX importer failed on {path.name}: {err}",
            "Export with static shapes (a fixed input size, constant folding on), "
            "or export a torch.export .pt2 file and compile that instead.",
        ) from err
    return ImportedModel(mod=mod, inputs=inputs, source=folded_path, kind="onnx")


def _load_exported_program(path: Path) -> ImportedModel:
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    try:
        program = torch.export.load(str(path))
    except Exception as err:
        raise EdgesegError(
            f"{path} is not a torch.export program ({type(err).__name__}: {err}).",
            "Save one with torch.export.save(torch.export.export(model, (x,)), 'model.pt2').",
        ) from err
    inputs = []
    for spec in program.graph_signature.input_specs:
        if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT:
            node = next(n for n in program.graph.nodes if n.name == spec.arg.name)
            value = node.meta["val"]
            dtype = str(value.dtype).removeprefix("torch.")
            inputs.append(TensorSpec(tuple(int(d) for d in value.shape), dtype, spec.arg.name))
    mod = from_exported_program(program, keep_params_as_input=False)
    return ImportedModel(mod=mod, inputs=tuple(inputs), source=path, kind="pt2")
