"""`molmo-edge track VIDEO --query TEXT --jsonl OUT`: track objects through a video file.

    molmo-edge track clip.mp4 --query "Track the red circle." --jsonl events.jsonl
    molmo-edge track clip.mp4 --query "Track all stars." --query "count: circles" --jsonl out.jsonl \\
        --model ckpt/ --annotate annotated.mp4 --contact-sheet sheet.png

Every frame of the file is read in order (however slow the model), sampled at --fps on the file's
own clock, and evaluated in sliding windows; one event per window and query is written per line
of --jsonl (the same JSON as the ZeroMQ payload). One summary line per window goes to stdout.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from molmo_edge.errors import ConfigError, InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from molmo_edge.engine.loading import BACKEND_CHOICES, QUANTIZATION_CHOICES

    parser.add_argument("video", metavar="VIDEO", help="video file (or a folder of images)")
    parser.add_argument("--query", action="append", required=True,
                        help='what to track (repeatable): "Track the red circle.", "count: stars", ...')
    parser.add_argument("--jsonl", type=Path, required=True, help="write the events here, one per line")
    parser.add_argument("--model", default=None, help="checkpoint or bundle folder (default: the shipped model)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None)
    parser.add_argument("--window", type=int, default=8, help="sampled frames per window (default 8)")
    parser.add_argument("--stride", type=int, default=2, help="evaluate every K new frames (default 2)")
    parser.add_argument("--fps", type=float, default=2.0, help="frames per second into the model (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--annotate", type=Path, default=None, help="also write an annotated video (.mp4/.avi)")
    parser.add_argument("--contact-sheet", type=Path, default=None, help="also write a contact sheet (.png)")
    parser.add_argument("--quiet", action="store_true", help="no per-window lines")


def summary_line(event) -> str:
    """One line per event: window, query index, count, each track's newest point."""
    from molmo_edge.stream.pipeline import latest_objects

    points = " ".join(f"#{o.track_id}({o.x:.3f},{o.y:.3f})" for o in latest_objects(event))
    problems = f"  [parse: {event.parse_errors[0]}]" if event.parse_errors else ""
    return (f"[{event.window_t0_s:6.2f}-{event.window_t1_s:6.2f} s] q{event.query_index} count={event.count} "
            f"{points or '-'}{problems}")


def run(args: argparse.Namespace) -> int:
    from molmo_edge.publish.jsonl import JsonlSink
    from molmo_edge.stream.pipeline import Pipeline

    video = Path(args.video)
    if not video.exists():
        raise InputError(f"no such video: {video}")
    for name in ("annotate", "contact_sheet"):
        if getattr(args, name) is not None and getattr(args, name).resolve() == video.resolve():
            raise ConfigError(f"--{name.replace('_', '-')} would overwrite the input video")
    events = []
    # The pipeline first (settings, source, model): a mistake there must not empty an old --jsonl file.
    with Pipeline(args.model, source=str(video), queries=args.query, window=args.window, stride=args.stride,
                  fps=args.fps, max_new_tokens=args.max_new_tokens, backend=args.backend, device=args.device,
                  dtype=args.dtype, quantization=args.quantization,
                  source_options={"realtime": False}) as pipeline, JsonlSink(args.jsonl, append=False) as jsonl:
        for event in pipeline:
            jsonl.write(event)  # each line as soon as its window is done: `tail -f` works
            events.append(event)
            if not args.quiet:
                print(summary_line(event), flush=True)
        stats = pipeline.stats
    print(f"{len(events)} events from {stats.windows} windows ({stats.frames_sampled} frames sampled of "
          f"{stats.frames_in}, each encoded once: {stats.frames_encoded}); "
          f"{stats.parse_failures} with parse problems -> {args.jsonl}", file=sys.stderr)
    if jsonl.stats.errors:
        print(f"warning: {jsonl.stats.errors} events could not be written: {jsonl.stats.last_error}", file=sys.stderr)
    if args.annotate is not None or args.contact_sheet is not None:
        _write_pictures(video, events, args)
    return 0 if not jsonl.stats.errors else 1


def _write_pictures(video: Path, events: list, args: argparse.Namespace) -> None:
    import tempfile

    from molmo_edge.stream.annotate import (contact_sheet, objects_by_frame, pick_evenly, write_annotated_video,
                                            write_image)

    by_time = objects_by_frame(events)
    with tempfile.TemporaryDirectory() as scratch:
        out_video = args.annotate or Path(scratch) / "annotated.avi"
        _, seen = write_annotated_video(out_video, video, by_time, sample_fps=args.fps)
        if args.annotate is not None:
            print(f"annotated video: {args.annotate}", file=sys.stderr)
    if args.contact_sheet is not None and seen:
        write_image(args.contact_sheet, contact_sheet([rgb for _, rgb in pick_evenly(seen, 12)]))
        print(f"contact sheet: {args.contact_sheet}", file=sys.stderr)
