"""The artifact format: a folder any device can run and check without the model's source.

    model.so        Relax VM executable library, entry function `main`
    kernels.so      every fused TIR kernel of the model, built alone (per-kernel timing)
    kernels.json    per kernel: name, args [{shape, dtype}], calls (times `main` calls it), tuned
    probe.so        a tiny library built for the same target, loaded first on the device so a
                    library for another architecture is refused before the large one is uploaded
    reference.npz   `input:<name>` and `output:<i>` arrays computed on the host
    tuning/         the MetaSchedule JSON database the build used
    manifest.json   `Manifest`: target, inputs, outputs, versions, sha256 of every other file

`compile` writes an artifact through `write_reference`, `write_kernels`, `build_probe` and,
last, `write_manifest`; `runner` reads it with `load_artifact`, which verifies every checksum.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from runner.errors import ArtifactError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_LIB = "model.so"
KERNELS_LIB = "kernels.so"
KERNELS_JSON = "kernels.json"
PROBE_LIB = "probe.so"
REFERENCE = "reference.npz"
TUNING_DIR = "tuning"
PROBE_FUNC = "edgeseg_probe"
# What each file is for, for error messages; these three every artifact needs.
REQUIRED = {
    MODEL_LIB: "the compiled model",
    PROBE_LIB: "the architecture probe",
    REFERENCE: "the reference input/output pair",
}
KERNEL_FILES = {KERNELS_LIB: "the kernels built alone", KERNELS_JSON: "the kernel table"}
DEVICE_TYPES = ("cpu", "opencl")
_RECOMPILE = ("Recompile the model into this folder with `python -m compile ... -o FOLDER`, or "
              "copy the whole artifact folder again.")  # fmt: skip


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a model input (named) or output, or of a kernel argument."""

    shape: tuple[int, ...]
    dtype: str
    name: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(tuple(int(dim) for dim in data["shape"]), str(data["dtype"]), data.get("name"))

    def to_dict(self) -> dict:
        data = {"shape": list(self.shape), "dtype": self.dtype}
        return {"name": self.name, **data} if self.name is not None else data


@dataclass(frozen=True)
class ArtifactTarget:
    """What the artifact was built for.

    `tvm`/`host` are TVM target dicts; `arch` is the CPU architecture of the code
    (`x86_64`, `aarch64`); `emulated_ok` says whether the emulated aarch64 device can load it
    (a glibc Linux build can, an Android build cannot).
    """

    preset: str
    tvm: dict
    host: dict | None
    device_type: str
    arch: str
    emulated_ok: bool

    def __post_init__(self) -> None:
        if self.device_type not in DEVICE_TYPES:
            raise ValueError(f"device_type {self.device_type!r} is not one of {DEVICE_TYPES}")


@dataclass(frozen=True)
class KernelSpec:
    """One fused TIR kernel of the model, as kernels.json records it."""

    name: str
    args: tuple[TensorSpec, ...]
    calls: int
    tuned: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KernelSpec:
        args = tuple(TensorSpec.from_dict(arg) for arg in data["args"])
        return cls(str(data["name"]), args, int(data["calls"]), bool(data["tuned"]))

    def to_dict(self) -> dict:
        return {"name": self.name, "args": [arg.to_dict() for arg in self.args],
                "calls": self.calls, "tuned": self.tuned}  # fmt: skip


