"""`parse(text)`: a model answer → points, count, label and a list of what could not be read.

Handles Molmo2 `<points coords=…>` / `<tracks coords=…>` (images, video, tracks), Molmo v1
`<point x= y=>` / `<points x1= y1= …>`, the counting wrappers (`Counting the <points …> shows a
total of N.`, `There are N <points …>.`) and `There are none.`.

It never raises on a str: the stream keeps serving whatever the model wrote. The commonest bad
input is an answer cut by the max-new-tokens stop, so a cut element keeps every point written in
full before the cut and says so in `errors`.
"""
from __future__ import annotations

import html
import re
from typing import Literal

from molmo_edge.grounding.coords import read_coords
from molmo_edge.grounding.legacy import has_legacy_attrs, read_legacy
from molmo_edge.grounding.points import ElementKind, GroundingElement, GroundingError, GroundingResult
from molmo_edge.grounding.scan import TAG_OPEN, Content, StartTag, partial_tag_at_end, read_content, read_start_tag

KindHint = Literal["image", "video"]
_KIND_HINTS = (None, "image", "video")

# Wrappers are looked for in a small window either side of an element: bounded work per element.
_WRAPPER_WINDOW = 80
_THERE_ARE_BEFORE = re.compile(r"there\s+are\s+(\d{1,9})\s*\Z", re.IGNORECASE | re.ASCII)
_TOTAL_AFTER = re.compile(r"\s*shows\s+a\s+total\s+of\s+(\d{1,9})", re.IGNORECASE | re.ASCII)
_TOTAL_WORDS = "shows a total of"
_ESCAPED_TAG = re.compile(r"&lt;\s*(?:points|tracks|point)(?![\w-])", re.IGNORECASE | re.ASCII)
_THERE_ARE_NONE = re.compile(r"there\s+are\s+none\b", re.IGNORECASE | re.ASCII)
MAX_ERRORS = 50


class _Problems:
    """The errors list, capped so that a megabyte of garbage gives a readable report."""

    def __init__(self, limit: int = MAX_ERRORS) -> None:
        self.items: list[str] = []
        self.limit = limit
        self.hidden = 0

    def add(self, message: str) -> None:
        if len(self.items) < self.limit:
            self.items.append(message)
        else:
            self.hidden += 1

    def extend(self, messages: list[str]) -> None:
        for message in messages:
            self.add(message)

    def as_list(self) -> list[str]:
        tail = [f"... and {self.hidden} more problems not listed"] if self.hidden else []
        return self.items + tail


def parse(text: str, *, kind_hint: KindHint | None = None) -> GroundingResult:
    """Read every grounding element in `text`.

    `kind_hint`: "video" makes `<points>` indices timestamps even when written without a "."
    ("2 1 100 200" = 2.0 s); "image" makes them image indices; None decides per element (a "." in
    an index means seconds; `<tracks>` are always video).
    """
    if not isinstance(text, str):
        raise TypeError(f"parse() needs the model's answer as str, got {type(text).__name__}")
    if kind_hint not in _KIND_HINTS:
        raise GroundingError(f"kind_hint must be one of {_KIND_HINTS}, got {kind_hint!r}")
    try:
        result = _parse(text, kind_hint)
        if not result.elements and _ESCAPED_TAG.search(text) is not None:
            # The whole answer went through an HTML escaper (`&lt;points coords=&quot;…&gt;`).
            unescaped = _parse(html.unescape(text), kind_hint)
            if unescaped.elements:
                unescaped.errors.insert(0, "the answer was HTML-escaped; char positions refer to the unescaped text")
                return unescaped
        return result
    except Exception as exc:  # noqa: BLE001 - the contract: model output never takes the caller down
        return GroundingResult(errors=[
            f"internal grounding parser error ({type(exc).__name__}: {exc}); please report this answer"
        ])


