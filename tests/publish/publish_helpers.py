"""Shared helpers for the publish tests: events to send, and waiting for ZeroMQ's slow joiners."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from molmo_edge.stream.events import Event, EventObject, Latency


def make_event(seq: int, query_index: int = 0, n_objects: int = 2, text_bytes: int = 0,
               stream_id: str = "cam0") -> Event:
    return Event(
        stream_id=stream_id, seq=seq, query=f"Point to the red circle #{query_index}", query_index=query_index,
        window_t0_s=seq * 0.5, window_t1_s=seq * 0.5 + 3.5, stamp_ns=1_700_000_000_000_000_000 + seq,
        frame_width_px=640, frame_height_px=480,
        objects=[EventObject(track_id=k + 1, x=0.1 * k, y=0.5, u_px=64.0 * k, v_px=240.0, t_s=seq * 0.5 + 3.5,
                             state="tracked", window_object_id=k) for k in range(n_objects)],
        count=n_objects, raw_text="x" * text_bytes, latency_ms=Latency(vision=1.0, prefill=2.0, decode=3.0, total=6.5),
    )


def publish_until(publish: Callable[[int], object], done: Callable[[], bool], timeout_s: float = 20.0,
                  interval_s: float = 0.02) -> int:
    """Publish events seq = 0, 1, 2, ... until `done()` (a subscriber has joined) or time runs out."""
    seq = 0
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the subscriber never received anything")
        publish(seq)
        seq += 1
        time.sleep(interval_s)
    return seq


class QueryBook:
    """A small thread-safe handler, standing in for the pipeline's."""

    def __init__(self, status_delay_s: float = 0.0) -> None:
        self.queries = ["Point to the red circle"]
        self.paused = False
        self.status_delay_s = status_delay_s
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def set_query(self, query: str):
        with self._lock:
            self.calls.append("set_query")
            self.queries = [query]
            return {"queries": list(self.queries)}

    def add_query(self, query: str):
        with self._lock:
            self.calls.append("add_query")
            if query == "explode":
                raise RuntimeError("boom")
            self.queries.append(query)
            return {"index": len(self.queries) - 1}

    def remove_query(self, index: int):
        with self._lock:
            self.calls.append("remove_query")
            if index >= len(self.queries):
                raise IndexError(f"no query {index}; there are {len(self.queries)}")
            self.queries.pop(index)
            return {"queries": list(self.queries)}

    def pause(self):
        self.paused = True

    def resume(self):
        self.paused = False

    def status(self):
        time.sleep(self.status_delay_s)
        return {"paused": self.paused, "queries": len(self.queries)}

    def list_queries(self):
        return {"queries": list(self.queries)}
