"""An emulated 64-bit ARM Linux TVM RPC device: TVM's stock RPC server under user-mode QEMU.

For correctness checks of `linux-arm64` builds only: emulated timings are not device figures.

    sysroot = ensure_sysroot()                       # built once, cached
    argv, env = emulated_server_command(sysroot, ("127.0.0.1", 9190))

`runner.farm.LocalFarm(emulate="aarch64")` starts that command beside a tracker, waits until
it registers, and stops its whole process group.
"""

from runner.emulator.host import HostTools, check_host_tools
from runner.emulator.server import (
    EMULATED_KEY,
    emulated_server_command,
    free_port,
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
]
