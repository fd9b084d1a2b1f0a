"""`EventSubscriber`: receive molmo-edge events from Python (what `molmo-edge listen` uses).

    with EventSubscriber("tcp://127.0.0.1:5560") as subscriber:
        while (received := subscriber.receive(timeout_s=5.0)) is not None:
            print(received.event["objects"])

`seq` increases by one per event of a (stream_id, query_index); a jump means this subscriber
missed events (its queue was full and the publisher dropped them), counted in `stats.missed`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import zmq
from pydantic import BaseModel

from molmo_edge.publish.curve import CurveClientConfig, make_client_socket_secure
from molmo_edge.publish.endpoints import normalize_endpoint
from molmo_edge.publish.schema import DEFAULT_TOPIC, MessageError, decode_payload, split_message
from molmo_edge.publish.zmq_resources import close_zmq

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedEvent:
    topic: str
    event: dict[str, Any]  # the Event dict as sent (validate with Event.from_dict if wanted)
    received_ns: int  # wall clock at receipt


class SubscriberStats(BaseModel):
    received: int = 0
    missed: int = 0  # events skipped over, from gaps in seq
    undecodable: int = 0  # messages that were not molmo-edge events


class EventSubscriber:
    def __init__(self, endpoint: str, topics: Sequence[str] = (DEFAULT_TOPIC,), conflate: bool = False,
                 curve: CurveClientConfig | None = None, receive_hwm: int = 1000) -> None:
        self.endpoint = normalize_endpoint(endpoint)
        self.topics = list(topics)
        self.conflate = conflate
        self.curve = curve
        self.receive_hwm = receive_hwm
        self.stats = SubscriberStats()
        self._last_seq: dict[tuple[str, int], int] = {}
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None

    def open(self) -> EventSubscriber:
        if self._socket is not None:
            return self
        self._context = zmq.Context()
        try:
            socket = self._context.socket(zmq.SUB)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.RCVHWM, self.receive_hwm)
            if self.conflate:
                # Keep only the newest message; works with the publisher's single-frame latest socket.
                socket.setsockopt(zmq.CONFLATE, 1)
            if self.curve is not None:
                make_client_socket_secure(socket, self.curve)
            for topic in self.topics:
                socket.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
            socket.connect(self.endpoint)
        except BaseException:
            self.close()
            raise
        self._socket = socket
        return self

    def receive(self, timeout_s: float | None = None) -> ReceivedEvent | None:
        """The next event, or None after `timeout_s` with none. Undecodable messages are counted
        and skipped."""
        if self._socket is None:
            raise RuntimeError("EventSubscriber is not open: call open() or use `with`")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._socket.poll(remaining_ms, zmq.POLLIN):
                return None
            frames = self._socket.recv_multipart(zmq.NOBLOCK)
            try:
                topic, payload = split_message(frames)
                event = decode_payload(payload)
            except MessageError as exc:
                self.stats.undecodable += 1
                log.warning("skipped a message that is not a molmo-edge event: %s", exc)
                continue
            self._count_gap(event)
            self.stats.received += 1
            return ReceivedEvent(topic.decode("ascii", "replace"), event, time.time_ns())

    def _count_gap(self, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if not isinstance(seq, int) or self.conflate:
            return  # a conflating subscriber skips on purpose
        query_index = event.get("query_index")
        key = (str(event.get("stream_id")), query_index if isinstance(query_index, int) else -1)
        last = self._last_seq.get(key)
        if last is not None and seq > last + 1:
            self.stats.missed += seq - last - 1
        self._last_seq[key] = seq  # a smaller seq: the publisher restarted; start counting afresh

    def __iter__(self) -> Iterator[ReceivedEvent]:
        while (received := self.receive()) is not None:
            yield received

    def close(self) -> None:
        close_zmq([self._socket], None, self._context)
        self._socket, self._context = None, None

    def __enter__(self) -> EventSubscriber:
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()
