"""`molmo-edge demo`: the shipped model on a generated video; an annotated video and a contact sheet.

    molmo-edge demo                              # writes ./molmo-edge-demo/
    molmo-edge demo --out /tmp/demo --seed 11 --query "Track all circles."
    molmo-edge demo --model ckpt/                # any checkpoint or bundle

What it does, end to end, with the real runtime:
1. renders a synthetic scene (`training.scenes`, the shapes the shipped model was trained on) and
   writes it as a real video file with OpenCV (`sample.mp4`);
2. reads that file back through the stream's file source and runs the `Pipeline` on it (sampler,
   sliding window with the per-frame feature cache, model, parser, tracker);
3. prints each window's points, and writes `events.jsonl`, `annotated.mp4` (every frame, points
   and track ids drawn) and `contact_sheet.png` (the frames the model saw) to --out.

Without --model the shipped model is used. If this install has none, the demo says so and stops,
unless --allow-random-model is given: then it builds a random-init tiny model, which shows the
machinery working end to end but whose points mean nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from molmo_edge.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("molmo-edge-demo")
DEFAULT_SEED = 16  # three squares that stay in view for the whole clip
RANDOM_MODEL_WARNING = ("using a RANDOM-INIT tiny model (--allow-random-model): the pipeline runs end to end, "
                        "but its answers are noise, so expect parse problems and no meaningful points")


@dataclass
class DemoResult:
    out_dir: Path
    video_path: Path
    annotated_path: Path
    contact_sheet_path: Path
    events_path: Path
    query: str
    model_note: str
    events: list = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default ./molmo-edge-demo/)")
    parser.add_argument("--model", default=None, help="checkpoint or bundle folder (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"scene seed (default {DEFAULT_SEED})")
    parser.add_argument("--query", default=None, help="default: a tracking query about objects in the scene")
    parser.add_argument("--duration", type=float, default=8.0, help="video length in seconds (default 8)")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--allow-random-model", action="store_true",
                        help="when no shipped model is installed, run a random-init tiny model instead")


def write_scene_video(path: str | Path, seed: int, width_px: int = 320, height_px: int = 240, fps: float = 10.0,
                      duration_s: float = 8.0) -> Path:
    """Render `SceneSimulator(seed)` at `fps` for `duration_s` into a video file."""
    from molmo_edge.stream.annotate import VideoWriter
    from molmo_edge.training.scenes import SceneSimulator

    scene = SceneSimulator(seed, width_px, height_px)
    n_frames = max(1, int(round(duration_s * fps)))
    with VideoWriter(path, fps, width_px, height_px) as writer:
        for k in range(n_frames):
            writer.write(scene.frame_at(k / fps).rgb)
    return Path(path)


def scene_query(seed: int, width_px: int = 320, height_px: int = 240) -> str:
    """A tracking query the scene answers: all of its commonest shape, or its one object of a kind."""
    from molmo_edge.training.scenes import SceneSimulator
    from molmo_edge.training.vocabulary import plural

    scene = SceneSimulator(seed, width_px, height_px)
    visible = [o for o in scene.frame_at(0.0).objects if o.visible_fraction >= 0.5]
    if not visible:
        raise ConfigError(f"scene {seed} has no object in view at the start; pick another --seed or give --query")
    shape, n = Counter(o.shape for o in visible).most_common(1)[0]
    if n >= 2:
        return f"Track all {plural(shape)}."
    first = visible[0]
    return f"Track the {first.color} {first.shape}."


def random_tiny_model(folder: Path) -> Path:
    """A random-init Molmo2 of the tiny test size with the project's small tokenizer, saved in `folder`."""
    import torch

    from molmo_edge.model import Molmo2Config, Molmo2ForConditionalGeneration, save_checkpoint
    from molmo_edge.training.tokenizer_builder import build_tokenizer

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = Molmo2Config.preset("tiny-test").with_tokenizer(tokenizer)
    torch.manual_seed(0)
    save_checkpoint(Molmo2ForConditionalGeneration(config).eval(), folder, tokenizer=tokenizer)
    return folder


