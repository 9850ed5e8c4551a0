"""Stages of the pipeline, and the record that lets a rerun skip the finished ones.

A stage is one command of the project, run as its own process: its output is the user's to
read, a crash in it (TVM aborts, out of memory) stops that stage only, and the report can say
exactly which command made each file. `pipeline.json` holds, per finished stage, the command,
the seconds it took and the load average of the machine before and after it (a measurement
taken beside other work is not a measurement: the report shows it).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from latency_model.records import utc_now
from runner.errors import EdgesegError
from runner.machine import load_average

RECORD = "pipeline.json"


@dataclass(frozen=True)
class Stage:
    """One command of the pipeline: `python -m MODULE ARGS`, done when `outputs` exist."""

    name: str
    purpose: str
    module: str
    args: tuple[str, ...]
    outputs: tuple[Path, ...]
    after: tuple[str, ...] = ()  # stages whose rerun makes this one stale

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    def shell(self) -> str:
        """The command as a user would type it."""
        return shlex.join(["python", "-m", self.module, *self.args])


@dataclass
class StageRecord:
    """`pipeline.json`: what finished, with which command, how long it took, under what load."""

    path: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> StageRecord:
        if not path.is_file():
            return cls(path)
        try:
            stages = json.loads(path.read_text())["stages"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise EdgesegError(f"{path} is not a pipeline record ({err}).",
                               f"Delete {path} to run every stage again (each command still resumes its "
                               "own finished work), or choose another output folder.") from None
        return cls(path, dict(stages))

    def is_done(self, stage: Stage) -> bool:
        entry = self.stages.get(stage.name)
        return bool(entry) and entry.get("args") == list(stage.args) and all(p.exists() for p in stage.outputs)

    def finish(self, stage: Stage, seconds: float, load_before: Sequence[float]) -> None:
        self.stages[stage.name] = {
            "args": list(stage.args), "command": stage.shell(), "seconds": round(seconds, 1),
            "finished": utc_now(), "load_average_before": list(load_before),
            "load_average_after": load_average()}  # fmt: skip
        staging = self.path.with_name(self.path.name + ".tmp")
        staging.write_text(json.dumps({"stages": self.stages}, indent=2) + "\n")
        os.replace(staging, self.path)  # a crash mid-write leaves the previous record whole


class StageRunner:
    """Runs stages into one record, batch after batch: a pipeline plans a round's stages only once
    the rounds before it are measured. A stage downstream of one run earlier (in any batch) is
    stale; stages are numbered and timed across batches."""

    def __init__(self, record: StageRecord, say: Callable[[str], None] = print) -> None:
        self.record, self.say = record, say
        self.ran: list[str] = []
        self.started, self.number = time.monotonic(), 0

    def run(self, stages: Sequence[Stage]) -> list[str]:
        """Run every stage that is not done (or is downstream of one that ran); the names run now.

        A stage that fails stops the pipeline with an error naming it; the stages finished before
        it stay recorded, so the same command picks up there."""
        ran_now: list[str] = []
        for stage in stages:
            self.number += 1
            label = f"stage {self.number} {stage.name}"
            if self.record.is_done(stage) and not set(stage.after) & set(self.ran):
                self.say(f"== {label}: done before, skipped ({stage.purpose})")
                continue
            self.say(f"\n== [{(time.monotonic() - self.started) / 60:.0f} min] {label}: {stage.purpose}\n"
                     f"$ {stage.shell()}")
            load_before, stage_started = load_average(), time.monotonic()
            code = _run(stage.command())
            if code != 0:
                raise EdgesegError(
                    f"Stage {self.number} {stage.name} failed (exit code {code}): `{stage.shell()}`; its own message is above.",
                    "Fix what it names and rerun the same pipeline command: the stages already done are skipped.")
            missing = [str(p) for p in stage.outputs if not p.exists()]
            if missing:
                raise EdgesegError(f"Stage {self.number} {stage.name} ended without writing {', '.join(missing)}.",
                                   f"Run `{stage.shell()}` by hand to see why.")
            self.record.finish(stage, time.monotonic() - stage_started, load_before)
            self.ran.append(stage.name)
            ran_now.append(stage.name)
        return ran_now


def _run(command: list[str]) -> int:
    """The command's exit code; Ctrl-C reaches it too (same process group): wait while it cleans up."""
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.wait()
        raise
