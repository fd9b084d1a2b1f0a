"""Points as a sensor_msgs/PointCloud2 (RViz shows it as is; extra fields carry the ids).

Layout, one 32-byte little-endian record per point, height 1 (an unordered cloud):

    offset  field        type     meaning
     0      x, y, z      float32  metres in the camera optical frame; NaN when depth is unknown
    12      u, v         float32  pixel position in the source image
    20      track_id     int32    persistent track id (-1: none)
    24      query_index  int32    which query the point answers
    28      confidence   float32  NaN when the model gives none

`pointcloud_to_array` reads any PointCloud2 with count-1 fields back into a numpy structured
array (sensor_msgs_py, which does this upstream, is not available as a wheel).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from molmo_edge.errors import MolmoEdgeError

from .headers import copy_header
from .points import PointLike, points_to_columns

# (name, offset, PointField datatype)
FIELDS: tuple[tuple[str, int, int], ...] = (
    ("x", 0, PointField.FLOAT32),
    ("y", 4, PointField.FLOAT32),
    ("z", 8, PointField.FLOAT32),
    ("u", 12, PointField.FLOAT32),
    ("v", 16, PointField.FLOAT32),
    ("track_id", 20, PointField.INT32),
    ("query_index", 24, PointField.INT32),
    ("confidence", 28, PointField.FLOAT32),
)
POINT_STEP = 32

_NUMPY_TYPE = {
    PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2", PointField.UINT16: "u2",
    PointField.INT32: "i4", PointField.UINT32: "u4", PointField.FLOAT32: "f4", PointField.FLOAT64: "f8",
}

POINT_DTYPE = np.dtype({
    "names": [name for name, _, _ in FIELDS],
    "formats": ["<" + _NUMPY_TYPE[datatype] for _, _, datatype in FIELDS],
    "offsets": [offset for _, offset, _ in FIELDS],
    "itemsize": POINT_STEP,
})


def points_to_pointcloud(points: Iterable[PointLike], header: Header, default_query_index: int = 0) -> PointCloud2:
    """Pack points into a PointCloud2 stamped with `header` (copy the source image's header)."""
    cols = points_to_columns(points, default_query_index)
    records = np.zeros(len(cols), dtype=POINT_DTYPE)
    records["x"], records["y"], records["z"] = cols.xyz_m[:, 0], cols.xyz_m[:, 1], cols.xyz_m[:, 2]
    records["u"], records["v"] = cols.u_px, cols.v_px
    records["track_id"], records["query_index"] = cols.track_id, cols.query_index
    records["confidence"] = cols.confidence

    msg = PointCloud2()
    msg.header = copy_header(header)
    msg.height = 1
    msg.width = len(cols)
    msg.fields = [PointField(name=name, offset=offset, datatype=datatype, count=1) for name, offset, datatype in FIELDS]
    msg.is_bigendian = False
    msg.point_step = POINT_STEP
    msg.row_step = POINT_STEP * len(cols)
    msg.is_dense = bool(cols.has_xyz.all())  # False: some points have NaN coordinates
    msg.data = records.tobytes()
    return msg


class PointCloudFormatError(MolmoEdgeError, ValueError):
    """A PointCloud2 whose fields, steps or data length do not fit together."""


def pointcloud_to_array(msg: PointCloud2) -> np.ndarray:
    """Any PointCloud2 with count-1 fields → structured array [height·width], native byte order."""
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for field in msg.fields:
        if field.datatype not in _NUMPY_TYPE:
            raise PointCloudFormatError(f"field {field.name!r} has unknown datatype {field.datatype}")
        if field.count != 1:
            raise PointCloudFormatError(f"field {field.name!r} has count {field.count}; only 1 is supported")
        names.append(field.name)
        formats.append(order + _NUMPY_TYPE[field.datatype])
        offsets.append(field.offset)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})
    height, width = int(msg.height), int(msg.width)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if msg.row_step < width * msg.point_step or data.size != msg.row_step * height:
        raise PointCloudFormatError(
            f"cloud {width}x{height}, point_step {msg.point_step}, row_step {msg.row_step} does not "
            f"fit {data.size} bytes of data"
        )
    rows = data.reshape(height, msg.row_step)[:, : width * msg.point_step].copy()
    records = rows.view(dtype).reshape(-1)
    native = np.dtype({"names": names, "formats": [f[1:] for f in formats]})  # packed, native order
    out = np.empty(len(records), dtype=native)
    for name in names:
        out[name] = records[name]
    return out
