"""Molmo (v1) pointing answers, read into the same `GroundedPoint`s as Molmo2's.

Molmo v1 wrote one point per attribute pair, in percent of the image size (0..100):

    <point x="12.3" y="45.6" alt="cup">cup</point>
    <points x1="9.1" y1="11.7" x2="17.2" y2="41.3" alt="boats">boats</points>

The number in `x2`/`y2` is used as the object id (1 for `<point>`). v1 had no image index and no
video form, so these points have `image_index=None` and `t_s=None`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from molmo_edge.grounding.coords import quote_short, read_number
from molmo_edge.grounding.points import GroundedPoint
from molmo_edge.grounding.scan import AttrValue, StartTag

_NUMBERED_ATTR = re.compile(r"([xy])(\d{1,9})", re.ASCII)
PERCENT_MAX = 100.0


@dataclass(slots=True)
class LegacyReading:
    points: list[GroundedPoint] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dropped_at_cut: int = 0


def has_legacy_attrs(tag: StartTag) -> bool:
    """True when the tag carries Molmo v1 `x`/`y` or `x1`/`y1`… attributes."""
    return any(name in ("x", "y") or _NUMBERED_ATTR.fullmatch(name) for name in tag.attrs)


def read_legacy(tag: StartTag) -> LegacyReading:
    out = LegacyReading()
    where = f"<{tag.name}> at char {tag.start_char}"
    # object id -> {"x": value, "y": value}
    pairs: dict[int, dict[str, AttrValue]] = {}
    for name, value in tag.attrs.items():
        if name in ("x", "y"):
            pairs.setdefault(1, {})[name] = value
            continue
        m = _NUMBERED_ATTR.fullmatch(name)
        if m is not None:
            pairs.setdefault(int(m.group(2)), {})[m.group(1)] = value
    for object_id in sorted(pairs):
        pair = pairs[object_id]
        if any(v.runs_to_end for v in pair.values()) or len(pair) < 2 and tag.truncated:
            # Cut by the end of the text: "45" may have been "45.6".
            out.dropped_at_cut += 1
            continue
        if len(pair) < 2:
            missing = "y" if "x" in pair else "x"
            out.problems.append(f"{where}: point {object_id} has no {missing} value; point dropped")
            continue
        if object_id < 1:
            out.problems.append(f"{where}: point number {object_id} is not >= 1; point dropped")
            continue
        xy = []
        for axis in ("x", "y"):
            raw = pair[axis].raw.strip()
            value = read_number(raw)
            if value is None:
                out.problems.append(f"{where}: {axis} value {quote_short(raw)} is not a number; point dropped")
            elif not 0 <= value <= PERCENT_MAX:
                out.problems.append(f"{where}: {axis} value {quote_short(raw)} out of range 0..100 (percent); "
                                    "point dropped")
            else:
                xy.append(round(value / PERCENT_MAX, 12))  # 11.7 / 100 -> 0.117, not 0.11699999999999999
        if len(xy) == 2:
            out.points.append(GroundedPoint(object_id, xy[0], xy[1]))
    return out
