"""A MetaSchedule builder whose worker processes live for the whole tuning run.

TVM's `LocalBuilder` starts fresh worker processes for every batch of candidates, and each
one imports `tvm.s_tir.tensor_intrin` (30-90 s of CPU on this machine: it parses every CUDA
and ROCm intrinsic). With a handful of trials per batch that import is almost all the
tuning time, and builds time out. This builder keeps one pool for its lifetime, builds with
`tvm.compile` directly and links with the preset's linker, so a library for the device (an
x86 .so here, an aarch64 .so for the emulator, an NDK .so for a phone) is what gets uploaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from compile.linkers import export_library
from compile.targets import TargetPreset

BUILD_PREFIX = "edgeseg-build-"


def _build_candidate(mod, target, preset: TargetPreset) -> str:
    """Runs in a worker: compile one scheduled kernel and link it for the device."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    rt_mod = tvm.compile(mod, target=target)
    path = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX)) / "candidate.so"
    export_library(rt_mod, path, preset)
    return str(path)


@derived_object
class PooledBuilder(PyBuilder):
    """Builds MetaSchedule candidates in a persistent process pool; call `shutdown()` at the end."""

    def __init__(self, preset: TargetPreset, max_workers: int | None = None, timeout_sec: float = 120.0,
                 progress: str | None = None):
        """`progress`: label of a progress bar over each `build` (schedule transfer builds
        thousands of candidates at once in a collection, outside tuning's bar); None: no bar."""
        super().__init__()
        self.preset = preset
        self.timeout_sec = timeout_sec
        self.progress = progress
        self.pool = PopenPoolExecutor(
            max_workers=max_workers or max(1, (os.cpu_count() or 1)),
            timeout=timeout_sec,
        )

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        results = []
        jobs = [(inp.mod, inp.target, self.preset) for inp in build_inputs]
        outcomes = self.pool.map_with_error_catching(lambda job: _build_candidate(*job), jobs)
        for outcome in tqdm(outcomes, total=len(jobs), desc=self.progress, unit="kernel",
                            disable=self.progress is None, leave=False):
            if outcome.status == StatusKind.COMPLETE:
                results.append(BuilderResult(outcome.value, None))
            elif outcome.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(None, f"build timed out after {self.timeout_sec} s"))
            else:
                results.append(BuilderResult(None, f"build failed: {outcome.value}"))
        return results

    def shutdown(self) -> None:
        self.pool.shutdown()


def remove_candidate(artifact_path: str | None) -> None:
    """Delete a built candidate's folder once it has been timed, as MetaSchedule's measure
    callbacks do in a search; schedule transfer builds outside a search (a day of collections
    here left 9,000 such folders, 1 GB, in /tmp)."""
    if artifact_path and Path(artifact_path).parent.name.startswith(BUILD_PREFIX):
        shutil.rmtree(Path(artifact_path).parent, ignore_errors=True)
