"""`Event`: one message per processed window and query, the same on every output.

JSONL files, ZeroMQ (`molmo_edge.publish`) and ROS 2 (`~/events`, std_msgs/String JSON) all carry `Event.to_dict()`.

Schema rules (the schema only grows):
- `v` is the schema version, `EVENT_SCHEMA_VERSION`. Adding an optional field with a default does
  not bump it; anything a version-1 reader would misread does (and then only by adding fields).
- Fields are never removed, renamed, reused for another meaning or re-typed.
- Readers ignore fields they do not know, so an old reader keeps working on newer messages.
- Units are in the names (`_s`, `_ns`, `_px`, `_m`, `latency_ms`); `x`, `y` are normalised to the
  image (0..1, origin top-left), `u_px`, `v_px` are the same point in pixels (`u_px = x * width`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.stream.tracker import TrackedPoint, TrackState

EVENT_SCHEMA_VERSION = 1

# extra="ignore": a reader built for version 1 accepts messages from later versions.
# allow_inf_nan=False: NaN cannot be written as JSON and means a bug upstream; refuse it early.
_SCHEMA = ConfigDict(extra="ignore", allow_inf_nan=False)


class Latency(BaseModel):
    """Milliseconds spent per stage for this window."""

    model_config = _SCHEMA
    vision: float = Field(0.0, ge=0)  # ViT + connector for the frames not already cached
    prefill: float = Field(0.0, ge=0)
    decode: float = Field(0.0, ge=0)
    total: float = Field(0.0, ge=0)  # from the window being complete to the event being built
    capture_to_publish: float | None = Field(None, ge=0)  # last frame's capture to publish


class EventObject(BaseModel):
    model_config = _SCHEMA
    track_id: int
    x: float  # normalised 0..1 (as the model said it; may sit a hair outside the frame)
    y: float
    u_px: float
    v_px: float
    t_s: float  # media time of the frame this point is in
    xyz_m: tuple[float, float, float] | None = None  # camera optical frame, when depth is known
    state: TrackState = "tracked"
    window_object_id: int = 0  # the model's id inside this window (debugging the stitching)


class Event(BaseModel):
    model_config = _SCHEMA
    v: int = Field(EVENT_SCHEMA_VERSION, ge=1)
    stream_id: str
    seq: int = Field(ge=0)  # +1 per event of this stream_id and query_index; a gap = missed events
    query: str
    query_index: int = Field(ge=0)
    window_t0_s: float
    window_t1_s: float
    stamp_ns: int = Field(ge=0)  # wall-clock capture stamp of the window's last frame
    frame_width_px: int = Field(gt=0)
    frame_height_px: int = Field(gt=0)
    objects: list[EventObject] = Field(default_factory=list)
    count: int = Field(0, ge=0)
    raw_text: str = ""
    parse_errors: list[str] = Field(default_factory=list)
    latency_ms: Latency = Field(default_factory=Latency)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict / list / str / int / float / None only (msgpack, JSON and ROS friendly)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """Validate a received dict; unknown (newer) fields are ignored."""
        return cls.model_validate(data)


def objects_from_points(points: Iterable[TrackedPoint], width_px: int, height_px: int,
                        xyz_m: dict[tuple[int, float], tuple[float, float, float]] | None = None) -> list[EventObject]:
    """Tracker points -> event objects; `xyz_m` maps (track_id, t_s) to a 3-D point when known."""
    xyz_m = xyz_m or {}
    return [
        EventObject(track_id=p.track_id, x=p.x_norm, y=p.y_norm, u_px=p.x_norm * width_px,
                    v_px=p.y_norm * height_px, t_s=p.t_s, xyz_m=xyz_m.get((p.track_id, p.t_s)),
                    state=p.state, window_object_id=p.window_object_id)
        for p in points
    ]
