"""The local farm and `serve`: every server registered while it runs, no process after it stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from runner.device import Device, Tracker
from runner.emulator import free_port
from runner.errors import DeviceError, EdgesegError
from runner.farm import LocalFarm, use_device
from runner.session import list_devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.NoSuchProcess:
        return ""


def test_use_device_with_a_tracker_starts_nothing():
    tracker = Tracker("10.1.2.3", 9190)
    with use_device(tracker, "s21-cpu") as device:
        assert device == Device(tracker, "s21-cpu")
    with pytest.raises(EdgesegError, match="--emulate"):
        with use_device(tracker, None, emulate="aarch64"):
            pass


def test_a_taken_tracker_port_is_refused_before_starting_anything(host_farm):
    with pytest.raises(DeviceError, match=f"127.0.0.1:{host_farm.tracker.port}") as error:
        LocalFarm(port=host_farm.tracker.port).start()
    assert "--port" in error.value.fix


def test_serve_prints_its_address_registers_and_stops_every_child_on_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT}
    serve = subprocess.Popen(
        [sys.executable, "-m", "runner", "serve", "--port", str(port), "--servers", "2"],
        stdout=subprocess.PIPE, stderr=open(tmp_path / "serve.err", "w"), text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        banner = serve.stdout.readline()  # blocks until the farm is up (or serve exits)
        assert f"listening on 127.0.0.1:{port}" in banner, (tmp_path / "serve.err").read_text()
        assert re.search(r"2 server\(s\) registered under key 'host-cpu'", banner)
        queues = {queue.key: queue for queue in list_devices(Tracker("127.0.0.1", port))}
        assert queues["host-cpu"].servers == 2
        children = _descendants(serve.pid)
        commands = [_cmdline(p) for p in children]
        servers = [c for c in commands if "tvm.exec.rpc_server" in c and "supervised.py" not in c]
        assert len(servers) == 2  # each under its supervised.py group leader
        assert len([c for c in commands if "supervised.py" in c]) == 3
        assert any("tvm.exec.popen_worker" in c for c in commands)  # the notes' orphan risk
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
        time.sleep(0.2)
        assert [_cmdline(p) for p in children if _alive(p)] == []
        assert "stopped" in (tmp_path / "serve.err").read_text()
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()


def test_any_command_stops_its_embedded_farm_on_sigterm(tmp_path):
    """A long command (here `latency_model collect`) killed with SIGTERM leaves no server behind."""
    env = {**os.environ, "PYTHONPATH": ROOT, "EDGESEG_WORKSPACE": str(tmp_path / "ws")}
    command = [sys.executable, "-m", "latency_model", "collect", "--model", "segformer-b0", "--input-size", "64",
               "--samples", "3", "--trials-per-layer", "0", "-o", str(tmp_path / "data.jsonl")]
    with open(tmp_path / "err", "w") as err:
        collect = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any("tvm.exec.rpc_server" in _cmdline(p) for p in _descendants(collect.pid)):
            assert collect.poll() is None and time.monotonic() < deadline, (tmp_path / "err").read_text()
            time.sleep(0.5)
        children = _descendants(collect.pid)
        collect.send_signal(signal.SIGTERM)
        assert collect.wait(timeout=60) == 130
        time.sleep(0.2)
        assert [_cmdline(p) for p in children if _alive(p)] == []
    finally:
        if collect.poll() is None:
            os.killpg(collect.pid, signal.SIGKILL)
            collect.wait()


def test_farm_processes_die_with_a_sigkilled_parent(tmp_path):
    """No clean-up runs in a SIGKILLed (or natively crashed) process: the farm must still go."""
    code = ("import time\nfrom runner.farm import LocalFarm\nLocalFarm().start()\n"
            "print('up', flush=True)\ntime.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": ROOT}
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert parent.stdout.readline().strip() == "up"
        children = _descendants(parent.pid)
        assert any("tvm.exec.rpc_server" in _cmdline(p) for p in children)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [_cmdline(p) for p in children if _alive(p)] == []
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
