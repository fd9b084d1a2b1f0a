"""Read and write camera intrinsics as the YAML that ROS uses for CameraInfo.

This is the layout of `camera_calibration_parsers` (what `camera_calibration` saves as ost.yaml and
`camera_info_manager` loads from `camera_info_url`):

    image_width: 640
    image_height: 480
    camera_name: front
    camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
    distortion_model: plumb_bob
    distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, p1, p2, k3]}
    rectification_matrix: {rows: 3, cols: 3, data: [...]}
    projection_matrix: {rows: 3, cols: 4, data: [...]}

The calibration quality (RMS reprojection error, views used, standard errors) has no key in that layout; it is
written as a comment so that ROS tools read the file unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import yaml

from molmo_edge.errors import ConfigError

from .intrinsics import CameraIntrinsics

_IDENTITY_3X3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _matrix(rows: int, cols: int, data) -> dict[str, Any]:
    return {"rows": rows, "cols": cols, "data": [float(x) for x in data]}


def camera_info_to_dict(camera: CameraIntrinsics) -> dict[str, Any]:
    """The CameraInfo YAML mapping of `camera`, keys in the order ROS writes them.

    With no stored R and P (a monocular calibration), R is the identity and P = [K | 0]: pixels
    undistorted with P = K (what `undistort_pixels` does) are then exactly the rectified image's
    pixels, so ROS's image_proc and this package agree.
    """
    k = camera.camera_matrix
    projection = camera.projection
    if projection is None:
        projection = tuple(np.hstack([k, np.zeros((3, 1))]).ravel())
    return {
        "image_width": camera.width_px,
        "image_height": camera.height_px,
        "camera_name": camera.camera_name,
        "camera_matrix": _matrix(3, 3, k.ravel()),
        "distortion_model": camera.distortion_model,
        "distortion_coefficients": _matrix(1, len(camera.distortion_coeffs), camera.distortion_coeffs),
        "rectification_matrix": _matrix(3, 3, camera.rectification or _IDENTITY_3X3),
        "projection_matrix": _matrix(3, 4, projection),
    }


def _read_matrix(d: dict, key: str, rows: int | None, cols: int | None, where: str) -> list[float]:
    node = d.get(key)
    if not isinstance(node, dict) or "data" not in node:
        raise ConfigError(f"{where}: `{key}` must be a mapping with rows, cols and data")
    data = node["data"]
    if not isinstance(data, list):
        raise ConfigError(f"{where}: `{key}.data` must be a list of numbers")
    try:
        values = [float(x) for x in data]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: `{key}.data` must hold numbers only, got {data!r}") from None
    n_rows = node.get("rows", rows)
    n_cols = node.get("cols", cols)
    if (rows is not None and n_rows != rows) or (cols is not None and n_cols != cols):
        raise ConfigError(f"{where}: `{key}` must be {rows}x{cols}, the file says {n_rows}x{n_cols}")
    if isinstance(n_rows, int) and isinstance(n_cols, int) and n_rows * n_cols != len(values):
        raise ConfigError(f"{where}: `{key}` says {n_rows}x{n_cols} but holds {len(values)} values")
    return values


def camera_info_from_dict(d: dict[str, Any], where: str = "camera info") -> CameraIntrinsics:
    """Parse a CameraInfo YAML mapping; ConfigError naming the bad key when it does not fit."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a YAML mapping at the top level, got {type(d).__name__}")
    missing = [k for k in ("image_width", "image_height", "camera_matrix") if k not in d]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)} (is this a ROS camera_info YAML?)")
    k = np.array(_read_matrix(d, "camera_matrix", 3, 3, where)).reshape(3, 3)
    coeffs: list[float] = []
    if "distortion_coefficients" in d:
        coeffs = _read_matrix(d, "distortion_coefficients", 1, None, where)
    rectification = _read_matrix(d, "rectification_matrix", 3, 3, where) if "rectification_matrix" in d else None
    projection = _read_matrix(d, "projection_matrix", 3, 4, where) if "projection_matrix" in d else None
    try:
        return CameraIntrinsics.from_camera_matrix(
            k,
            width_px=d["image_width"],
            height_px=d["image_height"],
            distortion_coeffs=coeffs,
            distortion_model=d.get("distortion_model") or "plumb_bob",
            camera_name=str(d.get("camera_name") or "camera"),
            rectification=tuple(rectification) if rectification is not None else None,
            projection=tuple(projection) if projection is not None else None,
        )
    except (pydantic.ValidationError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def write_camera_info_yaml(camera: CameraIntrinsics, path: str | Path) -> Path:
    """Write `camera` as a ROS CameraInfo YAML file (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["# Camera intrinsics in the ROS camera_info YAML layout (camera_calibration_parsers)."]
    if camera.rms_reprojection_error_px is not None:
        header.append(f"# RMS reprojection error: {camera.rms_reprojection_error_px:.4f} px")
    if camera.n_views is not None:
        header.append(f"# Checkerboard views used: {camera.n_views}")
    if camera.intrinsics_std_px is not None:
        header.append("# Standard errors (px): fx {:.3f}, fy {:.3f}, cx {:.3f}, cy {:.3f}".format(
            *camera.intrinsics_std_px))
    # default_flow_style=None writes the matrices' data lists inline, as ROS does.
    body = yaml.safe_dump(camera_info_to_dict(camera), sort_keys=False, default_flow_style=None)
    path.write_text("\n".join(header) + "\n" + body)
    return path


def read_camera_info_yaml(path: str | Path) -> CameraIntrinsics:
    """Read a ROS CameraInfo YAML file (as written by camera_calibration or by this package)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read camera info file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return camera_info_from_dict(data, where=str(path))
