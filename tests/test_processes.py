"""stop_process_group must leave no process of the group behind, even one that ignores SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from runner.processes import live_group_members, stop_process_group

# A parent that starts a grandchild which ignores SIGTERM (like a stuck popen_worker), prints
# the grandchild's pid, then sleeps; the parent itself dies on SIGTERM.
_STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    "print('up', flush=True); time.sleep(60)"
)
_PARENT = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {_STUBBORN!r}], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(60)
"""


def _start_group() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    grandchild = int(proc.stdout.readline())
    return proc, grandchild


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_stop_process_group_kills_a_grandchild_that_ignores_sigterm():
    proc, grandchild = _start_group()
    assert _alive(grandchild) and live_group_members(proc.pid)
    started = time.monotonic()
    stop_process_group(proc, timeout=1.0)
    assert time.monotonic() - started < 8.0
    assert proc.returncode is not None
    assert not _alive(grandchild)
    assert live_group_members(proc.pid) == []


def test_stop_process_group_returns_quickly_when_the_group_obeys_sigterm():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)  # fmt: skip
    started = time.monotonic()
    stop_process_group(proc, timeout=10.0)
    assert time.monotonic() - started < 5.0
    assert proc.returncode == -15


def test_stop_process_group_refuses_a_process_in_the_callers_group():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(ValueError, match="start_new_session"):
            stop_process_group(proc, timeout=1.0)
        assert proc.poll() is None  # nothing was signalled
    finally:
        proc.kill()
        proc.wait()
