"""The node's result publishers: one window's events → ~/points, ~/markers, ~/detections, ~/events.

The pipeline gives one `Event` per window and query. The outputs group the events of one window
(same last frame) and publish, stamped with that frame's header:
- `~/points` (PointCloud2) and `~/markers` / `~/detections`: one message per window with the
  points of every query at the window's LAST frame (the frame the stamp names); query_index tells
  the queries apart. An empty cloud is published too: "nothing there now" is an answer.
- `~/events` (std_msgs/String): each Event as JSON, all of its points over the window's frames —
  the same contract as ZeroMQ and JSONL.

All publishers are lifecycle publishers (they publish only while the node is active), reliable,
depth 10.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from rclpy.lifecycle import LifecycleNode
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from molmo_edge.stream.events import Event

from .detections import VISION_MSGS_AVAILABLE, Detection2DArray, points_to_detections
from .headers import copy_header
from .markers import points_to_markers
from .pointcloud import points_to_pointcloud
from .points import RosPoint

RESULT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# A point counts as "at the last frame" when its time is this close to the window's end.
_SAME_FRAME_S = 1e-6


@dataclass(frozen=True)
class OutputSettings:
    """What the parameters say about the outputs (re-read on every change)."""

    frame_id: str = ""  # "" = the image's own frame_id
    publish_markers: bool = True
    publish_detections: bool = True
    marker_lifetime_s: float = 0.0


def group_by_window(events: Sequence[Event]) -> list[list[Event]]:
    """Events of the same window (same last frame and span) together, in order."""
    groups: dict[tuple[int, float, float], list[Event]] = {}
    for event in events:
        groups.setdefault((event.stamp_ns, event.window_t0_s, event.window_t1_s), []).append(event)
    return list(groups.values())


def last_frame_points(events: Sequence[Event]) -> list[RosPoint]:
    """The points of one window's events that lie on its last frame, with their query index."""
    points = []
    for event in events:
        for obj in event.objects:
            if abs(obj.t_s - event.window_t1_s) <= _SAME_FRAME_S:
                points.append(RosPoint(u_px=obj.u_px, v_px=obj.v_px, track_id=obj.track_id,
                                       query_index=event.query_index, xyz_m=obj.xyz_m))
    return points


def query_labels(events: Sequence[Event]) -> list[str]:
    """Query text by query index (a gap where an index has no event): marker and class labels."""
    size = max((e.query_index for e in events), default=-1) + 1
    labels = [str(i) for i in range(size)]
    for event in events:
        labels[event.query_index] = event.query
    return labels


class NodeOutputs:
    """The result publishers of one configured node."""

    def __init__(self, node: LifecycleNode) -> None:
        self._node = node
        self.points = node.create_lifecycle_publisher(PointCloud2, "~/points", RESULT_QOS)
        self.markers = node.create_lifecycle_publisher(MarkerArray, "~/markers", RESULT_QOS)
        self.events = node.create_lifecycle_publisher(String, "~/events", RESULT_QOS)
        self.detections = (node.create_lifecycle_publisher(Detection2DArray, "~/detections", RESULT_QOS)
                           if VISION_MSGS_AVAILABLE else None)

    def publish_window(self, events: Sequence[Event], source_header: Header, settings: OutputSettings) -> int:
        """Publish one window's events stamped with its last frame's header; the number of points."""
        header = copy_header(source_header, settings.frame_id or None)
        points = last_frame_points(events)
        labels = query_labels(events)
        self.points.publish(points_to_pointcloud(points, header))
        if settings.publish_markers:
            self.markers.publish(points_to_markers(points, header, lifetime_s=settings.marker_lifetime_s,
                                                   query_labels=labels))
        if settings.publish_detections and self.detections is not None:
            self.detections.publish(points_to_detections(points, header, query_labels=labels))
        for event in events:
            self.events.publish(String(data=json.dumps(event.to_dict(), separators=(",", ":"))))
        return len(points)

    def destroy(self) -> None:
        for publisher in (self.points, self.markers, self.events, self.detections):
            if publisher is not None:
                self._node.destroy_lifecycle_publisher(publisher)
