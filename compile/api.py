"""`compile_model`: a model file in, a runnable artifact folder out.

Import -> lower (legalize + fuse) -> tune the kernels the device's database lacks, measuring
on the device over RPC -> apply the database and check that it took -> build the model
library, the per-kernel library and a probe library -> reference input/output -> manifest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from compile.build import (
    LoweringOptions,
    apply_database,
    build_kernels,
    build_model,
    device_source,
    fold_prepacked_weights,
    lower,
    schedule_gpu_defaults,
)
from compile.frontend import load_model
from compile.linkers import check_linker, export_library, export_objects
from compile.reference import reference_inputs, reference_outputs
from compile.targets import TargetPreset
from compile.transfer import DEFAULT_CANDIDATES
from compile.tuning import TuningReport, copy_records, open_database, tune
from runner.artifact import (
    KERNELS_LIB,
    MODEL_LIB,
    PROBE_LIB,
    TUNING_DIR,
    ArtifactTarget,
    TensorSpec,
    probe_module,
    write_kernels,
    write_manifest,
    write_reference,
)
from runner.device import Device
from runner.errors import EdgesegError
from runner.emulator import EMULATED_KEY
from runner.farm import use_device

logger = logging.getLogger(__name__)

DEVICE_SOURCE = "device_code.cl"


@dataclasses.dataclass(frozen=True)
class CompileResult:
    artifact: Path
    tuning: TuningReport
    kernels_tuned: int
    kernels_total: int

    @property
    def untuned(self) -> int:
        return self.kernels_total - self.kernels_tuned


def compile_model(
    model_path: Path,
    out_dir: Path,
    preset: TargetPreset,
    database_dir: Path,
    trials: int,
    input_shapes: dict[str | None, tuple[int, ...]] | None = None,
    device: Device | None = None,
    seed: int = 0,
    runtime: dict[str, Any] | None = None,
    export: str = "so",
    trials_per_task: int | None = None,
    kernel_library: bool = True,
    transfer_candidates: int = DEFAULT_CANDIDATES,
    fast_math: bool = True,
    rewrite_decoder: bool = False,
    prepack_weights: bool = False,
) -> CompileResult:
    """Compile `model_path` for `preset`, tuning on `device` (the embedded farm when None).

    `trials_per_task`, when given, replaces `trials` by that many trials per kernel without a
    tuned record (transferred ones included). `kernel_library=False` skips kernels.so
    (per-kernel timing) and halves the build for callers that only time the whole model
    (latency collection). `transfer_candidates`: donor schedules measured per kernel the
    database lacks (0: no transfer; `compile.transfer`). `runtime` (threads, core affinity,
    phone preset) goes into the manifest for the runner to apply on the device; `export="tar"`
    writes object files for linking elsewhere instead of shared libraries. `fast_math=False`
    keeps libm's erf/exp/tanh and the exact softmax (compile/fast_math.py: fast math changes the
    GELU and softmax kernels, so their workloads, and a tuning database keyed on them, differ
    between the two settings). `rewrite_decoder=True` merges a SegFormer all-MLP decoder's
    projections into its fuse conv (compile/rewrites.py; exact up to float rounding, about half
    of segformer-b0's FLOPs); off by default because the latency model's layer description
    still prices the unrewritten decoder. `prepack_weights=True` (CPU targets) lets the tuner
    choose each kernel's weight layout and packs the weights at compile time (compile/build.py;
    its workloads differ from unpacked ones, so they tune and record separately).
    """
    if export == "so":
        check_linker(preset)
    warn_if_pruned_for_another_target(Path(model_path), preset)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists():
        raise EdgesegError(
            f"Output folder {out_dir} exists and is not an edgeseg artifact.",
            "Choose an empty or new folder with -o, so nothing unrelated is overwritten.",
        )
    with tempfile.TemporaryDirectory(prefix="edgeseg-compile-") as scratch:
        model = load_model(Path(model_path), input_shapes, Path(scratch))
        options = LoweringOptions(fast_math=fast_math, rewrite_decoder=rewrite_decoder,
                                  prepack_weights=prepack_weights)
        lowered = lower(model.mod, preset, options)
        with ExitStack() as stack:
            def tuning_device() -> Device:
                return device or stack.enter_context(embedded_device(preset))

            report = tune(lowered, preset, tuning_device, database_dir, trials, seed, trials_per_task,
                          transfer_candidates if _can_measure(preset, device) else 0)
        db = open_database(database_dir, preset.target())
        tuned, status = apply_database(lowered, preset, db)
        if options.prepack_weights:
            tuned = fold_prepacked_weights(tuned, preset)
        if preset.is_gpu:
            tuned = schedule_gpu_defaults(tuned, preset, status)
        # Stage beside the destination: the final rename must not cross file systems.
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir.parent))
        try:
            _write_artifact(staging, model, preset, tuned, status, report, db, runtime or {}, export,
                            kernel_library, options)
            if out_dir.exists():
                shutil.rmtree(out_dir)
            staging.rename(out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return CompileResult(out_dir, report, sum(status.values()), len(status))


def warn_if_pruned_for_another_target(model_path: Path, preset: TargetPreset) -> None:
    """A network pruned to a latency budget (`python -m prune` writes pruning.json beside its
    model.onnx) keeps that budget only on the target its latency predictor was made for: say so
    when compiling it for another (it still compiles; its budget just says nothing there)."""
    report_path = model_path.parent / "pruning.json"
    if not report_path.is_file():
        return
    try:
        pruned_for = json.loads(report_path.read_text()).get("target")
    except (json.JSONDecodeError, AttributeError):
        return  # not ours to judge: the model file is what is compiled
    if pruned_for is not None and pruned_for != preset.name:
        logger.warning("%s was pruned to a latency budget predicted for target %s, not %s: its budget and "
                       "predicted latency do not hold on this target (prune it with a predictor made for %s).",
                       model_path, pruned_for, preset.name, preset.name)


def _can_measure(preset: TargetPreset, device: Device | None) -> bool:
    """Transfer measures its candidates: on the named device, or the embedded one if the
    target has one. Without either a build uses the database as it is."""
    return device is not None or preset.embedded_key is not None


def embedded_device(preset: TargetPreset):
    """The embedded farm that can measure `preset`'s code: this CPU, or the emulated aarch64."""
    if preset.embedded_key is None:
        raise EdgesegError(
            f"Tuning for {preset.name} measures candidates on the device itself, and no device was named.",
            "Pass --tracker HOST:PORT --key KEY of a phone registered with the tracker "
            "(README: Deploying to a phone), or --trials 0 to build from the database alone.",
        )
    emulate = "aarch64" if preset.embedded_key == EMULATED_KEY else None
    return use_device(None, None, emulate=emulate)


