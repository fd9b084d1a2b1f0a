"""Read an image file as RGB uint8 [H, W, 3], with errors a user can act on.

OpenCV returns None (no exception) for a missing, unreadable or corrupt file; this turns each
case into an InputError that names the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from molmo_edge.errors import InputError


def read_image_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] from a PNG / JPEG / BMP / ... file (grey and alpha images converted)."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise InputError(f"image file {path} does not exist")
    if not path.is_file():
        raise InputError(f"{path} is not a file; pass an image file (PNG, JPEG, ...)")
    # np.fromfile + imdecode instead of imread: works with non-ASCII paths on every platform
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"cannot decode {path} as an image (corrupt file or unsupported format); "
                         "use a PNG or JPEG file")
    return np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB


__all__ = ["read_image_rgb"]
