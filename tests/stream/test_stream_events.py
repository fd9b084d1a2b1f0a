"""The Event schema: plain-typed dicts, tolerant reading of newer versions, strict on bad numbers."""
from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from molmo_edge.stream.events import EVENT_SCHEMA_VERSION, Event, EventObject, Latency, objects_from_points
from molmo_edge.stream.tracker import TrackedPoint

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
unit = st.floats(0.0, 1.0)

objects = st.builds(
    EventObject, track_id=st.integers(1, 10**6), x=unit, y=unit, u_px=finite, v_px=finite, t_s=finite,
    xyz_m=st.none() | st.tuples(finite, finite, finite),
    state=st.sampled_from(["new", "tracked", "lost", "removed"]), window_object_id=st.integers(0, 100))
events = st.builds(
    Event, stream_id=st.text(max_size=20), seq=st.integers(0, 2**40), query=st.text(max_size=100),
    query_index=st.integers(0, 50), window_t0_s=finite, window_t1_s=finite, stamp_ns=st.integers(0, 2**63 - 1),
    frame_width_px=st.integers(1, 8192), frame_height_px=st.integers(1, 8192), objects=st.lists(objects, max_size=8),
    count=st.integers(0, 100), raw_text=st.text(max_size=200), parse_errors=st.lists(st.text(max_size=30), max_size=3),
    latency_ms=st.builds(Latency, vision=st.floats(0, 1e4), prefill=st.floats(0, 1e4), decode=st.floats(0, 1e4),
                         total=st.floats(0, 1e5), capture_to_publish=st.none() | st.floats(0, 1e5)))


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


@given(events)
def test_to_dict_is_plain_and_round_trips_through_json_and_msgpack(event: Event):
    data = event.to_dict()
    assert _plain(data) and data["v"] == EVENT_SCHEMA_VERSION
    assert Event.from_dict(json.loads(json.dumps(data))) == event
    assert Event.from_dict(msgpack.unpackb(msgpack.packb(data), raw=False)) == event


def _minimal(**extra) -> dict:
    return {"stream_id": "cam0", "seq": 0, "query": "Point to the red circle", "query_index": 0,
            "window_t0_s": 0.0, "window_t1_s": 3.5, "stamp_ns": 1, "frame_width_px": 640,
            "frame_height_px": 480, **extra}


def test_a_newer_message_with_unknown_fields_is_read():
    event = Event.from_dict(_minimal(v=2, future_field=[1, 2], objects=[
        {"track_id": 1, "x": 0.5, "y": 0.5, "u_px": 320, "v_px": 240, "t_s": 3.5, "confidence": 0.9}]))
    assert event.v == 2 and event.objects[0].track_id == 1 and "future_field" not in event.to_dict()


@pytest.mark.parametrize("bad", [
    {"seq": -1}, {"frame_width_px": 0}, {"window_t0_s": float("nan")}, {"stamp_ns": "soon"},
    {"latency_ms": {"total": -1.0}}, {"objects": [{"track_id": 1, "x": float("inf"), "y": 0, "u_px": 0,
                                                   "v_px": 0, "t_s": 0}]},
])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValidationError):
        Event.from_dict(_minimal(**bad))


def test_objects_from_tracker_points_get_pixels():
    points = [TrackedPoint(3, 0, 1.5, 0.25, 0.5, "tracked"), TrackedPoint(4, 1, 1.5, 1.0, 0.0, "new")]
    objs = objects_from_points(points, 640, 480, xyz_m={(3, 1.5): (0.1, 0.2, 1.5)})
    assert [(o.track_id, o.u_px, o.v_px, o.state, o.xyz_m) for o in objs] == [
        (3, 160.0, 240.0, "tracked", (0.1, 0.2, 1.5)), (4, 640.0, 0.0, "new", None)]
