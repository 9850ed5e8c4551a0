"""A folder built once and cached: atomic, resumable after a crash, and built by one caller.

The folder is built in a hidden sibling (`.NAME.build`) and renamed into place only after the
builder returned and a stamp recording the recipe was written, so a folder with a stamp is
always complete. A leftover build folder from a crash is deleted and built again; a folder
whose stamp records another recipe is rebuilt; a concurrent caller waits on a file lock
(fcntl) and then finds the folder its predecessor built.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

logger = logging.getLogger(__name__)

STAMP = "edgeseg-stamp.json"


def read_stamp(folder: Path) -> dict | None:
    """The stamp of a finished folder, or None when it has none or it cannot be read."""
    try:
        return json.loads((Path(folder) / STAMP).read_text())
    except (OSError, ValueError):
        return None


def build_once(final: Path, recipe: dict, build_into: Callable[[Path], dict]) -> Path:
    """Return `final`, first running `build_into(empty_folder)` unless a stamp shows `recipe`.

    `build_into` fills the folder it is given and returns facts for the stamp (versions);
    the stamp also records `recipe`, the build time and its duration.
    """
    final = Path(final)
    if _is_current(final, recipe):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(final.with_name(f".{final.name}.lock")):
        if _is_current(final, recipe):  # built by the caller we waited for
            return final
        build = final.with_name(f".{final.name}.build")
        if build.exists():
            logger.info("deleting %s, left half-built by an interrupted build", build)
            shutil.rmtree(build)
        build.mkdir()
        started = time.monotonic()
        facts = build_into(build)
        stamp = {
            "recipe": recipe,
            **facts,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (build / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        _replace_dir(build, final)
        logger.info("built %s in %.0f s", final, stamp["build_seconds"])
    return final


def _is_current(folder: Path, recipe: dict) -> bool:
    stamp = read_stamp(folder)
    return stamp is not None and stamp.get("recipe") == recipe


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is building %s; waiting for it", path.name)
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _replace_dir(new: Path, final: Path) -> None:
    """Rename `new` to `final`; an outdated `final` is moved aside first, then deleted."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)
