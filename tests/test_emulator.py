"""The emulated aarch64 RPC device end to end: sysroot, server under QEMU, a cross-compiled run.

Needs `qemu-user-static` and `gcc-aarch64-linux-gnu` (skipped without them) and, for the first
run on a machine, apt's arm64 lists and PyPI to build the sysroot (about 20 s).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from runner.emulator import (
    EMULATED_KEY,
    check_host_tools,
    emulated_server_command,
    ensure_sysroot,
    free_port,
    read_stamp,
    wait_for_server,
)
from runner.errors import EdgesegError
from runner.processes import stop_process_group

pytestmark = pytest.mark.emulated
logger = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


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


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("tracker") / "tracker.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", LOOPBACK,
         "--port", str(port), "--port-end", str(port + 1)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_port(port, proc)
        yield (LOOPBACK, port)
    finally:
        stop_process_group(proc, timeout=10)
        log.close()


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"tracker on port {port} did not come up (exit code {proc.poll()})")


def _start_server(sysroot: Path, tracker, log_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    argv, env = emulated_server_command(sysroot, tracker, port=port)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        ready = wait_for_server(tracker, EMULATED_KEY, port=port, proc=proc, timeout=180)
    except BaseException:
        stop_process_group(proc, timeout=5)
        raise
    logger.info("emulated server ready after %.1f s", ready)
    return proc, port


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


def test_cross_compiled_convnet_runs_on_the_emulated_device(sysroot, tracker, tmp_path):
    import tvm
    from tvm import relax, rpc

    lib_path = tmp_path / "convnet_aarch64.so"
    x, expected = _tiny_convnet_aarch64(lib_path)
    assert lib_path.read_bytes()[18] == 183  # ELF e_machine EM_AARCH64
    proc, _ = _start_server(sysroot, tracker, tmp_path / "server.log")
    try:
        started = time.monotonic()
        remote = rpc.connect_tracker(*tracker).request(EMULATED_KEY, priority=1,
                                                       session_timeout=120)  # fmt: skip
        remote.upload(str(lib_path))
        vm = relax.VirtualMachine(remote.load_module(lib_path.name), remote.cpu())
        vm.set_input("main", tvm.runtime.tensor(x, remote.cpu()))
        vm.invoke_stateful("main")
        actual = vm.get_outputs("main").numpy()
        logger.info("connect+upload+load+run: %.1f s", time.monotonic() - started)
        del vm, remote  # a live remote object would hold the session
    finally:
        stop_process_group(proc, timeout=10)
    assert actual.shape == expected.shape
    logger.info("max abs error vs PyTorch: %.2e", np.abs(actual - expected).max())
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)


def test_stopping_the_emulated_server_leaves_no_process(sysroot, tracker, tmp_path):
    proc, _ = _start_server(sysroot, tracker, tmp_path / "server.log")
    started = [proc.pid] + [child.pid for child in psutil.Process(proc.pid).children(True)]
    # The notes' pitfall: the server has started its popen_worker, itself under QEMU.
    workers = [pid for pid in started[1:] if "tvm.exec.popen_worker" in _cmdline(pid)]
    assert workers and all("qemu-aarch64" in _cmdline(pid) for pid in workers)
    stop_process_group(proc, timeout=10)
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