@dataclass(frozen=True)
class Manifest:
    """manifest.json: everything needed to run and check the artifact, and where it came from."""

    format_version: int
    edgeseg_version: str
    tvm_version: str
    created_utc: str
    target: ArtifactTarget
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: dict[str, str]
    tuning: dict = field(default_factory=dict)
    # How the device should run it: {"threads": 4, "affinity": "big", "device": "s21-exynos"}
    # from a phone preset; `runner bench` applies it unless --threads overrides.
    runtime: dict = field(default_factory=dict)
    library_format: str = "so"  # "tar": object files to link elsewhere, not runnable as is
    # The graph passes compile ran before legalization: {"fast_math": true, ...}
    lowering: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(
            format_version=int(data["format_version"]),
            edgeseg_version=str(data["edgeseg_version"]),
            tvm_version=str(data["tvm_version"]),
            created_utc=str(data["created_utc"]),
            target=ArtifactTarget(**data["target"]),
            inputs=tuple(TensorSpec.from_dict(spec) for spec in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(spec) for spec in data["outputs"]),
            files=dict(data["files"]),
            tuning=dict(data.get("tuning", {})),
            runtime=dict(data.get("runtime", {})),
            library_format=str(data.get("library_format", "so")),
            lowering=dict(data.get("lowering", {})),
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["inputs"] = [spec.to_dict() for spec in self.inputs]
        data["outputs"] = [spec.to_dict() for spec in self.outputs]
        return data


@dataclass(frozen=True)
class Artifact:
    """A verified artifact folder (every file the manifest lists is present and unchanged)."""

    folder: Path
    manifest: Manifest

    def path(self, name: str) -> Path:
        return self.folder / name

    def reference(self) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """The stored reference inputs (by name, in the manifest's order) and outputs."""
        with np.load(self.path(REFERENCE)) as data:
            try:
                inputs = {spec.name: data[f"input:{spec.name}"] for spec in self.manifest.inputs}
                outputs = [data[f"output:{i}"] for i in range(len(self.manifest.outputs))]
            except KeyError as missing:
                raise ArtifactError(
                    f"{self.path(REFERENCE)} has no array {missing}, which manifest.json "
                    "implies.", _RECOMPILE) from None  # fmt: skip
        return inputs, outputs

    def kernels(self) -> list[KernelSpec]:
        """The kernel table (kernels.json); ArtifactError when the artifact has none."""
        _require(self.folder, self.manifest, KERNEL_FILES)
        data = json.loads(self.path(KERNELS_JSON).read_text())
        return [KernelSpec.from_dict(kernel) for kernel in data["kernels"]]


def load_artifact(folder: str | Path, with_kernels: bool = False) -> Artifact:
    """Read manifest.json and verify the checksum of every file it lists.

    Raises ArtifactError naming the missing or changed file and what to do. `with_kernels`
    also requires kernels.so and kernels.json (per-kernel timing needs them).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder {folder} does not exist.",
                            "Pass the folder `python -m compile` wrote (its -o).")  # fmt: skip
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{folder} has no {MANIFEST}, so it is not a finished artifact.",
                            _RECOMPILE)  # fmt: skip
    try:
        manifest = Manifest.from_dict(json.loads(manifest_path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"{manifest_path} cannot be read ({type(err).__name__}: {err}).",
                            _RECOMPILE) from None  # fmt: skip
    if manifest.format_version > FORMAT_VERSION:
        raise ArtifactError(
            f"{folder} has artifact format {manifest.format_version}; this edgeseg reads up "
            f"to {FORMAT_VERSION}.",
            "Update edgeseg on this machine, or compile with the edgeseg installed here.",
        )
    if manifest.library_format != "so":
        raise ArtifactError(
            f"artifact {folder} holds object files ({manifest.library_format}), not shared "
            "libraries, so no device can load it as is.",
            "Link model.tar into model.so with the NDK (tvm.support.ndk.create_shared), or "
            "compile again with TVM_NDK_CC set and without --export tar.",
        )
    _require(folder, manifest, {**REQUIRED, **(KERNEL_FILES if with_kernels else {})})
    for relpath, expected in sorted(manifest.files.items()):
        path = folder / relpath
        if not path.is_file():
            raise ArtifactError(f"artifact {folder} is missing {relpath}, which its "
                                f"{MANIFEST} lists.", _RECOMPILE)  # fmt: skip
        if _sha256(path) != expected:
            raise ArtifactError(
                f"{relpath} in artifact {folder} fails its checksum: it changed or was "
                "damaged after compilation.", _RECOMPILE)  # fmt: skip
    return Artifact(folder, manifest)


def write_manifest(
    folder: str | Path,
    *,
    target: ArtifactTarget,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    tuning: Mapping[str, Any] | None = None,
    runtime: Mapping[str, Any] | None = None,
    library_format: str = "so",
    lowering: Mapping[str, Any] | None = None,
) -> Manifest:
    """Write manifest.json last, with the sha256 of every file now in `folder` (recursively)."""
    folder = Path(folder)
    if any(spec.name is None for spec in inputs):
        raise ValueError("every model input needs a name (reference.npz stores it by name)")
    files = {
        path.relative_to(folder).as_posix(): _sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        edgeseg_version=_version("edgeseg"),
        tvm_version=_version("apache-tvm"),
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        target=target,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        files=files,
        tuning=dict(tuning or {}),
        runtime=dict(runtime or {}),
        library_format=library_format,
        lowering=dict(lowering or {}),
    )
    (folder / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return manifest


def write_reference(
    folder: str | Path, inputs: Mapping[str, np.ndarray], outputs: Sequence[np.ndarray]
) -> None:
    """reference.npz: the host-computed outputs of `inputs`, for `runner bench --check`."""
    arrays = {f"input:{name}": np.asarray(value) for name, value in inputs.items()}
    arrays.update({f"output:{i}": np.asarray(value) for i, value in enumerate(outputs)})
    np.savez(Path(folder) / REFERENCE, **arrays)


def write_kernels(folder: str | Path, kernels: Sequence[KernelSpec]) -> None:
    """kernels.json, the table beside kernels.so."""
    data = {"kernels": [kernel.to_dict() for kernel in kernels]}
    (Path(folder) / KERNELS_JSON).write_text(json.dumps(data, indent=2) + "\n")


def probe_module(target: Any) -> Any:
    """The probe: `edgeseg_probe(a, b)` sets b = a + 1 on 4 float32 values.

    `target` is the artifact's tvm.target.Target (its host part is used for GPU targets).
    Link it exactly like model.so, so it fails to load where the model would.
    """
    import tvm
    from tvm import te

    cpu_target = target if target.kind.name in ("llvm", "c") else target.host
    a = te.placeholder((4,), name="a", dtype="float32")
    b = te.compute((4,), lambda i: a[i] + 1.0, name="b")
    func = te.create_prim_func([a, b]).with_attr("global_symbol", PROBE_FUNC)
    return tvm.compile(tvm.IRModule({PROBE_FUNC: func}), target=cpu_target)


def build_probe(target: Any, path: str | Path, **export_kwargs: Any) -> None:
    """Write probe.so; `export_kwargs` go to `export_library` as for model.so (`cc=`, `fcompile=`)."""
    probe_module(target).export_library(str(path), **export_kwargs)


def _require(folder: Path, manifest: Manifest, needed: Mapping[str, str]) -> None:
    for name, what in needed.items():
        if name not in manifest.files or not (folder / name).is_file():
            fix = (_RECOMPILE if name not in KERNEL_FILES else
                   "Compile it again without --no-kernel-library (the pipeline builds without it; "
                   "`python -m compile MODEL.onnx --trials 0` reuses every schedule it had).")
            raise ArtifactError(f"artifact {folder} is missing {name} ({what}).", fix)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
