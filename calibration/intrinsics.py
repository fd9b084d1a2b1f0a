"""`CameraIntrinsics`: a pinhole camera with lens distortion, described the way ROS CameraInfo does.

Pixel conventions are OpenCV's and ROS's: u grows to the right, v grows down, the centre of the
top-left pixel is (0, 0). The camera optical frame is x right, y down, z forward (REP 103 `_optical`).

Distortion models (the names are the ROS `distortion_model` strings):
- `plumb_bob`: Brown-Conrady, coefficients (k1, k2, p1, p2, k3) — what `cv2.calibrateCamera` fits.
- `rational_polynomial`: (k1, k2, p1, p2, k3, k4, k5, k6) — `cv2.CALIB_RATIONAL_MODEL`.
- `equidistant`: fisheye (k1, k2, k3, k4) — `cv2.fisheye`.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from molmo_edge.errors import ConfigError

log = logging.getLogger(__name__)

DistortionModel = Literal["plumb_bob", "rational_polynomial", "equidistant"]

# How many coefficients each model carries (ROS writes exactly these counts).
N_DISTORTION_COEFFS: dict[str, int] = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


class CameraIntrinsics(BaseModel):
    """Intrinsics of one camera at one resolution, plus how well they were estimated.

    `rectification` (R, 3x3) and `projection` (P, 3x4) are kept row-major exactly as read from a
    CameraInfo YAML so that a file round-trips; the geometry here uses only K and the distortion.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    camera_name: str = "camera"
    width_px: int = Field(gt=0, description="image width the intrinsics belong to")
    height_px: int = Field(gt=0, description="image height the intrinsics belong to")
    fx_px: float = Field(gt=0, description="focal length along u, in pixels")
    fy_px: float = Field(gt=0, description="focal length along v, in pixels")
    cx_px: float = Field(description="principal point u")
    cy_px: float = Field(description="principal point v")
    distortion_model: DistortionModel = "plumb_bob"
    distortion_coeffs: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    rectification: tuple[float, ...] | None = Field(default=None, description="R, 9 floats row-major")
    projection: tuple[float, ...] | None = Field(default=None, description="P, 12 floats row-major")
    rms_reprojection_error_px: float | None = Field(default=None, ge=0)
    n_views: int | None = Field(default=None, ge=0, description="checkerboard views the fit used")
    intrinsics_std_px: tuple[float, float, float, float] | None = Field(
        default=None, description="standard errors of (fx, fy, cx, cy) estimated by the fit"
    )

    @model_validator(mode="before")
    @classmethod
    def _normalise_distortion(cls, data: Any) -> Any:
        # Drivers publish `plumb_bob` with an empty D for an ideal camera, and some write 4
        # coefficients (k3 omitted); both mean "the missing ones are zero".
        if not isinstance(data, dict):
            return data
        data = dict(data)
        model = data.get("distortion_model", "plumb_bob")
        coeffs = data.get("distortion_coeffs")
        if model in N_DISTORTION_COEFFS and coeffs is not None:
            coeffs = tuple(float(c) for c in coeffs)
            want = N_DISTORTION_COEFFS[model]
            if model == "plumb_bob" and len(coeffs) in (0, 4):
                coeffs = coeffs + (0.0,) * (want - len(coeffs))
            elif model == "rational_polynomial" and len(coeffs) == 0:
                coeffs = (0.0,) * want
            data["distortion_coeffs"] = coeffs
        return data

    @model_validator(mode="after")
    def _check_shapes(self) -> "CameraIntrinsics":
        want = N_DISTORTION_COEFFS[self.distortion_model]
        if len(self.distortion_coeffs) != want:
            raise ValueError(
                f"distortion model {self.distortion_model!r} needs {want} coefficients, "
                f"got {len(self.distortion_coeffs)}"
            )
        if not all(math.isfinite(c) for c in self.distortion_coeffs):
            raise ValueError("distortion coefficients must be finite numbers")
        if self.rectification is not None and len(self.rectification) != 9:
            raise ValueError(f"rectification matrix needs 9 values, got {len(self.rectification)}")
        if self.projection is not None and len(self.projection) != 12:
            raise ValueError(f"projection matrix needs 12 values, got {len(self.projection)}")
        return self

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_camera_matrix(
        cls,
        camera_matrix: np.ndarray,
        width_px: int,
        height_px: int,
        distortion_coeffs: np.ndarray | list[float] | tuple[float, ...] = (),
        distortion_model: DistortionModel = "plumb_bob",
        **extra: Any,
    ) -> "CameraIntrinsics":
        """Build from a 3x3 K (OpenCV layout). K's skew term is dropped (see `_skew_warning`)."""
        k = np.asarray(camera_matrix, dtype=np.float64)
        if k.shape != (3, 3):
            raise ConfigError(f"camera matrix must be 3x3, got shape {k.shape}")
        _skew_warning(k)
        return cls(
            width_px=int(width_px),
            height_px=int(height_px),
            fx_px=float(k[0, 0]),
            fy_px=float(k[1, 1]),
            cx_px=float(k[0, 2]),
            cy_px=float(k[1, 2]),
            distortion_model=distortion_model,
            distortion_coeffs=tuple(float(c) for c in np.ravel(distortion_coeffs)),
            **extra,
        )

    # --- views as OpenCV arrays -----------------------------------------------------------------

    @property
    def camera_matrix(self) -> np.ndarray:
        """K as float64 [3, 3]."""
        return np.array(
            [[self.fx_px, 0.0, self.cx_px], [0.0, self.fy_px, self.cy_px], [0.0, 0.0, 1.0]],
            dtype=np.float64,
        )

    @property
    def dist_coeffs(self) -> np.ndarray:
        """Distortion coefficients as float64 [n] in OpenCV order."""
        return np.asarray(self.distortion_coeffs, dtype=np.float64)

    @property
    def has_distortion(self) -> bool:
        return any(c != 0.0 for c in self.distortion_coeffs)

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height), the order OpenCV functions take."""
        return (self.width_px, self.height_px)

    # --- derived cameras ------------------------------------------------------------------------

    def scaled_to(self, width_px: int, height_px: int) -> "CameraIntrinsics":
        """The same camera seen at another resolution (a resized image, not a crop).

        Pixel centres sit at integer coordinates, so a scale s maps u to (u + 0.5) s - 0.5; the
        principal point moves with that rule, focal lengths scale with s. Distortion coefficients
        act on normalised coordinates and stay as they are. R and P are dropped (they describe the
        original resolution's rectified image). Standard errors scale like the values; the RMS
        error is left in the original image's pixels.
        """
        if width_px <= 0 or height_px <= 0:
            raise ConfigError(f"image size must be positive, got {width_px}x{height_px}")
        sx = width_px / self.width_px
        sy = height_px / self.height_px
        std = self.intrinsics_std_px
        if std is not None:
            std = (std[0] * sx, std[1] * sy, std[2] * sx, std[3] * sy)
        return self.model_copy(
            update={
                "width_px": int(width_px),
                "height_px": int(height_px),
                "fx_px": self.fx_px * sx,
                "fy_px": self.fy_px * sy,
                "cx_px": (self.cx_px + 0.5) * sx - 0.5,
                "cy_px": (self.cy_px + 0.5) * sy - 0.5,
                "rectification": None,
                "projection": None,
                "intrinsics_std_px": std,
            }
        )


def _skew_warning(k: np.ndarray) -> None:
    # OpenCV's projectPoints / undistortPoints ignore K[0, 1], so keeping a skew here would make the
    # geometry disagree with itself. Real cameras have none; say so when a file claims otherwise.
    if abs(k[0, 1]) > 1e-9 * max(abs(k[0, 0]), 1.0):
        log.warning("camera matrix has skew %.6g; it is ignored (OpenCV's pinhole model has none)", k[0, 1])
