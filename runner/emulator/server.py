"""The command that starts TVM's stock RPC server for aarch64 under user-mode QEMU.

Pitfalls handled here (shared/TVM-0.27-NOTES.md): the server's child interpreters go through
`sys.executable`, which the sysroot's `sitecustomize.py` points at a wrapper that re-enters QEMU;
TVM silently moves to the next free port when its port is taken, so the command pins a one-port
range on a port chosen here; the server leaves a popen_worker behind, so start it with
`start_new_session=True` and stop it with `runner.processes.stop_process_group`.
"""

from __future__ import annotations

import socket
from pathlib import Path

from runner.emulator.host import find_qemu
from runner.emulator.cache import read_stamp
from runner.emulator.sysroot import PYTHON, emulated_env
from runner.errors import EdgesegError


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