def _parse(text: str, kind_hint: KindHint | None) -> GroundingResult:
    result = GroundingResult()
    problems = _Problems()
    pos = 0
    while (match := TAG_OPEN.search(text, pos)) is not None:
        tag = read_start_tag(text, match)
        problems.extend(tag.problems)
        content: Content | None = None
        if tag.closed and not tag.self_closing:
            content = read_content(text, tag)
            problems.extend(content.problems)
        element = _element(text, tag, content, kind_hint, problems)
        result.elements.append(element)
        result.truncated = result.truncated or element.truncated
        pos = max(element.end_char, match.end())

    cut_at = partial_tag_at_end(text, pos)
    if cut_at is not None:
        result.truncated = True
        problems.add(f"the text ends inside a tag at char {cut_at}: {text[cut_at:][:20]!r}")

    if result.elements:
        first = result.elements[0]
        result.kind = first.kind
        result.points = [p for e in result.elements for p in e.points]
        result.label = next((e.label for e in result.elements if e.label), first.label)
        result.alt = next((e.alt for e in result.elements if e.alt is not None), None)
        counts = [e.count for e in result.elements if e.count is not None]
        result.count = sum(counts) if counts else None
    elif _THERE_ARE_NONE.search(text) is not None:
        result.kind, result.none, result.count = "none", True, 0
    result.errors = problems.as_list()
    return result


def _video_mode(tag_name: str, kind_hint: KindHint | None) -> bool | None:
    if tag_name == "tracks" or kind_hint == "video":
        return True
    return False if kind_hint == "image" else None


def _element(
    text: str, tag: StartTag, content: Content | None, kind_hint: KindHint | None, problems: _Problems
) -> GroundingElement:
    where = f"<{tag.name}> element at char {tag.start_char}"
    kind: ElementKind = "tracks" if tag.name == "tracks" else "points"
    dropped_at_cut = 0
    points = []
    if "coords" in tag.attrs:
        value = tag.attrs["coords"]
        reading = read_coords(value.raw, tag=tag.name, at_char=tag.start_char,
                              video=_video_mode(tag.name, kind_hint), runs_to_end=value.runs_to_end)
        points, dropped_at_cut = reading.points, reading.dropped_at_cut
        problems.extend(reading.problems)
    elif has_legacy_attrs(tag):
        kind = "legacy"
        legacy = read_legacy(tag)
        points, dropped_at_cut = legacy.points, legacy.dropped_at_cut
        problems.extend(legacy.problems)
    elif not tag.truncated:
        problems.add(f"{where} has no coords attribute")

    truncated = tag.truncated or (content is not None and content.truncated)
    if truncated:
        problems.add(f"truncated {where}: kept {len(points)} complete points"
                     + (f", dropped {dropped_at_cut} cut-off values" if dropped_at_cut else ""))
    end_char = content.end_char if content is not None else tag.end_char
    raw_label = content.raw_label if content is not None else None
    alt = tag.attrs.get("alt")
    element = GroundingElement(
        kind=kind, tag=tag.name, points=points,
        label=html.unescape(raw_label).strip() if raw_label is not None else None,
        alt=html.unescape(alt.raw).strip() if alt is not None else None,
        start_char=tag.start_char, end_char=end_char, truncated=truncated,
    )
    element.count = _wrapper_count(text, element, problems)
    if element.count is None and points:
        element.count = len(element.object_ids)
    return element


def _wrapper_count(text: str, element: GroundingElement, problems: _Problems) -> int | None:
    """N from `Counting the <…> shows a total of N.` or `There are N <…>.` around the element."""
    after_end = min(len(text), element.end_char + _WRAPPER_WINDOW)
    total = _TOTAL_AFTER.match(text[element.end_char:after_end])
    before = _THERE_ARE_BEFORE.search(text[max(0, element.start_char - _WRAPPER_WINDOW):element.start_char])
    if total is not None:
        count = int(total.group(1))
        if element.end_char + total.end() == len(text):
            # "shows a total of 1" at the very end may be a cut "12".
            element.truncated = True
            problems.add(f"the count after <{element.tag}> at char {element.start_char} ends the text "
                         "and may be cut")
    elif before is not None:
        count = int(before.group(1))
    else:
        tail = text[element.end_char:element.end_char + _WRAPPER_WINDOW + 1]  # bounded: linear overall
        words = " ".join(tail.split()).lower()
        if words and len(tail) <= _WRAPPER_WINDOW and _TOTAL_WORDS.startswith(words):
            # "… </points> shows a total" : cut inside the counting wrapper, before its number.
            element.truncated = True
            problems.add(f"the text ends inside the count after <{element.tag}> at char {element.start_char}")
        return None
    ids = element.object_ids
    if element.points and not element.truncated and count != len(ids):
        problems.add(f"the answer says {count} but <{element.tag}> at char {element.start_char} "
                     f"points at {len(ids)} distinct objects")
    return count
