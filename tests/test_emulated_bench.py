"""A linux-arm64 artifact checked on the emulated aarch64 device, labelled emulated everywhere.

Needs qemu-user-static and gcc-aarch64-linux-gnu (skipped without them); the first run on a
machine also builds the cached aarch64 sysroot (about 20 s, from apt and PyPI).
"""

from __future__ import annotations

import json

import psutil
import pytest

from runner.bench import bench_artifact
from runner.cli import main
from runner.emulator import check_host_tools
from runner.errors import EdgesegError
from runner.farm import use_device
from runner.report import render_bench
from runner.timing import TimingProtocol

pytestmark = pytest.mark.emulated


def test_the_emulated_device_matches_the_host_reference_and_says_emulated(
    aarch64_artifact, tmp_path, capsys
):
    try:
        check_host_tools()
    except EdgesegError as missing:
        pytest.skip(f"emulated aarch64 device unavailable: {missing}")
    before = {proc.pid for proc in psutil.Process().children(recursive=True)}
    out = tmp_path / "bench.json"
    with use_device(None, None, emulate="aarch64") as device:
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        commands = [" ".join(p.cmdline()) for p in started]
        result = bench_artifact(aarch64_artifact, device, TimingProtocol(warmup=1, repeat=3),
                                check=True, per_kernel=True)  # fmt: skip
        code = main(["bench", str(aarch64_artifact), "--tracker", str(device.tracker), "--key",
                     "emu-arm64", "--check", "--repeat", "3", "--out", str(out)])  # fmt: skip
    assert device.key == "emu-arm64" and device.emulated
    assert result.check.passed and result.check.max_abs_error < 1e-4
    assert result.emulated and result.target_arch == "aarch64"
    assert len(result.kernels.rows) == 2
    text = render_bench(result)
    assert text.startswith("*** EMULATED") and "per-kernel times (emulated" in text
    # The CLI against the same tracker: labelled emulated through the key alone.
    assert code == 0 and "EMULATED" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["emulated"] is True and data["device"]["emulated"] is True and data["note"]
    assert data["check"]["passed"] is True
    # The farm's children, popen_workers under QEMU included, are all gone.
    assert any("qemu-aarch64" in c and "popen_worker" in c for c in commands)
    assert [p.pid for p in started if p.is_running() and p.status() != "zombie"] == []
