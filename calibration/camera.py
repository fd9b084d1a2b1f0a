"""Camera geometry in one import: intrinsics, (un)distortion, depth lookup, 2-D → 3-D.

`molmo_edge.calibration.camera` is the module the stream and the ROS adapter use for 3-D points
(docs/internals.md); the pieces live in their own files and are gathered here.

Typical use, a model's point (u_px, v_px) on a colour image with a registered depth image:

    camera = read_camera_info_yaml("camera.yaml").scaled_to(frame_width_px, frame_height_px)
    xyz_m = points_to_3d(camera, uv_px, depth_image, encoding="16UC1")   # [N, 3], NaN = unknown
"""
from __future__ import annotations

import numpy as np

from .camera_info_yaml import (
    camera_info_from_dict,
    camera_info_to_dict,
    read_camera_info_yaml,
    write_camera_info_yaml,
)
from .depth import depth_at, depth_image_to_m, depth_m_per_unit, depths_at
from .intrinsics import CameraIntrinsics, DistortionModel
from .projection import (
    deproject_pixel,
    deproject_pixels,
    distort_pixels,
    pixels_to_rays,
    project_point,
    project_points,
    undistort_pixels,
)


def points_to_3d(
    camera: CameraIntrinsics,
    uv_px: np.ndarray,
    depth: np.ndarray,
    encoding: str,
    window_px: int = 5,
) -> np.ndarray:
    """Raw pixels [N, 2] + a depth image registered to the same image → points [N, 3] in metres.

    The depth is looked up at the raw pixel (the depth image is aligned with the raw colour
    image), then the pixel is undistorted and deprojected. Rows with no valid depth are NaN.
    """
    if depth.shape[:2] != (camera.height_px, camera.width_px):
        raise ValueError(
            f"depth image is {depth.shape[1]}x{depth.shape[0]} but the intrinsics are for "
            f"{camera.width_px}x{camera.height_px}; use camera.scaled_to(...) or a registered depth image"
        )
    depth_m = depths_at(depth, uv_px, encoding, window_px)  # [N]
    return deproject_pixels(camera, uv_px, depth_m)


__all__ = [
    "CameraIntrinsics",
    "DistortionModel",
    "camera_info_from_dict",
    "camera_info_to_dict",
    "read_camera_info_yaml",
    "write_camera_info_yaml",
    "depth_at",
    "depths_at",
    "depth_image_to_m",
    "depth_m_per_unit",
    "undistort_pixels",
    "distort_pixels",
    "pixels_to_rays",
    "deproject_pixel",
    "deproject_pixels",
    "project_point",
    "project_points",
    "points_to_3d",
]
