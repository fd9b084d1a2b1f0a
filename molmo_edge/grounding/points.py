"""The values the grounding grammar carries: one point, one element, one parsed answer.

Coordinates are normalised to 0..1 (the text writes them 0..1000, Molmo v1 wrote 0..100 percent).
A point belongs either to an image (`image_index`, 1-based as written in the text) or to a video
frame (`t_s`, seconds as written in the text), never both; a Molmo v1 point has neither.
Object ids are the model's own: 1-based, and within one element the same id means the same object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from molmo_edge.errors import MolmoEdgeError

ResultKind = Literal["points", "tracks", "legacy", "none", "text"]
ElementKind = Literal["points", "tracks", "legacy"]


class GroundingError(MolmoEdgeError, ValueError):
    """Points that cannot be written in the grammar, or a bad argument to a grounding helper.

    Parsing never raises this: `parse` reports what it could not read in `GroundingResult.errors`.
    """


@dataclass(frozen=True, slots=True)
class GroundedPoint:
    """One point the model placed on one object.

    `x`, `y` are normalised to 0..1 of the image width / height (value written in the text / 1000).
    `t_s` is the frame timestamp for video points and tracks; `image_index` the 1-based image
    number for image points.
    """

    object_id: int
    x: float
    y: float
    t_s: float | None = None
    image_index: int | None = None

    def to_pixels(self, width: int | float, height: int | float) -> tuple[float, float]:
        """(u_px, v_px) of this point in an image of `width` × `height` pixels (see geometry.py)."""
        from molmo_edge.grounding.geometry import to_pixels

        return to_pixels(self.x, self.y, width, height)


@dataclass(slots=True)
class GroundingElement:
    """One `<points>`, `<tracks>` or Molmo v1 `<point(s)>` element found in the text.

    `start_char` / `end_char` delimit the element in the parsed text (end exclusive), including
    its closing tag when there is one. `count` is the number from a wrapper around the element
    (`Counting the … shows a total of N.`, `There are N ….`), or None.
    """

    kind: ElementKind
    tag: str
    points: list[GroundedPoint]
    label: str | None
    alt: str | None
    start_char: int
    end_char: int
    truncated: bool = False
    count: int | None = None

    @property
    def object_ids(self) -> list[int]:
        return sorted({p.object_id for p in self.points})


@dataclass(slots=True)
class GroundingResult:
    """Everything `parse` read from one model answer.

    `points` holds every point of every element in text order. `count` is the wrapper's number
    when there is one, else the number of distinct object ids (summed over elements, since each
    element numbers its objects from 1); 0 for "There are none."; None for plain text.
    `errors` says, for people, what could not be read and where; `truncated` is True when the text
    stopped inside an element (the usual max-new-tokens stop).
    """

    points: list[GroundedPoint] = field(default_factory=list)
    kind: ResultKind = "text"
    label: str | None = None
    alt: str | None = None
    count: int | None = None
    none: bool = False
    errors: list[str] = field(default_factory=list)
    truncated: bool = False
    elements: list[GroundingElement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the text was read without any problem."""
        return not self.errors and not self.truncated

    @property
    def object_ids(self) -> list[int]:
        """Distinct object ids, ascending."""
        return sorted({p.object_id for p in self.points})

    def by_time(self) -> dict[float, list[GroundedPoint]]:
        """Video points grouped by timestamp, ascending; points without `t_s` are left out."""
        groups: dict[float, list[GroundedPoint]] = {}
        for p in self.points:
            if p.t_s is not None:
                groups.setdefault(p.t_s, []).append(p)
        return dict(sorted(groups.items()))

    def by_image(self) -> dict[int, list[GroundedPoint]]:
        """Image points grouped by 1-based image index, ascending; others are left out."""
        groups: dict[int, list[GroundedPoint]] = {}
        for p in self.points:
            if p.image_index is not None:
                groups.setdefault(p.image_index, []).append(p)
        return dict(sorted(groups.items()))

    def by_object(self) -> dict[int, list[GroundedPoint]]:
        """Points grouped by object id, ascending; within an object, in text order (a track)."""
        groups: dict[int, list[GroundedPoint]] = {}
        for p in self.points:
            groups.setdefault(p.object_id, []).append(p)
        return dict(sorted(groups.items()))
