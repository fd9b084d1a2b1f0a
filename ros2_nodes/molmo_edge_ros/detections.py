"""Points as a vision_msgs/Detection2DArray, for consumers that expect the common detection type.

vision_msgs is not part of the pip-installable ROS wheels, so it is imported only if present
(a system ROS install has it: `apt install ros-$ROS_DISTRO-vision-msgs`). `VISION_MSGS_AVAILABLE`
says which; building without it raises `VisionMsgsUnavailableError`, and the node then simply
does not create the `~/detections` publisher.

Mapping: `Detection2D.id` = track id (documented as kept consistent across messages); the point is
`bbox.center` with size `box_size_px` (0: a point); `results[0].hypothesis.class_id` = the query's
label (or its index), `score` = confidence (1.0 when unknown); `results[0].pose` = the 3-D point
in the optical frame when known.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from std_msgs.msg import Header

from molmo_edge.errors import MolmoEdgeError

from .headers import copy_header
from .points import PointLike, points_to_columns

try:  # optional: not available as a wheel
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    VISION_MSGS_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the installation
    Detection2D = Detection2DArray = ObjectHypothesisWithPose = None  # type: ignore[assignment,misc]
    VISION_MSGS_AVAILABLE = False


class VisionMsgsUnavailableError(MolmoEdgeError, ImportError):
    """vision_msgs is not installed, so Detection2DArray cannot be built."""


def require_vision_msgs() -> None:
    if not VISION_MSGS_AVAILABLE:
        raise VisionMsgsUnavailableError(
            "vision_msgs is not installed, so ~/detections (vision_msgs/Detection2DArray) is off. "
            "It comes with a system ROS 2 (apt install ros-$ROS_DISTRO-vision-msgs); "
            "~/points (PointCloud2) carries the same data."
        )


def _set_center(center: Any, u_px: float, v_px: float) -> None:
    # vision_msgs >= 4 (Humble and later): center is vision_msgs/Pose2D with .position.x/.y;
    # older releases used geometry_msgs/Pose2D with .x/.y directly.
    if hasattr(center, "position"):
        center.position.x, center.position.y = u_px, v_px
    else:
        center.x, center.y = u_px, v_px


def points_to_detections(
    points: Iterable[PointLike],
    header: Header,
    query_labels: Sequence[str] | None = None,
    box_size_px: float = 0.0,
    default_query_index: int = 0,
) -> "Detection2DArray":
    """One Detection2D per point; raises VisionMsgsUnavailableError without vision_msgs."""
    require_vision_msgs()
    cols = points_to_columns(points, default_query_index)
    detections = []
    for i in range(len(cols)):
        det = Detection2D()
        det.header = copy_header(header)
        det.id = str(int(cols.track_id[i]))
        _set_center(det.bbox.center, float(cols.u_px[i]), float(cols.v_px[i]))
        det.bbox.size_x = det.bbox.size_y = float(box_size_px)
        hypothesis = ObjectHypothesisWithPose()
        query_index = int(cols.query_index[i])
        has_label = query_labels is not None and 0 <= query_index < len(query_labels)
        hypothesis.hypothesis.class_id = query_labels[query_index] if has_label else str(query_index)
        confidence = float(cols.confidence[i])
        hypothesis.hypothesis.score = 1.0 if math.isnan(confidence) else confidence
        if cols.has_xyz[i]:
            position = hypothesis.pose.pose.position
            position.x, position.y, position.z = (float(c) for c in cols.xyz_m[i])
        det.results = [hypothesis]
        detections.append(det)
    return Detection2DArray(header=copy_header(header), detections=detections)
