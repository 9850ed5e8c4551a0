"""The names that travel between packages: a tracker address, and a device (tracker + key).

Light on purpose (no TVM import): argparse uses `Tracker.parse` as a `type=` callable.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

DEFAULT_TRACKER_PORT = 9190
HOST_KEY = "host-cpu"


class BadTrackerAddress(argparse.ArgumentTypeError, ValueError):
    """Text that is not HOST:PORT; argparse prints it as is, library callers catch ValueError."""


@dataclass(frozen=True)
class Tracker:
    """Where a TVM RPC tracker listens."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Tracker:
        """`HOST:PORT` -> Tracker; raises BadTrackerAddress (a ValueError) on bad text."""
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadTrackerAddress(
                f"{text!r} is not a tracker address; write HOST:PORT, "
                f"for example 127.0.0.1:{DEFAULT_TRACKER_PORT}"
            )
        return cls(host=host, port=int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Device:
    """A device class behind a tracker: any server registered under `key` may serve a session.

    `emulated` marks a device whose timings are not device figures (the QEMU aarch64 server);
    `runner.bench` also treats the key `emu-arm64` as emulated.
    """

    tracker: Tracker
    key: str
    emulated: bool = False

    def __str__(self) -> str:
        return f"{self.key}@{self.tracker}"
