"""An emulated 64-bit ARM Linux TVM RPC device: TVM's stock RPC server under user-mode QEMU.

For correctness checks of `linux-arm64` builds only: emulated timings are not device figures.

    sysroot = ensure_sysroot()                       # built once, cached
    argv, env = emulated_server_command(sysroot, ("127.0.0.1", 9190))
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    wait_for_server(("127.0.0.1", 9190), EMULATED_KEY, proc=proc)
    ...
    runner.processes.stop_process_group(proc)
"""

from runner.emulator.host import HostTools, check_host_tools
from runner.emulator.server import (
    EMULATED_KEY,
    emulated_server_command,
    free_port,
    wait_for_server,
)
from runner.emulator.cache import read_stamp
from runner.emulator.sysroot import default_cache_dir, ensure_sysroot

__all__ = [
    "EMULATED_KEY",
    "HostTools",
    "check_host_tools",
    "default_cache_dir",
    "emulated_server_command",
    "ensure_sysroot",
    "free_port",
    "read_stamp",
    "wait_for_server",
]
