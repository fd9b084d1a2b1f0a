"""molmo_edge.grounding: the Molmo2 points / tracks text format.

    from molmo_edge.grounding import parse, format_points
    result = parse('Counting the <points coords="1 1 123 456 2 234 567">cups</points> shows a total of 2.')
    result.count            # 2
    result.points[0]        # GroundedPoint(object_id=1, x=0.123, y=0.456, t_s=None, image_index=1)
    result.points[0].to_pixels(640, 480)

Modules: `points` (the value types), `parse` (text → points; never raises on a str), `format`
(points → text, for training targets), `coords` (the coords string), `legacy` (Molmo v1
percent points), `scan` (the linear-time tag scanner), `geometry` (normalised ↔ pixels).
"""
from __future__ import annotations

from molmo_edge.grounding.format import NONE_ANSWER, format_coordinate, format_count, format_points, format_time, format_tracks
from molmo_edge.grounding.geometry import from_pixels, to_pixel_index, to_pixels
from molmo_edge.grounding.parse import parse
from molmo_edge.grounding.points import GroundedPoint, GroundingElement, GroundingError, GroundingResult

__all__ = [
    "GroundedPoint",
    "GroundingElement",
    "GroundingError",
    "GroundingResult",
    "NONE_ANSWER",
    "format_coordinate",
    "format_count",
    "format_points",
    "format_time",
    "format_tracks",
    "from_pixels",
    "parse",
    "to_pixel_index",
    "to_pixels",
]
