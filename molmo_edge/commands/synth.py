"""`molmo-edge synth`: render synthetic scenes with ground truth (the task the shipped model learns).

    molmo-edge synth --out data/val --n 200 --seed 1             # PNG images
    molmo-edge synth --out data/clips --n 50 --video --frames 16   # mp4 clips at 2 fps

Writes the media, per-frame label-map PNGs and `ground_truth.json`; see
`molmo_edge.training.synth_writer` for the layout and `load_ground_truth` to read it back.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--n", type=int, default=100, help="number of images or videos (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; same seed, same data (default 0)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--video", action="store_true", help="write videos")
    kind.add_argument("--image", action="store_true", help="write images (the default)")
    parser.add_argument("--frames", type=int, default=8, help="frames per video (default 8)")
    parser.add_argument("--fps", type=float, default=2.0, help="video frame rate (default 2, as Molmo2 samples)")
    parser.add_argument("--size", default="256x256", help="frame size WIDTHxHEIGHT (default 256x256)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from molmo_edge.training.synth_writer import parse_size, write_synthetic_dataset

    width, height = parse_size(args.size)
    gt = write_synthetic_dataset(args.out, n=args.n, seed=args.seed, video=args.video, n_frames=args.frames,
                                 fps=args.fps, width=width, height=height, overwrite=args.overwrite,
                                 progress=not args.no_progress)
    n_objects = sum(len(item.frames[0].objects) for item in gt.items)
    kind = "videos" if args.video else "images"
    print(f"wrote {len(gt.items)} {kind} ({n_objects} objects) and ground_truth.json to {args.out}")
    return 0
