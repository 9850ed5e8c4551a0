"""Target presets: a name a user types (`host`, `android-arm64`, ...) expanded to a TVM target.

A preset says what TVM generates code for (`tvm_target`, plus `tvm_host` for GPU targets whose
kernels are launched by CPU code), which architecture the library runs on (so the runner can
refuse a library the device cannot load), and which linker packages the shared library.
The registry is a literal dict of factories. Device presets (a phone model: which cores to
target, how many threads, which GPU) live in `compile/devices.py`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from runner.errors import EdgesegError


@dataclasses.dataclass(frozen=True)
class TargetPreset:
    """Everything compile needs to know about one kind of device."""

    name: str
    description: str
    arch: str  # "x86_64" or "aarch64": the CPU that loads the library
    device_type: str  # "cpu" or "opencl": where the kernels run
    linker: str  # "host-cc", "ndk", or the cross compiler to link with (aarch64-linux-gnu-gcc)
    tvm_target: dict[str, Any] | str  # a target dict, or a TVM tag such as qcom/adreno-opencl
    tvm_host: dict[str, Any] | None = None
    # The key of the embedded device that can run this code when no tracker is given
    # (host-cpu: this CPU; emu-arm64: the emulated aarch64 server); None: only a real device.
    embedded_key: str | None = None

    def target(self):
        """The `tvm.target.Target` (imports TVM, so only call it when compiling)."""
        import tvm

        if self.tvm_host is None:
            return tvm.target.Target(self.tvm_target)
        return tvm.target.Target(self.tvm_target, host=self.tvm_host)

    @property
    def is_gpu(self) -> bool:
        return self.device_type != "cpu"

    def resolved(self) -> dict[str, Any]:
        """The full TVM target (tags and defaults expanded) as plain JSON-able data."""
        return _plain(self.target().export())


def _plain(value: Any) -> Any:
    """TVM's Map/Array containers as dicts/lists, for JSON."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return str(value)


def _host(threads: int | None = None, mcpu: str | None = None, cc: str | None = None) -> TargetPreset:
    """The CPU of this machine: the embedded default device runs here."""
    import platform

    from tvm.target import codegen

    return TargetPreset(
        name="host",
        description="this machine's CPU (the embedded loopback device)",
        arch=platform.machine(),
        device_type="cpu",
        linker="host-cc",
        embedded_key="host-cpu",
        tvm_target={
            "kind": "llvm",
            "mcpu": mcpu or codegen.llvm_get_system_cpu(),
            "num-cores": threads or os.cpu_count() or 1,
        },
    )


def _arm64_cpu(triple: str, threads: int | None, mcpu: str | None, default_threads: int) -> dict[str, Any]:
    target: dict[str, Any] = {
        "kind": "llvm",
        "mtriple": triple,  # an aarch64- triple: TVM reads arm64-... as 32-bit ARM
        "mattr": ["+neon"],
        "num-cores": threads or default_threads,
    }
    if mcpu:
        target["mcpu"] = mcpu
    return target


def _linux_arm64(threads: int | None = None, mcpu: str | None = None, cc: str | None = None) -> TargetPreset:
    return TargetPreset(
        name="linux-arm64",
        description="64-bit ARM Linux (glibc): boards, ARM servers, the emulated device",
        arch="aarch64",
        device_type="cpu",
        linker=cc or "aarch64-linux-gnu-gcc",
        embedded_key="emu-arm64",
        tvm_target=_arm64_cpu("aarch64-linux-gnu", threads, mcpu, default_threads=4),
    )


def _android_arm64(threads: int | None = None, mcpu: str | None = None, cc: str | None = None) -> TargetPreset:
    return TargetPreset(
        name="android-arm64",
        description="Android phone CPU (ARM64, NEON), linked with the NDK in TVM_NDK_CC",
        arch="aarch64",
        device_type="cpu",
        linker="ndk",
        tvm_target=_arm64_cpu("aarch64-linux-android", threads, mcpu, default_threads=4),
    )


def _android_gpu(name: str, description: str, device_target: Any):
    def factory(threads: int | None = None, mcpu: str | None = None, cc: str | None = None) -> TargetPreset:
        return TargetPreset(
            name=name,
            description=description,
            arch="aarch64",
            device_type="opencl",
            linker="ndk",
            tvm_target=device_target,
            tvm_host=_arm64_cpu("aarch64-linux-android", threads, mcpu, default_threads=4),
        )

    return factory


PRESETS: dict[str, tuple[str, Callable[..., TargetPreset]]] = {
    "host": ("this machine's CPU (the embedded loopback device)", _host),
    "linux-arm64": ("64-bit ARM Linux CPU (boards, servers, the emulated device)", _linux_arm64),
    "android-arm64": ("Android phone CPU (ARM64 NEON), NDK-linked", _android_arm64),
    "android-mali": (
        "Android phone Mali GPU (OpenCL), e.g. Exynos 2100's Mali-G78",
        _android_gpu("android-mali", "Mali GPU over OpenCL", {"kind": "opencl", "device": "mali"}),
    ),
    "android-adreno": (
        "Android phone Adreno GPU (OpenCL), e.g. Snapdragon 888's Adreno 660",
        _android_gpu("android-adreno", "Adreno GPU over OpenCL", "qcom/adreno-opencl"),
    ),
    "android-adreno-texture": (
        "Adreno GPU with OpenCL texture memory (qcom/adreno-opencl-texture)",
        _android_gpu("android-adreno-texture", "Adreno GPU, OpenCL textures", "qcom/adreno-opencl-texture"),
    ),
}


def list_presets() -> dict[str, str]:
    """Preset names with a one-line description, for `--target help`."""
    return {name: doc for name, (doc, _) in PRESETS.items()}


def check_target_name(name: str) -> None:
    """An unknown preset name is an error that lists the known ones."""
    if name not in PRESETS:
        known = ", ".join(sorted(PRESETS))
        raise EdgesegError(
            f"Unknown target '{name}'.",
            f"Use one of: {known} (`python -m compile --target help` describes them).",
        )


def resolve_target(
    name: str, threads: int | None = None, mcpu: str | None = None, cc: str | None = None
) -> TargetPreset:
    """Expand a preset name; unknown names are an error that lists the known ones.

    `cc` replaces the cross compiler of linux-arm64; the NDK compiler comes from TVM_NDK_CC.
    """
    check_target_name(name)
    _, factory = PRESETS[name]
    if cc and name != "linux-arm64":
        raise EdgesegError(f"--cc applies to linux-arm64 only, not {name}.", "Android targets link with TVM_NDK_CC.")
    return factory(threads=threads, mcpu=mcpu, cc=cc)
