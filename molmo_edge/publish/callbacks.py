"""`CallbackSink`: hand each event to a Python function, without letting it break the stream."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from molmo_edge.stream.events import Event

log = logging.getLogger(__name__)


class CallbackStats(BaseModel):
    called: int = 0
    errors: int = 0  # calls that raised
    last_error: str | None = None


class CallbackSink:
    """Calls `callback(event)` (or `callback(event.to_dict())` with `as_dict=True`) per event.

    The callback runs in the pipeline's thread, so it should be quick; an exception it raises is
    logged and counted, and the stream goes on.
    """

    def __init__(self, callback: Callable[[Any], object], as_dict: bool = False, name: str | None = None) -> None:
        self.callback = callback
        self.as_dict = as_dict
        self.name = name or getattr(callback, "__qualname__", repr(callback))
        self.stats = CallbackStats()

    def write(self, event: Event) -> bool:
        self.stats.called += 1
        try:
            self.callback(event.to_dict() if self.as_dict else event)
        except Exception as exc:  # noqa: BLE001 - user code must not stop the stream
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            if self.stats.errors in (1, 10, 100) or self.stats.errors % 1000 == 0:
                log.exception("event callback %s raised (%d errors so far; the stream goes on)",
                              self.name, self.stats.errors)
            return False
        return True

    def close(self) -> None:
        pass
