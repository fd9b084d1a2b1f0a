"""MarkerArray for RViz: DELETEALL first, a sphere and a label per 3-D point, stable colours."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("rclpy")
from visualization_msgs.msg import Marker  # noqa: E402

from molmo_edge.ros.headers import make_header  # noqa: E402
from molmo_edge.ros.markers import points_to_markers, track_colour  # noqa: E402
from molmo_edge.ros.points import RosPoint  # noqa: E402

pytestmark = pytest.mark.ros


def test_marker_array_contents():
    header = make_header(42_000_000_001, "cam_optical")
    points = [
        RosPoint(u_px=10, v_px=20, track_id=3, query_index=0, xyz_m=(0.1, -0.2, 1.5)),
        RosPoint(u_px=30, v_px=40, track_id=8, query_index=1, xyz_m=None),  # no depth: not drawn
        RosPoint(u_px=50, v_px=60, track_id=11, query_index=1, xyz_m=(-0.3, 0.0, 2.0)),
    ]
    array = points_to_markers(points, header, sphere_diameter_m=0.08, lifetime_s=1.5,
                              query_labels=["red circle", "blue star"])
    markers = array.markers
    assert markers[0].action == Marker.DELETEALL
    assert len(markers) == 1 + 2 * 2
    spheres = [m for m in markers if m.type == Marker.SPHERE]
    labels = [m for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    positions = [(m.pose.position.x, m.pose.position.y, m.pose.position.z) for m in spheres]
    assert positions[0] == pytest.approx((0.1, -0.2, 1.5)) and positions[1] == pytest.approx((-0.3, 0.0, 2.0))
    assert all(m.scale.x == m.scale.y == m.scale.z == 0.08 for m in spheres)
    assert [m.text for m in labels] == ["red circle #3", "blue star #11"]
    assert labels[0].pose.position.y == pytest.approx(-0.2 - 0.08)  # above the sphere (optical y is down)
    for m in markers:
        assert m.header.frame_id == "cam_optical" and m.header.stamp.sec == 42 and m.header.stamp.nanosec == 1
    for m in markers[1:]:
        assert m.action == Marker.ADD and m.lifetime.sec == 1 and m.lifetime.nanosec == 500_000_000
        assert m.pose.orientation.w == 1.0 and m.color.a == 1.0
    # (ns, id) pairs are unique, else RViz would overwrite one marker with another
    assert len({(m.ns, m.id) for m in markers[1:]}) == len(markers) - 1
    # sphere and label of one track share its colour
    assert (spheres[1].color.r, spheres[1].color.g, spheres[1].color.b) == pytest.approx(track_colour(11))
    assert (labels[1].color.r, labels[1].color.g, labels[1].color.b) == pytest.approx(track_colour(11))


def test_empty_input_still_clears_old_markers():
    array = points_to_markers([], make_header(0, "cam"))
    assert [m.action for m in array.markers] == [Marker.DELETEALL]


def test_track_colours_are_stable_across_processes_and_distinct_for_neighbours():
    here = [track_colour(i) for i in range(20)]
    code = "from molmo_edge.ros.markers import track_colour; print([track_colour(i) for i in range(20)])"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert repr(here) == there.strip()
    for a, b in zip(here, here[1:]):
        assert max(abs(x - y) for x, y in zip(a, b)) > 0.2
    assert all(0.0 <= c <= 1.0 for rgb in here for c in rgb)
