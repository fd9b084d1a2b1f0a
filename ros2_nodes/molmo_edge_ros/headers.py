"""std_msgs/Header ↔ integer nanoseconds (the `stamp_ns` used everywhere else in molmo-edge)."""
from __future__ import annotations

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

_NS_PER_S = 1_000_000_000


def time_from_ns(stamp_ns: int) -> Time:
    if stamp_ns < 0:
        raise ValueError(f"a ROS time cannot be negative, got {stamp_ns} ns")
    return Time(sec=int(stamp_ns // _NS_PER_S), nanosec=int(stamp_ns % _NS_PER_S))


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    """A header with the source image's capture stamp and frame (outputs copy both)."""
    return Header(stamp=time_from_ns(stamp_ns), frame_id=frame_id)


def copy_header(header: Header, frame_id: str | None = None) -> Header:
    """A copy (messages must not share a mutable header), optionally in another frame."""
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec),
                  frame_id=header.frame_id if frame_id is None else frame_id)
