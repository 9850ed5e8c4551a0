"""Phone presets: one name for the target, CPU model, thread count and core pinning of a phone.

The seed paper measured on a Samsung Galaxy S21, which ships in two versions: Snapdragon 888
(Cortex-X1 + 3x Cortex-A78 big cores, 4x Cortex-A55, Adreno 660) and Exynos 2100 (Cortex-X1
+ 3x Cortex-A78, 4x Cortex-A55, Mali-G78 MP14). Code is generated for the A78 (three of the
four big cores; the X1 runs the same ARMv8.2 code) with four threads pinned to the big cluster
(`runtime.config_threadpool` mode 1, applied by `runner bench` from the artifact's manifest).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from compile.targets import TargetPreset, resolve_target
from runner.errors import EdgesegError


@dataclasses.dataclass(frozen=True)
class PhonePreset:
    name: str
    description: str
    mcpu: str
    big_cores: int
    cpu_target: str
    gpu_target: str

    def resolve(self, target: str | None, threads: int | None = None) -> tuple[TargetPreset, dict[str, Any]]:
        """The target preset for this phone's CPU (default) or GPU, and the runtime settings."""
        target = target or self.cpu_target
        if target not in (self.cpu_target, self.gpu_target) and not target.startswith(self.gpu_target):
            raise EdgesegError(
                f"--device {self.name} has no '{target}' (its CPU is {self.cpu_target}, "
                f"its GPU {self.gpu_target}).",
                f"Use --target {self.cpu_target} or --target {self.gpu_target}.",
            )
        threads = threads or self.big_cores
        preset = resolve_target(target, threads=threads, mcpu=self.mcpu)
        runtime = {"device": self.name, "threads": threads, "affinity": "big"}
        return preset, runtime


PHONES: dict[str, PhonePreset] = {
    "s21-snapdragon": PhonePreset(
        "s21-snapdragon", "Samsung Galaxy S21, Snapdragon 888 (X1 + 3xA78 + 4xA55, Adreno 660)",
        mcpu="cortex-a78", big_cores=4, cpu_target="android-arm64", gpu_target="android-adreno",
    ),
    "s21-exynos": PhonePreset(
        "s21-exynos", "Samsung Galaxy S21, Exynos 2100 (X1 + 3xA78 + 4xA55, Mali-G78 MP14)",
        mcpu="cortex-a78", big_cores=4, cpu_target="android-arm64", gpu_target="android-mali",
    ),
}  # fmt: skip


def resolve_phone(name: str) -> PhonePreset:
    if name not in PHONES:
        raise EdgesegError(f"Unknown device preset '{name}'.", f"Use one of: {', '.join(sorted(PHONES))}.")
    return PHONES[name]
