"""Normalised grounding coordinates ↔ pixels.

Convention (the same both ways, so `from_pixels(*to_pixels(x, y, w, h), w, h) == (x, y)`):
pixel coordinates are continuous, with 0 at the left / top edge of the first pixel and `width` /
`height` at the right / bottom edge of the last one. Pixel column `i` covers [i, i + 1) and its
centre is at u_px = i + 0.5. So

    u_px = x_norm * width        x_norm = u_px / width
    v_px = y_norm * height       y_norm = v_px / height

and the array cell that holds a point is `(row, col) = (floor(v_px), floor(u_px))` (clamped to the
image; see `to_pixel_index`). OpenCV's pinhole intrinsics put pixel centres on integers instead, so
a deprojection with `cx`, `cy` from OpenCV calibration should use `u_px - 0.5`, `v_px - 0.5`.

The functions work on Python floats and equally on numpy arrays of coordinates.
"""
from __future__ import annotations

import math
from typing import Any

from molmo_edge.grounding.points import GroundingError


def _check_size(width: Any, height: Any) -> None:
    for name, value in (("width", width), ("height", height)):
        try:
            ok = math.isfinite(float(value)) and float(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise GroundingError(f"image {name} must be a positive number of pixels, got {value!r}")


def to_pixels(x_norm: Any, y_norm: Any, width: int | float, height: int | float) -> tuple[Any, Any]:
    """(u_px, v_px) for normalised (x_norm, y_norm) in an image of `width` × `height` pixels."""
    _check_size(width, height)
    return x_norm * width, y_norm * height


def from_pixels(u_px: Any, v_px: Any, width: int | float, height: int | float) -> tuple[Any, Any]:
    """(x_norm, y_norm) for pixel coordinates (u_px, v_px); the inverse of `to_pixels`."""
    _check_size(width, height)
    return u_px / width, v_px / height


def to_pixel_index(x_norm: float, y_norm: float, width: int, height: int) -> tuple[int, int]:
    """(row, col) of the pixel that contains the point, clamped inside the image.

    Clamping matters at the far edge: x_norm = 1.0 (text value 1000) lands on u_px = width, one
    past the last column, and still means the last column.
    """
    _check_size(width, height)
    u_px, v_px = to_pixels(float(x_norm), float(y_norm), width, height)
    if not (math.isfinite(u_px) and math.isfinite(v_px)):
        raise GroundingError(f"point ({x_norm!r}, {y_norm!r}) is not finite")
    col = min(max(int(math.floor(u_px)), 0), int(width) - 1)
    row = min(max(int(math.floor(v_px)), 0), int(height) - 1)
    return row, col
