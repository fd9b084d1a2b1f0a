"""CameraInfo YAML (the camera_calibration_parsers layout): write, read, round trip, bad files."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.calibration.camera_info_yaml import (
    camera_info_to_dict,
    read_camera_info_yaml,
    write_camera_info_yaml,
)
from molmo_edge.calibration.intrinsics import CameraIntrinsics
from molmo_edge.errors import ConfigError

# Written by hand in the layout ROS camera_calibration saves (ost.yaml), spacing and all.
ROS_SAMPLE = """\
image_width: 1280
image_height: 720
camera_name: head_camera
camera_matrix:
  rows: 3
  cols: 3
  data: [ 912.3341,    0.    ,  648.1207,
            0.    ,  915.0062,  361.8734,
            0.    ,    0.    ,    1.    ]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.101452, -0.213687, 0.000813, -0.001142, 0.000000]
rectification_matrix:
  rows: 3
  cols: 3
  data: [ 1.,  0.,  0.,
          0.,  1.,  0.,
          0.,  0.,  1.]
projection_matrix:
  rows: 3
  cols: 4
  data: [ 918.77,    0.  ,  646.41,    0.  ,
            0.  ,  921.11,  360.92,    0.  ,
            0.  ,    0.  ,    1.  ,    0.  ]
"""


def test_reads_a_hand_written_ros_file(tmp_path):
    path = tmp_path / "ost.yaml"
    path.write_text(ROS_SAMPLE)
    camera = read_camera_info_yaml(path)
    assert (camera.width_px, camera.height_px, camera.camera_name) == (1280, 720, "head_camera")
    assert (camera.fx_px, camera.fy_px, camera.cx_px, camera.cy_px) == (912.3341, 915.0062, 648.1207, 361.8734)
    assert camera.distortion_model == "plumb_bob"
    assert camera.distortion_coeffs == (0.101452, -0.213687, 0.000813, -0.001142, 0.0)
    assert camera.projection[0] == 918.77 and camera.projection[6] == 360.92
    # and it is written back with the same values, so ROS sees the same camera
    out = write_camera_info_yaml(camera, tmp_path / "again.yaml")
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(ROS_SAMPLE)


finite = dict(allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 8192), height=st.integers(1, 8192),
    f=st.tuples(st.floats(1, 1e5, **finite), st.floats(1, 1e5, **finite)),
    c=st.tuples(st.floats(-1e4, 1e4, **finite), st.floats(-1e4, 1e4, **finite)),
    model_coeffs=st.one_of(
        st.tuples(st.just("plumb_bob"), st.lists(st.floats(-10, 10, **finite), min_size=5, max_size=5)),
        st.tuples(st.just("rational_polynomial"), st.lists(st.floats(-10, 10, **finite), min_size=8, max_size=8)),
        st.tuples(st.just("equidistant"), st.lists(st.floats(-10, 10, **finite), min_size=4, max_size=4)),
    ),
    name=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20),
)
def test_round_trip(tmp_path_factory, width, height, f, c, model_coeffs, name):
    model, coeffs = model_coeffs
    camera = CameraIntrinsics(camera_name=name, width_px=width, height_px=height, fx_px=f[0], fy_px=f[1],
                              cx_px=c[0], cy_px=c[1], distortion_model=model, distortion_coeffs=tuple(coeffs))
    path = write_camera_info_yaml(camera, tmp_path_factory.mktemp("yaml") / "camera.yaml")
    back = read_camera_info_yaml(path)
    # identical except the two fields a monocular file fills in: R = I and P = [K | 0]
    assert back.model_dump(exclude={"rectification", "projection"}) == camera.model_dump(
        exclude={"rectification", "projection"})
    assert back.rectification == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    np.testing.assert_array_equal(np.array(back.projection).reshape(3, 4)[:, :3], camera.camera_matrix)


def test_calibration_quality_is_written_as_comments_only(tmp_path):
    camera = CameraIntrinsics(width_px=640, height_px=480, fx_px=500, fy_px=500, cx_px=320, cy_px=240,
                              rms_reprojection_error_px=0.1234, n_views=14,
                              intrinsics_std_px=(0.3, 0.31, 0.4, 0.35))
    text = write_camera_info_yaml(camera, tmp_path / "c.yaml").read_text()
    assert "# RMS reprojection error: 0.1234 px" in text and "# Checkerboard views used: 14" in text
    assert set(yaml.safe_load(text)) == set(camera_info_to_dict(camera))  # no keys ROS does not know


@pytest.mark.parametrize("text, match", [
    ("image_width: 640\n", "missing key"),
    ("- just\n- a list\n", "mapping at the top level"),
    ("image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, data: [1, 2, 3]}\n",
     "holds 3 values"),
    ("image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, data: [1,0,1,0,1,1,0,0,x]}\n",
     "numbers only"),
    ("image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, data: [1,0,1,0,1,1,0,0,1]}\n"
     "distortion_model: plumb_bob\ndistortion_coefficients: {rows: 1, cols: 3, data: [0.1, 0.2, 0.3]}\n",
     "needs 5 coefficients"),
    ("image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, data: [1,0,1,0,1,1,0,0,1]}\n"
     "distortion_model: kannala\n", "distortion_model"),
    ("image_width: 640\n  image_height: [\n", "not valid YAML"),
])
def test_bad_files_give_config_errors_that_name_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_camera_info_yaml(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read camera info file"):
        read_camera_info_yaml(tmp_path / "nope.yaml")
