"""`EventSink`: anything that takes events (ZeroMQ publisher, JSONL file, Python callback).

Sinks never raise for a delivery problem and never block for long: a pipeline writes every event
to every sink, and one broken output must not stop the others or the stream.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from molmo_edge.stream.events import Event


@runtime_checkable
class EventSink(Protocol):
    def write(self, event: Event) -> bool:
        """Deliver one event; False when it was dropped or failed (counted by the sink)."""
        ...

    def close(self) -> None: ...


class MultiSink:
    """Writes each event to several sinks in turn."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = list(sinks)

    def write(self, event: Event) -> bool:
        results = [sink.write(event) for sink in self.sinks]
        return all(results)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
