"""The embedded device farm: a TVM RPC tracker and N RPC servers on this machine.

Every child leads its own process group (`start_new_session=True`) and is stopped with
`runner.processes.stop_process_group`, so no popen_worker outlives the farm. Ports are chosen up
front and passed as one-port ranges: TVM would otherwise move silently to the next free port.
With `emulate="aarch64"` the servers are TVM's aarch64 RPC server under QEMU (correctness
only; their timings are not device figures).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from runner.device import HOST_KEY, Device, Tracker
from runner.emulator import EMULATED_KEY, emulated_server_command, ensure_sysroot, free_port
from runner.errors import DeviceError, EdgesegError
from runner.processes import die_with_parent, stop_process_group
from runner.session import registered_servers

logger = logging.getLogger(__name__)

# --emulate value -> the key its servers register under by default.
EMULATED_KEYS = {"aarch64": EMULATED_KEY}
_LOOPBACK = "127.0.0.1"
# Seconds until every server is registered: an emulated one needs 10-30 s, more when loaded.
_START_TIMEOUT_S = {None: 60.0, "aarch64": 180.0}


class LocalFarm:
    """A tracker plus `servers` RPC servers of this machine, registered under `key`.

        with LocalFarm() as farm:          # farm.tracker, farm.device
            bench_artifact(folder, farm.device, TimingProtocol())

    `host` is where the tracker listens (`0.0.0.0` lets phones on the LAN register); the
    local servers always listen on loopback. `port=None` picks a free tracker port.
    """

    def __init__(
        self,
        key: str | None = None,
        servers: int = 1,
        host: str = _LOOPBACK,
        port: int | None = None,
        emulate: str | None = None,
    ) -> None:
        if emulate is not None and emulate not in EMULATED_KEYS:
            raise EdgesegError(f"cannot emulate {emulate!r}.",
                               f"Pass --emulate {' or '.join(EMULATED_KEYS)}.")  # fmt: skip
        if servers < 0:
            raise EdgesegError(f"--servers {servers} is negative.", "Pass 0 or more servers.")
        self.key = key or (EMULATED_KEYS[emulate] if emulate else HOST_KEY)
        self.servers = servers
        self.host = host
        self.emulate = emulate
        self._port = port
        self._tracker: subprocess.Popen | None = None
        self._servers: list[subprocess.Popen] = []
        self._logs: tempfile.TemporaryDirectory | None = None
        self.tracker: Tracker | None = None

    @property
    def device(self) -> Device:
        if self.tracker is None:
            raise RuntimeError("the farm is not started")
        return Device(self.tracker, self.key, emulated=self.emulate is not None)

    def __enter__(self) -> LocalFarm:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalFarm:
        """Start the tracker and the servers; return once all servers are registered."""
        if self._tracker is not None:
            raise RuntimeError("the farm is already started")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server, then the tracker, each with its whole process group."""
        for proc in self._servers:
            stop_process_group(proc, timeout=10)
        if self._tracker is not None:
            stop_process_group(self._tracker, timeout=10)
        self._servers, self._tracker, self.tracker = [], None, None
        if self._logs is not None:
            self._logs.cleanup()
            self._logs = None

    def check_alive(self) -> None:
        """DeviceError naming the first child that exited (for a long-running `serve`)."""
        for name, proc in self._children():
            if proc.poll() is not None:
                raise DeviceError(
                    f"the farm's {name} exited with code {proc.returncode}.\n{self._tail(name)}",
                    "Read its output above for the cause, then start the farm again.",
                )

    def _start(self) -> None:
        sysroot = self._sysroot()  # the first emulated start builds it (about a minute)
        self._logs = tempfile.TemporaryDirectory(prefix="edgeseg-farm-")
        port = self._port if self._port is not None else _free_ports(self.host, 1)[0]
        _check_port_free(self.host, port)
        self.tracker = Tracker(_LOOPBACK if self.host == "0.0.0.0" else self.host, port)
        self._tracker = self._spawn("tracker", [
            sys.executable, "-P", "-m", "tvm.exec.rpc_tracker",
            "--host", self.host, "--port", str(port), "--port-end", str(port + 1),
        ])  # fmt: skip
        server_ports = _free_ports(_LOOPBACK, self.servers, exclude={port})
        for index, server_port in enumerate(server_ports):
            self._servers.append(self._spawn(f"server-{index}", *self._server_command(
                sysroot, server_port)))  # fmt: skip
        timeout = _START_TIMEOUT_S[self.emulate]
        _wait_for_port(self.tracker, self._tracker, timeout, lambda: self._tail("tracker"))
        self._wait_for_servers(server_ports, timeout)
        logger.info("farm up: tracker %s, %d server(s) under key %r%s", self.tracker,
                    self.servers, self.key, " (emulated)" if self.emulate else "")  # fmt: skip

    def _wait_for_servers(self, ports: list[int], timeout: float) -> None:
        """Until every server is registered with the tracker (this process imports no TVM)."""
        started = time.monotonic()
        while True:
            self.check_alive()
            registered = {port for _, port in registered_servers(self.tracker, self.key)}
            missing = [i for i, port in enumerate(ports) if port not in registered]
            if not missing:
                logger.debug("servers registered after %.1f s", time.monotonic() - started)
                return
            if time.monotonic() - started > timeout:
                raise DeviceError(
                    f"{len(missing)} of {len(ports)} RPC server(s) did not register under key "
                    f"{self.key!r} within {timeout:.0f} s.\n{self._tail(f'server-{missing[0]}')}",
                    "Read the server's output above; on a heavily loaded machine start fewer "
                    "servers.",
                )
            time.sleep(0.3)

    def _sysroot(self) -> Path | None:
        return ensure_sysroot() if self.emulate is not None and self.servers else None

    def _server_command(self, sysroot: Path | None, port: int) -> tuple[list[str], dict | None]:
        tracker = f"{_LOOPBACK}:{self.tracker.port}"
        if sysroot is not None:
            return emulated_server_command(sysroot, (_LOOPBACK, self.tracker.port), key=self.key,
                                           host=_LOOPBACK, port=port)  # fmt: skip
        return [
            sys.executable, "-P", "-m", "tvm.exec.rpc_server", "--host", _LOOPBACK,
            "--port", str(port), "--port-end", str(port + 1), "--tracker", tracker,
            "--key", self.key,
        ], _host_server_env()  # fmt: skip

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        """Start `argv` under `runner/supervised.py`, leader of a new process group that ends with
        it and with this process."""
        supervised = [sys.executable, "-I", str(Path(__file__).with_name("supervised.py")), *argv]
        with open(self._log_path(name), "w") as log:
            return subprocess.Popen(supervised, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=die_with_parent)  # fmt: skip

    def _children(self) -> list[tuple[str, subprocess.Popen]]:
        tracker = [("tracker", self._tracker)] if self._tracker is not None else []
        return tracker + [(f"server-{i}", proc) for i, proc in enumerate(self._servers)]

    def _log_path(self, name: str) -> Path:
        return Path(self._logs.name) / f"{name}.log"

    def _tail(self, name: str, lines: int = 12) -> str:
        try:
            text = self._log_path(name).read_text(errors="replace")
        except (OSError, AttributeError):
            return ""
        tail = "\n".join(text.strip().splitlines()[-lines:])
        return f"last lines of the {name}'s output:\n{tail}" if tail else ""


