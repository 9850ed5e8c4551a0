"""`python -I runner/supervised.py COMMAND...`: run COMMAND so its whole process group ends with it.

TVM's tracker and RPC server start `popen_worker` interpreters that outlive them when only they
are killed. The farm starts each of them through this small leader of a new process group:
on SIGTERM or SIGINT the leader signals the whole group (SIGTERM, then SIGKILL after a grace
period), and the farm sets the leader to receive SIGTERM when the farm's process dies
(`runner.processes.die_with_parent`), so a SIGKILLed or crashed command leaves no helper behind.
The leader imports no TVM and exits with COMMAND's exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

GRACE_SECONDS = 5.0


def _stop_group(signum: int, frame: object) -> None:
    for handled in (signal.SIGTERM, signal.SIGINT):
        signal.signal(handled, signal.SIG_IGN)  # the leader outlives its own group signal
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while not _only_leader_left():
        if time.monotonic() > deadline:
            os.killpg(0, signal.SIGKILL)  # the leader too: nothing is left to wait for
        time.sleep(0.1)


def _only_leader_left() -> bool:
    """True when no other process of this group is alive (Linux /proc; elsewhere: False)."""
    group, me = os.getpgrp(), os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return False
    return True


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -I runner/supervised.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_group)
    signal.signal(signal.SIGINT, _stop_group)
    return subprocess.Popen(argv).wait()  # a handled signal resumes the wait (PEP 475)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
