"""format → parse round trips (hypothesis): what the trainer writes is what the runtime reads."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.grounding import (
    GroundedPoint, GroundingError, format_count, format_points, format_tracks, parse,
)

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
# Labels and alt text as a user could write them; the parser strips surrounding whitespace.
label_text = st.text(min_size=1, max_size=30).map(str.strip).filter(bool)


def _written(v: float) -> int:
    return min(max(math.floor(v * 1000 + 0.5), 0), 1000)


def _close(parsed: float, given_value: float) -> bool:
    return abs(parsed - given_value) <= 0.0005 + 1e-12


@st.composite
def image_points(draw) -> list[GroundedPoint]:
    """1..4 images, ids continuing across images (as Molmo2 numbers them)."""
    n_images = draw(st.integers(1, 4))
    images = sorted(draw(st.sets(st.integers(1, 9), min_size=n_images, max_size=n_images)))
    points, next_id = [], 1
    for image in images:
        for _ in range(draw(st.integers(1, 5))):
            points.append(GroundedPoint(next_id, draw(unit), draw(unit), image_index=image))
            next_id += 1
    return points


@st.composite
def video_points(draw) -> list[GroundedPoint]:
    times = sorted(draw(st.sets(st.integers(0, 1200), min_size=1, max_size=5)))
    points, next_id = [], 1
    for tenth in times:
        for _ in range(draw(st.integers(1, 4))):
            points.append(GroundedPoint(next_id, draw(unit), draw(unit), t_s=tenth / 10))
            next_id += 1
    return points


@st.composite
def tracks(draw) -> list[GroundedPoint]:
    """1..5 objects, each seen in a random subset of 1..8 frames at 2 fps."""
    n_frames = draw(st.integers(1, 8))
    points = []
    for object_id in range(1, draw(st.integers(1, 5)) + 1):
        frames = draw(st.sets(st.integers(0, n_frames - 1), min_size=1))
        points += [GroundedPoint(object_id, draw(unit), draw(unit), t_s=f * 0.5) for f in sorted(frames)]
    return points


def _key(p: GroundedPoint) -> tuple:
    return (p.object_id, p.image_index, p.t_s)


@settings(max_examples=150, deadline=None)
@given(points=image_points(), label=label_text, alt=st.none() | label_text,
       wrapper=st.sampled_from([None, "counting", "there_are"]))
def test_image_points_round_trip(points, label, alt, wrapper):
    text = format_points(points, label, alt=alt, wrapper=wrapper)
    r = parse(text)
    assert r.ok, (text, r.errors)
    assert r.kind == "points" and r.label == label and r.alt == alt
    assert r.count == len(points)
    given_by_key = {_key(p): p for p in points}
    assert sorted(_key(p) for p in r.points) == sorted(given_by_key)
    for p in r.points:
        g = given_by_key[_key(p)]
        assert _close(p.x, g.x) and _close(p.y, g.y)
        assert (round(p.x * 1000), round(p.y * 1000)) == (_written(g.x), _written(g.y))
    # groups ascending by image, each group once, points sorted by x inside a group
    assert list(r.by_image()) == sorted({p.image_index for p in points})
    for group in r.by_image().values():
        assert [p.x for p in group] == sorted(p.x for p in group)


@settings(max_examples=100, deadline=None)
@given(points=video_points(), label=label_text, wrapper=st.sampled_from([None, "counting", "there_are"]))
def test_video_points_round_trip(points, label, wrapper):
    r = parse(format_points(points, label, wrapper=wrapper))
    assert r.ok and r.kind == "points" and r.count == len(points)
    assert sorted(_key(p) for p in r.points) == sorted(_key(p) for p in points)
    assert all(p.image_index is None for p in r.points)


@settings(max_examples=100, deadline=None)
@given(points=tracks(), label=label_text, alt=st.none() | label_text)
def test_tracks_round_trip_keep_ids_consistent(points, label, alt):
    text = format_tracks(points, label, alt=alt)
    r = parse(text)
    assert r.ok and r.kind == "tracks" and r.label == label and r.alt == alt
    assert r.count == len({p.object_id for p in points})
    given_tracks: dict[int, list[GroundedPoint]] = {}
    for p in points:
        given_tracks.setdefault(p.object_id, []).append(p)
    parsed_tracks = r.by_object()
    assert list(parsed_tracks) == sorted(given_tracks)
    for object_id, parsed in parsed_tracks.items():
        expected = sorted(given_tracks[object_id], key=lambda p: p.t_s)
        assert [p.t_s for p in parsed] == [p.t_s for p in expected]
        assert all(_close(a.x, b.x) and _close(a.y, b.y) for a, b in zip(parsed, expected))


@settings(max_examples=60, deadline=None)
@given(points=st.lists(st.tuples(st.floats(-10, 10, allow_nan=False), st.floats(-10, 10, allow_nan=False)),
                       min_size=1, max_size=5),
       t_s=st.floats(0, 1e4, allow_nan=False))
def test_out_of_range_coordinates_are_clamped_and_times_rounded(points, t_s):
    pts = [GroundedPoint(i + 1, x, y, t_s=t_s) for i, (x, y) in enumerate(points)]
    r = parse(format_points(pts, "things"))
    assert r.ok and len(r.points) == len(pts)
    for p in r.points:
        assert 0.0 <= p.x <= 1.0 and 0.0 <= p.y <= 1.0
        assert abs(p.t_s - t_s) <= 0.05 + 1e-9 * max(1.0, t_s)


def test_exact_text_of_each_form():
    pts = [GroundedPoint(2, 0.9, 0.5), GroundedPoint(1, 0.0734, 0.00049)]
    assert format_points(pts, "cups") == '<points coords="1 1 073 000 2 900 500">cups</points>'
    assert format_points(pts, "cups", wrapper="there_are") == \
        'There are 2 <points coords="1 1 073 000 2 900 500">cups</points>.'
    assert format_count(2, pts, "cups", alt="cup") == \
        'Counting the <points coords="1 1 073 000 2 900 500" alt="cup">cups</points> shows a total of 2.'
    assert format_points([GroundedPoint(1, 1.0, 0.0005, t_s=1.25)], "a<b") == \
        '<points coords="1.2 1 1000 001">a&lt;b</points>'
    track = [GroundedPoint(2, 0.511, 0.124, t_s=0.5), GroundedPoint(1, 0.635, 0.522, t_s=0.0),
             GroundedPoint(1, 0.606, 0.49, t_s=0.5)]
    assert format_tracks(track, "x") == '<tracks coords="0.0 1 635 522;0.5 1 606 490 2 511 124">x</tracks>'
    for empty in (format_points([], "x"), format_tracks([], "x"), format_count(0, [], "x")):
        assert empty == "There are none." and parse(empty).none


@pytest.mark.parametrize("call, message", [
    (lambda: format_points([GroundedPoint(0, 0.1, 0.1)], "x"), "1-based"),
    (lambda: format_points([GroundedPoint(1, float("nan"), 0.1)], "x"), "finite"),
    (lambda: format_points([GroundedPoint(1, 0.1, 0.1, t_s=0.0), GroundedPoint(2, 0.1, 0.1)], "x"), "image points and video"),
    (lambda: format_points([GroundedPoint(1, 0.1, 0.1, image_index=0)], "x"), "1-based"),
    (lambda: format_points([GroundedPoint(1, 0.1, 0.1)], "x", wrapper="total"), "wrapper"),
    (lambda: format_points([GroundedPoint(1, 0.1, 0.1, t_s=-1.0)], "x"), "seconds >= 0"),
    (lambda: format_tracks([GroundedPoint(1, 0.1, 0.1)], "x"), "t_s"),
    (lambda: format_tracks([GroundedPoint(1, 0.1, 0.1, t_s=0.0), GroundedPoint(1, 0.2, 0.1, t_s=0.04)], "x"), "twice"),
    (lambda: format_count(3, [GroundedPoint(1, 0.1, 0.1)], "x"), "does not match"),
    (lambda: format_count(-1, [], "x"), "integer >= 0"),
])
def test_points_that_cannot_be_written_raise_a_clear_error(call, message):
    with pytest.raises(GroundingError, match=message):
        call()
