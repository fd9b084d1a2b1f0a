"""vision_msgs/Detection2DArray: the import guard (vision_msgs is not available as a wheel)."""
from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("rclpy")
from molmo_edge.errors import MolmoEdgeError  # noqa: E402
from molmo_edge.ros import detections  # noqa: E402
from molmo_edge.ros.headers import make_header  # noqa: E402
from molmo_edge.ros.points import RosPoint  # noqa: E402

pytestmark = pytest.mark.ros

HAVE_VISION_MSGS = importlib.util.find_spec("vision_msgs") is not None


def test_availability_flag_matches_the_installation():
    assert detections.VISION_MSGS_AVAILABLE is HAVE_VISION_MSGS


@pytest.mark.skipif(HAVE_VISION_MSGS, reason="vision_msgs is installed here; the guard path cannot run")
def test_without_vision_msgs_building_raises_a_clear_error():
    with pytest.raises(detections.VisionMsgsUnavailableError, match="apt install ros-\\$ROS_DISTRO-vision-msgs") as info:
        detections.points_to_detections([RosPoint(1, 2, 3)], make_header(0, "cam"))
    assert isinstance(info.value, MolmoEdgeError) and isinstance(info.value, ImportError)


@pytest.mark.skipif(not HAVE_VISION_MSGS, reason="vision_msgs is not installed (not available as a wheel)")
def test_with_vision_msgs_points_become_detections():
    points = [RosPoint(u_px=12.5, v_px=40.0, track_id=7, query_index=1, xyz_m=(0.1, 0.2, 1.0), confidence=0.8)]
    array = detections.points_to_detections(points, make_header(3, "cam"), query_labels=["a", "red circle"])
    (det,) = array.detections
    assert det.id == "7" and det.header.frame_id == "cam"
    center = det.bbox.center
    assert (getattr(center, "position", center).x, getattr(center, "position", center).y) == (12.5, 40.0)
    assert det.results[0].hypothesis.class_id == "red circle"
    assert det.results[0].hypothesis.score == pytest.approx(0.8)
    assert det.results[0].pose.pose.position.z == pytest.approx(1.0)
