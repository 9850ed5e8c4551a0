"""The one exception family of edgeseg.

Every problem a user can fix is an `EdgesegError` carrying two sentences: what is wrong and
what to do about it. Libraries raise; only a command line (`runner.cli_support.run_main`)
prints, and turns the error into a non-zero exit code without a traceback.
"""

from __future__ import annotations


class EdgesegError(Exception):
    """A problem the user can fix. `problem` says what is wrong, `fix` what to do."""

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem} {self.fix}".strip()


class DeviceError(EdgesegError):
    """The tracker, a device or a session is unreachable, busy or dropped."""

    exit_code = 3


class ArtifactError(EdgesegError):
    """A compiled artifact is missing files, corrupt, or does not fit the device."""

    exit_code = 4


class CheckFailed(EdgesegError):
    """A device computed numbers that differ from the artifact's reference output."""

    exit_code = 5
