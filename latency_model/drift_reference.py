"""Build, or find, a device's drift reference (`runner.drift`): a small fixed layer, compiled once
into the device's tuning database folder and never rebuilt, with its nominal time.

It lives in `DATABASE/drift_reference/`, beside the schedules it was built from: both are the
device's state, and figures taken with one reference are in its unit only. The layer is a
SegFormer decoder projection (a 64 x 64 linear over 256 tokens: a matmul the thread pool
splits, as most layers are), tuned with the collection's trials per layer at the time it is
built; what matters is that its code never changes afterwards, not how fast it is.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from latency_model.export import export_layer
from latency_model.layers import DecoderProjection
from runner.device import Device
from runner.drift import REFERENCE_FILE, DriftReference
from runner.timing import TimingProtocol

log = logging.getLogger(__name__)

REFERENCE_LAYER = DecoderProjection(h=16, w=16, cin=64, cout=64)
FOLDER = "drift_reference"


def device_drift_reference(device: Device, preset: Any, database_dir: Path, protocol: TimingProtocol,
                           trials_per_task: int = 0) -> DriftReference:
    """The drift reference of the device whose tuning database is `database_dir`; built on first
    use: the reference layer compiled from the database (`trials_per_task` trials for each of its
    kernels the database lacks), then its nominal time, the median of `protocol`'s samples."""
    from compile.api import compile_model
    from runner.bench import bench_batch

    folder = Path(database_dir) / FOLDER
    if (folder / REFERENCE_FILE).is_file():
        return DriftReference.load(folder)
    shutil.rmtree(folder, ignore_errors=True)  # a build cut short
    log.info("building the device's drift reference (%s) in %s", REFERENCE_LAYER.key, folder)
    with tempfile.TemporaryDirectory(prefix="edgeseg-drift-") as scratch:
        model, _ = export_layer(REFERENCE_LAYER, Path(scratch) / "reference.onnx")
        compile_model(model, folder, preset, Path(database_dir), trials=0, trials_per_task=trials_per_task or None,
                      device=device, kernel_library=False)
    alone = dataclasses.replace(protocol, drift_reference=False)
    (timing,) = bench_batch([folder], device, alone)
    reference = DriftReference(folder, timing.raw.median_ms, REFERENCE_LAYER.key)
    reference.save()  # last: a folder without it is a build cut short
    log.info("drift reference: nominal %.4f ms (%s)", reference.nominal_ms, alone.describe())
    return reference
