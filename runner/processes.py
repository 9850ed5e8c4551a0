"""Stopping helper processes together with everything they started.

TVM's RPC server and tracker start child interpreters (`popen_worker`) that outlive their parent
when only the parent is killed. Start such a process with
`subprocess.Popen(..., start_new_session=True)` so that it leads its own process group, and stop
the whole group with `stop_process_group`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.05
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for helpers that must not outlive the process that started them, even when
    it is SIGKILLed or dies in native code before its clean-up runs: Linux sends the child
    SIGTERM when its parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def stop_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group that `proc` leads, wait up to `timeout` s, then SIGKILL it.

    Returns once no live process of the group is left (zombies, which cannot run, do not count).
    `proc` must have been started with `start_new_session=True`: stopping the caller's own group
    would stop the caller.
    """
    pgid = proc.pid
    try:
        if os.getpgid(pgid) != pgid:
            raise ValueError(
                f"process {pgid} does not lead its own process group; "
                "start it with subprocess.Popen(..., start_new_session=True)"
            )
    except ProcessLookupError:
        pass  # the leader is gone already; its group may still have members
    _signal_group(pgid, signal.SIGTERM)
    if _wait_group(proc, pgid, timeout):
        return
    logger.warning("process group %d ignored SIGTERM for %.1f s; sending SIGKILL", pgid, timeout)
    _signal_group(pgid, signal.SIGKILL)
    if not _wait_group(proc, pgid, 5.0):
        logger.error("process group %d still has live processes after SIGKILL", pgid)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group(proc: subprocess.Popen, pgid: int, timeout: float) -> bool:
    """Reap the leader and wait until the group has no live member; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        proc.poll()  # reaps the leader, which would otherwise stay a zombie of ours
        if proc.returncode is not None and not live_group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes in group `pgid` that are not zombies (read from /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue  # exited while we looked
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members
