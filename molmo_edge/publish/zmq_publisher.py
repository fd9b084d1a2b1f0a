"""`EventPublisher`: events out on ZeroMQ PUB sockets, never blocking the pipeline.

    with EventPublisher(PublisherConfig(endpoint="tcp://127.0.0.1:5560")) as publisher:
        publisher.publish(event)       # False when the event was dropped

Wire layout: `molmo_edge.publish.schema`. Never-block rules:
- sends use NOBLOCK; `zmq.Again` (a full queue) drops the event and counts it (`stats.dropped`);
- SNDHWM bounds what ZeroMQ queues per subscriber. A PUB socket drops messages for a subscriber
  whose queue is full without telling the sender, so a subscriber that stops reading costs the
  publisher nothing; it sees a gap in `seq` (see `EventSubscriber.stats.missed`);
- LINGER 0: closing never waits for slow subscribers.
The latest-state socket also sets CONFLATE, so it holds only the newest message per subscriber.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import zmq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from molmo_edge.publish.curve import (CurveAuthenticator, CurveServerConfig, make_server_socket_secure,
                                      start_authenticator)
from molmo_edge.publish.endpoints import DEFAULT_EVENTS_ENDPOINT, DEFAULT_LATEST_ENDPOINT, bind
from molmo_edge.publish.schema import DEFAULT_TOPIC, check_topic, encode_payload, query_topic, single_frame
from molmo_edge.publish.zmq_resources import close_zmq
from molmo_edge.stream.events import Event

log = logging.getLogger(__name__)


class PublisherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint: str = DEFAULT_EVENTS_ENDPOINT
    # Single-frame latest-state socket for ZMQ_CONFLATE subscribers; None: none.
    latest_endpoint: str | None = DEFAULT_LATEST_ENDPOINT
    topic: str = DEFAULT_TOPIC
    send_hwm: int = Field(100, ge=1)  # messages queued per subscriber before ZeroMQ drops
    curve: CurveServerConfig | None = None

    @field_validator("topic")
    @classmethod
    def _topic_is_ascii(cls, value: str) -> str:
        return check_topic(value)


class PublisherStats(BaseModel):
    sent: int = 0
    dropped: int = 0  # refused by ZeroMQ with EAGAIN (queue full)
    send_errors: int = 0  # other ZeroMQ errors on send
    encode_errors: int = 0  # events that could not be serialised (a bug upstream; never raised)
    latest_sent: int = 0
    latest_dropped: int = 0


class EventPublisher:
    """Thread-safe: any thread may call `publish`; one lock serialises the socket use."""

    def __init__(self, config: PublisherConfig | None = None, **overrides) -> None:
        if overrides:
            config = PublisherConfig.model_validate({**(config.model_dump() if config else {}), **overrides})
        self.config = config or PublisherConfig()
        self.stats = PublisherStats()
        self.endpoint: str | None = None  # bound endpoints, `*` ports resolved
        self.latest_endpoint: str | None = None
        self._lock = threading.Lock()
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._latest_socket: zmq.Socket | None = None
        self._auth: CurveAuthenticator | None = None

    def start(self) -> EventPublisher:
        if self._socket is not None:
            return self
        # An own context: its CURVE authenticator (one per context) and its shutdown are ours alone.
        self._context = zmq.Context()
        try:
            self._auth = start_authenticator(self._context, self.config.curve)
            self._socket = self._make_socket(conflate=False)
            self.endpoint = bind(self._socket, self.config.endpoint, "event publisher", self._secured)
            if self.config.latest_endpoint is not None:
                self._latest_socket = self._make_socket(conflate=True)
                self.latest_endpoint = bind(self._latest_socket, self.config.latest_endpoint,
                                            "latest-state publisher", self._secured)
        except BaseException:
            self.close()
            raise
        log.info("publishing events on %s (latest state: %s)", self.endpoint, self.latest_endpoint)
        return self

    @property
    def _secured(self) -> bool:
        return self.config.curve is not None

    def _make_socket(self, conflate: bool) -> zmq.Socket:
        socket = self._context.socket(zmq.PUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, self.config.send_hwm)
        if conflate:
            socket.setsockopt(zmq.CONFLATE, 1)
        if self.config.curve is not None:
            make_server_socket_secure(socket, self.config.curve)
        return socket

    def publish(self, event: Event | Mapping[str, Any]) -> bool:
        """Send one event; True when ZeroMQ took it. Never raises for a send problem, never blocks."""
        try:
            payload = encode_payload(event)
            query_index = event.query_index if isinstance(event, Event) else int(event["query_index"])
            topic = query_topic(self.config.topic, query_index)
        except Exception as exc:  # noqa: BLE001 - a bad event must not stop the stream
            with self._lock:
                self.stats.encode_errors += 1
            log.error("cannot serialise event (%s); dropped", exc)
            return False
        with self._lock:
            if self._socket is None:
                raise RuntimeError("EventPublisher is not started: call start() or use `with`")
            ok = self._send(self._socket, [topic, payload], "sent", "dropped")
            if self._latest_socket is not None:
                self._send(self._latest_socket, [single_frame(topic, payload)], "latest_sent", "latest_dropped")
        return ok

    write = publish  # the EventSink interface

    def _send(self, socket: zmq.Socket, frames: list[bytes], sent: str, dropped: str) -> bool:
        try:
            socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=len(frames[-1]) < 65536)
        except zmq.Again:
            setattr(self.stats, dropped, getattr(self.stats, dropped) + 1)
            return False
        except zmq.ZMQError as exc:
            self.stats.send_errors += 1
            if self.stats.send_errors in (1, 10, 100) or self.stats.send_errors % 1000 == 0:
                log.error("ZeroMQ send failed (%s); %d failures so far", exc, self.stats.send_errors)
            return False
        setattr(self.stats, sent, getattr(self.stats, sent) + 1)
        return True

    @property
    def curve_denied(self) -> int:
        """Clients refused by the CURVE allow-list so far."""
        return self._auth.denied if self._auth is not None else 0

    def close(self) -> None:
        with self._lock:
            close_zmq([self._socket, self._latest_socket], self._auth, self._context)
            self._socket = self._latest_socket = None
            self._auth, self._context = None, None

    def __enter__(self) -> EventPublisher:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()
