"""`molmo-edge calibrate-camera` on image files written to disk."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from molmo_edge.calibration.camera_info_yaml import read_camera_info_yaml
from molmo_edge.calibration.checkerboard import BoardSpec
from molmo_edge.calibration.intrinsics import CameraIntrinsics
from molmo_edge.calibration.synthetic_board import BoardRenderer
from molmo_edge.cli import main

CAMERA = CameraIntrinsics(width_px=480, height_px=360, fx_px=400.0, fy_px=402.0, cx_px=242.0, cy_px=178.0,
                          distortion_coeffs=(-0.12, 0.03, 0.0, 0.0, 0.0))
BOARD = BoardSpec(cols=7, rows=5, square_m=0.03)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shots")
    renderer = BoardRenderer(CAMERA, BOARD, supersample=3)
    rng = np.random.default_rng(5)
    for i in range(8):
        image = renderer.render(*renderer.random_pose(rng), noise_std=2.0, rng=rng)
        cv2.imwrite(str(folder / f"shot_{i:02d}.png"), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(folder / "shot_99_no_board.png"), np.full((360, 480, 3), 90, np.uint8))
    (folder / "notes.txt").write_text("not an image, skipped when a folder is given")
    return folder


def test_calibrates_a_folder_and_writes_ros_yaml(shots, tmp_path, capsys):
    out = tmp_path / "calib" / "camera.yaml"
    rc = main(["calibrate-camera", str(shots), "--board", "7x5", "--square-m", "0.03",
               "--out", str(out), "--camera-name", "wrist"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "views used: 8 of 9" in captured.out
    assert "RMS reprojection error:" in captured.out
    assert "board not found" in captured.err and "shot_99_no_board.png" in captured.err
    camera = read_camera_info_yaml(out)
    assert camera.camera_name == "wrist" and camera.image_size == (480, 360)
    # same error budget as tests/calibration/test_checkerboard_calibration.py (≤ 1.5 px)
    np.testing.assert_allclose([camera.fx_px, camera.fy_px, camera.cx_px, camera.cy_px],
                               [CAMERA.fx_px, CAMERA.fy_px, CAMERA.cx_px, CAMERA.cy_px], atol=1.5)


def test_glob_pattern_and_too_few_boards_exit_with_one_line(shots, tmp_path):
    out = tmp_path / "camera.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "molmo_edge", "calibrate-camera", str(shots / "shot_0[0-2].png"),
         str(shots / "shot_99*.png"), "--square-m", "0.03", "--board", "7x5", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and "found in 3 of 4 image(s), need at least 5" in error_lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_nothing_matches(tmp_path, capsys):
    rc = main(["calibrate-camera", str(tmp_path / "missing" / "*.png"), "--square-m", "0.03"])
    assert rc == 2
    assert "no file matches it" in capsys.readouterr().err


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "readme.txt").write_text("no images here")
    rc = main(["calibrate-camera", str(tmp_path), "--square-m", "0.03"])
    assert rc == 2
    assert "holds no images" in capsys.readouterr().err
