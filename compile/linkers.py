"""Packaging compiled code into a shared library the device can load, per preset linker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from compile.targets import TargetPreset
from runner.errors import EdgesegError


def check_linker(preset: TargetPreset) -> None:
    """Fail before any work when the preset's linker is not installed."""
    if preset.linker not in ("host-cc", "ndk") and shutil.which(preset.linker) is None:
        raise EdgesegError(
            f"The {preset.name} target links with {preset.linker}, which is not installed.",
            "Install it: apt-get install -y gcc-aarch64-linux-gnu (or pass --cc PATH).",
        )
    if preset.linker == "ndk" and not os.environ.get("TVM_NDK_CC"):
        raise EdgesegError(
            f"The {preset.name} target links with the Android NDK, but TVM_NDK_CC is not set.",
            "Point it at the NDK's clang for your API level, e.g. export TVM_NDK_CC="
            "$NDK/toolchains/llvm/prebuilt/linux-x86_64/bin/aarch64-linux-android28-clang "
            "(or use --export tar to get the object files for linking elsewhere).",
        )


def export_library(rt_mod: Any, path: Path, preset: TargetPreset) -> Path:
    """Write `rt_mod` (a built TVM module or Relax executable) as a shared library."""
    if preset.linker == "host-cc":
        rt_mod.export_library(str(path))
    elif preset.linker == "ndk":
        from tvm.support import ndk

        rt_mod.export_library(str(path), fcompile=ndk.create_shared)
    else:
        from tvm.support import cc

        rt_mod.export_library(str(path), fcompile=cc.cross_compiler(preset.linker))
    return path


def export_objects(rt_mod: Any, path: Path) -> Path:
    """Write the object files as a .tar, for linking elsewhere (no NDK on this machine)."""
    from tvm.support import tar

    rt_mod.export_library(str(path), fcompile=tar.tar)
    return path
