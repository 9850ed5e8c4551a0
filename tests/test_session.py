"""Reaching devices: fast failures for a missing tracker or key, bounded waits, one retry."""

from __future__ import annotations

import time

import numpy as np
import pytest

from runner.device import Device, Tracker
from runner.emulator import free_port
from runner.errors import DeviceError
from runner.session import list_devices, open_session, run_with_retry, wait_for_device


def test_an_unreachable_tracker_fails_within_seconds():
    tracker = Tracker("127.0.0.1", free_port())
    started = time.monotonic()
    with pytest.raises(DeviceError) as error:
        with open_session(Device(tracker, "host-cpu")):
            pass
    assert time.monotonic() - started < 5.0
    assert f"no RPC tracker at {tracker}" in error.value.problem
    assert "python -m runner serve" in error.value.fix and error.value.exit_code == 3


def test_list_devices_shows_the_farm_key_with_a_free_server(host_farm):
    deadline = time.monotonic() + 10.0  # a server re-registers as free shortly after a session ends
    while True:
        queue = {queue.key: queue for queue in list_devices(host_farm.tracker)}["host-cpu"]
        if queue.free == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (queue.servers, queue.free, queue.pending) == (1, 1, 0)  # one server, idle, nobody waiting


def test_an_unknown_key_fails_after_the_bounded_wait_naming_the_known_keys(host_farm):
    started = time.monotonic()
    with pytest.raises(DeviceError) as error:
        wait_for_device(Device(host_farm.tracker, "pixel-9"), timeout_s=1.5)
    waited = time.monotonic() - started
    assert 1.5 <= waited < 5.0
    assert "'pixel-9'" in error.value.problem and "host-cpu (1 server(s))" in error.value.problem


def test_a_busy_device_fails_after_the_bounded_wait(host_farm):
    with open_session(host_farm.device, session_timeout_s=60) as remote:
        assert remote.cpu().exist
        started = time.monotonic()
        with pytest.raises(DeviceError, match="stayed busy"):
            with open_session(host_farm.device, wait_s=2.0):
                pass
        assert time.monotonic() - started < 6.0


def test_sessions_back_to_back_get_the_one_server_and_the_imported_objects_are_frozen(host_farm):
    """A session's end collects its cycles so the next one gets the server; what existed before
    the first session (TVM, torch) is frozen once, so that collection does not rescan it."""
    import gc

    def one_session() -> bool:  # the caller's `remote` goes with this frame, as in every runner call
        with open_session(host_farm.device, wait_s=10.0) as remote:
            return remote.cpu().exist

    assert all(one_session() for _ in range(3))  # one server: each waits for the previous one to go
    assert gc.get_freeze_count() > 10_000  # the imported libraries, not a handful of objects


def test_a_dropped_session_is_retried_once_in_a_new_session(host_farm, host_artifact):
    """The first attempt outlives its 2 s session (the server ends it); the retry succeeds."""
    import tvm

    attempts = []

    def work(remote):
        attempts.append(time.monotonic())
        remote.upload(str(host_artifact / "probe.so"))
        probe = remote.load_module("probe.so")
        dev = remote.cpu()
        args = [tvm.runtime.tensor(np.zeros(4, "float32"), dev),
                tvm.runtime.empty((4,), "float32", dev)]  # fmt: skip
        min_repeat_ms = 6000 if len(attempts) == 1 else 0
        result = probe.time_evaluator("edgeseg_probe", dev, number=1, repeat=1,
                                      min_repeat_ms=min_repeat_ms)(*args)  # fmt: skip
        return result.results

    results = run_with_retry(host_farm.device, work, what="testing", session_timeout_s=2)
    assert len(attempts) == 2 and len(results) == 1
