"""Render photos of a checkerboard seen by a KNOWN camera, to check calibration end to end.

Each output pixel is traced backwards: its raw position is undistorted to a normalised ray, the ray
is intersected with the board plane (a homography, since the board is flat), and the board's
colour at that point is looked up analytically. Tracing through the lens model this way renders
distorted views exactly; supersampling each pixel (ss × ss rays) anti-aliases the square edges so
that corner positions are not quantised to whole pixels.

Board frame: inner corner (0, 0) at the origin, x along a row, y along a column, z into the board.
The printed board has one more square than inner corners each way, plus a white margin (which
`cv2.findChessboardCorners` needs) around it; outside that is a grey background.
"""
from __future__ import annotations

import cv2
import numpy as np

from .checkerboard import BoardSpec
from .intrinsics import CameraIntrinsics
from .projection import project_points

_BLACK, _WHITE, _BACKGROUND = 20.0, 235.0, 110.0


class BoardRenderer:
    """Renders grey uint8 [H, W] views of `board` through `camera` for given board poses."""

    def __init__(self, camera: CameraIntrinsics, board: BoardSpec, supersample: int = 3,
                 margin_squares: float = 1.0) -> None:
        self.camera = camera
        self.board = board
        self.supersample = supersample
        self.margin_squares = margin_squares
        w, h, ss = camera.width_px, camera.height_px, supersample
        # Sub-pixel sample positions: pixel centres are integers, so the ss × ss samples of pixel
        # (u, v) sit at u + (k + 0.5)/ss − 0.5. Shape [h·ss, w·ss] each.
        offsets = (np.arange(ss) + 0.5) / ss - 0.5
        us = (np.arange(w)[:, None] + offsets[None, :]).ravel()
        vs = (np.arange(h)[:, None] + offsets[None, :]).ravel()
        grid_u, grid_v = np.meshgrid(us, vs)
        uv = np.column_stack([grid_u.ravel(), grid_v.ravel()])  # [h·ss·w·ss, 2]
        if camera.has_distortion:
            # undistortPoints with no P returns normalised coordinates (x', y').
            xy = cv2.undistortPoints(uv.reshape(-1, 1, 2), camera.camera_matrix, camera.dist_coeffs,
                                     criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12))
            xy = xy.reshape(-1, 2)
        else:
            xy = (uv - [camera.cx_px, camera.cy_px]) / [camera.fx_px, camera.fy_px]
        # float32 keeps the per-view work small; its 1e-7 relative error is ~1e-4 px here.
        self._x_norm = np.ascontiguousarray(xy[:, 0], dtype=np.float32)  # [n_samples]
        self._y_norm = np.ascontiguousarray(xy[:, 1], dtype=np.float32)

    def outline_m(self) -> np.ndarray:
        """The four corners of the printed board including its margin, board frame, [4, 3]."""
        s, m = self.board.square_m, 1.0 + self.margin_squares
        x0, y0 = -m * s, -m * s
        x1, y1 = (self.board.cols - 1 + m) * s, (self.board.rows - 1 + m) * s
        return np.array([[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]], dtype=np.float64)

    def render(self, rvec: np.ndarray, tvec: np.ndarray, noise_std: float = 0.0,
               rng: np.random.Generator | None = None) -> np.ndarray:
        """Grey uint8 [H, W] image of the board at pose (rvec, tvec) (board frame → camera frame)."""
        rot, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))
        # Board plane z=0 to normalised image: [x', y', 1] ~ H [bx, by, 1] with H = [r1 r2 t];
        # so [bx, by, 1] ~ H⁻¹ [x', y', 1]. The third component is 1/depth: > 0 in front.
        inv = np.linalg.inv(np.column_stack([rot[:, 0], rot[:, 1], np.ravel(tvec)])).astype(np.float32)
        x, y = self._x_norm, self._y_norm
        w = inv[2, 0] * x + inv[2, 1] * y + inv[2, 2]
        in_front = w > 1e-6
        w = np.where(in_front, w, np.float32(1.0))
        bx = (inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]) / w
        by = (inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]) / w
        values = self._colour_at(bx, by, in_front)
        ss = self.supersample
        h, w_px = self.camera.height_px, self.camera.width_px
        image = values.reshape(h, ss, w_px, ss).mean(axis=(1, 3), dtype=np.float32)  # box filter
        if noise_std > 0:
            rng = rng or np.random.default_rng()
            image = image + rng.normal(0.0, noise_std, image.shape).astype(np.float32)
        return np.clip(np.round(image), 0, 255).astype(np.uint8)

    def _colour_at(self, bx: np.ndarray, by: np.ndarray, in_front: np.ndarray) -> np.ndarray:
        s, cols, rows, m = self.board.square_m, self.board.cols, self.board.rows, self.margin_squares
        i = np.floor(bx / s)  # square column; inner corner k sits between squares k-1 and k
        j = np.floor(by / s)
        on_squares = in_front & (i >= -1) & (i <= cols - 1) & (j >= -1) & (j <= rows - 1)
        on_print = in_front & (bx >= -(1 + m) * s) & (bx <= (cols - 1 + m) * s) \
            & (by >= -(1 + m) * s) & (by <= (rows - 1 + m) * s)
        values = np.where(on_print, np.float32(_WHITE), np.float32(_BACKGROUND))
        values[on_squares & ((i + j) % 2 == 0)] = _BLACK
        return values

    def true_corners_px(self, rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
        """Where the inner corners really are in the rendered (raw) image, float64 [rows·cols, 2]."""
        rot, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))
        xyz = self.board.object_points().astype(np.float64) @ rot.T + np.ravel(tvec)
        return project_points(self.camera, xyz, distort=True)

    def random_pose(self, rng: np.random.Generator, max_tilt_deg: float = 35.0,
                    fill_range: tuple[float, float] = (0.45, 0.75), border_px: float = 12.0,
                    max_tries: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """A random pose (rvec, tvec) with the whole printed board inside the image.

        The board is tilted up to `max_tilt_deg` about x and y (tilt is what makes the focal
        length observable), rolled up to 30°, and placed so its width spans `fill_range` of the
        image width.
        """
        cam, board = self.camera, self.board
        width_m = (board.cols + 1 + 2 * self.margin_squares) * board.square_m
        centre_board = np.array([(board.cols - 1) / 2, (board.rows - 1) / 2, 0.0]) * board.square_m
        outline = self.outline_m()
        for _ in range(max_tries):
            pitch, yaw = np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg, 2))
            roll = np.deg2rad(rng.uniform(-30, 30))
            rot = _rot_z(roll) @ _rot_y(yaw) @ _rot_x(pitch)
            z_m = cam.fx_px * width_m / (rng.uniform(*fill_range) * cam.width_px)
            target_u = rng.uniform(0.3, 0.7) * cam.width_px
            target_v = rng.uniform(0.3, 0.7) * cam.height_px
            ray = np.array([(target_u - cam.cx_px) / cam.fx_px, (target_v - cam.cy_px) / cam.fy_px, 1.0])
            tvec = z_m * ray - rot @ centre_board
            corners_cam = outline @ rot.T + tvec
            if (corners_cam[:, 2] <= 0.05).any():
                continue
            uv = project_points(cam, corners_cam, distort=True)
            inside = (np.isfinite(uv).all()
                      and (uv[:, 0] >= border_px).all() and (uv[:, 0] <= cam.width_px - 1 - border_px).all()
                      and (uv[:, 1] >= border_px).all() and (uv[:, 1] <= cam.height_px - 1 - border_px).all())
            if inside:
                rvec, _ = cv2.Rodrigues(rot)
                return rvec.ravel(), tvec
        raise RuntimeError("could not place the board inside the image; lower fill_range or max_tilt_deg")


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
