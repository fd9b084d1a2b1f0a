"""Paths as JSON reports record them: meaningful on another machine.

`molmo-edge eval` and `molmo-edge bench` write the model folder (and bench its arguments) into
their reports, and some of those reports are committed (the shipped model's eval.json,
docs/bench-results/). An absolute path names one machine's checkout, so a report keeps:
- a folder inside the installed package (the shipped model) relative to the package's parent,
  e.g. "molmo_edge/assets/tiny-synthetic";
- a folder under the working directory relative to it;
- a folder under the system temporary directory (bench's throw-away export) as "<temporary>/NAME";
- anything else as given.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def portable_path(path: str | Path | None) -> str | None:
    if path is None:
        return None
    resolved = Path(path).resolve()
    for base in (Path.cwd().resolve(), _PACKAGE_PARENT):
        if resolved.is_relative_to(base) and resolved != base:
            return resolved.relative_to(base).as_posix()
    if resolved.is_relative_to(Path(tempfile.gettempdir()).resolve()):
        return f"<temporary>/{resolved.name}"
    return str(path)
