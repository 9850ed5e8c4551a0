"""Reaching a device through its tracker, with bounded waits and one retry for a dropped session.

TVM's own client retries a refused tracker connection for 60 s and waits forever for a key no
server registered, so every entry point here checks first and fails within seconds with a
DeviceError that names the fix. A remote object kept alive holds its session (the server takes
no other client meanwhile): callers release what they got from a session before it closes, and
`open_session` collects garbage on the way out.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import socket
import struct
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

from runner.device import Device, Tracker
from runner.errors import DeviceError, EdgesegError

logger = logging.getLogger(__name__)

T = TypeVar("T")
_POLL_SECONDS = 0.5
# TVM's tracker wire protocol (tvm/rpc/base.py: RPC_TRACKER_MAGIC, TrackerCode), spoken here
# directly so that listing devices needs no TVM import and every read has a timeout.
TRACKER_MAGIC = 0x2F271
TRACKER_SUCCESS, TRACKER_REQUEST, TRACKER_SUMMARY = 0, 4, 6
# Text of the errors TVM raises when the connection itself goes (not the remote code failing).
_DROP_MARKERS = ("socket", "broken pipe", "connection reset", "connection refused",
                 "connection closed")


@dataclass(frozen=True)
class DeviceQueue:
    """What a tracker knows about one key: registered servers and its free/pending queue."""

    key: str
    servers: int
    free: int
    pending: int

    def to_dict(self) -> dict:
        return {"key": self.key, "servers": self.servers, "free": self.free,
                "pending": self.pending}  # fmt: skip


def check_tracker(tracker: Tracker, timeout_s: float = 3.0) -> None:
    """Fail within `timeout_s` when nothing accepts connections at the tracker's address."""
    try:
        socket.create_connection((tracker.host, tracker.port), timeout=timeout_s).close()
    except OSError as err:
        raise DeviceError(
            f"no RPC tracker at {tracker} ({err.strerror or err}).",
            "Start one with `python -m runner serve` or check --tracker.",
        ) from None


def list_devices(tracker: Tracker) -> list[DeviceQueue]:
    """Every key the tracker knows, with its registered servers and free/pending counts."""
    summary = _summary(tracker)
    servers: dict[str, int] = {}
    for info in summary["server_info"]:
        key = info.get("key", "").removeprefix("server:")
        servers[key] = servers.get(key, 0) + 1
    queues = summary["queue_info"]
    waiting = {key for key, queue in queues.items() if queue["free"] or queue["pending"]}
    keys = sorted(set(servers) | waiting)
    return [
        DeviceQueue(key, servers.get(key, 0), queues.get(key, {}).get("free", 0),
                    queues.get(key, {}).get("pending", 0))  # fmt: skip
        for key in keys
    ]


def registered_servers(tracker: Tracker, key: str) -> list[tuple[str, int]]:
    """Addresses (host, port) of the servers registered under `key`, busy or free."""
    return [
        (info["addr"][0], int(info["addr"][1]))
        for info in _summary(tracker)["server_info"]
        if info.get("key") == f"server:{key}"
    ]


def wait_for_device(device: Device, timeout_s: float = 60.0) -> DeviceQueue:
    """Wait until a server is registered under the device's key (free or busy); its queue."""
    deadline = time.monotonic() + timeout_s
    while True:
        queues = {queue.key: queue for queue in list_devices(device.tracker)}
        queue = queues.get(device.key)
        if queue is not None and queue.servers > 0:
            return queue
        if time.monotonic() >= deadline:
            known = ", ".join(f"{key} ({q.servers} server(s))" for key, q in queues.items())
            raise DeviceError(
                f"no device registered under key {device.key!r} at tracker {device.tracker} "
                f"after {timeout_s:.0f} s; the tracker knows: {known or 'no keys at all'}.",
                "Pass one of the known keys with --key, or start a server under this key "
                "(`python -m runner serve --key ...`, or TVM's RPC app on the phone).",
            )
        time.sleep(_POLL_SECONDS)


@contextlib.contextmanager
def open_session(
    device: Device, session_timeout_s: float = 600, wait_s: float = 60.0
) -> Iterator[Any]:
    """An RPC session (tvm.rpc.RPCSession) to one server of `device`; waits at most `wait_s`.

    The server ends the session after `session_timeout_s`. Release every remote object
    (module, VM, tensor, device) before the block ends.
    """
    started = time.monotonic()
    wait_for_device(device, wait_s)
    # TVM's TrackerSession.request queues until a server is free and waits forever: bound it.
    remaining = max(1.0, wait_s - (time.monotonic() - started))
    try:
        url, port, match_key = _tracker_call(device.tracker, [TRACKER_REQUEST, device.key,
                                                              "", 1], remaining)  # fmt: skip
    except TimeoutError:
        raise DeviceError(
            f"every device under key {device.key!r} at {device.tracker} stayed busy for "
            f"{wait_s:.0f} s.",
            "Wait for the other client to finish, register more devices under the key, or "
            "raise the wait.",
        ) from None
    from tvm import rpc  # heavy import, only once a device answered

    _freeze_what_exists()
    remote = rpc.connect(url, port, match_key, session_timeout_s)
    logger.debug("session to %s opened after %.1f s", device, time.monotonic() - started)
    try:
        yield remote
    finally:
        del remote
        gc.collect()  # drops remote handles that cycles kept alive, so the server frees up


