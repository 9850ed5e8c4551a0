"""The emulated aarch64 RPC device end to end: sysroot, server under QEMU, a cross-compiled run.

Needs `qemu-user-static` and `gcc-aarch64-linux-gnu` (skipped without them) and, for the first
run on a machine, apt's arm64 lists and PyPI to build the sysroot (about 20 s).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from runner.emulator import EMULATED_KEY, check_host_tools, ensure_sysroot, read_stamp
from runner.errors import EdgesegError
from runner.farm import LocalFarm

pytestmark = pytest.mark.emulated
logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def host_tools():
    try:
        return check_host_tools()
    except EdgesegError as missing:
        pytest.skip(f"emulated aarch64 device unavailable: {missing}")


@pytest.fixture(scope="module")
def sysroot(host_tools) -> Path:
    started = time.monotonic()
    path = ensure_sysroot(progress=False)
    logger.info("ensure_sysroot took %.1f s", time.monotonic() - started)
    return path


def _tiny_convnet_aarch64(path: Path):
    """A 2-layer conv net from torch.export, cross-compiled for aarch64 Linux; returns (x, y)."""
    import torch
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)
    ).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = model(x).numpy()
        exported = torch.export.export(model, (x,))
    mod = from_exported_program(exported, unwrap_unit_return_tuple=True)
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "num-cores": 1})
    with target:
        mod = relax.get_pipeline("zero")(mod)
    executable = tvm.compile(mod, target=target)
    executable.export_library(str(path), cc="aarch64-linux-gnu-gcc")
    return x.numpy(), expected


def test_second_ensure_sysroot_is_a_no_op(sysroot):
    stamp = read_stamp(sysroot)
    inode = sysroot.stat().st_ino
    started = time.monotonic()
    assert ensure_sysroot(progress=False) == sysroot
    assert time.monotonic() - started < 1.0
    assert read_stamp(sysroot) == stamp and sysroot.stat().st_ino == inode
    assert stamp["emulated_python"]["machine"] == "aarch64"
    assert stamp["emulated_python"]["tvm"] == stamp["wheel_versions"]["apache_tvm"]
    assert stamp["wheel_versions"]["apache_tvm"] == "0.27.0.post1"
    assert not (sysroot / "opt/edgeseg/site-packages/tvm/lib/libtvm_compiler.so").exists()


def test_cross_compiled_convnet_runs_on_the_emulated_device(sysroot, emulated_farm, tmp_path):
    import tvm
    from tvm import relax, rpc

    lib_path = tmp_path / "convnet_aarch64.so"
    x, expected = _tiny_convnet_aarch64(lib_path)
    assert lib_path.read_bytes()[18] == 183  # ELF e_machine EM_AARCH64
    started = time.monotonic()
    tracker = emulated_farm.tracker
    remote = rpc.connect_tracker(tracker.host, tracker.port).request(EMULATED_KEY, priority=1,
                                                                     session_timeout=120)  # fmt: skip
    remote.upload(str(lib_path))
    vm = relax.VirtualMachine(remote.load_module(lib_path.name), remote.cpu())
    vm.set_input("main", tvm.runtime.tensor(x, remote.cpu()))
    vm.invoke_stateful("main")
    actual = vm.get_outputs("main").numpy()
    logger.info("connect+upload+load+run: %.1f s", time.monotonic() - started)
    del vm, remote  # a live remote object would hold the session (the farm is shared)
    assert actual.shape == expected.shape
    logger.info("max abs error vs PyTorch: %.2e", np.abs(actual - expected).max())
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)


def test_stopping_the_emulated_farm_leaves_no_process(sysroot):
    before = {p.pid for p in psutil.Process().children(recursive=True)}  # a shared farm's, say
    farm = LocalFarm(emulate="aarch64").start()
    try:
        ours = ("qemu-aarch64", f"127.0.0.1:{farm.tracker.port}", f"--port {farm.tracker.port}")
        started = [p.pid for p in psutil.Process().children(recursive=True)
                   if p.pid not in before and any(mark in _cmdline(p.pid) for mark in ours)]
        # The notes' pitfall: the server has started its popen_worker, itself under QEMU.
        workers = [pid for pid in started if "tvm.exec.popen_worker" in _cmdline(pid)]
        assert workers and all("qemu-aarch64" in _cmdline(pid) for pid in workers)
    finally:
        farm.stop()
    survivors = [pid for pid in started if _alive(pid)]
    assert survivors == [], [_cmdline(pid) for pid in survivors]


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:
        return ""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
