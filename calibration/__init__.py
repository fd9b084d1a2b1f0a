"""molmo_edge.calibration: camera intrinsics and 2-D → 3-D (numpy + OpenCV), and INT8 calibration sets.

Camera geometry: `molmo_edge.calibration.camera` (intrinsics, CameraInfo YAML, depth lookup,
deprojection) and `molmo_edge.calibration.checkerboard` (intrinsics from checkerboard photos).
INT8 calibration data for the exporter lives in `molmo_edge.calibration.int8`; it is not imported
here so that camera geometry never pulls in the export dependencies.
"""
from __future__ import annotations

from .camera import (
    CameraIntrinsics,
    deproject_pixel,
    deproject_pixels,
    points_to_3d,
    project_point,
    project_points,
    read_camera_info_yaml,
    undistort_pixels,
    write_camera_info_yaml,
)
from .checkerboard import BoardSpec, CalibrationError, calibrate_from_images

__all__ = [
    "BoardSpec",
    "CalibrationError",
    "CameraIntrinsics",
    "calibrate_from_images",
    "deproject_pixel",
    "deproject_pixels",
    "points_to_3d",
    "project_point",
    "project_points",
    "read_camera_info_yaml",
    "undistort_pixels",
    "write_camera_info_yaml",
]
