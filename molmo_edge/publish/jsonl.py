"""`JsonlSink`: one event per line in a file, flushed per line, never crashing the stream.

A full disk, a removed USB stick or a revoked permission is counted (`stats.errors`) and logged,
and the stream goes on; writing resumes when the disk has room again. Lines are written with
unbuffered writes so that a failed line is not retried from a hidden buffer later, and the next
line after a failure starts on a fresh line, so a reader never sees two events glued together.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from molmo_edge.errors import ConfigError
from molmo_edge.publish.schema import to_json_line
from molmo_edge.stream.events import Event

log = logging.getLogger(__name__)


class JsonlStats(BaseModel):
    written: int = 0
    errors: int = 0  # lines that could not be written (disk full, I/O error) or serialised
    last_error: str | None = None


class JsonlSink:
    def __init__(self, path: str | Path, append: bool = True) -> None:
        self.path = Path(path)
        self.stats = JsonlStats()
        self._line_broken = False  # the last write failed part-way: start the next on a new line
        try:
            if self.path.parent != Path("") and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # Raw (unbuffered) binary file: every write goes straight to the OS.
            self._file = open(self.path, "ab" if append else "wb", buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot open {self.path} for writing events: {exc}") from exc

    def write(self, event: Event | Mapping[str, Any]) -> bool:
        try:
            line = (to_json_line(event) + "\n").encode("utf-8")
        except (ValueError, TypeError) as exc:
            return self._failed(f"event cannot be written as JSON: {exc}")
        if self._line_broken:
            line = b"\n" + line
        try:
            view = memoryview(line)
            while view:
                written = self._file.write(view)
                if not written:
                    raise OSError("the file accepted no bytes")
                view = view[written:]
        except (OSError, ValueError) as exc:
            self._line_broken = True
            return self._failed(f"cannot write to {self.path}: {exc}")
        self._line_broken = False
        self.stats.written += 1
        return True

    def _failed(self, message: str) -> bool:
        self.stats.errors += 1
        self.stats.last_error = message
        if self.stats.errors in (1, 10, 100) or self.stats.errors % 1000 == 0:
            log.error("%s (%d errors so far; the stream goes on)", message, self.stats.errors)
        return False

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            self._failed(f"closing {self.path}: {exc}")

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
