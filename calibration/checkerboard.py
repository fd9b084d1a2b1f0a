"""Camera intrinsics from photos of a printed checkerboard.

The board is named by its INNER corners, columns × rows, like ROS camera_calibration's `--size` and
OpenCV's `patternSize`: a board of 10 × 7 squares is `9x6`. Steps: find the corners in each image
(`cv2.findChessboardCorners`), refine them to sub-pixel accuracy (`cv2.cornerSubPix`), then fit K
and the distortion to all views at once (`cv2.calibrateCamera`).
"""
from __future__ import annotations

import glob
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.errors import ConfigError, MolmoEdgeError

from .intrinsics import CameraIntrinsics, DistortionModel

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Fewer views than this leave the focal length and principal point poorly constrained (each view
# adds 6 pose unknowns); ROS camera_calibration asks for more than this before it calibrates.
DEFAULT_MIN_VIEWS = 5


class CalibrationError(MolmoEdgeError, ValueError):
    """Calibration could not run on the given images (too few boards found, mixed image sizes...)."""


class BoardSpec(BaseModel):
    """A checkerboard: inner corners per row (`cols`) and per column (`rows`), square side in metres."""

    model_config = ConfigDict(frozen=True)

    cols: int = Field(ge=2, description="inner corners along a row")
    rows: int = Field(ge=2, description="inner corners along a column")
    square_m: float = Field(gt=0, description="side of one square, metres")

    @classmethod
    def parse(cls, size: str, square_m: float) -> "BoardSpec":
        """`"9x6"` (inner corners, columns x rows) and the square side in metres."""
        match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", size)
        if not match:
            raise ConfigError(f"board size {size!r} is not COLSxROWS of inner corners, e.g. 9x6")
        cols, rows = int(match.group(1)), int(match.group(2))
        if cols < 2 or rows < 2:
            raise ConfigError(f"board size {size!r}: need at least 2x2 inner corners")
        if not square_m > 0:
            raise ConfigError(f"square size must be positive metres, got {square_m}")
        return cls(cols=cols, rows=rows, square_m=square_m)

    @property
    def pattern_size(self) -> tuple[int, int]:
        return (self.cols, self.rows)

    @property
    def n_corners(self) -> int:
        return self.cols * self.rows

    def object_points(self) -> np.ndarray:
        """Inner-corner positions on the board plane (z = 0), float32 [rows·cols, 3], metres.

        Row-major (x fastest), the order findChessboardCorners returns the image corners in.
        """
        xs, ys = np.meshgrid(np.arange(self.cols), np.arange(self.rows))
        pts = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(self.n_corners)]) * self.square_m
        return pts.astype(np.float32)


@dataclass
class BoardDetection:
    """The outcome of looking for the board in one image."""

    source: str                      # file path or "image[i]" for arrays
    image_size: tuple[int, int]      # (width, height)
    corners_px: np.ndarray | None    # float32 [rows·cols, 2], None when the board was not found


