"""Target presets: a name a user types (`host`, `android-arm64`, ...) expanded to a TVM target.

A preset says what TVM generates code for (`tvm_target`, plus `tvm_host` for GPU targets whose
kernels are launched by CPU code), which architecture the library runs on (so the runner can
refuse a library the device cannot load), and which linker packages the shared library.
The registry is a literal dict of factories; later issues add phone targets to it.
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
    linker: str  # "host-cc", "aarch64-linux-gnu-gcc" or "ndk"
    tvm_target: dict[str, Any]
    tvm_host: dict[str, Any] | None = None

    def target(self):
        """The `tvm.target.Target` (imports TVM, so only call it when compiling)."""
        import tvm

        if self.tvm_host is None:
            return tvm.target.Target(self.tvm_target)
        return tvm.target.Target(self.tvm_target, host=self.tvm_host)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _host(threads: int | None = None, mcpu: str | None = None) -> TargetPreset:
    """The CPU of this machine: the embedded default device runs here."""
    import platform

    from tvm.target import codegen

    return TargetPreset(
        name="host",
        description="this machine's CPU (the embedded loopback device)",
        arch=platform.machine(),
        device_type="cpu",
        linker="host-cc",
        tvm_target={
            "kind": "llvm",
            "mcpu": mcpu or codegen.llvm_get_system_cpu(),
            "num-cores": threads or os.cpu_count() or 1,
        },
    )


PRESETS: dict[str, tuple[str, Callable[..., TargetPreset]]] = {
    "host": ("this machine's CPU (the embedded loopback device)", _host),
}


def list_presets() -> dict[str, str]:
    """Preset names with a one-line description, for `--target help`."""
    return {name: doc for name, (doc, _) in PRESETS.items()}


def resolve_target(name: str, threads: int | None = None, mcpu: str | None = None) -> TargetPreset:
    """Expand a preset name; unknown names are an error that lists the known ones."""
    if name not in PRESETS:
        known = ", ".join(sorted(PRESETS))
        raise EdgesegError(
            f"Unknown target '{name}'.",
            f"Use one of: {known} (`python -m compile --target help` describes them).",
        )
    _, factory = PRESETS[name]
    return factory(threads=threads, mcpu=mcpu)
