"""Deterministic, time-continuous synthetic scenes of named shapes moving over a background.

    sim = SceneSimulator(seed=7, width=256, height=256)
    frame = sim.frame_at(1.5)          # Frame(rgb uint8 [H,W,3], label_map uint8 [H,W], objects)
    depth_m = sim.depth_at(1.5)        # float32 [H, W] metres

Everything random is drawn once, in `__init__`, from `numpy.random.Generator(PCG64(seed))`; a frame
is a pure function of (seed, config, t_s). Positions are closed-form (straight lines folded back
at the walls, i.e. perfect bounces), so any time can be asked for in any order at any fps — the
streaming runtime uses a simulator as a live camera.

Objects bounce inside the frame grown by `exit_margin_frac` on every side; with the margin larger
than the largest object, an object can leave the frame entirely and come back (enter/leave),
yet never drifts away for good. Nearer objects (smaller depth_m) are drawn on top (occlusion).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from molmo_edge.errors import ConfigError
from molmo_edge.training.backgrounds import BACKGROUND_KINDS, background_depth, render_background
from molmo_edge.training.render import (MAX_OBJECT_ID, compose_depth, compose_rgb, polygon_area_px,
                                        polygon_px, rasterize_labels)
from molmo_edge.training.vocabulary import COLOR_JITTER, NAMED_COLORS_RGB, SHAPES


class SceneConfig(BaseModel):
    """What a random scene may contain. Fractions are of the frame's shorter side unless named."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_objects: int = Field(0, ge=0)
    max_objects: int = Field(8, ge=0, le=MAX_OBJECT_ID)
    size_frac: tuple[float, float] = (0.06, 0.20)
    max_speed_frac_of_width_per_s: float = Field(0.10, ge=0.0)
    exit_margin_frac: float = Field(0.15, ge=0.0)  # > largest half-extent: objects can fully leave
    start_inside_prob: float = Field(0.85, ge=0.0, le=1.0)  # else start anywhere, maybe off-frame
    duplicate_prob: float = Field(0.3, ge=0.0, le=1.0)  # copy an earlier shape+colour (counting)
    shapes: tuple[str, ...] = tuple(SHAPES)
    colors: tuple[str, ...] = tuple(NAMED_COLORS_RGB)
    background_kinds: tuple[str, ...] = BACKGROUND_KINDS
    max_clutter: int = Field(10, ge=0)
    object_depth_m: tuple[float, float] = (0.5, 2.5)
    background_depth_m: tuple[float, float] = (3.0, 5.0)

    @field_validator("shapes")
    @classmethod
    def _known_shapes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in v if s not in SHAPES]
        if unknown or not v:
            raise ValueError(f"unknown shapes {unknown}; known: {sorted(SHAPES)}")
        return v

    @field_validator("colors")
    @classmethod
    def _known_colors(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in v if c not in NAMED_COLORS_RGB]
        if unknown or not v:
            raise ValueError(f"unknown colours {unknown}; known: {sorted(NAMED_COLORS_RGB)}")
        return v

    @field_validator("background_kinds")
    @classmethod
    def _known_backgrounds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [k for k in v if k not in BACKGROUND_KINDS]
        if unknown or not v:
            raise ValueError(f"unknown background kinds {unknown}; known: {BACKGROUND_KINDS}")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> "SceneConfig":
        for name in ("size_frac", "object_depth_m", "background_depth_m"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be 0 < low <= high, got {(lo, hi)}")
        if self.min_objects > self.max_objects:
            raise ValueError("min_objects > max_objects")
        if self.object_depth_m[1] >= self.background_depth_m[0]:
            raise ValueError("objects must be nearer than the background plane")
        return self


@dataclass(frozen=True)
class ObjectSpec:
    """An object's constant properties and its motion (all drawn once per scene)."""

    object_id: int  # 1-based, also its value in the label map
    shape: str
    color: str
    color_rgb: tuple[int, int, int]  # jittered around NAMED_COLORS_RGB[color]
    size_px: float
    rotation_rad: float
    depth_m: float
    start_center_px: tuple[float, float]  # (x, y) at t = 0
    velocity_px_s: tuple[float, float]
    bounds_px: tuple[float, float, float, float]  # (x_lo, y_lo, x_hi, y_hi) the centre bounces in
    full_area_px: int = 0  # pixels when fully visible; filled in by the simulator

    def center_at(self, t_s: float) -> tuple[float, float]:
        """Centre after perfect bounces: the free path folded back into the bounds."""
        x = _fold(self.start_center_px[0] + self.velocity_px_s[0] * t_s, self.bounds_px[0], self.bounds_px[2])
        y = _fold(self.start_center_px[1] + self.velocity_px_s[1] * t_s, self.bounds_px[1], self.bounds_px[3])
        return x, y


def _fold(p: float, lo: float, hi: float) -> float:
    # a triangle wave of period 2·span: the position of a ball bouncing between lo and hi
    span = hi - lo
    if span <= 0:
        return lo
    q = (p - lo) % (2.0 * span)
    return lo + (q if q <= span else 2.0 * span - q)


@dataclass(frozen=True)
class ObjectState:
    """One object in one frame."""

    object_id: int
    shape: str
    color: str
    center_px: tuple[float, float]  # (x, y); may lie outside the frame
    size_px: float
    visible_fraction: float  # visible pixels / pixels when fully visible, 0..1
    depth_m: float


@dataclass(frozen=True)
class Frame:
    t_s: float
    rgb: np.ndarray  # uint8 [H, W, 3]
    label_map: np.ndarray  # uint8 [H, W]: 0 background, k = object k (visible part only)
    objects: list[ObjectState] = field(default_factory=list)

    def mask(self, object_id: int) -> np.ndarray:
        """Visible mask of one object. -> bool [H, W]"""
        return self.label_map == object_id

    def object(self, object_id: int) -> ObjectState:
        for o in self.objects:
            if o.object_id == object_id:
                return o
        raise KeyError(object_id)


class SceneSimulator:
    """A random scene, fixed by its seed; render it at any time with `frame_at(t_s)`."""

    def __init__(self, seed: int, width: int = 256, height: int = 256, n_objects: int | None = None,
                 config: SceneConfig | None = None, objects: list[ObjectSpec] | None = None):
        if width < 16 or height < 16:
            raise ConfigError(f"frame size {width}x{height} is too small; use at least 16x16")
        self.config = config or SceneConfig()
        self.seed = int(seed)
        self.width, self.height = int(width), int(height)
        rng = np.random.Generator(np.random.PCG64(self.seed))
        cfg = self.config
        if n_objects is not None and not 0 <= n_objects <= MAX_OBJECT_ID:
            raise ConfigError(f"n_objects={n_objects} is outside 0..{MAX_OBJECT_ID}")
        # Fixed draw order (background first, then objects) so that a scene's background does not
        # change when only the object count is overridden.
        kind = cfg.background_kinds[int(rng.integers(len(cfg.background_kinds)))]
        n_clutter = int(rng.integers(0, cfg.max_clutter + 1))
        self.background_kind = kind
        self._background_rgb = render_background(rng, self.width, self.height, kind, n_clutter)
        self._background_depth_m = background_depth(rng, self.width, self.height, cfg.background_depth_m)
        count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        if n_objects is not None:
            count = n_objects
        specs: list[ObjectSpec] = []
        if objects is None:
            for i in range(count):
                specs.append(self._random_object(rng, i + 1, specs))
        else:  # a hand-built scene (tests, demos) on a random background
            ids = [s.object_id for s in objects]
            if len(set(ids)) != len(ids) or not all(0 < i <= MAX_OBJECT_ID for i in ids):
                raise ConfigError(f"object ids must be unique and in 1..{MAX_OBJECT_ID}, got {ids}")
            specs = list(objects)
        self.objects: list[ObjectSpec] = [self._with_area(s) for s in specs]
        # far to near: the draw order that makes nearer objects occlude farther ones
        self._draw_order = sorted(self.objects, key=lambda s: -s.depth_m)
        self._colors_lut = np.zeros((256, 3), dtype=np.uint8)
        self._depth_lut_m = np.zeros(256, dtype=np.float32)
        for s in self.objects:
            self._colors_lut[s.object_id] = s.color_rgb
            self._depth_lut_m[s.object_id] = s.depth_m

    # -- construction ------------------------------------------------------------------------
    def _random_object(self, rng: np.random.Generator, object_id: int, earlier: list[ObjectSpec]) -> ObjectSpec:
        cfg = self.config
        short = min(self.width, self.height)
        if earlier and rng.random() < cfg.duplicate_prob:
            twin = earlier[int(rng.integers(len(earlier)))]
            shape, color = twin.shape, twin.color
        else:
            shape = cfg.shapes[int(rng.integers(len(cfg.shapes)))]
            color = cfg.colors[int(rng.integers(len(cfg.colors)))]
        jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
        rgb = np.clip(np.array(NAMED_COLORS_RGB[color]) + jitter, 0, 255)
        size_px = float(rng.uniform(*cfg.size_frac) * short)
        margin = cfg.exit_margin_frac * short
        bounds = (-margin, -margin, self.width + margin, self.height + margin)
        if rng.random() < cfg.start_inside_prob:
            r = min(size_px / 2.0, self.width / 2.0, self.height / 2.0)
            start = (rng.uniform(r, self.width - r), rng.uniform(r, self.height - r))
        else:
            start = (rng.uniform(bounds[0], bounds[2]), rng.uniform(bounds[1], bounds[3]))
        speed = rng.uniform(0.0, cfg.max_speed_frac_of_width_per_s * self.width)
        heading = rng.uniform(0.0, 2.0 * np.pi)
        return ObjectSpec(
            object_id=object_id, shape=shape, color=color, color_rgb=tuple(int(c) for c in rgb),
            size_px=size_px, rotation_rad=float(rng.uniform(0.0, 2.0 * np.pi)),
            depth_m=float(rng.uniform(*cfg.object_depth_m)),
            start_center_px=(float(start[0]), float(start[1])),
            velocity_px_s=(float(speed * np.cos(heading)), float(speed * np.sin(heading))),
            bounds_px=tuple(float(b) for b in bounds),
        )

    @staticmethod
    def _with_area(spec: ObjectSpec) -> ObjectSpec:
        outline = SHAPES[spec.shape].outline(spec.rotation_rad)
        area = polygon_area_px(outline, spec.size_px)
        return ObjectSpec(**{**spec.__dict__, "full_area_px": max(area, 1)})

    # -- rendering ---------------------------------------------------------------------------
    def label_map_at(self, t_s: float) -> np.ndarray:
        """Visible-object label map at time t_s. -> uint8 [H, W]"""
        polygons = [(s.object_id, polygon_px(SHAPES[s.shape].outline(s.rotation_rad), s.center_at(t_s), s.size_px))
                    for s in self._draw_order]
        return rasterize_labels(polygons, self.height, self.width)

    def frame_at(self, t_s: float) -> Frame:
        label_map = self.label_map_at(t_s)
        rgb = compose_rgb(self._background_rgb, label_map, self._colors_lut)
        visible_px = np.bincount(label_map.ravel(), minlength=256)
        states = [
            ObjectState(
                object_id=s.object_id, shape=s.shape, color=s.color, center_px=s.center_at(t_s),
                size_px=s.size_px, visible_fraction=min(1.0, float(visible_px[s.object_id]) / s.full_area_px),
                depth_m=s.depth_m,
            )
            for s in self.objects
        ]
        return Frame(t_s=float(t_s), rgb=rgb, label_map=label_map, objects=states)

    def depth_at(self, t_s: float) -> np.ndarray:
        """Metric depth of what each pixel sees (same occlusion as frame_at). -> float32 [H, W] m"""
        return compose_depth(self._background_depth_m, self.label_map_at(t_s), self._depth_lut_m)

    @property
    def background_rgb(self) -> np.ndarray:
        """The static background (clutter included). -> uint8 [H, W, 3], read-only view."""
        view = self._background_rgb.view()
        view.flags.writeable = False
        return view
