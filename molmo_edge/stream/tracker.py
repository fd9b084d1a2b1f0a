"""Stitch the model's window-local object ids into persistent track ids.

The model answers each window (the last N sampled frames) with points whose object ids mean
something only inside that window; consecutive windows overlap in time. The tracker gives every
real object one `track_id` for as long as it is seen:

1. Shared timestamps first. A track already holds points at the timestamps the new window shares
   with earlier ones; the cost of pairing it with a window object is the mean point distance over
   the timestamps both have. Optimal assignment (`scipy.optimize.linear_sum_assignment`) with a
   gate (`gate_norm`, in normalised image units) pairs them. This is exact evidence: the same
   frame, two opinions about where the object is.
2. Prediction second. Tracks and objects left over (the object was not reported at the shared
   timestamps, or the track has been lost for a while) are paired by the distance between the
   object's first point and the track's position predicted at that time (last known position,
   plus constant velocity if enabled), with a gate that widens with the time since the track was
   last seen.
3. Objects still unmatched start new tracks; tracks still unmatched become `lost`, and are
   `removed` (reported once, never reused) after `max_lost_s` seconds and/or `max_lost_windows`
   windows without a match.

States: `new` (first window of a track), `tracked` (matched again), `lost` (not in this window,
kept for a short gap), `removed` (timed out; listed in the update once). Deterministic: the same
windows in give the same ids out.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

TrackState = Literal["new", "tracked", "lost", "removed"]

_NO_MATCH = 1e6  # cost of a gated-out pair in the assignment matrix (finite, so scipy accepts it)


class WindowPoint(NamedTuple):
    window_object_id: int
    t_s: float
    x_norm: float
    y_norm: float


class TrackedPoint(NamedTuple):
    track_id: int
    window_object_id: int
    t_s: float
    x_norm: float
    y_norm: float
    state: TrackState


def snap_to_frame_times(points: Iterable[WindowPoint | Sequence[float]], frame_times_s: Sequence[float],
                        max_offset_s: float | None = None) -> list[WindowPoint]:
    """Move each point's `t_s` onto the nearest of the window's real frame times.

    The model writes timestamps as rounded text ("3.5"), while the tracker recognises shared
    frames by their exact times, so the pipeline snaps before calling `update`. Points further
    than `max_offset_s` from every frame (a timestamp the model made up) are dropped.
    """
    times = np.sort(np.asarray(frame_times_s, dtype=np.float64))  # [n_frames]
    if times.size == 0:
        return []
    snapped = []
    for point in points:
        object_id, t_s, x, y = int(point[0]), float(point[1]), float(point[2]), float(point[3])
        if not math.isfinite(t_s):
            continue
        nearest = float(times[int(np.argmin(np.abs(times - t_s)))])
        if max_offset_s is not None and abs(nearest - t_s) > max_offset_s:
            continue
        snapped.append(WindowPoint(object_id, nearest, x, y))
    return snapped


class TrackerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gate_norm: float = Field(0.08, gt=0)  # max mean distance at shared timestamps
    # Max distance to a predicted position ... 0.2 rather than 0.1: the shipped model's points are
    # noisy and not always at the shared timestamps, so with 0.1 the same object kept starting new
    # tracks. On 20 held-out scenes (`molmo-edge eval --stream 20`, docs/daemon.md): ID switches
    # 58 -> 35, stream HOTA 0.339 -> 0.357; on 20 others, replaying recorded events through the
    # tracker (a one-off script, not in the repo): 64 -> 39, 0.368 -> 0.394. 0.15 and 0.3: no better.
    fallback_gate_norm: float = Field(0.2, gt=0)
    gate_growth_norm_per_s: float = Field(0.1, ge=0)  # ... plus this much per second unseen
    use_velocity: bool = True  # predict with constant velocity (else: last known position)
    velocity_window_s: float = Field(1.5, gt=0)  # history used to estimate the velocity
    max_extrapolation_s: float = Field(5.0, ge=0)  # never extrapolate motion further than this
    max_lost_s: float | None = Field(3.0, gt=0)  # remove a track unseen for this long ...
    max_lost_windows: int | None = Field(None, ge=1)  # ... or for this many windows
    time_tolerance_s: float = Field(1e-3, gt=0)  # timestamps closer than this are the same frame
    history_s: float = Field(10.0, gt=0)  # how much of each track's past to keep

    @model_validator(mode="after")
    def _needs_a_timeout(self) -> TrackerConfig:
        if self.max_lost_s is None and self.max_lost_windows is None:
            raise ValueError("set max_lost_s and/or max_lost_windows, or lost tracks are never removed")
        return self


@dataclass(eq=False)  # compared by identity: two tracks are never the same track
class Track:
    track_id: int
    state: TrackState
    first_seen_t_s: float
    last_seen_t_s: float
    x_norm: float  # position at last_seen_t_s
    y_norm: float
    vx_norm_per_s: float = 0.0
    vy_norm_per_s: float = 0.0
    windows_seen: int = 1
    windows_missed: int = 0  # consecutive windows without a match
    # quantised time -> (t_s, x_norm, y_norm); the track's points from all windows so far
    history: dict[int, tuple[float, float, float]] = field(default_factory=dict, repr=False)

    def summary(self) -> TrackSummary:
        return TrackSummary(self.track_id, self.state, self.first_seen_t_s, self.last_seen_t_s, self.x_norm,
                            self.y_norm, self.vx_norm_per_s, self.vy_norm_per_s, self.windows_seen,
                            self.windows_missed)

    def predict(self, t_s: float, config: TrackerConfig) -> tuple[float, float]:
        """Where this track is expected at `t_s`: its own point there if it has one in the past,
        else the last position moved on by the velocity (at most `max_extrapolation_s`)."""
        if t_s <= self.last_seen_t_s and self.history:
            nearest = min(self.history.values(), key=lambda p: abs(p[0] - t_s))
            return nearest[1], nearest[2]
        if not config.use_velocity:
            return self.x_norm, self.y_norm
        dt_s = min(t_s - self.last_seen_t_s, config.max_extrapolation_s)
        return self.x_norm + self.vx_norm_per_s * dt_s, self.y_norm + self.vy_norm_per_s * dt_s


class TrackSummary(NamedTuple):
    """A track as it was after one window (the tracker's own `Track` objects keep changing)."""

    track_id: int
    state: TrackState
    first_seen_t_s: float
    last_seen_t_s: float
    x_norm: float
    y_norm: float
    vx_norm_per_s: float
    vy_norm_per_s: float
    windows_seen: int
    windows_missed: int


@dataclass(frozen=True)
class TrackerUpdate:
    points: list[TrackedPoint]  # this window's points with persistent ids, sorted by (t_s, track_id)
    active_tracks: list[TrackSummary]  # every track not removed (new, tracked, lost), by track_id
    removed_track_ids: list[int]  # tracks that timed out with this window
    track_of_window_object: dict[int, int]  # window_object_id -> track_id


class _WindowObject(NamedTuple):
    window_object_id: int
    points: list[tuple[int, float, float, float]]  # (time key, t_s, x, y), sorted by time


class WindowTracker:
    def __init__(self, config: TrackerConfig | None = None, **overrides) -> None:
        if overrides:
            config = TrackerConfig.model_validate({**(config.model_dump() if config else {}), **overrides})
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        self._tracks: dict[int, Track] = {}
        self._next_track_id = 1
        self.windows = 0

    @property
    def tracks(self) -> list[Track]:
        return [self._tracks[k] for k in sorted(self._tracks)]

    def _key(self, t_s: float) -> int:
        return round(t_s / self.config.time_tolerance_s)

    def update(self, points: Iterable[WindowPoint | Sequence[float]], window_t0_s: float,
               window_t1_s: float) -> TrackerUpdate:
        """Give persistent ids to one window's points `(window_object_id, t_s, x_norm, y_norm)`."""
        self.windows += 1
        objects = self._group(points)
        tracks = self.tracks
        matches: dict[int, Track] = {}  # window_object_id -> track

        # 1. shared timestamps (exact evidence), 2. predicted positions (fallback)
        self._assign(tracks, objects, matches, self._shared_time_cost)
        self._assign([t for t in tracks if t not in matches.values()],
                     [o for o in objects if o.window_object_id not in matches], matches, self._predicted_cost)

        for obj in objects:
            track = matches.get(obj.window_object_id)
            if track is None:
                track = self._start_track(obj)
                matches[obj.window_object_id] = track
            else:
                track.state = "tracked"
                track.windows_seen += 1
                track.windows_missed = 0
            self._extend(track, obj, window_t1_s)

        removed = self._age_unmatched(set(id(t) for t in matches.values()), window_t1_s)
        out_points = [
            TrackedPoint(matches[o.window_object_id].track_id, o.window_object_id, t_s, x, y,
                         matches[o.window_object_id].state)
            for o in objects for (_, t_s, x, y) in o.points
        ]
        out_points.sort(key=lambda p: (p.t_s, p.track_id))
        return TrackerUpdate(
            points=out_points,
            active_tracks=[track.summary() for track in self.tracks],
            removed_track_ids=removed,
            track_of_window_object={k: v.track_id for k, v in sorted(matches.items())},
        )

    # -- steps --------------------------------------------------------------------------------
    def _group(self, points: Iterable[WindowPoint | Sequence[float]]) -> list[_WindowObject]:
        by_object: dict[int, dict[int, list[tuple[float, float, float]]]] = defaultdict(lambda: defaultdict(list))
        for point in points:
            object_id, t_s, x, y = int(point[0]), float(point[1]), float(point[2]), float(point[3])
            if not all(math.isfinite(v) for v in (t_s, x, y)):
                continue  # a malformed point from the parser; never let it poison a track
            by_object[object_id][self._key(t_s)].append((t_s, x, y))
        objects = []
        for object_id in sorted(by_object):
            # Two points of one object at one timestamp (the model repeated itself): average them.
            merged = [(key, float(np.mean([p[0] for p in ps])), float(np.mean([p[1] for p in ps])),
                       float(np.mean([p[2] for p in ps]))) for key, ps in sorted(by_object[object_id].items())]
            objects.append(_WindowObject(object_id, merged))
        return objects

    def _shared_time_cost(self, track: Track, obj: _WindowObject) -> float | None:
        distances = []
        for key, _, x, y in obj.points:
            for near in (key, key - 1, key + 1):  # tolerate rounding at the quantisation edge
                if near in track.history:
                    _, tx, ty = track.history[near]
                    distances.append(math.hypot(x - tx, y - ty))
                    break
        if not distances:
            return None
        cost = float(np.mean(distances))
        return cost if cost <= self.config.gate_norm else None

    def _predicted_cost(self, track: Track, obj: _WindowObject) -> float | None:
        _, t_s, x, y = obj.points[0]
        px, py = track.predict(t_s, self.config)
        unseen_s = max(0.0, t_s - track.last_seen_t_s)
        gate = self.config.fallback_gate_norm + self.config.gate_growth_norm_per_s * unseen_s
        cost = math.hypot(x - px, y - py)
        return cost if cost <= gate else None

    def _assign(self, tracks: list[Track], objects: list[_WindowObject], matches: dict[int, Track],
                cost_fn) -> None:
        if not tracks or not objects:
            return
        from scipy.optimize import linear_sum_assignment

        costs = np.full((len(tracks), len(objects)), _NO_MATCH)  # [n_tracks, n_objects]
        for i, track in enumerate(tracks):
            for j, obj in enumerate(objects):
                cost = cost_fn(track, obj)
                if cost is not None:
                    costs[i, j] = cost
        if not (costs < _NO_MATCH).any():
            return
        for i, j in zip(*linear_sum_assignment(costs)):
            if costs[i, j] < _NO_MATCH:
                matches[objects[j].window_object_id] = tracks[i]

    def _start_track(self, obj: _WindowObject) -> Track:
        _, t_s, x, y = obj.points[0]
        track = Track(self._next_track_id, "new", first_seen_t_s=t_s, last_seen_t_s=t_s, x_norm=x, y_norm=y)
        self._next_track_id += 1
        self._tracks[track.track_id] = track
        return track

    def _extend(self, track: Track, obj: _WindowObject, window_t1_s: float) -> None:
        for key, t_s, x, y in obj.points:
            # The newest window's opinion replaces older ones at shared timestamps.
            track.history[key] = (t_s, x, y)
        horizon_s = window_t1_s - self.config.history_s
        for key in [k for k, p in track.history.items() if p[0] < horizon_s]:
            del track.history[key]
        latest = max(track.history.values(), key=lambda p: p[0])
        track.last_seen_t_s, track.x_norm, track.y_norm = latest
        self._fit_velocity(track)

    def _fit_velocity(self, track: Track) -> None:
        recent = [p for p in track.history.values() if p[0] >= track.last_seen_t_s - self.config.velocity_window_s]
        if len(recent) < 2:
            return
        t = np.array([p[0] for p in recent])
        if np.ptp(t) <= 0:
            return
        # Least-squares slope of x(t) and y(t): steadier than the last two points under noise.
        t_centred = t - t.mean()
        denominator = float(np.sum(t_centred ** 2))
        track.vx_norm_per_s = float(np.sum(t_centred * np.array([p[1] for p in recent]))) / denominator
        track.vy_norm_per_s = float(np.sum(t_centred * np.array([p[2] for p in recent]))) / denominator

    def _age_unmatched(self, matched: set[int], window_t1_s: float) -> list[int]:
        removed = []
        for track in self.tracks:
            if id(track) in matched:
                continue
            track.state = "lost"
            track.windows_missed += 1
            too_long = (self.config.max_lost_s is not None
                        and window_t1_s - track.last_seen_t_s > self.config.max_lost_s)
            too_many = (self.config.max_lost_windows is not None
                        and track.windows_missed > self.config.max_lost_windows)
            if too_long or too_many:
                track.state = "removed"
                removed.append(track.track_id)
                del self._tracks[track.track_id]
        return removed