def _write_artifact(folder, model, preset, tuned, status, report, db, runtime, export, kernel_library,
                    options: LoweringOptions) -> None:
    def write(lib: Any, name: str) -> None:
        if export == "tar":
            export_objects(lib, folder / name.replace(".so", ".tar"))
        else:
            export_library(lib, folder / name, preset)

    executable = build_model(tuned, preset)
    write(executable, MODEL_LIB)
    if preset.is_gpu:  # readable device code: what the phone's OpenCL driver will compile
        (folder / DEVICE_SOURCE).write_text(device_source(executable))
    if kernel_library:
        kernels_lib, kernels = build_kernels(tuned, preset, status)
        write(kernels_lib, KERNELS_LIB)
        write_kernels(folder, kernels)
    write(probe_module(preset.target()), PROBE_LIB)
    inputs = reference_inputs(model)
    outputs = reference_outputs(model, inputs)
    write_reference(folder, inputs, outputs)
    copy_records(report.extracted, preset, db, folder / TUNING_DIR)
    summary: dict[str, Any] = report.to_dict()
    summary.update(kernels=len(status), kernels_tuned=sum(status.values()),
                   untuned_kernels=sorted(k for k, ok in status.items() if not ok))  # fmt: skip
    write_manifest(
        folder,
        target=ArtifactTarget(
            preset=preset.name,
            tvm=preset.resolved(),
            host=preset.tvm_host,
            device_type=preset.device_type,
            arch=preset.arch,
            emulated_ok=preset.embedded_key == EMULATED_KEY,
        ),
        inputs=model.inputs,
        outputs=[TensorSpec(tuple(o.shape), str(o.dtype)) for o in outputs],
        tuning=summary,
        runtime=runtime,
        library_format=export,
        lowering=options.to_dict(),
    )
