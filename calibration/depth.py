"""Robust depth lookup in a depth image registered to the colour image.

Depth units follow the ROS convention (REP 118): `16UC1` holds millimetres, `32FC1` metres. A
zero, NaN or infinite value means "no measurement". One pixel of a depth image is noisy and often
missing at object edges, so a lookup takes the median of the valid pixels in a small square window.
"""
from __future__ import annotations

import numpy as np

from molmo_edge.errors import ConfigError

# metres per stored unit, per image encoding. `mono16` is not a depth encoding in REP 118, but some
# drivers publish millimetre depth under it; it is read like 16UC1.
DEPTH_M_PER_UNIT: dict[str, float] = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0, "64FC1": 1.0}


def depth_m_per_unit(encoding: str) -> float:
    """Metres per stored unit for a depth image encoding; ConfigError for a non-depth encoding."""
    try:
        return DEPTH_M_PER_UNIT[encoding]
    except KeyError:
        raise ConfigError(
            f"{encoding!r} is not a depth encoding; expected one of {sorted(DEPTH_M_PER_UNIT)} "
            "(16UC1 = millimetres, 32FC1 = metres)"
        ) from None


def _check_depth_image(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise ValueError(f"a depth image must be [H, W] (or [H, W, 1]), got shape {depth.shape}")
    return depth


def depth_image_to_m(depth: np.ndarray, encoding: str) -> np.ndarray:
    """Depth image [H, W] in its stored units → float32 metres [H, W], NaN where invalid."""
    depth = _check_depth_image(depth)
    depth_m = depth.astype(np.float32) * np.float32(depth_m_per_unit(encoding))
    depth_m[~(np.isfinite(depth_m) & (depth_m > 0))] = np.nan
    return depth_m


def depths_at(
    depth: np.ndarray, uv_px: np.ndarray, encoding: str, window_px: int = 5
) -> np.ndarray:
    """Median valid depth in metres around each pixel: uv_px [N, 2] → float64 [N].

    The window is `window_px` × `window_px` pixels centred on the nearest pixel (clipped at the
    image border). NaN where the point is off the image, NaN itself, or has no valid pixel near it.
    """
    if window_px < 1:
        raise ValueError(f"window_px must be >= 1, got {window_px}")
    depth = _check_depth_image(depth)
    scale = depth_m_per_unit(encoding)
    uv = np.asarray(uv_px, dtype=np.float64).reshape(-1, 2)
    height, width = depth.shape
    half = window_px // 2
    out = np.full(len(uv), np.nan)
    for i, (u, v) in enumerate(uv):
        if not (np.isfinite(u) and np.isfinite(v)):
            continue
        col, row = int(round(u)), int(round(v))
        if not (0 <= col < width and 0 <= row < height):
            continue
        top, left = row - half, col - half
        patch = depth[max(top, 0): top + window_px, max(left, 0): left + window_px]
        values = patch.astype(np.float64).ravel()
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            out[i] = float(np.median(values)) * scale
    return out


def depth_at(
    depth: np.ndarray, u_px: float, v_px: float, encoding: str, window_px: int = 5
) -> float | None:
    """Median valid depth in metres around one pixel, or None when there is no valid pixel."""
    value = depths_at(depth, np.array([[u_px, v_px]]), encoding, window_px)[0]
    return None if np.isnan(value) else float(value)
