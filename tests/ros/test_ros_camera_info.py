"""sensor_msgs/CameraInfo ↔ CameraIntrinsics."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

from molmo_edge.calibration.intrinsics import CameraIntrinsics  # noqa: E402
from molmo_edge.errors import ConfigError  # noqa: E402
from molmo_edge.ros.camera_info import camera_info_to_intrinsics, intrinsics_to_camera_info  # noqa: E402
from molmo_edge.ros.headers import make_header  # noqa: E402

pytestmark = pytest.mark.ros


def test_round_trip_through_the_message():
    camera = CameraIntrinsics(width_px=848, height_px=480, fx_px=421.3, fy_px=420.9, cx_px=425.1, cy_px=241.7,
                              distortion_coeffs=(-0.05, 0.06, 0.0001, -0.0002, -0.02))
    msg = intrinsics_to_camera_info(camera, make_header(9, "cam_optical"))
    msg = deserialize_message(serialize_message(msg), CameraInfo)
    assert msg.header.frame_id == "cam_optical" and list(msg.p)[:3] == [421.3, 0.0, 425.1]
    back = camera_info_to_intrinsics(msg)
    assert back.model_dump(exclude={"rectification", "projection"}) == camera.model_dump(
        exclude={"rectification", "projection"})


def test_driver_messages_with_empty_distortion_and_uncalibrated_cameras():
    msg = CameraInfo(width=640, height=480, distortion_model="plumb_bob", d=[],
                     k=[500.0, 0, 320, 0, 500, 240, 0, 0, 1])
    assert not camera_info_to_intrinsics(msg).has_distortion
    with pytest.raises(ConfigError, match="not calibrated"):
        camera_info_to_intrinsics(CameraInfo(width=640, height=480))  # all-zero K
    with pytest.raises(ConfigError, match="distortion_model|coefficients"):
        camera_info_to_intrinsics(CameraInfo(width=640, height=480, distortion_model="rational_polynomial",
                                             d=[0.1, 0.2], k=[500.0, 0, 320, 0, 500, 240, 0, 0, 1]))


def test_camera_info_and_depth_messages_give_3d_points():
    """The path the node takes: CameraInfo + a 16UC1 depth Image message → 3-D points."""
    import numpy as np

    from molmo_edge.calibration.camera import points_to_3d, project_points
    from molmo_edge.ros.image_conversion import image_to_numpy, numpy_to_image

    info = CameraInfo(width=320, height=240, distortion_model="plumb_bob", d=[-0.1, 0.02, 0.0, 0.0, 0.0],
                      k=[250.0, 0, 161, 0, 251, 119, 0, 0, 1])
    camera = camera_info_to_intrinsics(deserialize_message(serialize_message(info), CameraInfo))
    xyz_m = np.array([[0.2, -0.1, 1.2], [-0.3, 0.25, 1.2]])
    depth_msg = numpy_to_image(np.full((240, 320), 1200, np.uint16), "16UC1", make_header(1, "cam"))
    depth_msg = deserialize_message(serialize_message(depth_msg), type(depth_msg))
    uv_px = project_points(camera, xyz_m)
    got = points_to_3d(camera, uv_px, image_to_numpy(depth_msg), depth_msg.encoding)
    np.testing.assert_allclose(got, xyz_m, atol=1e-9)
