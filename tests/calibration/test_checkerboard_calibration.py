"""Intrinsics from checkerboard views rendered through a KNOWN camera are recovered.

The views come from `BoardRenderer`: each pixel is traced through the lens model onto a flat board
(3 × 3 supersampling, grey-level noise σ = 2), under random poses tilted up to 35°.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from molmo_edge.calibration.checkerboard import (
    BoardSpec,
    CalibrationError,
    calibrate_from_detections,
    calibrate_from_images,
    detect_boards,
    find_board_corners,
)
from molmo_edge.calibration.intrinsics import CameraIntrinsics
from molmo_edge.calibration.projection import undistort_pixels
from molmo_edge.calibration.synthetic_board import BoardRenderer
from molmo_edge.errors import ConfigError

BOARD = BoardSpec(cols=9, rows=6, square_m=0.025)
N_VIEWS = 10

PINHOLE = CameraIntrinsics(width_px=640, height_px=480, fx_px=520.0, fy_px=530.0, cx_px=325.0, cy_px=236.0)
BARREL = PINHOLE.model_copy(update={"distortion_coeffs": (-0.25, 0.08, 0.001, -0.0015, 0.0)})


@functools.lru_cache(maxsize=None)
def _renderer(camera: CameraIntrinsics) -> BoardRenderer:
    return BoardRenderer(camera, BOARD, supersample=3)  # ~1 s to build for a distorted lens


def _views(camera: CameraIntrinsics, seed: int, n: int = N_VIEWS):
    renderer = _renderer(camera)
    rng = np.random.default_rng(seed)
    poses = [renderer.random_pose(rng) for _ in range(n)]
    images = [renderer.render(rvec, tvec, noise_std=2.0, rng=rng) for rvec, tvec in poses]
    return renderer, poses, images


def test_detected_corners_are_sub_pixel_accurate():
    renderer, poses, images = _views(BARREL, seed=11, n=5)
    errors = []
    for (rvec, tvec), image in zip(poses, images):
        corners = find_board_corners(image, BOARD)
        assert corners is not None
        errors.append(np.linalg.norm(corners - renderer.true_corners_px(rvec, tvec), axis=1))
    errors = np.concatenate(errors)
    # Measured ~0.06-0.09 px RMS on these renders; a half-pixel convention slip or an unrefined
    # (integer) corner would be ≥ 0.3 px.
    assert np.sqrt(np.mean(errors**2)) < 0.15
    assert errors.max() < 0.5


@pytest.mark.parametrize("camera, seed", [(PINHOLE, 0), (BARREL, 1)], ids=["pinhole", "barrel-distortion"])
def test_recovers_the_known_camera(camera, seed):
    _, _, images = _views(camera, seed)
    detections = detect_boards(images, BOARD)
    fitted = calibrate_from_detections(detections, BOARD)
    assert fitted.n_views == N_VIEWS
    assert (fitted.width_px, fitted.height_px) == (640, 480)
    # Tolerance. Corner noise is σ_c ≈ 0.07 px (previous test; the fit's RMS reprojection error
    # measures the same thing). Propagated through the fit, OpenCV's covariance gives standard
    # errors of ~0.2-0.6 px for fx, fy, cx, cy with 10 views; over 12 trial seeds the actual
    # errors stayed within 2.5 of those standard errors. So: within 5 standard errors, and never
    # more than 1.5 px (0.3 % of f) — a wrong pixel-centre convention (0.5 px in cx, cy) or a
    # mis-ordered board (f off by percents) fails one or the other.
    assert fitted.rms_reprojection_error_px < 0.15
    truth = np.array([camera.fx_px, camera.fy_px, camera.cx_px, camera.cy_px])
    got = np.array([fitted.fx_px, fitted.fy_px, fitted.cx_px, fitted.cy_px])
    std = np.array(fitted.intrinsics_std_px)
    assert (std > 0).all() and (std < 1.0).all()
    np.testing.assert_array_less(np.abs(got - truth), np.minimum(5 * std, 1.5))
    # The lens: compare what the fitted and true models do to the observed pixels, not the raw
    # coefficients (k1..k3 trade off along a valley of equally good fits, and extrapolate freely
    # to image regions no board covered). Same budget: the K errors above plus a little.
    observed_px = np.concatenate([d.corners_px for d in detections]).astype(np.float64)
    moved = np.linalg.norm(undistort_pixels(fitted, observed_px) - undistort_pixels(camera, observed_px), axis=1)
    assert moved.max() < 1.5


def test_too_few_boards_is_a_clear_error():
    _, _, images = _views(PINHOLE, seed=2, n=3)
    blank = np.full((480, 640), 128, np.uint8)
    with pytest.raises(CalibrationError, match=r"found in 3 of 5 image\(s\), need at least 5.*image\[3\]"):
        calibrate_from_images(images + [blank, blank], BOARD)
    # the same images with the wrong board size: found nowhere, and the message says what to check
    with pytest.raises(CalibrationError, match="INNER corners"):
        calibrate_from_images(images, BoardSpec(cols=7, rows=5, square_m=0.025), min_views=1)


def test_mixed_image_sizes_are_refused():
    _, _, images = _views(PINHOLE, seed=3, n=2)
    detections = detect_boards([images[0], images[1][:400, :600]], BOARD)
    with pytest.raises(CalibrationError, match="same size"):
        calibrate_from_detections(detections, BOARD, min_views=1)


@pytest.mark.parametrize("text, cols, rows", [("9x6", 9, 6), ("8X5", 8, 5), (" 7 x 4 ", 7, 4)])
def test_board_parse(text, cols, rows):
    board = BoardSpec.parse(text, 0.03)
    assert (board.cols, board.rows, board.square_m) == (cols, rows, 0.03)
    pts = board.object_points()
    assert pts.shape == (cols * rows, 3)
    assert pts[1, 0] == pytest.approx(0.03) and pts[cols, 1] == pytest.approx(0.03)  # x fastest


@pytest.mark.parametrize("text, square", [("9", 0.02), ("9x", 0.02), ("1x6", 0.02), ("9x6", 0.0), ("axb", 0.02)])
def test_board_parse_errors(text, square):
    with pytest.raises(ConfigError):
        BoardSpec.parse(text, square)
