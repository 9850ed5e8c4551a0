"""Phone and ARM targets: cross-compiled code checked on the emulated aarch64 device, Android
linking, and OpenCL device code for Mali/Adreno (issue 3)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from compile.api import compile_model
from compile.devices import resolve_phone
from compile.targets import resolve_target
from helpers.tiny_models import TinyAttention, TinyConvNet, export_onnx, export_tiny_hf_segformer
from runner.artifact import Manifest, load_artifact
from runner.errors import ArtifactError, EdgesegError

AARCH64_CC = "aarch64-linux-gnu-gcc"
ELF_MACHINE_AARCH64 = 183
needs_cross_gcc = pytest.mark.skipif(shutil.which(AARCH64_CC) is None, reason=f"{AARCH64_CC} missing")


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF", "not an ELF file"
    return int.from_bytes(data[18:20], "little")


@pytest.fixture(scope="module")
def arm64_conv(emulated_farm, tmp_path_factory):
    """The conv net compiled for linux-arm64, tuned (a few trials) on the emulated device."""
    work = tmp_path_factory.mktemp("arm64-conv")
    model = export_onnx(TinyConvNet(), work / "m.onnx")
    result = compile_model(model, work / "art", resolve_target("linux-arm64", threads=1), work / "db",
                           trials=3, device=emulated_farm.device)  # fmt: skip
    return model, work / "db", result


def _check_on_emulator(artifact: Path, farm) -> None:
    from runner.bench import bench_artifact
    from runner.timing import TimingProtocol

    assert elf_machine((artifact / "model.so").read_bytes()) == ELF_MACHINE_AARCH64
    bench = bench_artifact(artifact, farm.device, TimingProtocol(warmup=0, repeat=2), check=True)
    assert bench.check.passed and bench.emulated
    assert bench.to_dict()["emulated"] is True


@pytest.mark.emulated
@needs_cross_gcc
def test_linux_arm64_conv_tuned_on_the_emulator_matches_the_host_reference(arm64_conv, emulated_farm):
    _, _, result = arm64_conv
    assert result.untuned == 0  # every kernel got a record measured on the emulated device
    _check_on_emulator(result.artifact, emulated_farm)


@pytest.mark.emulated
@needs_cross_gcc
def test_linux_arm64_attention_matches_the_host_reference(emulated_farm, tmp_path):
    model = export_onnx(TinyAttention(), tmp_path / "m.onnx")
    result = compile_model(model, tmp_path / "art", resolve_target("linux-arm64", threads=1),
                           tmp_path / "db", trials=0)  # fmt: skip
    _check_on_emulator(result.artifact, emulated_farm)


@pytest.fixture(scope="module")
def hf_segformer(tmp_path_factory) -> Path:
    """GELU (fast math), Mix-FFN depthwise convs (NHWC views) and an all-MLP decoder (the
    rewrite): every graph pass compile has."""
    return export_tiny_hf_segformer(tmp_path_factory.mktemp("hf-segformer") / "m.onnx")


def _lowering(artifact: Path) -> dict:
    return Manifest.from_dict(json.loads((artifact / "manifest.json").read_text())).lowering


@pytest.mark.emulated
@needs_cross_gcc
def test_linux_arm64_segformer_with_every_pass_matches_the_host_reference(hf_segformer, emulated_farm, tmp_path,
                                                                          caplog):  # fmt: skip
    import logging

    caplog.set_level(logging.INFO, logger="compile.rewrites")
    result = compile_model(hf_segformer, tmp_path / "art", resolve_target("linux-arm64", threads=1), tmp_path / "db",
                           trials=0, transfer_candidates=0, kernel_library=False, rewrite_decoder=True)  # fmt: skip
    assert "into the fuse conv of 1 decoder(s)" in caplog.text
    assert _lowering(result.artifact)["fast_math"] and _lowering(result.artifact)["rewrite_decoder"]
    _check_on_emulator(result.artifact, emulated_farm)


def test_android_arm64_takes_the_same_graph_passes(hf_segformer, tmp_path, monkeypatch, caplog):
    import logging

    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    caplog.set_level(logging.INFO, logger="compile.rewrites")
    preset, runtime = resolve_phone("s21-exynos").resolve(None)
    result = compile_model(hf_segformer, tmp_path / "art", preset, tmp_path / "db", trials=0, transfer_candidates=0,
                           kernel_library=False, runtime=runtime, export="tar", rewrite_decoder=True)  # fmt: skip
    assert "into the fuse conv of 1 decoder(s)" in caplog.text
    assert _lowering(result.artifact)["fast_math"] and _lowering(result.artifact)["rewrite_decoder"]


@pytest.mark.emulated
@needs_cross_gcc
def test_arm64_code_of_a_tuned_build_differs_from_the_untuned_one(arm64_conv, tmp_path):
    """The database is applied for cross targets too: records made on the emulator change the code."""
    import tvm

    from compile.build import apply_database, lower
    from compile.frontend import load_model
    from compile.tuning import open_database

    model, db_dir, _ = arm64_conv
    preset = resolve_target("linux-arm64", threads=1)
    lowered = lower(load_model(model, None, tmp_path / "w").mod, preset)
    tuned, status = apply_database(lowered, preset, open_database(db_dir))
    untuned, _ = apply_database(lowered, preset, open_database(tmp_path / "empty"))
    assert all(status.values())
    tuned_asm = tvm.compile(tuned, target=preset.target()).mod.imports[0].inspect_source("asm")
    untuned_asm = tvm.compile(untuned, target=preset.target()).mod.imports[0].inspect_source("asm")
    assert tuned_asm != untuned_asm


def test_android_arm64_without_ndk_stops_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    model = export_onnx(TinyConvNet(), tmp_path / "m.onnx")
    with pytest.raises(EdgesegError, match="TVM_NDK_CC is not set.*aarch64-linux-android"):
        compile_model(model, tmp_path / "art", resolve_target("android-arm64"), tmp_path / "db", trials=0)
    assert not (tmp_path / "art").exists()


def test_android_arm64_export_tar_gives_aarch64_objects_for_the_android_triple(tmp_path, monkeypatch):
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    model = export_onnx(TinyConvNet(), tmp_path / "m.onnx")
    preset, runtime = resolve_phone("s21-exynos").resolve(None)
    result = compile_model(model, tmp_path / "art", preset, tmp_path / "db", trials=0,
                           runtime=runtime, export="tar")  # fmt: skip
    with tarfile.open(result.artifact / "model.tar") as tar:
        objects = [m for m in tar.getmembers() if m.name.endswith(".o")]
        assert objects
        for member in objects:
            assert elf_machine(tar.extractfile(member).read()) == ELF_MACHINE_AARCH64
    data = Manifest.from_dict(json.loads((result.artifact / "manifest.json").read_text()))
    assert data.target.tvm["mtriple"] == "aarch64-linux-android" and data.target.tvm["mcpu"] == "cortex-a78"
    assert data.runtime == {"device": "s21-exynos", "threads": 4, "affinity": "big"}
    with pytest.raises(ArtifactError, match="object files"):
        load_artifact(result.artifact)


@needs_cross_gcc
def test_android_arm64_links_a_shared_object_with_the_compiler_in_tvm_ndk_cc(tmp_path, monkeypatch):
    # A real NDK is not on this machine; any aarch64 compiler driver exercises the same path.
    monkeypatch.setenv("TVM_NDK_CC", shutil.which(AARCH64_CC))
    model = export_onnx(TinyConvNet(), tmp_path / "m.onnx")
    result = compile_model(model, tmp_path / "art", resolve_target("android-arm64"), tmp_path / "db", trials=0)
    library = (result.artifact / "model.so").read_bytes()
    assert elf_machine(library) == ELF_MACHINE_AARCH64
    assert load_artifact(result.artifact).manifest.target.arch == "aarch64"


@pytest.mark.parametrize("target", ["android-mali", "android-adreno"])
def test_gpu_targets_ship_opencl_kernels_all_bound_to_threads(target, tmp_path, monkeypatch):
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    model = export_onnx(TinyConvNet(), tmp_path / "m.onnx")
    result = compile_model(model, tmp_path / "art", resolve_target(target), tmp_path / "db", trials=0,
                           export="tar")  # fmt: skip
    source = (result.artifact / "device_code.cl").read_text()
    kernel_names = [k["name"] for k in json.loads((result.artifact / "kernels.json").read_text())["kernels"]]
    assert len(kernel_names) == 3
    for name in kernel_names:
        assert f"__kernel void {name}_kernel" in source
    assert source.count("get_local_id(") >= len(kernel_names)  # thread-bound, not one work item
    manifest = json.loads((result.artifact / "manifest.json").read_text())
    assert manifest["target"]["device_type"] == "opencl"
