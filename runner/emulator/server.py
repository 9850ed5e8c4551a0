"""Starting TVM's stock RPC server for aarch64 under user-mode QEMU, and waiting until it serves.

Pitfalls handled here (shared/TVM-0.27-NOTES.md): the server's child interpreters go through
`sys.executable`, which the sysroot's `sitecustomize.py` points at a wrapper that re-enters QEMU;
TVM silently moves to the next free port when its port is taken, so the command pins a one-port
range on a port chosen here; the server leaves a popen_worker behind, so start it with
`start_new_session=True` and stop it with `runner.processes.stop_process_group`.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

from runner.emulator.host import find_qemu
from runner.emulator.cache import read_stamp
from runner.emulator.sysroot import PYTHON, emulated_env
from runner.errors import DeviceError, EdgesegError

logger = logging.getLogger(__name__)

EMULATED_KEY = "emu-arm64"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now (another process may still take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def emulated_server_command(
    sysroot: Path,
    tracker: tuple[str, int],
    key: str = EMULATED_KEY,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv and env of an aarch64 `tvm.exec.rpc_server` under QEMU that registers with `tracker`.

    Run it with `subprocess.Popen(argv, env=env, start_new_session=True)`. The server binds
    exactly `host:port` (a free port when `port` is None) or exits with an error.
    """
    sysroot = Path(sysroot)
    if read_stamp(sysroot) is None:
        raise EdgesegError(
            f"{sysroot} is not a finished aarch64 sysroot (it has no stamp file).",
            "Build it with runner.emulator.ensure_sysroot() and pass the folder it returns.",
        )
    qemu = find_qemu()
    port = free_port(host) if port is None else port
    tracker_host, tracker_port = tracker
    argv = [
        # -P: the caller's working folder (edgeseg's own `compile/` ...) stays off sys.path.
        qemu, "-L", str(sysroot), str(sysroot / PYTHON), "-P", "-m", "tvm.exec.rpc_server",
        "--host", host, "--port", str(port), "--port-end", str(port + 1),
        "--tracker", f"{tracker_host}:{tracker_port}", "--key", key,
    ]  # fmt: skip
    return argv, emulated_env(sysroot, qemu)


def wait_for_server(
    tracker: tuple[str, int],
    key: str,
    port: int | None = None,
    proc: subprocess.Popen | None = None,
    timeout: float = 120.0,
) -> float:
    """Wait until a server under `key` (bound to `port`, if given) is registered with `tracker`.

    Returns the seconds waited. Raises DeviceError when `proc` exits first or on timeout.
    """
    from tvm import rpc  # heavy import, only when a device is actually used

    started = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise DeviceError(
                f"the RPC server for key {key!r} exited with code {proc.returncode} "
                "before it registered with the tracker.",
                "Read its output for the cause (a taken port, a broken sysroot); "
                "rebuild the sysroot by deleting its cache folder if in doubt.",
            )
        if _registered(rpc, tracker, key, port):
            waited = time.monotonic() - started
            logger.info("RPC server %r registered after %.1f s", key, waited)
            return waited
        if time.monotonic() - started > timeout:
            raise DeviceError(
                f"no RPC server registered under key {key!r} at tracker "
                f"{tracker[0]}:{tracker[1]} within {timeout:.0f} s.",
                "Check that the tracker runs at that address and that the server was started "
                "with the same tracker and key; an emulated server needs 10-30 s to start.",
            )
        time.sleep(0.5)


def _registered(rpc, tracker: tuple[str, int], key: str, port: int | None) -> bool:
    try:  # probe first: TVM's own connect retries a refused connection for 60 s
        socket.create_connection(tracker, timeout=2).close()
        session = rpc.connect_tracker(*tracker)
        try:
            summary = session.summary()
        finally:
            session.close()
    except (OSError, RuntimeError):
        return False  # tracker not up yet
    return any(
        info.get("key") == "server:" + key and (port is None or info["addr"][1] == port)
        for info in summary["server_info"]
    )
