"""Points as a visualization_msgs/MarkerArray for RViz: a sphere and a track-id label per point.

The array starts with a DELETEALL marker so that markers of tracks that ended vanish when the
next array arrives (ids are re-used from 0 each time). Only points with a known 3-D position are
drawn: markers live in 3-D.
"""
from __future__ import annotations

import colorsys
from typing import Iterable, Sequence

from builtin_interfaces.msg import Duration
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from .headers import copy_header
from .points import PointLike, points_to_columns

_GOLDEN_RATIO_CONJUGATE = 0.6180339887498949


def track_colour(track_id: int) -> tuple[float, float, float]:
    """A stable RGB colour (0..1) per track id: hues stepped by the golden ratio so that
    consecutive ids look different, identical in every process and run (no hash())."""
    if track_id < 0:
        return (0.7, 0.7, 0.7)  # points without a track are grey
    hue = (track_id * _GOLDEN_RATIO_CONJUGATE) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.85, 0.95)


def _duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(sec=whole, nanosec=int(round((seconds - whole) * 1e9)))


def points_to_markers(
    points: Iterable[PointLike],
    header: Header,
    namespace: str = "molmo_edge",
    sphere_diameter_m: float = 0.05,
    text_height_m: float = 0.05,
    lifetime_s: float = 0.0,
    query_labels: Sequence[str] | None = None,
    default_query_index: int = 0,
) -> MarkerArray:
    """DELETEALL, then per 3-D point a SPHERE (ns `<namespace>/points`) and a TEXT_VIEW_FACING
    label (ns `<namespace>/labels`) just above it reading the track id, prefixed with the query's
    label when `query_labels` is given. `lifetime_s` 0 keeps markers until the next DELETEALL."""
    cols = points_to_columns(points, default_query_index)
    lifetime = _duration(lifetime_s)

    clear = Marker()
    clear.header = copy_header(header)
    clear.ns = namespace
    clear.action = Marker.DELETEALL
    markers = [clear]

    for i in range(len(cols)):
        if not cols.has_xyz[i]:
            continue
        x, y, z = (float(c) for c in cols.xyz_m[i])
        track_id = int(cols.track_id[i])
        r, g, b = track_colour(track_id)

        sphere = Marker()
        sphere.header = copy_header(header)
        sphere.ns = f"{namespace}/points"
        sphere.id = i
        sphere.type = Marker.SPHERE
        sphere.action = Marker.ADD
        sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z = x, y, z
        sphere.pose.orientation.w = 1.0
        sphere.scale.x = sphere.scale.y = sphere.scale.z = float(sphere_diameter_m)
        sphere.color = ColorRGBA(r=r, g=g, b=b, a=1.0)
        sphere.lifetime = lifetime
        markers.append(sphere)

        label = Marker()
        label.header = copy_header(header)
        label.ns = f"{namespace}/labels"
        label.id = i
        label.type = Marker.TEXT_VIEW_FACING
        label.action = Marker.ADD
        # The optical frame's y points down, so "above the sphere" is −y.
        label.pose.position.x, label.pose.position.y, label.pose.position.z = x, y - sphere_diameter_m, z
        label.pose.orientation.w = 1.0
        label.scale.z = float(text_height_m)  # TEXT markers use only scale.z (letter height)
        label.color = ColorRGBA(r=r, g=g, b=b, a=1.0)
        label.text = _label_text(track_id, int(cols.query_index[i]), query_labels)
        label.lifetime = lifetime
        markers.append(label)
    return MarkerArray(markers=markers)


def _label_text(track_id: int, query_index: int, query_labels: Sequence[str] | None) -> str:
    ident = f"#{track_id}" if track_id >= 0 else "#?"
    if query_labels is not None and 0 <= query_index < len(query_labels):
        return f"{query_labels[query_index]} {ident}"
    return ident
