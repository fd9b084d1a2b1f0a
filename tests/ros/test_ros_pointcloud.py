"""PointCloud2 packing and unpacking, through real CDR serialisation."""
from __future__ import annotations

import math
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from molmo_edge.ros.headers import make_header  # noqa: E402
from molmo_edge.ros.pointcloud import (  # noqa: E402
    PointCloudFormatError,
    pointcloud_to_array,
    points_to_pointcloud,
)
from molmo_edge.ros.points import RosPoint  # noqa: E402

pytestmark = pytest.mark.ros

f32 = dict(allow_nan=False, allow_infinity=False, width=32)
points_strategy = st.lists(
    st.builds(
        RosPoint,
        u_px=st.floats(-1e4, 1e4, **f32),
        v_px=st.floats(-1e4, 1e4, **f32),
        track_id=st.integers(-1, 2**31 - 1),
        query_index=st.integers(0, 1000),
        xyz_m=st.one_of(st.none(), st.tuples(st.floats(-100, 100, **f32), st.floats(-100, 100, **f32),
                                             st.floats(0.0625, 100, **f32))),
        confidence=st.one_of(st.just(math.nan), st.floats(0, 1, **f32)),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(points=points_strategy)
def test_pack_unpack_identity_including_unknown_depth(points):
    header = make_header(1_700_000_000_123_456_789, "camera_color_optical_frame")
    msg = deserialize_message(serialize_message(points_to_pointcloud(points, header)), PointCloud2)
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert msg.header.stamp.sec == 1_700_000_000 and msg.header.stamp.nanosec == 123_456_789
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, len(points), 32, 32 * len(points))
    assert msg.is_dense == all(p.xyz_m is not None for p in points)
    cloud = pointcloud_to_array(msg)
    assert len(cloud) == len(points)
    for record, point in zip(cloud, points):
        assert record["u"] == np.float32(point.u_px) and record["v"] == np.float32(point.v_px)
        assert record["track_id"] == point.track_id and record["query_index"] == point.query_index
        if point.xyz_m is None:
            assert np.isnan(record["x"]) and np.isnan(record["y"]) and np.isnan(record["z"])
        else:
            assert tuple(record[["x", "y", "z"]].tolist()) == tuple(np.float32(c) for c in point.xyz_m)
        assert (np.isnan(record["confidence"]) and math.isnan(point.confidence)) or \
            record["confidence"] == np.float32(point.confidence)


def test_fields_are_what_rviz_and_other_tools_read():
    msg = points_to_pointcloud([RosPoint(1, 2, 3)], make_header(0, "f"))
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("u", 12, PointField.FLOAT32, 1), ("v", 16, PointField.FLOAT32, 1),
        ("track_id", 20, PointField.INT32, 1), ("query_index", 24, PointField.INT32, 1),
        ("confidence", 28, PointField.FLOAT32, 1),
    ]
    assert not msg.is_bigendian


def test_event_objects_pack_with_the_events_query_index():
    """The stream's EventObjects (which carry no query_index themselves) pack directly."""
    events = pytest.importorskip("molmo_edge.stream.events")
    objects = [events.EventObject(track_id=4, x=0.5, y=0.25, u_px=320.0, v_px=120.0, t_s=1.5),
               events.EventObject(track_id=9, x=0.1, y=0.9, u_px=64.0, v_px=432.0, t_s=1.5, xyz_m=(0.1, 0.2, 1.3))]
    cloud = pointcloud_to_array(points_to_pointcloud(objects, make_header(0, "cam"), default_query_index=2))
    assert cloud["query_index"].tolist() == [2, 2]
    assert cloud["track_id"].tolist() == [4, 9]
    assert cloud["u"].tolist() == [320.0, 64.0]
    assert np.isnan(cloud[0][["x", "y", "z"]].tolist()).all()
    np.testing.assert_allclose(cloud[1][["x", "y", "z"]].tolist(), (0.1, 0.2, 1.3), rtol=1e-6)


def test_unpacks_a_foreign_big_endian_padded_organised_cloud():
    """A cloud from another producer: big-endian, padded points and rows, two rows, a float64 field."""
    dtype = np.dtype({"names": ["x", "intensity"], "formats": [">f4", ">f8"], "offsets": [0, 8], "itemsize": 20})
    rows = np.zeros((2, 3), dtype)
    rows["x"] = [[1, 2, 3], [4, 5, 6]]
    rows["intensity"] = [[0.5, 1.5, 2.5], [3.5, 4.5, 5.5]]
    row_step = 3 * 20 + 4
    data = np.zeros((2, row_step), np.uint8)
    data[:, :60] = np.frombuffer(rows.tobytes(), np.uint8).reshape(2, 60)
    msg = PointCloud2(height=2, width=3, is_bigendian=True, point_step=20, row_step=row_step,
                      fields=[PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
                              PointField(name="intensity", offset=8, datatype=PointField.FLOAT64, count=1)],
                      data=data.tobytes())
    cloud = pointcloud_to_array(msg)
    assert cloud["x"].tolist() == [1, 2, 3, 4, 5, 6]
    assert cloud["intensity"].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]


def test_inconsistent_cloud_is_refused():
    msg = points_to_pointcloud([RosPoint(1, 2, 3), RosPoint(4, 5, 6)], make_header(0, "f"))
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(PointCloudFormatError, match="does not fit"):
        pointcloud_to_array(msg)
