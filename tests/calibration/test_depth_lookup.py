"""Robust depth lookup: median of the valid pixels in a window, units per encoding."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.calibration.depth import depth_at, depth_image_to_m, depths_at
from molmo_edge.errors import ConfigError


@settings(max_examples=200, deadline=None)
@given(
    valid_mm=st.lists(st.integers(1, 65535), min_size=0, max_size=25),
    window_px=st.sampled_from([1, 3, 5]),
    seed=st.integers(0, 2**31),
)
def test_16uc1_median_ignores_zero_pixels(valid_mm, window_px, seed):
    rng = np.random.default_rng(seed)
    n = window_px * window_px
    valid_mm = valid_mm[:n]
    window = np.zeros(n, np.uint16)  # 0 = no measurement
    window[rng.permutation(n)[: len(valid_mm)]] = valid_mm
    # the window sits in a larger image whose other pixels would change the answer if read
    image = np.full((20, 20), 7, np.uint16)
    image[8: 8 + window_px, 8: 8 + window_px] = window.reshape(window_px, window_px)
    centre = 8 + window_px // 2
    got = depth_at(image, centre, centre, "16UC1", window_px)
    if valid_mm:
        assert got == pytest.approx(float(np.median(valid_mm)) / 1000.0)
    else:
        assert got is None


@settings(max_examples=200, deadline=None)
@given(
    values_m=st.lists(
        st.one_of(st.floats(0.01, 100.0), st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf])),
        min_size=9, max_size=9,
    )
)
def test_32fc1_median_ignores_zero_nan_and_inf(values_m):
    image = np.array(values_m, np.float32).reshape(3, 3)
    valid = [v for v in np.array(values_m, np.float32).tolist() if math.isfinite(v) and v > 0]
    got = depth_at(image, 1.0, 1.0, "32FC1", window_px=3)
    if valid:
        assert got == pytest.approx(float(np.median(valid)))
    else:
        assert got is None


def test_window_is_clipped_at_the_border_and_off_image_points_are_unknown():
    image = np.zeros((4, 6), np.uint16)
    image[0, 0], image[0, 1], image[1, 0] = 1000, 2000, 3000
    assert depth_at(image, 0, 0, "16UC1", window_px=3) == pytest.approx(2.0)
    assert depth_at(image, -3, 0, "16UC1") is None
    assert depth_at(image, 0, 10, "16UC1") is None
    out = depths_at(image, np.array([[0.4, 0.4], [np.nan, 1.0], [5.0, 3.0]]), "16UC1", window_px=1)
    assert out[0] == pytest.approx(1.0) and np.isnan(out[1]) and np.isnan(out[2])


def test_units_per_encoding():
    mm = np.full((3, 3), 1500, np.uint16)
    assert depth_at(mm, 1, 1, "16UC1") == pytest.approx(1.5)
    assert depth_at(mm.astype(np.float32) / 1000, 1, 1, "32FC1") == pytest.approx(1.5)
    image_m = depth_image_to_m(np.array([[0, 1500], [65535, 10]], np.uint16), "16UC1")
    assert np.isnan(image_m[0, 0]) and image_m[0, 1] == pytest.approx(1.5) and image_m[1, 1] == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="not a depth encoding"):
        depth_at(mm, 1, 1, "rgb8")
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        depth_at(np.zeros((3, 3, 3), np.float32), 1, 1, "32FC1")
