"""Scene backgrounds: solid, gradient and noise textures, with optional clutter on top.

A background is drawn once per scene (it does not move), so its cost is paid once, not per frame.
Two rules keep it from ever looking like a named object:
- background colours have low chroma (`BACKGROUND_MAX_CHROMA`): greys and tinted greys, far from
  the saturated named colours; gradients blend two such colours and noise changes luminance only,
  neither of which can raise chroma;
- clutter (thin lines, rings, crosses, irregular blobs) is painted in `CLUTTER_COLORS_RGB`, a
  palette kept away from the named colours, and none of its forms is a filled circle, square,
  triangle or star. Everything is drawn without anti-aliasing, so no blended edge pixel can land
  near a named colour either.
"""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from molmo_edge.training.vocabulary import BACKGROUND_MAX_CHROMA, CLUTTER_COLORS_RGB, CLUTTER_JITTER

BackgroundKind = Literal["solid", "gradient", "noise"]
BACKGROUND_KINDS: tuple[str, ...] = ("solid", "gradient", "noise")
CLUTTER_KINDS: tuple[str, ...] = ("line", "ring", "cross", "blob")


def _muted_color(rng: np.random.Generator) -> np.ndarray:
    """A low-chroma colour: a grey level plus per-channel tints of at most ±chroma/2. -> float32 [3]"""
    grey = rng.uniform(35.0, 220.0)
    tint = rng.uniform(-BACKGROUND_MAX_CHROMA / 2, BACKGROUND_MAX_CHROMA / 2, size=3)
    return np.clip(grey + tint, 0, 255).astype(np.float32)


def _gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    start, end = _muted_color(rng), _muted_color(rng)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # position along the gradient direction, rescaled to 0..1 over the frame: [H, W]
    along = xs * np.cos(angle) + ys * np.sin(angle)
    along = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    return start + along[..., None] * (end - start)  # [H, W, 3]


def _noise_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = _muted_color(rng)
    # low-frequency luminance: a coarse random grid upsampled smoothly, plus fine grain
    cells = int(rng.integers(3, 13))
    coarse = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)  # [H, W]
    amplitude = rng.uniform(15.0, 45.0)
    grain = rng.normal(0.0, rng.uniform(0.0, 6.0), size=(height, width)).astype(np.float32)
    luminance = amplitude * np.clip(smooth, -1.0, 1.0) + grain
    return base + luminance[..., None]  # same offset on every channel: chroma unchanged


def _clutter_color(rng: np.random.Generator) -> tuple[int, int, int]:
    names = list(CLUTTER_COLORS_RGB)
    base = np.array(CLUTTER_COLORS_RGB[names[int(rng.integers(len(names)))]])
    rgb = np.clip(base + rng.integers(-CLUTTER_JITTER, CLUTTER_JITTER + 1, size=3), 0, 255)
    return tuple(int(c) for c in rgb)


def _draw_clutter(canvas: np.ndarray, rng: np.random.Generator, kind: str) -> None:
    height, width = canvas.shape[:2]
    short = min(height, width)
    color = _clutter_color(rng)
    thickness = int(rng.integers(1, 3))
    center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
    if kind == "line":
        end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(canvas, center, end, color, thickness, lineType=cv2.LINE_8)
    elif kind == "ring":
        # a thin outline, never a filled disc
        radius = int(max(2, rng.uniform(0.03, 0.10) * short))
        cv2.circle(canvas, center, radius, color, thickness, lineType=cv2.LINE_8)
    elif kind == "cross":
        arm = rng.uniform(0.03, 0.08) * short
        angle = rng.uniform(0.0, np.pi / 2)
        for a in (angle, angle + np.pi / 2):
            dx, dy = arm * np.cos(a), arm * np.sin(a)
            p0 = (int(center[0] - dx), int(center[1] - dy))
            p1 = (int(center[0] + dx), int(center[1] + dy))
            cv2.line(canvas, p0, p1, color, thickness, lineType=cv2.LINE_8)
    elif kind == "blob":
        # two or three elongated, overlapping ellipses: irregular, never a circle
        for _ in range(int(rng.integers(2, 4))):
            major = max(2, int(rng.uniform(0.02, 0.05) * short))
            minor = max(1, int(major / rng.uniform(1.8, 3.0)))
            offset = rng.normal(0.0, major * 0.6, size=2)
            c = (int(center[0] + offset[0]), int(center[1] + offset[1]))
            cv2.ellipse(canvas, c, (major, minor), float(rng.uniform(0, 180)), 0, 360, color, -1,
                        lineType=cv2.LINE_8)
    else:  # pragma: no cover - kinds come from CLUTTER_KINDS
        raise ValueError(f"unknown clutter kind {kind!r}")


def render_background(rng: np.random.Generator, width: int, height: int, kind: str,
                      n_clutter: int = 0) -> np.ndarray:
    """One scene background. -> uint8 [H, W, 3] RGB."""
    if kind == "solid":
        layer = np.broadcast_to(_muted_color(rng), (height, width, 3))
    elif kind == "gradient":
        layer = _gradient(rng, height, width)
    elif kind == "noise":
        layer = _noise_texture(rng, height, width)
    else:
        raise ValueError(f"unknown background kind {kind!r}; use one of {BACKGROUND_KINDS}")
    canvas = np.ascontiguousarray(np.clip(layer, 0, 255).astype(np.uint8))
    for _ in range(n_clutter):
        _draw_clutter(canvas, rng, CLUTTER_KINDS[int(rng.integers(len(CLUTTER_KINDS)))])
    return canvas


def background_depth(rng: np.random.Generator, width: int, height: int,
                     depth_range_m: tuple[float, float]) -> np.ndarray:
    """A tilted plane (a floor or wall seen at an angle): depth linear in image row and column.

    -> float32 [H, W] metres, every value inside depth_range_m.
    """
    lo, hi = depth_range_m
    far, near = sorted(rng.uniform(lo, hi, size=2))
    tilt_x = rng.uniform(-0.25, 0.25) * (near - far)
    rows = np.linspace(far, near, height, dtype=np.float32)[:, None]  # farther at the top
    cols = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :] * tilt_x
    return np.clip(rows + cols, lo, hi).astype(np.float32)
