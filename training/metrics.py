"""Scoring answers of the synthetic grounding task (the numbers `molmo-edge eval` reports).

- Image pointing: a predicted point is correct when it falls inside the visible mask of a target
  object; predictions and targets are matched one-to-one (Hungarian), so two points on one
  object give one true positive and one false positive. Precision / recall / F1 are micro-averaged
  over examples (sums of TP, FP, FN), so "There are none." on a negative adds nothing and a point
  on a negative adds a false positive.
- Counting: exact accuracy of the answer's count (the wrapper's N, else the distinct ids).
- Video pointing: the answer marks each object once, at a frame of its choosing. A predicted
  point is mapped to the frame nearest its timestamp (within half a frame interval) and may
  match a target whose mask contains it in that frame; matching is one-to-one over the clip.
- Tracking: per frame, binary point-in-mask similarity between the predicted ids there and the
  targets visible enough there; HOTA / DetA / AssA / ID switches from `hota.py`.

Points that land on an "ignored" object (matches the query but too hidden to be required, see
tasks.py) are dropped before matching: neither right nor wrong.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from molmo_edge.grounding import GroundedPoint, parse, to_pixel_index
from molmo_edge.training.hota import HotaStats, Timestep, hota
from molmo_edge.training.tasks import Example, TaskKind, Truth

SUMMARY_KEYS = ("pointing_f1", "pointing_precision", "pointing_recall", "count_accuracy", "video_pointing_f1",
                "tracking_hota", "tracking_deta", "tracking_assa", "id_switches", "n_examples")


@dataclass(frozen=True)
class PointingScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: "PointingScore") -> "PointingScore":
        return PointingScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    # Empty denominators: nothing predicted and nothing to find is perfect; otherwise an empty
    # side scores 0 (no predictions -> precision 0 when something was to be found).
    @property
    def precision(self) -> float:
        if self.tp + self.fp:
            return self.tp / (self.tp + self.fp)
        return 1.0 if self.fn == 0 else 0.0

    @property
    def recall(self) -> float:
        if self.tp + self.fn:
            return self.tp / (self.tp + self.fn)
        return 1.0 if self.fp == 0 else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


@dataclass(frozen=True)
class ExampleScore:
    kind: TaskKind
    pointing: PointingScore | None = None  # point, video_point
    count_correct: bool | None = None  # count, video_count
    tracking: HotaStats | None = None  # track
    parse_ok: bool = True  # the answer was read without errors


def _label_at(label_map: np.ndarray, point: GroundedPoint) -> int:
    """Object id under a point (0 = background). label_map: uint8 [H, W]."""
    height, width = label_map.shape
    row, col = to_pixel_index(point.x, point.y, width, height)
    return int(label_map[row, col])


def _match(similarity: np.ndarray) -> int:
    """Size of the best one-to-one matching in a boolean [n_pred, n_target] matrix."""
    if similarity.size == 0:
        return 0
    rows, cols = linear_sum_assignment(similarity.astype(np.float64), maximize=True)
    return int(similarity[rows, cols].sum())


def _frame_of(t_s: float | None, timestamps_s: Sequence[float]) -> int | None:
    """Index of the frame nearest t_s, or None when none is within half a frame interval."""
    if t_s is None or not timestamps_s:
        return None
    times = np.asarray(timestamps_s, dtype=np.float64)
    k = int(np.argmin(np.abs(times - t_s)))
    tolerance = 0.5 * float(np.min(np.diff(times))) if len(times) > 1 else 0.5
    return k if abs(times[k] - t_s) <= tolerance + 1e-6 else None


def score_image_points(points: Sequence[GroundedPoint], truth: Truth) -> PointingScore:
    label_map = truth.label_maps[0]
    targets = list(truth.target_ids)
    ignore = set(truth.ignore_ids)
    kept_hits: list[int] = []  # object id under each kept prediction
    for p in points:
        if p.image_index not in (None, 1):
            kept_hits.append(0)  # a point on an image that was not shown: wrong
            continue
        hit = _label_at(label_map, p)
        if hit not in ignore:
            kept_hits.append(hit)
    similarity = np.array([[hit == t for t in targets] for hit in kept_hits], dtype=bool)
    similarity = similarity.reshape(len(kept_hits), len(targets))  # [n_pred, n_target], also when empty
    tp = _match(similarity)
    return PointingScore(tp=tp, fp=len(kept_hits) - tp, fn=len(targets) - tp)


def score_video_points(points: Sequence[GroundedPoint], truth: Truth) -> PointingScore:
    targets = list(truth.target_ids)
    ignore = set(truth.ignore_ids)
    rows: list[list[bool]] = []
    for p in points:
        k = _frame_of(p.t_s, truth.timestamps_s or ())
        if k is None:
            rows.append([False] * len(targets))  # no such frame: cannot be right
            continue
        hit = _label_at(truth.label_maps[k], p)
        if hit in ignore:  # (a target is fair game in any frame its visible mask is hit)
            continue
        rows.append([hit == t for t in targets])
    similarity = np.array(rows, dtype=bool).reshape(len(rows), len(targets))
    tp = _match(similarity)
    return PointingScore(tp=tp, fp=len(rows) - tp, fn=len(targets) - tp)


def tracking_timesteps(points: Sequence[GroundedPoint], truth: Truth) -> list[Timestep]:
    """Per-frame HOTA input: targets visible enough vs. predicted ids, point-in-mask similarity.

    Points whose time matches no frame become one extra timestep with no ground truth (all false
    positives). A predicted id written twice in one frame keeps its first point; the others get
    fresh ids, i.e. they are extra detections.
    """
    timestamps = truth.timestamps_s or ()
    per_frame: list[list[GroundedPoint]] = [[] for _ in timestamps]
    stray: list[GroundedPoint] = []
    for p in points:
        k = _frame_of(p.t_s, timestamps)
        (stray if k is None else per_frame[k]).append(p)
    fresh_id = -1
    steps = []
    for k, frame_points in enumerate(per_frame):
        gt_ids = list(truth.frame_target_ids[k])
        skip = set(truth.frame_ignore_ids[k]) | set(truth.ignore_ids)
        pred_ids: list[int] = []
        hits: list[int] = []
        for p in frame_points:
            hit = _label_at(truth.label_maps[k], p)
            if hit in skip:
                continue
            object_id = p.object_id
            if object_id in pred_ids:
                object_id, fresh_id = fresh_id, fresh_id - 1
            pred_ids.append(object_id)
            hits.append(hit)
        similarity = np.array([[float(h == g) for h in hits] for g in gt_ids]).reshape(len(gt_ids), len(hits))
        steps.append(Timestep.make(gt_ids, pred_ids, similarity))
    if stray:
        ids = list(range(fresh_id, fresh_id - len(stray), -1))
        steps.append(Timestep.make([], ids, np.zeros((0, len(stray)))))
    return steps


def score_tracks(points: Sequence[GroundedPoint], truth: Truth) -> HotaStats:
    return hota(tracking_timesteps(points, truth))


def score_answer(example: Example, text: str) -> ExampleScore:
    """Parse a model's answer to `example` and score it for the example's task."""
    result = parse(text)
    ok = result.ok
    kind = example.kind
    if kind in ("count", "video_count"):
        predicted = result.count
        if predicted is None and result.points:
            predicted = len(result.object_ids)
        return ExampleScore(kind, count_correct=predicted == example.truth.count, parse_ok=ok)
    if kind == "point":
        return ExampleScore(kind, pointing=score_image_points(result.points, example.truth), parse_ok=ok)
    if kind == "video_point":
        return ExampleScore(kind, pointing=score_video_points(result.points, example.truth), parse_ok=ok)
    return ExampleScore(kind, tracking=score_tracks(result.points, example.truth), parse_ok=ok)


def summarize(results: Sequence[ExampleScore]) -> dict:
    """The evaluation summary, exactly `SUMMARY_KEYS`; a metric with no example of its task is None."""
    image = [r.pointing for r in results if r.kind == "point" and r.pointing is not None]
    video = [r.pointing for r in results if r.kind == "video_point" and r.pointing is not None]
    counts = [r.count_correct for r in results if r.count_correct is not None]
    tracks = [r.tracking for r in results if r.tracking is not None]
    point_sum = sum(image, PointingScore())
    track_sum = sum(tracks, HotaStats())
    return {
        "pointing_f1": point_sum.f1 if image else None,
        "pointing_precision": point_sum.precision if image else None,
        "pointing_recall": point_sum.recall if image else None,
        "count_accuracy": float(np.mean(counts)) if counts else None,
        "video_pointing_f1": sum(video, PointingScore()).f1 if video else None,
        "tracking_hota": track_sum.hota if tracks else None,
        "tracking_deta": track_sum.deta if tracks else None,
        "tracking_assa": track_sum.assa if tracks else None,
        "id_switches": int(track_sum.id_switches) if tracks else None,
        "n_examples": len(results),
    }