def resolve_model(model: Any, allow_random_model: bool, out_dir: Path) -> tuple[Any, str]:
    """(the model to run, a note saying which it is)."""
    from molmo_edge import ModelNotFoundError, default_model_path

    if model is not None:
        return model, f"model: {model}"
    try:
        path = default_model_path()
    except ModelNotFoundError as exc:
        if not allow_random_model:
            raise ModelNotFoundError(
                f"{exc}. The demo needs a model: pass --model CHECKPOINT_OR_BUNDLE, or --allow-random-model "
                "to watch the machinery run with a random-init model (its points are meaningless)") from None
        return random_tiny_model(out_dir / "random-tiny-model"), RANDOM_MODEL_WARNING
    return path, f"model: the shipped model ({path})"


def run_demo(out_dir: str | Path = DEFAULT_OUT, model: Any = None, seed: int = DEFAULT_SEED, query: str | None = None,
             duration_s: float = 8.0, window: int = 8, stride: int = 2, max_new_tokens: int = 256,
             allow_random_model: bool = False, fps: float = 2.0,
             print_fn: Callable[[str], Any] = print) -> DemoResult:
    """The whole demo (see the module docstring); `model` may be a path, a Backend or an Engine."""
    from molmo_edge.publish.jsonl import JsonlSink
    from molmo_edge.stream.annotate import (contact_sheet, objects_by_frame, pick_evenly, write_annotated_video,
                                            write_image)
    from molmo_edge.stream.pipeline import Pipeline

    out_dir = Path(out_dir)
    model, note = resolve_model(model, allow_random_model, out_dir)  # before writing anything
    out_dir.mkdir(parents=True, exist_ok=True)
    query = query or scene_query(seed)
    video = write_scene_video(out_dir / "sample.mp4", seed, duration_s=duration_s)
    events_path = out_dir / "events.jsonl"
    print_fn(note)
    print_fn(f"video: {video} (scene {seed}, {duration_s:g} s)   query: {query!r}")
    events = []
    with JsonlSink(events_path, append=False) as jsonl, Pipeline(
            model, source=str(video), queries=[query], sinks=[jsonl], window=window, stride=stride, fps=fps,
            max_new_tokens=max_new_tokens, source_options={"realtime": False}) as pipeline:
        for event in pipeline:
            events.append(event)
            print_fn(_window_line(event))
        stats = pipeline.stats
    print_fn(f"{stats.windows} windows, {stats.frames_sampled} frames sampled, each encoded once "
             f"({stats.frames_encoded} encodes, {stats.cache_hits} cache hits)")
    by_time = objects_by_frame(events)
    annotated, seen = write_annotated_video(out_dir / "annotated.mp4", video, by_time, sample_fps=fps, caption=query)
    sheet = contact_sheet([rgb for _, rgb in pick_evenly(seen, 12)], columns=4)
    sheet_path = write_image(out_dir / "contact_sheet.png", sheet)
    print_fn(f"wrote {annotated}, {sheet_path} and {events_path}")
    return DemoResult(out_dir=out_dir, video_path=video, annotated_path=annotated, contact_sheet_path=sheet_path,
                      events_path=events_path, query=query, model_note=note, events=events)


def _window_line(event) -> str:
    from molmo_edge.stream.pipeline import latest_objects

    newest = latest_objects(event)
    points = ", ".join(f"#{o.track_id} at ({o.u_px:.0f}, {o.v_px:.0f}) px" for o in newest) or "no points"
    problem = f"   (parse problem: {event.parse_errors[0]})" if event.parse_errors else ""
    return f"window {event.window_t0_s:5.2f}-{event.window_t1_s:5.2f} s: {points}{problem}"


def run(args: argparse.Namespace) -> int:
    result = run_demo(args.out, model=args.model, seed=args.seed, query=args.query, duration_s=args.duration,
                      window=args.window, stride=args.stride, max_new_tokens=args.max_new_tokens,
                      allow_random_model=args.allow_random_model)
    if result.model_note == RANDOM_MODEL_WARNING:
        print(f"note: {RANDOM_MODEL_WARNING}", file=sys.stderr)
    return 0
