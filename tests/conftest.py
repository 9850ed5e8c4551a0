"""Fixtures shared by the tests: one loopback device farm and small real artifacts, and the
test tier.

Starting a tracker and a server costs seconds here (each imports TVM), so one farm serves the
whole session (each worker's, under `pytest -n 2`); tests that need their own farm start it
themselves.

Tiers: a test is `e2e` if it uses one of `END_TO_END_FIXTURES` (an RPC farm, a compiled
artifact, a predictor measured on the farm), is marked `slow` or `emulated`, or is listed in
`helpers.tiers.END_TO_END_TESTS` (it starts processes, compiles, tunes or trains for 2 s or
more on this machine; listed there rather than marked in place so the test files of other work
stay untouched, and `test_dependency_direction` checks that every listed test still exists). The unit tests
alone, `pytest -m "not e2e"`, took 139 s in two workers on 2 cores (182 s in one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.artifacts import AARCH64_CC, AARCH64_TARGET, build_artifact
from helpers.tiers import END_TO_END_FIXTURES, END_TO_END_TESTS


def is_end_to_end(item) -> bool:
    if END_TO_END_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    if item.get_closest_marker("slow") or item.get_closest_marker("emulated"):
        return True
    name = getattr(item, "originalname", item.name)
    return name in END_TO_END_TESTS.get(Path(str(item.fspath)).name, ())


# Session fixtures that cost a minute or more, and the test files that share them. With
# `pytest -n 2` (scripts/test.sh) a worker takes a whole file, or a whole group here, so each of
# these is built once; the groups run first, so the other worker's files fill their time.
# (segformer_b0_predictor, ~35 s, is left out: a group holding its files and the pipeline's
# would be half the suite in one worker.)
SHARED_ONCE = ("pipeline_run", "emulated_farm", "aarch64_artifact")
SAME_WORKER = (("tests/test_pipeline.py", "tests/test_prune_compare.py"),
               ("tests/test_bench.py", "tests/test_cli.py", "tests/test_emulated_bench.py"),
               ("tests/test_compile_arm.py", "tests/test_emulator.py"))
GROUP_OF = {path: group[0] for group in SAME_WORKER for path in group}


def worker_scope(nodeid: str) -> str:
    """What one xdist worker runs whole: the test's file, or its SAME_WORKER group."""
    path = nodeid.split("::", 1)[0]
    return GROUP_OF.get(path, path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkerScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_scope(nodeid)

    return ByWorkerScope(config, log)


def pytest_collection_modifyitems(config, items):
    """Mark `e2e` every test that needs the farm or an artifact, is slow or emulated, or is
    listed in END_TO_END_TESTS; put the SAME_WORKER groups first (refusing a costly fixture
    used outside its group)."""
    for item in items:
        if is_end_to_end(item):
            item.add_marker(pytest.mark.e2e)
    for name in SHARED_ONCE:
        users = {item.nodeid for item in items if name in getattr(item, "fixturenames", ())}
        if len({worker_scope(nodeid) for nodeid in users}) > 1:
            files = sorted({nodeid.split("::", 1)[0] for nodeid in users})
            raise pytest.UsageError(f"{', '.join(files)} use the session fixture {name}: put them in one "
                                    "SAME_WORKER group in tests/conftest.py, or pytest -n 2 builds it twice")
    items.sort(key=lambda item: worker_scope(item.nodeid) not in GROUP_OF)  # stable: files keep their order


@pytest.fixture(scope="session")
def host_farm():
    """A LocalFarm with one RPC server of this machine under key host-cpu."""
    from runner.farm import LocalFarm

    with LocalFarm(servers=1) as farm:
        yield farm


@pytest.fixture(scope="session")
def emulated_farm():
    """A LocalFarm with one RPC server under QEMU (key emu-arm64); skips without QEMU or the sysroot."""
    from runner.emulator import check_host_tools
    from runner.errors import EdgesegError
    from runner.farm import LocalFarm

    try:
        check_host_tools()
    except EdgesegError as err:
        pytest.skip(str(err))
    with LocalFarm(servers=1, emulate="aarch64") as farm:
        yield farm


@pytest.fixture(scope="session")
def host_artifact(tmp_path_factory) -> Path:
    """A tiny conv-net artifact for this machine's CPU (do not modify: copy it first)."""
    return build_artifact(tmp_path_factory.mktemp("artifacts") / "host")


@pytest.fixture(scope="session")
def aarch64_artifact(tmp_path_factory) -> Path:
    """The same conv net cross-compiled for aarch64 Linux (linux-arm64), linked with gcc."""
    if shutil.which(AARCH64_CC) is None:
        pytest.skip(f"{AARCH64_CC} is not installed")
    return build_artifact(
        tmp_path_factory.mktemp("artifacts") / "linux-arm64",
        target=AARCH64_TARGET,
        preset="linux-arm64",
        arch="aarch64",
        cc=AARCH64_CC,
        emulated_ok=True,
    )


@pytest.fixture
def artifact_copy(host_artifact, tmp_path) -> Path:
    """A private copy of the host artifact that a test may damage."""
    return Path(shutil.copytree(host_artifact, tmp_path / "artifact"))


@pytest.fixture(scope="session")
def segformer_b0_predictor(host_farm, tmp_path_factory) -> Path:
    """A predictor trained on real measurements of segformer-b0 layers at 64 px on the host farm.

    Untuned (trials 0), so a layer costs a second or two: one layer config of each type of the
    unpruned model, then the next ones in model order up to 3 more than the 10 a predictor needs
    (training leaves out a measurement whose samples spread too far; CI once lost one and had 9).
    Its manifest names the model and input size (every record agrees on them)."""
    from compile.targets import resolve_target
    from latency_model.collect import Source, collect
    from latency_model.predictor import MIN_CONFIGS, train_predictor
    from latency_model.records import read_records
    from latency_model.sampling import layer_configs
    from prune.describe import describe_model
    from runner.timing import TimingProtocol

    description = describe_model("segformer-b0", 64)
    configs = layer_configs(description, [description.full_kept()])
    firsts = list({c.kind: c for c in reversed(configs)}.values())
    chosen = firsts + [c for c in configs if c not in firsts][:MIN_CONFIGS + 3 - len(firsts)]
    work = tmp_path_factory.mktemp("segformer-b0-predictor")
    collect(chosen, host_farm.device, resolve_target("host"), work / "data.jsonl", work / "db",
            trials_per_layer=0, protocol=TimingProtocol(warmup=1, repeat=3), progress=False,
            source=Source("segformer-b0", 64))
    train_predictor(read_records(work / "data.jsonl"), work / "predictor", seed=0)
    return work / "predictor"


ROOT = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class PipelineRun:
    """A finished tiny `python -m prune.pipeline` run: its report folder, command and environment."""

    out: Path
    command: tuple[str, ...]
    env: dict[str, str]

    def rerun(self, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.command, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> PipelineRun:
    """The pipeline at tiny scale (32 px, no tuning, a few steps, one round): every stage really
    runs, as its own process, on its own embedded farm. Its unpruned and pruned folders are what
    `prune.compare` reads too, so one run serves both test files (do not modify them: copy)."""
    work = tmp_path_factory.mktemp("pipeline")
    env = {**os.environ, "PYTHONPATH": ROOT, "EDGESEG_WORKSPACE": str(work / "ws")}
    command = (sys.executable, "-m", "prune.pipeline", "--input-size", "32", "--classes", "4", "--budget-fraction",
               "0.6", "--samples", "0", "--trials-per-layer", "0", "--epochs", "1", "--search-steps", "2",
               "--finetune-steps", "1", "--batch-size", "2", "--train-scenes", "8", "--val-scenes", "2",
               "--no-long-reference", "--repeat", "3", "--warmup", "1", "--max-rounds", "1", "-o", str(work / "run"))
    run = PipelineRun(work / "run", command, env)
    first = run.rerun(timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    return run
