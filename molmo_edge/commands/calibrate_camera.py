"""`molmo-edge calibrate-camera IMAGES... --board 9x6 --square-m 0.025 --out camera.yaml`

Finds a checkerboard in each image, fits the camera intrinsics and writes them as a ROS
camera_info YAML (usable as `camera_info_url` and by `molmo-edge` for 3-D points).
"""
from __future__ import annotations

import argparse
import sys

from molmo_edge.calibration.camera_info_yaml import write_camera_info_yaml
from molmo_edge.calibration.checkerboard import (
    DEFAULT_MIN_VIEWS,
    BoardSpec,
    calibrate_from_detections,
    collect_image_paths,
    detect_boards,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGES",
                        help="image files, folders of images, or glob patterns (quote them: 'shots/*.png')")
    parser.add_argument("--board", default="9x6",
                        help="INNER corners, columns x rows (a board of 10x7 squares is 9x6; default 9x6)")
    parser.add_argument("--square-m", type=float, required=True,
                        help="side of one square in metres, e.g. 0.025")
    parser.add_argument("--out", default="camera.yaml", help="output camera_info YAML (default camera.yaml)")
    parser.add_argument("--camera-name", default="camera", help="camera_name written into the YAML")
    parser.add_argument("--min-views", type=int, default=DEFAULT_MIN_VIEWS,
                        help=f"fewest images with a detected board to calibrate from (default {DEFAULT_MIN_VIEWS})")
    parser.add_argument("--model", choices=["plumb_bob", "rational_polynomial"], default="plumb_bob",
                        help="distortion model (rational_polynomial for wide-angle lenses)")


def run(args: argparse.Namespace) -> int:
    board = BoardSpec.parse(args.board, args.square_m)
    paths = collect_image_paths(args.images)
    print(f"looking for a {board.cols}x{board.rows} board in {len(paths)} image(s)...", file=sys.stderr)
    detections = detect_boards(paths, board)
    for detection in detections:
        if detection.corners_px is None:
            print(f"  board not found: {detection.source}", file=sys.stderr)
    camera = calibrate_from_detections(
        detections, board, min_views=args.min_views, distortion_model=args.model, camera_name=args.camera_name
    )
    out = write_camera_info_yaml(camera, args.out)
    std = camera.intrinsics_std_px or (float("nan"),) * 4
    print(f"views used: {camera.n_views} of {len(detections)}")
    print(f"RMS reprojection error: {camera.rms_reprojection_error_px:.4f} px")
    print(f"fx {camera.fx_px:.2f} ± {std[0]:.2f}  fy {camera.fy_px:.2f} ± {std[1]:.2f}  "
          f"cx {camera.cx_px:.2f} ± {std[2]:.2f}  cy {camera.cy_px:.2f} ± {std[3]:.2f}  (px)")
    print(f"distortion ({camera.distortion_model}): " + ", ".join(f"{c:.5f}" for c in camera.distortion_coeffs))
    print(f"wrote {out}")
    return 0
