"""`python -m runner`: what it prints, writes and exits with, for good and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from runner.artifact import MODEL_LIB
from runner.cli import main
from runner.emulator import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"], ["serve", "--help"]])
def test_help_imports_neither_torch_nor_tvm(argv):
    code = ("import sys\nfrom runner.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in ('tvm', 'torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code % argv], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT}, check=True).stdout  # fmt: skip
    assert "usage:" in out and out.strip().splitlines()[-1] == "[]"


def test_devices_json_lists_the_farm_key(host_farm, capsys):
    assert main(["devices", "--tracker", str(host_farm.tracker), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tracker"] == str(host_farm.tracker)
    assert {"key": "host-cpu", "servers": 1}.items() <= data["devices"][0].items()


def test_bench_prints_the_table_and_writes_bench_json(host_farm, host_artifact, tmp_path,
                                                      capsys):  # fmt: skip
    out = tmp_path / "bench.json"
    code = main(["bench", str(host_artifact), "--tracker", str(host_farm.tracker), "--key",
                 "host-cpu", "--repeat", "4", "--warmup", "1", "--check", "--per-kernel",
                 "--out", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    data = json.loads(out.read_text())
    assert data["fps"] > 0 and data["runs"] == 4 and data["check"]["passed"] is True
    assert data["device"]["key"] == "host-cpu" and data["emulated"] is False
    # The farm gives TVM every CPU (TVM's x86 default is half of them).
    expected_threads = int(os.environ.get("TVM_NUM_THREADS", len(os.sched_getaffinity(0))))
    assert data["device"]["threads"] == expected_threads
    assert len(data["kernels"]["kernels"]) == 2
    for needle in ("median", "p90", "FPS", "check     passed", "host-cpu", "sum of kernels",
                   "1 warm-up"):  # fmt: skip
        assert needle in text


def test_bench_against_an_unreachable_tracker_exits_3_within_seconds(host_artifact, capsys):
    started = time.monotonic()
    code = main(["bench", str(host_artifact), "--tracker", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 3 and time.monotonic() - started < 5.0
    assert "error: no RPC tracker at" in err and "Traceback" not in err
    assert "fix: Start one with `python -m runner serve`" in err


def test_bench_with_an_unknown_key_exits_3_naming_the_known_keys(host_farm, host_artifact,
                                                                 capsys):  # fmt: skip
    code = main(["bench", str(host_artifact), "--tracker", str(host_farm.tracker), "--key",
                 "s21-cpu", "--wait", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3 and "'s21-cpu'" in err and "host-cpu" in err and "Traceback" not in err


def test_bench_of_a_damaged_artifact_exits_4_naming_the_file(host_farm, artifact_copy, capsys):
    (artifact_copy / MODEL_LIB).write_bytes(b"not a library")
    code = main(["bench", str(artifact_copy), "--tracker", str(host_farm.tracker)])
    err = capsys.readouterr().err
    assert code == 4 and "model.so" in err and "checksum" in err and "Traceback" not in err


def test_bench_of_an_aarch64_artifact_on_the_host_exits_4(host_farm, aarch64_artifact, capsys):
    code = main(["bench", str(aarch64_artifact), "--tracker", str(host_farm.tracker)])
    err = capsys.readouterr().err
    assert code == 4 and "built for aarch64" in err


@pytest.mark.parametrize("verbose", [False, True])
def test_python_m_runner_shows_a_traceback_only_when_verbose(host_artifact, verbose):
    argv = ["bench", str(host_artifact), "--tracker", f"127.0.0.1:{free_port()}"]
    done = subprocess.run([sys.executable, "-m", "runner", *argv, *(["-v"] if verbose else [])],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 3 and "error: no RPC tracker" in done.stderr
    assert ("Traceback" in done.stderr) == verbose


@pytest.mark.parametrize("argv", [["bench", "x", "--tracker", "nohost"],
                                  ["bench", "x", "--repeat", "0"],
                                  ["serve", "--servers", "-1"]])  # fmt: skip
def test_bad_arguments_exit_2_from_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "error: argument" in capsys.readouterr().err
