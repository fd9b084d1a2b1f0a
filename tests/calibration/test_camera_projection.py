"""Projection, deprojection and (un)distortion of pixel points (molmo_edge.calibration.projection)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from molmo_edge.calibration.camera import (
    CameraIntrinsics,
    deproject_pixel,
    deproject_pixels,
    distort_pixels,
    points_to_3d,
    project_point,
    project_points,
    undistort_pixels,
)

finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def cameras(draw, distorted: bool | None = None):
    width = draw(st.integers(160, 1920))
    height = draw(st.integers(120, 1080))
    f = draw(st.floats(0.5, 1.5, **finite)) * width
    aspect = draw(st.floats(0.95, 1.05, **finite))
    cx = width / 2 + draw(st.floats(-0.05, 0.05, **finite)) * width
    cy = height / 2 + draw(st.floats(-0.05, 0.05, **finite)) * height
    use_distortion = draw(st.booleans()) if distorted is None else distorted
    coeffs = (0.0,) * 5
    if use_distortion:
        coeffs = (draw(st.floats(-0.35, 0.15, **finite)), draw(st.floats(-0.1, 0.1, **finite)),
                  draw(st.floats(-0.002, 0.002, **finite)), draw(st.floats(-0.002, 0.002, **finite)),
                  draw(st.floats(-0.02, 0.02, **finite)))
    return CameraIntrinsics(width_px=width, height_px=height, fx_px=f, fy_px=f * aspect,
                            cx_px=cx, cy_px=cy, distortion_coeffs=coeffs)


# Normalised radius (tan of the angle off the optical axis) kept within 0.6 (about 31°): inside
# it every lens drawn above maps radius to distorted radius monotonically, so distortion has an
# inverse there. (Outside, a real lens image folds over and no undistortion can be unique.)
R_MAX = 0.6


def _monotonic(camera: CameraIntrinsics, r_max: float) -> bool:
    k1, k2, _, _, k3 = camera.distortion_coeffs
    r = np.linspace(0, r_max * 1.05, 200)
    return bool((np.diff(r * (1 + k1 * r**2 + k2 * r**4 + k3 * r**6)) > 0).all())


@st.composite
def points_in_view(draw, n_max=20):
    n = draw(st.integers(1, n_max))
    radius = np.array(draw(st.lists(st.floats(0, R_MAX, **finite), min_size=n, max_size=n)))
    angle = np.array(draw(st.lists(st.floats(0, 2 * math.pi, **finite), min_size=n, max_size=n)))
    z_m = np.array(draw(st.lists(st.floats(0.05, 50.0, **finite), min_size=n, max_size=n)))
    return np.column_stack([radius * np.cos(angle) * z_m, radius * np.sin(angle) * z_m, z_m])


@settings(max_examples=150, deadline=None)
@given(camera=cameras(), xyz_m=points_in_view())
def test_deproject_inverts_project(camera, xyz_m):
    assume(_monotonic(camera, R_MAX))
    uv_px = project_points(camera, xyz_m)  # raw pixels, lens included
    back_m = deproject_pixels(camera, uv_px, xyz_m[:, 2])
    np.testing.assert_allclose(back_m, xyz_m, rtol=1e-7, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(camera=cameras(distorted=True), xyz_m=points_in_view())
def test_undistort_inverts_distort_and_matches_the_lens_formula(camera, xyz_m):
    assume(_monotonic(camera, R_MAX))
    x, y = xyz_m[:, 0] / xyz_m[:, 2], xyz_m[:, 1] / xyz_m[:, 2]
    ideal_px = np.column_stack([camera.fx_px * x + camera.cx_px, camera.fy_px * y + camera.cy_px])
    # The plumb_bob (Brown-Conrady) model written out, independent of OpenCV.
    k1, k2, p1, p2, k3 = camera.distortion_coeffs
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    raw_expected = np.column_stack([camera.fx_px * xd + camera.cx_px, camera.fy_px * yd + camera.cy_px])

    raw_px = distort_pixels(camera, ideal_px)
    np.testing.assert_allclose(raw_px, raw_expected, atol=1e-6)
    np.testing.assert_allclose(undistort_pixels(camera, raw_px), ideal_px, atol=1e-5)


def test_a_distorted_lens_really_moves_pixels_and_undistortion_moves_them_back():
    camera = CameraIntrinsics(width_px=640, height_px=480, fx_px=500, fy_px=500, cx_px=320, cy_px=240,
                              distortion_coeffs=(-0.3, 0.1, 0, 0, 0))
    corner = np.array([[600.0, 450.0]])
    ideal = undistort_pixels(camera, corner)
    # barrel distortion pulls the image inwards, so the ideal pixel lies further out
    assert np.linalg.norm(ideal - [320, 240]) > np.linalg.norm(corner - [320, 240]) + 10
    np.testing.assert_allclose(distort_pixels(camera, ideal), corner, atol=1e-6)


def test_pinhole_formulas_and_unknowns():
    camera = CameraIntrinsics(width_px=640, height_px=480, fx_px=400, fy_px=410, cx_px=300, cy_px=250)
    x, y, z = deproject_pixel(camera, 500.0, 50.0, 2.0)
    assert (x, y, z) == pytest.approx((2.0 * 200 / 400, 2.0 * -200 / 410, 2.0))
    assert project_point(camera, x, y, z) == pytest.approx((500.0, 50.0))
    # unknown depth stays unknown; points behind the camera do not project
    assert all(math.isnan(c) for c in deproject_pixel(camera, 10, 10, float("nan")))
    assert all(math.isnan(c) for c in deproject_pixel(camera, 10, 10, 0.0))
    assert all(math.isnan(c) for c in project_point(camera, 0.1, 0.1, -1.0))
    out = deproject_pixels(camera, np.array([[1.0, 2.0], [np.nan, 3.0]]), np.array([1.0, 1.0]))
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        deproject_pixels(camera, np.zeros(3), 1.0)


def test_points_to_3d_with_a_wall_depth_image():
    """A flat wall 2.5 m away: deprojecting projected points with its depth image gives them back."""
    camera = CameraIntrinsics(width_px=320, height_px=240, fx_px=260, fy_px=255, cx_px=158, cy_px=121,
                              distortion_coeffs=(-0.2, 0.05, 0.0005, -0.0007, 0.0))
    rng = np.random.default_rng(3)
    xy = rng.uniform(-0.4, 0.4, (30, 2))
    xyz_m = np.column_stack([xy * 2.5, np.full(30, 2.5)])
    uv_px = project_points(camera, xyz_m)
    wall_mm = np.full((240, 320), 2500, np.uint16)
    wall_mm[::7, ::5] = 0  # dropouts are ignored by the median lookup
    np.testing.assert_allclose(points_to_3d(camera, uv_px, wall_mm, "16UC1"), xyz_m, atol=1e-6)
    wall_m = np.full((240, 320), 2.5, np.float32)
    np.testing.assert_allclose(points_to_3d(camera, uv_px, wall_m, "32FC1"), xyz_m, atol=1e-6)
    with pytest.raises(ValueError, match="scaled_to"):
        points_to_3d(camera, uv_px, np.zeros((10, 10), np.float32), "32FC1")


@settings(max_examples=50, deadline=None)
@given(camera=cameras(distorted=False), scale=st.sampled_from([0.25, 0.5, 2.0, 3.0]),
       u=st.floats(0, 1, **finite), v=st.floats(0, 1, **finite))
def test_scaled_camera_sees_the_same_point_at_the_scaled_pixel(camera, scale, u, v):
    w2, h2 = round(camera.width_px * scale), round(camera.height_px * scale)
    scaled = camera.scaled_to(w2, h2)
    # a point seen at pixel (u, v) of the original image is at ((u + .5) s - .5) in the resized one
    u_px, v_px = u * (camera.width_px - 1), v * (camera.height_px - 1)
    ray = deproject_pixel(camera, u_px, v_px, 1.0)
    u2, v2 = project_point(scaled, *ray)
    assert u2 == pytest.approx((u_px + 0.5) * w2 / camera.width_px - 0.5, abs=1e-6)
    assert v2 == pytest.approx((v_px + 0.5) * h2 / camera.height_px - 0.5, abs=1e-6)


@pytest.mark.parametrize("model, coeffs", [
    ("rational_polynomial", (-0.2, 0.05, 0.0005, -0.0007, 0.0, 0.01, 0.002, 0.0)),
    ("equidistant", (0.05, -0.01, 0.002, 0.0)),
])
def test_other_distortion_models_round_trip(model, coeffs):
    camera = CameraIntrinsics(width_px=640, height_px=480, fx_px=300, fy_px=300, cx_px=320, cy_px=240,
                              distortion_model=model, distortion_coeffs=coeffs)
    rng = np.random.default_rng(0)
    xyz_m = np.column_stack([rng.uniform(-0.8, 0.8, (50, 2)), np.ones(50)]) * rng.uniform(0.5, 5, (50, 1))
    uv_px = project_points(camera, xyz_m)
    ideal_px = project_points(camera, xyz_m, distort=False)
    assert np.abs(uv_px - ideal_px).max() > 1.0  # the lens really is there
    np.testing.assert_allclose(deproject_pixels(camera, uv_px, xyz_m[:, 2]), xyz_m, rtol=1e-7)
    np.testing.assert_allclose(undistort_pixels(camera, uv_px), ideal_px, atol=1e-5)


def test_intrinsics_validation():
    with pytest.raises(ValueError, match="needs 8 coefficients"):
        CameraIntrinsics(width_px=10, height_px=10, fx_px=1, fy_px=1, cx_px=5, cy_px=5,
                         distortion_model="rational_polynomial", distortion_coeffs=(0.1, 0.0, 0.0))
    with pytest.raises(ValueError):
        CameraIntrinsics(width_px=10, height_px=10, fx_px=-1, fy_px=1, cx_px=5, cy_px=5)
    # an empty D (what drivers send for an ideal camera) means no distortion
    ideal = CameraIntrinsics(width_px=10, height_px=10, fx_px=1, fy_px=1, cx_px=5, cy_px=5, distortion_coeffs=())
    assert ideal.distortion_coeffs == (0.0,) * 5 and not ideal.has_distortion
