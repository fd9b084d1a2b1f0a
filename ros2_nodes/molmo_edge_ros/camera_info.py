"""sensor_msgs/CameraInfo ↔ `molmo_edge.calibration.camera.CameraIntrinsics`.

The node reads the camera's intrinsics from its `camera_info` topic (or from a camera_info YAML
via `molmo_edge.calibration.camera.read_camera_info_yaml`) to turn pixels and depth into 3-D.
"""
from __future__ import annotations

import numpy as np
import pydantic
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from molmo_edge.calibration.intrinsics import CameraIntrinsics
from molmo_edge.errors import ConfigError

from .headers import copy_header


def camera_info_to_intrinsics(msg: CameraInfo, camera_name: str = "camera") -> CameraIntrinsics:
    """CameraInfo → CameraIntrinsics; ConfigError for an uncalibrated (all-zero K) or odd message."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ConfigError(
            f"camera_info (frame {msg.header.frame_id!r}) has no focal length (K = {list(msg.k)}); "
            "the camera is not calibrated: run `molmo-edge calibrate-camera` and load the YAML"
        )
    if msg.binning_x > 1 or msg.binning_y > 1 or msg.roi.width or msg.roi.height:
        # Binning or a region of interest changes which image K applies to; not handled here.
        raise ConfigError("camera_info with binning or an ROI is not supported; publish full-resolution images")
    try:
        return CameraIntrinsics.from_camera_matrix(
            k,
            width_px=msg.width,
            height_px=msg.height,
            distortion_coeffs=list(msg.d),
            distortion_model=msg.distortion_model or "plumb_bob",
            camera_name=camera_name,
            rectification=tuple(float(x) for x in msg.r),
            projection=tuple(float(x) for x in msg.p),
        )
    except pydantic.ValidationError as exc:
        raise ConfigError(f"camera_info cannot be used: {exc}") from None


def intrinsics_to_camera_info(camera: CameraIntrinsics, header: Header) -> CameraInfo:
    """CameraIntrinsics → CameraInfo (R = I and P = [K | 0] unless the intrinsics carry their own)."""
    k = camera.camera_matrix
    msg = CameraInfo()
    msg.header = copy_header(header)
    msg.width, msg.height = camera.width_px, camera.height_px
    msg.distortion_model = camera.distortion_model
    msg.d = [float(c) for c in camera.distortion_coeffs]
    msg.k = k.ravel().tolist()
    msg.r = list(camera.rectification) if camera.rectification else np.eye(3).ravel().tolist()
    msg.p = list(camera.projection) if camera.projection else np.hstack([k, np.zeros((3, 1))]).ravel().tolist()
    return msg
