"""The cached-folder logic behind ensure_sysroot, and the host-tool check, with tiny builders."""

from __future__ import annotations

import threading
import time

import pytest

from runner.emulator import check_host_tools, default_cache_dir
from runner.emulator.cache import build_once, read_stamp
from runner.errors import EdgesegError

RECIPE = {"packages": ["a", "b"], "layout_version": 1}


def _builder(calls: list, delay: float = 0.0):
    def build_into(folder):
        calls.append(folder)
        time.sleep(delay)
        (folder / "payload.txt").write_text("built")
        return {"versions": {"a": "1.0"}}

    return build_into


def test_build_once_stamps_the_folder_and_the_second_call_builds_nothing(tmp_path):
    calls = []
    final = build_once(tmp_path / "root", RECIPE, _builder(calls))
    stamp = read_stamp(final)
    assert (final / "payload.txt").read_text() == "built"
    assert stamp["recipe"] == RECIPE and stamp["versions"] == {"a": "1.0"}
    assert build_once(tmp_path / "root", RECIPE, _builder(calls)) == final
    assert len(calls) == 1
    assert read_stamp(final) == stamp


def test_a_crashed_build_leaves_no_stamped_folder_and_is_rebuilt(tmp_path):
    def crashing(folder):
        (folder / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(tmp_path / "root", RECIPE, crashing)
    assert not (tmp_path / "root").exists()
    assert (tmp_path / ".root.build" / "half.txt").exists()

    calls = []
    final = build_once(tmp_path / "root", RECIPE, _builder(calls))
    assert len(calls) == 1 and read_stamp(final) is not None
    assert not (final / "half.txt").exists()
    assert not (tmp_path / ".root.build").exists()


def test_a_folder_stamped_with_another_recipe_is_replaced(tmp_path):
    calls = []
    build_once(tmp_path / "root", RECIPE, _builder(calls))
    (tmp_path / "root" / "stale.txt").write_text("old layout")
    newer = {**RECIPE, "layout_version": 2}
    final = build_once(tmp_path / "root", newer, _builder(calls))
    assert len(calls) == 2
    assert read_stamp(final)["recipe"] == newer
    assert not (final / "stale.txt").exists()


def test_a_concurrent_caller_waits_for_the_first_build_instead_of_building_again(tmp_path):
    calls, results = [], []

    def caller():
        results.append(build_once(tmp_path / "root", RECIPE, _builder(calls, delay=0.5)))

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(calls) == 1
    assert results == [tmp_path / "root"] * 2


@pytest.mark.parametrize(
    ("present", "missing"),
    [((), "qemu-aarch64-static"), (("qemu-aarch64-static",), "aarch64-linux-gnu-gcc")],
)
def test_check_host_tools_names_the_missing_tool_and_the_apt_command(
    tmp_path, monkeypatch, present, missing
):
    for name in present:  # stand-ins on an otherwise empty PATH
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EdgesegError) as error:
        check_host_tools()
    assert missing in error.value.problem
    assert "apt-get install -y qemu-user-static gcc-aarch64-linux-gnu" in error.value.fix


def test_default_cache_dir_follows_edgeseg_cache_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESEG_CACHE", str(tmp_path / "edgeseg"))
    assert default_cache_dir() == tmp_path / "edgeseg" / "emu-aarch64"
    monkeypatch.delenv("EDGESEG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "edgeseg" / "emu-aarch64"
