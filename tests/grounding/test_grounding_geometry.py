"""Normalised ↔ pixel conversion: one convention, the same both ways."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from molmo_edge.grounding import GroundedPoint, GroundingError, from_pixels, parse, to_pixel_index, to_pixels

sizes = st.integers(1, 8192)
unit = st.floats(0.0, 1.0, allow_nan=False)


@given(x=unit, y=unit, width=sizes, height=sizes)
def test_from_pixels_inverts_to_pixels(x, y, width, height):
    u_px, v_px = to_pixels(x, y, width, height)
    assert 0.0 <= u_px <= width and 0.0 <= v_px <= height
    x2, y2 = from_pixels(u_px, v_px, width, height)
    assert math.isclose(x2, x, abs_tol=1e-12) and math.isclose(y2, y, abs_tol=1e-12)


@given(col=st.integers(0, 4095), row=st.integers(0, 4095), width=st.integers(4096, 8192), height=st.integers(4096, 8192))
def test_a_pixel_centre_maps_back_into_the_same_pixel(col, row, width, height):
    # Pixel (row, col) covers [col, col + 1) × [row, row + 1); its centre is at (col + 0.5, row + 0.5).
    x, y = from_pixels(col + 0.5, row + 0.5, width, height)
    assert to_pixel_index(x, y, width, height) == (row, col)


def test_concrete_values_and_edges():
    assert to_pixels(0.5, 0.25, 640, 480) == (320.0, 120.0)
    assert from_pixels(320, 120, 640, 480) == (0.5, 0.25)
    assert to_pixel_index(1.0, 1.0, 640, 480) == (479, 639)  # 1000/1000 is the far edge: last pixel
    assert to_pixel_index(0.0, 0.0, 640, 480) == (0, 0)
    point = parse('<points coords="1 1 500 250">x</points>').points[0]
    assert point.to_pixels(640, 480) == (320.0, 120.0)
    assert GroundedPoint(1, 0.1, 0.2).to_pixels(10, 10) == pytest.approx((1.0, 2.0))


def test_numpy_arrays_convert_elementwise():
    x = np.array([0.0, 0.5, 1.0])
    u_px, v_px = to_pixels(x, x, 200, 100)
    np.testing.assert_allclose(u_px, [0, 100, 200])
    np.testing.assert_allclose(v_px, [0, 50, 100])
    np.testing.assert_allclose(from_pixels(u_px, v_px, 200, 100)[0], x)


@pytest.mark.parametrize("width, height", [(0, 10), (10, -1), (float("nan"), 10), ("640", None)])
def test_bad_image_size_is_a_clear_error(width, height):
    with pytest.raises(GroundingError, match="positive number of pixels"):
        to_pixels(0.5, 0.5, width, height)
