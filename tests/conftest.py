"""Fixtures shared by the tests: one loopback device farm and small real artifacts.

Starting a tracker and a server costs seconds here (each imports TVM), so one farm serves the
whole session; tests that need their own farm start it themselves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers.artifacts import AARCH64_CC, AARCH64_TARGET, build_artifact


@pytest.fixture(scope="session")
def host_farm():
    """A LocalFarm with one RPC server of this machine under key host-cpu."""
    from runner.farm import LocalFarm

    with LocalFarm(servers=1) as farm:
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
