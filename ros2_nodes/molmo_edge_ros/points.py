"""The per-point input every message builder here takes, decoupled from the streaming pipeline.

Builders accept any objects with `u_px`, `v_px` and `track_id` attributes, and optionally
`xyz_m` (x, y, z metres in the camera optical frame, or None), `query_index` and `confidence` —
for example the `objects` of a `molmo_edge.stream.events.Event`, or `RosPoint`s built by hand.
`points_to_columns` turns them into the column arrays the packers use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class PointLike(Protocol):
    u_px: float
    v_px: float
    track_id: int


@dataclass(frozen=True)
class RosPoint:
    """One published point: pixel position, persistent track id, the query it answers, 3-D if known."""

    u_px: float
    v_px: float
    track_id: int
    query_index: int = 0
    xyz_m: tuple[float, float, float] | None = None
    confidence: float = math.nan


@dataclass
class PointColumns:
    """N points as columns (the shapes are what the packers rely on)."""

    u_px: np.ndarray          # float32 [N]
    v_px: np.ndarray          # float32 [N]
    xyz_m: np.ndarray         # float32 [N, 3], NaN rows where 3-D is unknown
    track_id: np.ndarray      # int32 [N], -1 where the point has no track
    query_index: np.ndarray   # int32 [N]
    confidence: np.ndarray    # float32 [N], NaN where the model gives none

    def __len__(self) -> int:
        return len(self.u_px)

    @property
    def has_xyz(self) -> np.ndarray:
        """bool [N]: the points whose 3-D position is known."""
        return np.isfinite(self.xyz_m).all(axis=1)


def points_to_columns(points: Iterable[PointLike], default_query_index: int = 0) -> PointColumns:
    """Gather points into columns; `default_query_index` for points that carry none (an Event's
    objects do not: pass `event.query_index`)."""
    points = list(points)
    n = len(points)
    cols = PointColumns(
        u_px=np.empty(n, np.float32), v_px=np.empty(n, np.float32),
        xyz_m=np.full((n, 3), np.nan, np.float32), track_id=np.empty(n, np.int32),
        query_index=np.empty(n, np.int32), confidence=np.full(n, np.nan, np.float32),
    )
    for i, p in enumerate(points):
        cols.u_px[i] = p.u_px
        cols.v_px[i] = p.v_px
        track_id = getattr(p, "track_id", None)
        cols.track_id[i] = -1 if track_id is None else int(track_id)
        query_index = getattr(p, "query_index", None)
        cols.query_index[i] = default_query_index if query_index is None else int(query_index)
        xyz = getattr(p, "xyz_m", None)
        if xyz is not None:
            cols.xyz_m[i] = np.asarray(xyz, dtype=np.float32).reshape(3)
        confidence = getattr(p, "confidence", None)
        if confidence is not None:
            cols.confidence[i] = confidence
    return cols
