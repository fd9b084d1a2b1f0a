"""Writing points in the Molmo2 grammar: the inverse of `parse`, used to build training targets.

    format_points(points, "red circles")          -> <points coords="1 1 123 456 2 234 567">red circles</points>
    format_points(points, "boats", wrapper="counting")
                                                   -> Counting the <points …>boats</points> shows a total of 2.
    format_tracks(points, "red circle")           -> <tracks coords="0.0 1 635 522;0.5 1 606 490">red circle</tracks>

Layout follows the Molmo2 paper (appendix "Pointing"): one group per image / frame, groups
ascending and joined by ";"; coordinates are the normalised value × 1000 rounded half-up to an
integer, clamped to 0..1000 and written "%03d"; frame times "%.1f". Inside a pointing group the
points are sorted by x then y (as the paper's example); inside a tracks frame by object id.
Labels and alt text are HTML-escaped so that they cannot end the element early.
"""
from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Literal

from molmo_edge.grounding.points import GroundedPoint, GroundingError

Wrapper = Literal["counting", "there_are"]
NONE_ANSWER = "There are none."
_WRAPPERS = (None, "counting", "there_are")


def format_coordinate(value_norm: float) -> str:
    """A normalised 0..1 coordinate as the model writes it: "%03d" of round(value × 1000), clamped."""
    if not isinstance(value_norm, (int, float)) or isinstance(value_norm, bool) or not math.isfinite(value_norm):
        raise GroundingError(f"a point coordinate must be a finite number in 0..1, got {value_norm!r}")
    scaled = math.floor(value_norm * 1000 + 0.5)  # half-up, not banker's rounding
    return f"{min(max(scaled, 0), 1000):03d}"


def format_time(t_s: float) -> str:
    """A frame time as the model writes it: seconds, one decimal."""
    if not isinstance(t_s, (int, float)) or isinstance(t_s, bool) or not math.isfinite(t_s) or t_s < 0:
        raise GroundingError(f"a frame time must be a finite number of seconds >= 0, got {t_s!r}")
    return f"{t_s:.1f}"


def _check_id(point: GroundedPoint) -> int:
    object_id = point.object_id
    if not isinstance(object_id, int) or isinstance(object_id, bool) or object_id < 1:
        raise GroundingError(f"object ids are integers >= 1 (the grammar is 1-based), got {object_id!r} in {point}")
    return object_id


def _triple(point: GroundedPoint) -> tuple[int, str, str]:
    return _check_id(point), format_coordinate(point.x), format_coordinate(point.y)


def _element(tag: str, coords: str, label: str, alt: str | None) -> str:
    if not isinstance(label, str):
        raise GroundingError(f"the label must be a str, got {type(label).__name__}")
    alt_attr = "" if alt is None else f' alt="{html.escape(alt, quote=True)}"'
    return f'<{tag} coords="{coords}"{alt_attr}>{html.escape(label, quote=False)}</{tag}>'


def _groups(points: list[GroundedPoint], *, video: bool) -> list[tuple[str, list[tuple[int, str, str]]]]:
    """[(index text, [(id, x text, y text), …]), …] ascending by index; one group per image / frame."""
    groups: dict[str, tuple[float, list[tuple[int, str, str]]]] = {}
    for p in points:
        if video:
            key_text = format_time(p.t_s)  # type: ignore[arg-type]  # checked by _is_video
            key = float(key_text)
        else:
            index = 1 if p.image_index is None else p.image_index
            if not isinstance(index, int) or isinstance(index, bool) or index < 1:
                raise GroundingError(f"image_index is 1-based (first image = 1), got {index!r} in {p}")
            key, key_text = index, str(index)
        groups.setdefault(key_text, (key, []))[1].append(_triple(p))
    ordered = sorted(groups.items(), key=lambda item: item[1][0])
    return [(key_text, triples) for key_text, (_, triples) in ordered]


def _is_video(points: list[GroundedPoint]) -> bool:
    timed = [p.t_s is not None for p in points]
    if any(timed) and not all(timed):
        raise GroundingError("cannot write image points and video points in one element: "
                             "give every point a t_s (video) or none (images)")
    if all(timed) and any(p.image_index is not None for p in points):
        raise GroundingError("a point has both t_s and image_index; video points carry t_s only")
    return all(timed)


def _coords(groups: list[tuple[str, list[tuple[int, str, str]]]]) -> str:
    return ";".join(" ".join([key, *(f"{i} {x} {y}" for i, x, y in triples)]) for key, triples in groups)


def _distinct_ids(points: list[GroundedPoint]) -> int:
    return len({p.object_id for p in points})


def format_points(
    points: Iterable[GroundedPoint], label: str, *, alt: str | None = None, wrapper: Wrapper | None = None
) -> str:
    """Image points (grouped by image_index; None means image 1) or video points (grouped by t_s).

    `wrapper`: None for the bare element, "counting" for `Counting the … shows a total of N.`,
    "there_are" for `There are N ….`, with N the number of distinct object ids. No points gives
    `There are none.`.
    """
    if wrapper not in _WRAPPERS:
        raise GroundingError(f"wrapper must be one of {_WRAPPERS}, got {wrapper!r}")
    points = list(points)
    if not points:
        return NONE_ANSWER
    video = _is_video(points)
    groups = _groups(points, video=video)
    for _, triples in groups:
        triples.sort(key=lambda t: (int(t[1]), int(t[2]), t[0]))  # by x, then y, as the model was taught
    element = _element("points", _coords(groups), label, alt)
    n = _distinct_ids(points)
    if wrapper == "counting":
        return f"Counting the {element} shows a total of {n}."
    if wrapper == "there_are":
        return f"There are {n} {element}."
    return element


def format_tracks(points: Iterable[GroundedPoint], label: str, *, alt: str | None = None) -> str:
    """Tracks: every point has a t_s; one group per frame (time "%.1f"); ids consistent across frames."""
    points = list(points)
    if not points:
        return NONE_ANSWER
    if not _is_video(points):
        raise GroundingError("tracks need a t_s (frame time in seconds) on every point")
    groups = _groups(points, video=True)
    for key, triples in groups:
        triples.sort()
        ids = [t[0] for t in triples]
        if len(set(ids)) != len(ids):
            raise GroundingError(f"object id written twice in the frame at {key} s: one point per object "
                                 "per frame in a track")
    return _element("tracks", _coords(groups), label, alt)


def format_count(n: int, points: Iterable[GroundedPoint], label: str, *, alt: str | None = None) -> str:
    """A counting answer: `Counting the <points …> shows a total of n.`; n = 0 gives `There are none.`.

    Molmo2 counts by pointing, so `n` must equal the number of distinct object ids in `points`.
    """
    points = list(points)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise GroundingError(f"a count is an integer >= 0, got {n!r}")
    if n != _distinct_ids(points):
        raise GroundingError(f"count {n} does not match the {_distinct_ids(points)} distinct object ids "
                             "pointed at; Molmo2 counts by pointing, so give one id per counted object")
    return format_points(points, label, alt=alt, wrapper="counting")
