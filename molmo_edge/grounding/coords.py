"""Reading the Molmo2 `coords` string: `"1 1 123 456 2 234 567;2 3 649 154"`.

Grammar (Molmo2 paper, appendix "Pointing"): groups separated by ";" (a tab in some pre-training
data), one group per image or frame. A group is an index followed by triples:

    index  (object_id x y)*

where index is the 1-based image number for images or the frame time in seconds ("%.1f") for
video; object ids are 1-based and shared across groups (the same id in two frames is the same
object); x, y are integers 0..1000 written "%03d". Values are separated by spaces.

Reading keeps every complete, valid triple and says why it dropped anything else.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from molmo_edge.grounding.points import GroundedPoint

_GROUP_SEPARATOR = re.compile(r"[;\t]")
# A plain decimal number. Python's float() would also take "nan", "inf", "1_0" and non-ASCII
# digits; none of those is something the model writes, so they are refused here.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_MAX_TOKEN_CHARS = 32
COORD_MAX = 1000


@dataclass(slots=True)
class CoordsReading:
    points: list[GroundedPoint] = field(default_factory=list)
    video: bool = False
    problems: list[str] = field(default_factory=list)
    dropped_at_cut: int = 0  # values dropped because the text was cut inside them


def read_number(token: str) -> float | None:
    """The value of a plain decimal token, or None (not a number, not finite, absurdly long)."""
    if len(token) > _MAX_TOKEN_CHARS or _NUMBER.fullmatch(token) is None:
        return None
    value = float(token)
    return value if math.isfinite(value) else None


def quote_short(token: str) -> str:
    return repr(token if len(token) <= 20 else token[:17] + "...")


def _cut_value_is_complete(token: str) -> bool:
    """Whether a coordinate that the text ends on can still be complete.

    The model writes x, y with "%03d", so a cut "45" was on its way to "45x"; "100" may be the
    start of "1000". Anything else with three or more digits is complete.
    """
    if not token.isascii() or not token.isdigit():
        return False
    return len(token) >= 4 or (len(token) == 3 and token != "100")


def _looks_like_video(groups: list[list[str]]) -> bool:
    # Timestamps are written "%.1f"; image indices are bare integers.
    return any("." in tokens[0] for tokens in groups if tokens)


def read_coords(
    raw: str, *, tag: str, at_char: int, video: bool | None, runs_to_end: bool
) -> CoordsReading:
    """Read one coords value.

    `video`: True if the indices are timestamps, False if image indices, None to decide from the
    text (a "." in an index means seconds). `runs_to_end`: the value was cut by the end of the
    text, so its last value may be incomplete. Problems name the element as `<tag> at char N`.
    """
    out = CoordsReading()
    where = f"<{tag}> at char {at_char}"
    groups = [g.split() for g in _GROUP_SEPARATOR.split(raw)]
    groups = [g for g in groups if g]
    if runs_to_end and groups and raw and not (raw[-1].isspace() or raw[-1] == ";"):
        last = groups[-1]
        # Positions in a group: 0 is the index, then (id, x, y) triples; y sits at 3, 6, 9, …
        is_y = len(last) > 1 and (len(last) - 1) % 3 == 0
        if not is_y or not _cut_value_is_complete(last[-1]):
            last.pop()
            out.dropped_at_cut += 1
            if not last:
                groups.pop()
    if not groups and not runs_to_end:
        out.problems.append(f"{where}: the coords attribute holds no values")
    out.video = _looks_like_video(groups) if video is None else video
    noted_float = False

    for number, tokens in enumerate(groups):
        is_last = number == len(groups) - 1
        index_token, values = tokens[0], tokens[1:]
        index = read_number(index_token)
        t_s: float | None = None
        image_index: int | None = None
        if out.video:
            if index is None or index < 0:
                out.problems.append(f"{where}: frame time {quote_short(index_token)} is not a time in seconds >= 0; "
                                    f"its {len(values) // 3} points dropped")
                continue
            t_s = index
        else:
            if index is None or _INTEGER.fullmatch(index_token) is None or index < 1:
                out.problems.append(f"{where}: image index {quote_short(index_token)} is not an integer >= 1; "
                                    f"its {len(values) // 3} points dropped")
                continue
            image_index = int(index_token)
        if not values and not (is_last and runs_to_end):
            out.problems.append(f"{where}: index {quote_short(index_token)} is followed by no points")
        leftover = len(values) % 3
        if leftover and not (is_last and runs_to_end):
            out.problems.append(f"{where}: odd number of values: {len(values)} after index "
                                f"{quote_short(index_token)} is not a multiple of 3 (object id, x, y); "
                                f"the last {leftover} ignored")
        elif leftover:
            out.dropped_at_cut += leftover
        for k in range(0, len(values) - leftover, 3):
            id_token, x_token, y_token = values[k : k + 3]
            object_id = read_number(id_token)
            if object_id is None or object_id < 1 or object_id != int(object_id):
                out.problems.append(f"{where}: object id {quote_short(id_token)} is not an integer >= 1; point dropped")
                continue
            xy = []
            for token in (x_token, y_token):
                value = read_number(token)
                if value is None:
                    out.problems.append(f"{where}: coordinate {quote_short(token)} is not a number; point dropped")
                elif not 0 <= value <= COORD_MAX:
                    out.problems.append(f"{where}: coordinate {quote_short(token)} out of range 0..{COORD_MAX}; "
                                        "point dropped")
                else:
                    xy.append(value)
            if len(xy) != 2:
                continue
            if not noted_float and not all(_INTEGER.fullmatch(t) for t in (id_token, x_token, y_token)):
                # "123.5" where "%03d" was expected: the meaning is clear, so keep it, but say so.
                out.problems.append(f"{where}: non-integer value in {id_token} {x_token} {y_token} "
                                    "(integers expected); used as written")
                noted_float = True
            out.points.append(GroundedPoint(int(object_id), xy[0] / COORD_MAX, xy[1] / COORD_MAX,
                                            t_s=t_s, image_index=image_index))
    return out
