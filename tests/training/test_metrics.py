"""Pointing / counting / video pointing / tracking scores on hand-made cases, and the summary."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molmo_edge.grounding import GroundedPoint, format_count, format_points, format_tracks
from molmo_edge.training.metrics import (SUMMARY_KEYS, ExampleScore, PointingScore, score_answer, score_image_points,
                                         score_tracks, score_video_points, summarize)
from molmo_edge.training.tasks import Example, Media, Truth, examples_from_seed

W, H = 100, 50


def _two_boxes() -> np.ndarray:
    labels = np.zeros((H, W), np.uint8)
    labels[10:20, 10:20] = 1  # object 1: x 0.10..0.20, y 0.2..0.4
    labels[10:20, 60:80] = 2  # object 2: x 0.60..0.80
    labels[30:40, 40:50] = 3  # object 3: not a target (another shape / colour)
    return labels


def _image_truth(targets=(1, 2), ignore=()) -> Truth:
    return Truth(label_maps=_two_boxes()[None], timestamps_s=None, target_ids=tuple(targets), ignore_ids=tuple(ignore),
                 frame_target_ids=(tuple(targets),), frame_ignore_ids=(tuple(ignore),))


ON_1, ON_2, ON_3, OFF = (0.15, 0.3), (0.7, 0.3), (0.45, 0.7), (0.95, 0.95)


def _pts(*xys, t_s=None):
    return [GroundedPoint(i + 1, x, y, t_s=t_s) for i, (x, y) in enumerate(xys)]


def test_image_pointing_perfect_wrong_partial_and_duplicates():
    truth = _image_truth()
    assert score_image_points(_pts(ON_1, ON_2), truth) == PointingScore(tp=2, fp=0, fn=0)
    wrong = score_image_points(_pts(OFF, ON_3), truth)
    assert wrong == PointingScore(tp=0, fp=2, fn=2) and wrong.f1 == 0.0
    partial = score_image_points(_pts(ON_1), truth)
    assert (partial.precision, partial.recall) == (1.0, 0.5) and partial.f1 == pytest.approx(2 / 3)
    # one-to-one: a second point on the same object is a false positive
    assert score_image_points(_pts(ON_1, ON_1, ON_2), truth) == PointingScore(tp=2, fp=1, fn=0)
    # a point on an image that was not shown is wrong
    assert score_image_points([GroundedPoint(1, *ON_1, image_index=2)], truth) == PointingScore(0, 1, 2)


def test_points_on_ignored_objects_count_neither_way():
    truth = _image_truth(targets=(1,), ignore=(3,))
    assert score_image_points(_pts(ON_1, ON_3), truth) == PointingScore(tp=1, fp=0, fn=0)


def test_negative_example_scores():
    truth = _image_truth(targets=())
    empty = score_image_points([], truth)
    assert (empty.precision, empty.recall, empty.f1) == (1.0, 1.0, 1.0)
    assert score_image_points(_pts(ON_1), truth) == PointingScore(tp=0, fp=1, fn=0)


def _video_truth() -> Truth:
    # object 1 moves right by 30 px per frame; object 2 only appears in frame 2
    frames = np.zeros((3, H, W), np.uint8)
    for k in range(3):
        frames[k, 10:20, 10 + 30 * k:20 + 30 * k] = 1
    frames[2, 30:40, 10:20] = 2
    return Truth(label_maps=frames, timestamps_s=(0.0, 0.5, 1.0), target_ids=(1, 2), ignore_ids=(),
                 frame_target_ids=((1,), (1,), (1, 2)), frame_ignore_ids=((), (), ()))


def test_video_pointing_uses_the_frame_of_each_point():
    truth = _video_truth()
    good = [GroundedPoint(1, 0.45, 0.3, t_s=0.5), GroundedPoint(2, 0.15, 0.7, t_s=1.0)]
    assert score_video_points(good, truth) == PointingScore(tp=2, fp=0, fn=0)
    # the right place at the wrong time misses: object 1 is at x 0.1..0.2 only at t = 0.0
    late = [GroundedPoint(1, 0.15, 0.3, t_s=1.0)]
    assert score_video_points(late, truth) == PointingScore(tp=0, fp=1, fn=2)
    # a time that is no frame of the clip is wrong; one object found twice counts once
    odd = [GroundedPoint(1, 0.15, 0.3, t_s=7.0), GroundedPoint(1, 0.15, 0.3, t_s=0.0),
           GroundedPoint(2, 0.45, 0.3, t_s=0.5)]
    assert score_video_points(odd, truth) == PointingScore(tp=1, fp=2, fn=1)


def _track_points(assignments):
    """assignments: per frame, {answer id: (x, y)}."""
    return [GroundedPoint(i, x, y, t_s=0.5 * k) for k, frame in enumerate(assignments) for i, (x, y) in frame.items()]


def _tracking_truth(n_frames=6) -> Truth:
    labels = np.repeat(_two_boxes()[None], n_frames, axis=0)
    return Truth(label_maps=labels, timestamps_s=tuple(0.5 * k for k in range(n_frames)), target_ids=(1, 2),
                 ignore_ids=(), frame_target_ids=((1, 2),) * n_frames, frame_ignore_ids=((),) * n_frames)


def test_tracking_perfect_swap_and_missing():
    truth = _tracking_truth()
    perfect = score_tracks(_track_points([{1: ON_1, 2: ON_2}] * 6), truth)
    assert perfect.hota == pytest.approx(1.0) and perfect.id_switches == 0
    swapped = score_tracks(_track_points([{1: ON_1, 2: ON_2}] * 3 + [{1: ON_2, 2: ON_1}] * 3), truth)
    assert swapped.id_switches == 2 and swapped.deta == pytest.approx(1.0)
    assert swapped.assa < perfect.assa and swapped.hota < perfect.hota
    lost = score_tracks(_track_points([{1: ON_1}] * 6), truth)
    assert lost.deta == pytest.approx(0.5) and lost.assa == pytest.approx(1.0)
    nothing = score_tracks([], truth)
    assert nothing.hota == 0.0


def test_tracking_stray_times_and_repeated_ids_are_false_positives():
    truth = _tracking_truth(2)
    base = _track_points([{1: ON_1, 2: ON_2}] * 2)
    extra = base + [GroundedPoint(1, *ON_1, t_s=9.0), GroundedPoint(2, *OFF, t_s=0.0)]
    stats = score_tracks(extra, truth)
    assert stats.tp[0] == 4 and stats.fp[0] == 2 and stats.fn[0] == 0


def _example(kind, truth) -> Example:
    frames = tuple(np.zeros((H, W, 3), np.uint8) for _ in range(truth.label_maps.shape[0]))
    return Example(kind=kind, media=Media(frames=frames, timestamps_s=truth.timestamps_s), prompt="", answer="",
                   label="x", truth=truth, answer_points=())


def test_score_answer_reads_model_text():
    truth = _image_truth()
    count_ex = _example("count", truth)
    assert score_answer(count_ex, format_count(2, _pts(ON_1, ON_2), "red circles")).count_correct
    assert not score_answer(count_ex, "There are none.").count_correct
    assert not score_answer(count_ex, "I think there are some.").count_correct
    point = score_answer(_example("point", truth), format_points(_pts(ON_1, OFF), "red circles"))
    assert point.pointing == PointingScore(tp=1, fp=1, fn=1) and point.parse_ok
    broken = score_answer(_example("point", truth), '<points coords="1 1 150 3')
    assert not broken.parse_ok
    track = score_answer(_example("track", _tracking_truth(2)),
                         format_tracks(_track_points([{1: ON_1, 2: ON_2}] * 2), "circles"))
    assert track.tracking.hota == pytest.approx(1.0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), video=st.booleans())
def test_ground_truth_answers_score_perfectly(seed, video):
    scores = [score_answer(ex, ex.answer) for ex in examples_from_seed(seed, video=video, width=96, height=80)]
    summary = summarize(scores)
    for key in ("pointing_f1", "count_accuracy", "video_pointing_f1"):
        assert summary[key] in (None, 1.0)
    if summary["tracking_hota"] is not None and any(s.tracking.tp[0] for s in scores if s.tracking):
        assert summary["tracking_hota"] == pytest.approx(1.0) and summary["id_switches"] == 0


def test_summarize_has_exactly_the_eval_keys():
    scores = [
        ExampleScore("point", pointing=PointingScore(tp=3, fp=1, fn=0)),
        ExampleScore("point", pointing=PointingScore(tp=1, fp=0, fn=2)),
        ExampleScore("count", count_correct=True),
        ExampleScore("video_count", count_correct=False),
        ExampleScore("video_point", pointing=PointingScore(tp=1, fp=1, fn=1)),
        ExampleScore("track", tracking=score_tracks(_track_points([{1: ON_1, 2: ON_2}] * 6), _tracking_truth())),
    ]
    summary = summarize(scores)
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["pointing_precision"] == pytest.approx(4 / 5)  # micro-average: TP 4, FP 1, FN 2
    assert summary["pointing_recall"] == pytest.approx(4 / 6)
    assert summary["count_accuracy"] == 0.5 and summary["video_pointing_f1"] == pytest.approx(0.5)
    assert summary["tracking_hota"] == pytest.approx(1.0) and summary["id_switches"] == 0
    assert summary["n_examples"] == 6
    empty = summarize([])
    assert tuple(empty) == SUMMARY_KEYS and empty["n_examples"] == 0
    assert all(empty[k] is None for k in SUMMARY_KEYS if k != "n_examples")