def collect_image_paths(specs: Iterable[str | Path]) -> list[Path]:
    """Expand files, folders (their images, sorted) and glob patterns into a sorted, unique list."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            images = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise ConfigError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(glob.glob(str(spec), recursive=True))
            if not matches:
                raise ConfigError(f"{spec}: no such file or folder, and no file matches it as a pattern")
            found.extend(Path(m) for m in matches if Path(m).is_file())
    unique = sorted(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ConfigError("no images given (pass image files, a folder or a glob such as 'shots/*.png')")
    return unique


def _to_gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise CalibrationError(f"checkerboard images must be 8-bit, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        # Channel order does not matter for finding black/white corners.
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(image, code)
    raise CalibrationError(f"expected a grey or colour image, got shape {image.shape}")


def find_board_corners(image: np.ndarray, board: BoardSpec) -> np.ndarray | None:
    """Sub-pixel inner corners of `board` in `image`, float32 [rows·cols, 2]; None when not found."""
    gray = _to_gray(image)
    # FAST_CHECK gives up early on images with no board in them (most of a bad photo set).
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(gray, board.pattern_size, flags=flags)
    if not found:
        return None
    # Search window: large enough to reach the true saddle point from the coarse estimate, small
    # enough to stay inside one square even when the board is small in the image.
    spacing_px = _min_corner_spacing_px(corners.reshape(-1, 2), board)
    half = int(np.clip(spacing_px / 3.0, 2, 11))
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    corners = cv2.cornerSubPix(gray, corners, (half, half), (-1, -1), criteria)
    return corners.reshape(-1, 2).astype(np.float32)


def _min_corner_spacing_px(corners: np.ndarray, board: BoardSpec) -> float:
    grid = corners.reshape(board.rows, board.cols, 2)
    along_rows = np.linalg.norm(np.diff(grid, axis=1), axis=2).min()
    along_cols = np.linalg.norm(np.diff(grid, axis=0), axis=2).min()
    return float(min(along_rows, along_cols))


def detect_boards(
    images: Sequence[np.ndarray | str | Path], board: BoardSpec
) -> list[BoardDetection]:
    """Look for the board in every image (arrays, or files read with OpenCV)."""
    detections = []
    for i, item in enumerate(images):
        if isinstance(item, (str, Path)):
            source = str(item)
            image = cv2.imread(source, cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise CalibrationError(f"{source}: cannot be read as an image")
        else:
            source, image = f"image[{i}]", np.asarray(item)
        corners = find_board_corners(image, board)
        height, width = image.shape[:2]
        detections.append(BoardDetection(source=source, image_size=(width, height), corners_px=corners))
        log.debug("%s: board %s", source, "found" if corners is not None else "not found")
    return detections


def calibrate_from_detections(
    detections: Sequence[BoardDetection],
    board: BoardSpec,
    min_views: int = DEFAULT_MIN_VIEWS,
    distortion_model: DistortionModel = "plumb_bob",
    camera_name: str = "camera",
) -> CameraIntrinsics:
    """Fit K and distortion to the views where the board was found."""
    if distortion_model == "equidistant":
        raise ConfigError("fisheye (equidistant) calibration is not supported; use plumb_bob or rational_polynomial")
    sizes = {d.image_size for d in detections}
    if len(sizes) > 1:
        raise CalibrationError(f"all images must have the same size, got {sorted(sizes)}")
    used = [d for d in detections if d.corners_px is not None]
    if len(used) < min_views:
        missed = [d.source for d in detections if d.corners_px is None]
        hint = f"; not found in: {', '.join(missed[:5])}{' ...' if len(missed) > 5 else ''}" if missed else ""
        raise CalibrationError(
            f"the {board.cols}x{board.rows} board was found in {len(used)} of {len(detections)} "
            f"image(s), need at least {min_views}{hint}. Check --board (INNER corners, e.g. 9x6 for "
            "10x7 squares) and take more photos with the whole board in view at varied angles"
        )
    (width, height) = sizes.pop()
    object_points = [board.object_points() for _ in used]
    image_points = [d.corners_px.reshape(-1, 1, 2) for d in used]
    flags = cv2.CALIB_RATIONAL_MODEL if distortion_model == "rational_polynomial" else 0
    # The "extended" variant also returns the parameters' standard deviations, estimated from the
    # corner residuals: the honest error bar of a calibration (printed by the CLI).
    rms_px, k, dist, _rvecs, _tvecs, std_intrinsics, _std_extrinsics, _per_view = cv2.calibrateCameraExtended(
        object_points, image_points, (width, height), None, None, flags=flags
    )
    n_coeffs = 8 if distortion_model == "rational_polynomial" else 5
    return CameraIntrinsics.from_camera_matrix(
        k,
        width_px=width,
        height_px=height,
        distortion_coeffs=np.ravel(dist)[:n_coeffs],
        distortion_model=distortion_model,
        camera_name=camera_name,
        rms_reprojection_error_px=float(rms_px),
        n_views=len(used),
        intrinsics_std_px=tuple(float(x) for x in np.ravel(std_intrinsics)[:4]),  # fx, fy, cx, cy
    )


def calibrate_from_images(
    images: Sequence[np.ndarray | str | Path],
    board: BoardSpec,
    min_views: int = DEFAULT_MIN_VIEWS,
    distortion_model: DistortionModel = "plumb_bob",
    camera_name: str = "camera",
) -> CameraIntrinsics:
    """Detect the board in every image, then calibrate; CalibrationError when too few are found."""
    detections = detect_boards(images, board)
    return calibrate_from_detections(detections, board, min_views, distortion_model, camera_name)
