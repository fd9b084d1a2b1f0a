"""The words of the synthetic grounding task: named shapes and named colours.

The shipped model is trained and judged on exactly these names (see DESIGN.md, "The synthetic
grounding task"). Everything that is *not* a named object (backgrounds, clutter) is drawn from
colours kept far away from the named ones, so a point on clutter can never be mistaken for a point
on a named object by colour alone; `named_color_distance` is the yardstick both sides use.

To add a shape, write its outline and call `register_shape`; the simulator, renderer, task
builder and metrics pick it up from `SHAPES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# ---------------------------------------------------------------------------------------------
# Shapes. An outline is a closed polygon in "half-size units": the shape drawn at size_px has its
# vertices at centre + outline * size_px / 2. Conventions for what size_px measures: the
# diameter of a circle, the side of a square, the side of a triangle, the tip-to-tip diameter of
# a star's circumscribed circle.


@dataclass(frozen=True)
class ShapeSpec:
    name: str  # the word used in prompts: "circle"
    plural: str  # "circles" (kept explicit: "cross" -> "crosses")
    outline: Callable[[float], np.ndarray]  # rotation_rad -> float64 [K, 2] (x, y) vertices


def _rotate(points_xy: np.ndarray, rotation_rad: float) -> np.ndarray:
    c, s = np.cos(rotation_rad), np.sin(rotation_rad)
    return points_xy @ np.array([[c, s], [-s, c]])


def _regular_polygon(n_vertices: int, radius: float, rotation_rad: float, phase_rad: float = 0.0) -> np.ndarray:
    angles = phase_rad + np.arange(n_vertices) * (2.0 * np.pi / n_vertices)
    ring = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return _rotate(ring, rotation_rad)


def _circle(rotation_rad: float) -> np.ndarray:
    # 64 vertices: at the largest size (20 % of a 1080-px frame, r = 108 px) the chord error is
    # r * (1 - cos(pi / 64)) ~ 0.13 px, below one pixel.
    return _regular_polygon(64, 1.0, 0.0)


def _square(rotation_rad: float) -> np.ndarray:
    # half-diagonal sqrt(2) so that the side is 2 half-size units
    return _regular_polygon(4, np.sqrt(2.0), rotation_rad, phase_rad=np.pi / 4)


def _triangle(rotation_rad: float) -> np.ndarray:
    # equilateral, side 2 half-size units -> circumradius 2 / sqrt(3); a vertex points up at 0 rad
    return _regular_polygon(3, 2.0 / np.sqrt(3.0), rotation_rad, phase_rad=-np.pi / 2)


def _star(rotation_rad: float) -> np.ndarray:
    # five points; inner radius 0.45 of the outer one keeps the arms thick enough to read at
    # the smallest size (6 % of 256 px = 15 px across)
    outer = _regular_polygon(5, 1.0, 0.0, phase_rad=-np.pi / 2)
    inner = _regular_polygon(5, 0.45, 0.0, phase_rad=-np.pi / 2 + np.pi / 5)
    vertices = np.empty((10, 2))
    vertices[0::2], vertices[1::2] = outer, inner
    return _rotate(vertices, rotation_rad)


SHAPES: dict[str, ShapeSpec] = {}


def register_shape(spec: ShapeSpec) -> None:
    """Make a new named shape available to scenes, prompts and metrics."""
    if spec.name in SHAPES:
        raise ValueError(f"shape {spec.name!r} is already registered")
    SHAPES[spec.name] = spec


for _spec in (
    ShapeSpec("circle", "circles", _circle),
    ShapeSpec("square", "squares", _square),
    ShapeSpec("triangle", "triangles", _triangle),
    ShapeSpec("star", "stars", _star),
):
    register_shape(_spec)


def plural(shape: str) -> str:
    return SHAPES[shape].plural


# ---------------------------------------------------------------------------------------------
# Colours. Saturated, clearly distinct base values; each object jitters its own colour by at
# most COLOR_JITTER per channel so two red objects are not pixel-identical.

NAMED_COLORS_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 175, 50),
    "blue": (35, 75, 215),
    "yellow": (235, 210, 40),
    "purple": (140, 45, 190),
    "orange": (245, 135, 25),
}
COLOR_JITTER = 12

# Background colours have chroma (max - min channel) at most this; chroma is convex, so every
# blend of two such colours (gradients) stays below it, and luminance-only noise does not raise it.
BACKGROUND_MAX_CHROMA = 30

# Clutter paints: greys, browns, pinks, teals. Each is at least MIN_CLUTTER_DISTANCE (RGB
# Euclidean) from every named colour even after both sides jitter (checked at import).
CLUTTER_COLORS_RGB: dict[str, tuple[int, int, int]] = {
    "dark grey": (70, 70, 70),
    "grey": (128, 128, 128),
    "light grey": (195, 195, 195),
    "brown": (110, 75, 45),
    "dark brown": (75, 50, 35),
    "pink": (235, 175, 195),
    "teal": (40, 140, 140),
}
CLUTTER_JITTER = 10
MIN_CLUTTER_DISTANCE = 50.0


def named_color_distance(rgb: np.ndarray) -> np.ndarray:
    """Euclidean RGB distance from each colour to the nearest named base colour.

    rgb: [..., 3] (any integer or float dtype) -> float32 [...].
    """
    base = np.array(list(NAMED_COLORS_RGB.values()), dtype=np.float32)  # [C, 3]
    diff = rgb.astype(np.float32)[..., None, :] - base  # [..., C, 3]
    return np.sqrt((diff * diff).sum(-1)).min(-1)


def _check_palettes() -> None:
    worst_shift = np.sqrt(3.0) * (COLOR_JITTER + CLUTTER_JITTER)
    clutter = np.array(list(CLUTTER_COLORS_RGB.values()))
    closest = float(named_color_distance(clutter).min())
    if closest - worst_shift < MIN_CLUTTER_DISTANCE:  # pragma: no cover - guards future edits
        raise AssertionError(f"a clutter colour is within {closest:.0f} of a named colour")


_check_palettes()
