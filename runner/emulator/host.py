"""The host programs the emulated aarch64 device needs, and the apt command that brings each."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from runner.errors import EdgesegError

# Debian package that provides each program; `qemu-user` has the non-static twin.
_QEMU_CANDIDATES = ("qemu-aarch64-static", "qemu-aarch64")
_CROSS_CC = "aarch64-linux-gnu-gcc"
_APT_INSTALL = "apt-get install -y qemu-user-static gcc-aarch64-linux-gnu"
ADD_ARM64_COMMAND = "dpkg --add-architecture arm64 && apt-get update"


@dataclass(frozen=True)
class HostTools:
    """Absolute paths of the host programs the emulated device uses."""

    qemu: str
    cross_cc: str


def check_host_tools() -> HostTools:
    """Find user-mode QEMU for aarch64 and the aarch64 cross gcc, or say how to install them."""
    return HostTools(qemu=find_qemu(), cross_cc=find_cross_cc())


def find_qemu() -> str:
    """Path of user-mode QEMU for aarch64 (all that running the device needs)."""
    qemu = next((path for path in map(shutil.which, _QEMU_CANDIDATES) if path), None)
    if qemu is None:
        raise EdgesegError(
            "qemu-aarch64-static (user-mode QEMU for 64-bit ARM) is not installed.",
            f"Install it as root with: {_APT_INSTALL}",
        )
    return qemu


def find_cross_cc() -> str:
    """Path of the gcc that links aarch64 Linux shared objects for the device."""
    cross_cc = shutil.which(_CROSS_CC)
    if cross_cc is None:
        raise EdgesegError(
            f"{_CROSS_CC} (the aarch64 Linux cross compiler) is not installed.",
            f"Install it as root with: {_APT_INSTALL}",
        )
    return cross_cc


def check_arm64_packages_available() -> None:
    """Building the sysroot downloads arm64 .deb files: apt must know the arm64 architecture."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise EdgesegError(
                f"{tool} is not on PATH; the emulated device's sysroot is built from Debian "
                "arm64 packages.",
                "Build it on a Debian or Ubuntu machine, or copy a built cache folder "
                "(EDGESEG_CACHE) from one.",
            )
    foreign = subprocess.run(
        ["dpkg", "--print-foreign-architectures"], capture_output=True, text=True, check=False
    ).stdout.split()
    if "arm64" not in foreign:
        raise EdgesegError(
            "apt does not know the arm64 architecture, so arm64 packages cannot be downloaded.",
            f"Enable it as root with: {ADD_ARM64_COMMAND}",
        )