@functools.cache
def _freeze_what_exists() -> None:
    """Move every object alive before the first session (TVM, torch and the rest, imported)
    out of the collector's sight, once per process, so the full collection that ends each
    session scans only what was made since: with TVM and torch loaded it cost 0.21 s, and a
    collection of 50 layers opens two sessions per layer (15% of its time). Garbage is collected
    first, so nothing collectable is frozen."""
    gc.collect()
    gc.freeze()


def is_dropped_session(err: BaseException) -> bool:
    """True when `err` says the connection to the device went away (not that remote code failed)."""
    if isinstance(err, EdgesegError):
        return False  # ours, raised on purpose (and checked before TVM is imported)
    from tvm import error as tvm_error

    if isinstance(err, (tvm_error.RPCSessionTimeoutError, ConnectionError, TimeoutError)):
        return True
    return isinstance(err, RuntimeError) and any(
        marker in str(err).lower() for marker in _DROP_MARKERS
    )


def run_with_retry(
    device: Device,
    work: Callable[[Any], T],
    what: str,
    measured_so_far: Callable[[], str] = lambda: "nothing",
    session_timeout_s: float = 600,
    wait_s: float = 60.0,
) -> T:
    """Run `work(remote)` in a session; when the session drops, run it once more in a new one.

    `work` must be resumable: it should skip what it already measured (keep it outside).
    A second drop raises DeviceError whose text holds `measured_so_far()`.
    """

    def attempt() -> T:
        with open_session(device, session_timeout_s, wait_s) as remote:
            return work(remote)

    attempts = 0
    while True:
        attempts += 1
        try:
            return attempt()
        except Exception as err:  # noqa: BLE001 - only a dropped session is retried
            _release_frames(err)  # `attempt` has returned: its `remote` can go now
            if not is_dropped_session(err):
                raise
            if attempts == 2:
                raise DeviceError(
                    f"the session to {device} dropped twice while {what} ({err}). "
                    f"Measured before it dropped: {measured_so_far()}.",
                    "Check the device (power, network, screen lock, thermal shutdown, the RPC "
                    "app still running) and the session timeout, then run again.",
                ) from None
            logger.warning("session to %s dropped while %s (%s); retrying once", device, what,
                           err)  # fmt: skip


def _release_frames(err: BaseException) -> None:
    """Clear the locals of the finished frames an error's traceback keeps alive.

    An error raised inside a session carries the frames that held the session's remote
    objects (module, VM, tensors); kept by whoever catches the error, they would hold the
    session open and the device busy until the session timeout.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        traceback.clear_frames(err.__traceback__)
        err = err.__cause__ or err.__context__


def _summary(tracker: Tracker) -> dict:
    return _tracker_call(tracker, [TRACKER_SUMMARY], timeout_s=10.0)


def _tracker_call(tracker: Tracker, message: list, timeout_s: float) -> Any:
    """One request/answer with the tracker (TVM's wire protocol) under a socket timeout.

    Raises DeviceError when nothing listens or the peer is not a tracker, TimeoutError when the
    tracker does not answer within `timeout_s` (a REQUEST waits there for a free device).
    """
    check_tracker(tracker)
    try:
        with socket.create_connection((tracker.host, tracker.port), timeout=5.0) as sock:
            sock.sendall(struct.pack("<i", TRACKER_MAGIC))
            magic = struct.unpack("<i", _receive(sock, 4))[0]
            if magic != TRACKER_MAGIC:
                raise OSError(f"it answered with magic {magic:#x}")
            sock.settimeout(timeout_s)
            payload = json.dumps(message).encode()
            sock.sendall(struct.pack("<i", len(payload)) + payload)
            size = struct.unpack("<i", _receive(sock, 4))[0]
            code, *value = json.loads(_receive(sock, size))
    except TimeoutError:
        raise
    except OSError as err:
        raise DeviceError(
            f"{tracker} accepts connections but does not talk like a TVM RPC tracker ({err}).",
            "Check --tracker: it must name the tracker's port, not a server's.",
        ) from None
    if code != TRACKER_SUCCESS:
        raise DeviceError(f"the tracker at {tracker} refused {message[:2]} (code {code}).",
                          "Check that the tracker runs TVM 0.27, like this client.")  # fmt: skip
    return value[0] if value else None


def _receive(sock: socket.socket, size: int) -> bytes:
    chunks, received = [], 0
    while received < size:
        chunk = sock.recv(min(size - received, 65536))
        if not chunk:
            raise ConnectionResetError("the tracker closed the connection")
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)