@contextlib.contextmanager
def use_device(
    tracker: Tracker | None, key: str | None, emulate: str | None = None
) -> Iterator[Device]:
    """The device at `tracker` under `key`; with no tracker, an embedded farm for the duration."""
    if tracker is None:
        with LocalFarm(key=key, emulate=emulate) as farm:
            yield farm.device
        return
    if emulate is not None:
        raise EdgesegError(
            "--emulate starts an embedded emulated farm, but --tracker names an existing one.",
            "Drop --tracker to use the embedded emulated device, or drop --emulate and pass "
            f"--key {EMULATED_KEYS.get(emulate, 'KEY')} to use one served elsewhere.",
        )
    yield Device(tracker, key or HOST_KEY)


def _host_server_env() -> dict[str, str]:
    """The environment of a host server: every CPU this process may use in TVM's thread pool.

    On x86 TVM assumes hyper-threading and uses half the logical CPUs by default (1 of the 2
    real cores of this project's machines); an explicit TVM_NUM_THREADS wins over both.
    """
    env = dict(os.environ)
    env.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    return env


def _free_ports(host: str, count: int, exclude: set[int] = frozenset()) -> list[int]:
    """`count` distinct ports that are free now (each port and the next: TVM's range end)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports and port not in exclude and port + 1 < 65536:
            ports.append(port)
    return ports


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise DeviceError(
                f"cannot start the RPC tracker on {host}:{port}: {err.strerror}.",
                "Another tracker (an earlier `python -m runner serve`?) may hold the port: "
                "stop it, or pass another --port.",
            ) from None


def _wait_for_port(
    tracker: Tracker, proc: subprocess.Popen, timeout: float, tail: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection((tracker.host, tracker.port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise DeviceError(
        f"the RPC tracker did not start listening on {tracker} (exit code {proc.poll()}).\n"
        f"{tail()}",
        "Read its output for the cause (a taken port, a broken TVM install).",
    )
