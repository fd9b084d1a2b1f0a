"""The wire format of events: topics, msgpack payloads, the single-frame latest-state layout.

ZeroMQ PUB socket (`EventPublisher.endpoint`), one message per event, two frames:
    frame 0: topic, ASCII: `events/<query_index>/`   (base topic configurable, default `events`)
    frame 1: msgpack map = `Event.to_dict()`, always with `"v"` (the schema version)
ZeroMQ matches subscriptions by prefix on frame 0 only, so subscribe to
    `events`        every event,
    `events/2/`     only query 2 (the trailing slash keeps `events/2` from also matching 20, 21...).

Latest-state PUB socket (`EventPublisher.latest_endpoint`), for subscribers that set
`ZMQ_CONFLATE` (keep only the newest message; it cannot work with multipart messages), one frame:
    topic bytes, one NUL byte (0x00), msgpack map           (`split_single_frame` undoes it)
A conflating subscriber keeps the newest message of everything it subscribed to, so with several
queries open one conflating socket per query topic.

JSONL: one `Event.to_dict()` per line, compact JSON, UTF-8.

Never pickle: msgpack and JSON carry data only (`recv_pyobj` would run code from the network).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgpack

from molmo_edge.errors import MolmoEdgeError
from molmo_edge.stream.events import EVENT_SCHEMA_VERSION, Event

DEFAULT_TOPIC = "events"
TOPIC_SEPARATOR = b"\x00"  # between topic and payload in the single-frame layout
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024  # refuse to unpack anything bigger (a hostile or broken peer)


class MessageError(MolmoEdgeError):
    """A received message that is not a molmo-edge event (bad framing, not msgpack, no version)."""


def check_topic(topic: str) -> str:
    if not topic or "\x00" in topic or not topic.isascii():
        raise ValueError(f"a topic must be non-empty ASCII without NUL bytes, got {topic!r}")
    return topic


def query_topic(base_topic: str, query_index: int) -> bytes:
    """Frame 0 of the event of query `query_index`: `events/3/`."""
    return f"{base_topic}/{int(query_index)}/".encode("ascii")


def event_dict(event: Event | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(event, Event):
        return event.to_dict()
    if isinstance(event, Mapping):
        data = dict(event)
        data.setdefault("v", EVENT_SCHEMA_VERSION)
        return data
    raise TypeError(f"expected an Event or a dict, got {type(event).__name__}")


def encode_payload(event: Event | Mapping[str, Any]) -> bytes:
    """msgpack bytes of the event dict (strings as str, bytes as bin; no extension types)."""
    return msgpack.packb(event_dict(event), use_bin_type=True)


def decode_payload(payload: bytes) -> dict[str, Any]:
    """The event dict in a msgpack payload; `MessageError` when it is not one."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError(f"payload of {len(payload)} bytes is larger than {MAX_PAYLOAD_BYTES}")
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types
        raise MessageError(f"payload is not msgpack: {exc}") from exc
    if not isinstance(data, dict):
        raise MessageError(f"payload is a msgpack {type(data).__name__}, expected a map")
    if not isinstance(data.get("v"), int):
        raise MessageError("payload has no integer schema version 'v'")
    return data


def single_frame(topic: bytes, payload: bytes) -> bytes:
    return topic + TOPIC_SEPARATOR + payload


def split_single_frame(message: bytes) -> tuple[bytes, bytes]:
    topic, separator, payload = message.partition(TOPIC_SEPARATOR)
    if not separator:
        raise MessageError("single-frame message has no NUL byte between topic and payload")
    return topic, payload


def split_message(frames: list[bytes]) -> tuple[bytes, bytes]:
    """(topic, payload) of a received message in either layout."""
    if len(frames) == 2:
        return frames[0], frames[1]
    if len(frames) == 1:
        return split_single_frame(frames[0])
    raise MessageError(f"expected 1 or 2 frames, got {len(frames)}")


def to_json_line(event: Event | Mapping[str, Any]) -> str:
    """One JSONL line (no trailing newline). Raises ValueError for NaN / infinity."""
    return json.dumps(event_dict(event), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
