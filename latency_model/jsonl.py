"""Append-only JSON-lines files: durable appends, strict reads that forgive only a torn last line.

Every append writes one whole line and fsyncs it, so a crash loses at most the line being
written; that torn last line is skipped with a warning when read, and cut off before the next
append. Anything else that does not parse is an error naming the file and line: a data file is
never silently half-read. Measurement records (`latency_model.records`) and the whole-model
measurements of `latency_model.validate` are both kept this way.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, TypeVar

from runner.errors import EdgesegError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class LineKind(Generic[T]):
    """What the lines of a file are: the parser of one line and, for messages, what a line is
    called and which command writes such files."""

    parse: Callable[[Any], T]
    what: str  # "a measurement record"
    writer: str  # "`latency_model collect`"


def _corrupt(path: Path, lineno: int, why: str, kind: LineKind) -> EdgesegError:
    return EdgesegError(
        f"{path}, line {lineno}, is not {kind.what} ({why}).",
        f"Point to a JSONL file written by {kind.writer}, or remove or repair that line.",
    )


def _parse_lines(path: Path, text: str, kind: LineKind[T]) -> tuple[list[T], int | None]:
    """Entries of `text`, and the byte offset of a torn last line (None when there is none).

    Only a last line without its newline that starts like an object counts as torn: every
    append writes a whole line at once, so anything else is damage or a different file.
    """
    entries: list[T] = []
    lines = text.split("\n")
    offset = 0
    torn_at = None
    for lineno, line in enumerate(lines, start=1):
        start, offset = offset, offset + len(line.encode()) + 1
        if not line.strip():
            continue
        try:
            entries.append(kind.parse(json.loads(line)))
        except (ValueError, TypeError, KeyError, EdgesegError) as err:
            if lineno != len(lines) or not line.lstrip().startswith("{"):
                raise _corrupt(path, lineno, str(err), kind) from err
            log.warning("%s, line %d: skipping a torn last line (a crash while writing?)",
                        path, lineno)
            torn_at = start
    return entries, torn_at


def _read_text(path: Path, kind: LineKind) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise EdgesegError(f"{path} is not a text (JSONL) file: {err}.",
                           f"Point to a JSONL file written by {kind.writer}.") from err


def read_lines(path: str | os.PathLike, kind: LineKind[T]) -> list[T]:
    """All entries of an existing JSONL file; a torn last line is skipped with a warning."""
    path = Path(path)
    return _parse_lines(path, _read_text(path, kind), kind)[0]


class JsonLinesLog(Generic[T]):
    """An append-only JSONL file, safe against crashes and against threads writing at once.

    The first append validates the file and cuts off a torn last line, so that a resumed run
    never glues a new line onto half of an old one.
    """

    def __init__(self, path: str | os.PathLike, kind: LineKind[T]) -> None:
        self.path = Path(path)
        self.kind = kind
        self._lock = threading.Lock()
        self._repaired = False

    def read(self) -> list[T]:
        """Every entry; none when the file does not exist yet."""
        return read_lines(self.path, self.kind) if self.path.exists() else []

    def append_dict(self, entry: Mapping[str, Any]) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if not self._repaired:
                self._repair()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def _repair(self) -> None:
        self._repaired = True
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return
        _, torn_at = _parse_lines(self.path, _read_text(self.path, self.kind), self.kind)
        if torn_at is not None:  # (a corrupt file raised above: nothing is appended to it)
            log.warning("%s: cutting off the torn last line before appending", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(torn_at)
                f.flush()
                os.fsync(f.fileno())
        elif self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            with open(self.path, "ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
