"""`molmo-edge eval`: score a model on held-out synthetic scenes (pointing F1, counting, HOTA).

    molmo-edge eval --json eval.json                                # the shipped model
    molmo-edge eval --model runs/tiny/final --n-image 200 --n-video 60 --json eval.json
    molmo-edge eval --model bundle/ --backend onnx --n 10 --json quick.json
    molmo-edge eval --stream 20 --json stream.json                  # the daemon's tracks vs offline

Held-out scenes come from `--seed` (default 424242; the split is documented in
molmo_edge/training/evaluate.py): `--n-image` images and `--n-video` clips of 8 frames at 2 fps,
each asked up to `--questions` different questions. `--n N` sets both counts at once. Prints the
summary; `--json OUT` writes the full report (per-task numbers, model, backend, wall time).

`--stream N` scores the streaming pipeline instead (molmo_edge/stream/accuracy.py): N held-out
scenes streamed through the real Pipeline (`--window` frames, 8 by default, every `--stride` new
ones, `--duration` seconds of scene), the published tracks scored with the same HOTA, next to the
offline score of the same model on the same frames cut into clips of `--window` frames.
"""
from __future__ import annotations

import argparse
import sys

from molmo_edge.errors import InputError

_SHOWN = (("pointing_f1", "image pointing F1"), ("pointing_precision", "  precision"),
          ("pointing_recall", "  recall"), ("count_accuracy", "count accuracy"),
          ("video_pointing_f1", "video pointing F1"), ("tracking_hota", "tracking HOTA"),
          ("tracking_deta", "  DetA"), ("tracking_assa", "  AssA"), ("id_switches", "ID switches"),
          ("n_examples", "answers scored"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from molmo_edge.engine.loading import BACKEND_CHOICES

    parser.add_argument("--model", default=None,
                        help="checkpoint or bundle folder (default: the model shipped with molmo-edge)")
    parser.add_argument("--seed", type=int, default=None, help="held-out seed (default 424242)")
    parser.add_argument("--n", type=int, default=None, metavar="N", help="set --n-image and --n-video to N")
    parser.add_argument("--n-image", type=int, default=None, help="held-out images (default 200)")
    parser.add_argument("--n-video", type=int, default=None, help="held-out 8-frame clips (default 60)")
    parser.add_argument("--questions", type=int, default=None,
                        help="different questions per image / clip (default 3)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="default auto")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="torch backend: float32, bfloat16, float16")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="answer length limit (default 512)")
    parser.add_argument("--predictions", action="store_true",
                        help="include every prompt, expected answer, model answer and score in the JSON")
    parser.add_argument("--stream", type=int, default=None, metavar="N",
                        help="score the streaming pipeline's tracks on N held-out scenes, next to offline")
    parser.add_argument("--window", type=int, default=None,
                        help="with --stream: sampled frames per window and per offline clip (8)")
    parser.add_argument("--stride", type=int, default=None, help="with --stream: a window every K sampled frames (2)")
    parser.add_argument("--duration", type=float, default=None,
                        help="with --stream: seconds of each scene streamed (20)")
    parser.add_argument("--json", metavar="OUT", default=None, help="write the full report to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def eval_config(args: argparse.Namespace):
    """The EvalConfig the flags ask for (flags not given keep the defaults)."""
    from molmo_edge.training.evaluate import EvalConfig

    values = {}
    if args.n is not None:
        values.update(n_image=args.n, n_video=args.n)
    for flag, field in (("n_image", "n_image"), ("n_video", "n_video"), ("seed", "seed"),
                        ("questions", "questions_per_input"), ("max_new_tokens", "max_new_tokens")):
        value = getattr(args, flag)
        if value is not None:
            values[field] = value
    for field in ("n_image", "n_video"):
        if values.get(field, 0) < 0:
            raise InputError(f"--{field.replace('_', '-')} must be 0 or more, got {values[field]}")
    if values.get("questions_per_input", 1) < 1 or values.get("max_new_tokens", 1) < 1:
        raise InputError("--questions and --max-new-tokens must be at least 1")
    if values.get("n_image", 1) == 0 and values.get("n_video", 1) == 0:
        raise InputError("nothing to evaluate: --n-image and --n-video are both 0")
    return EvalConfig(keep_predictions=args.predictions, **values)


def format_summary(report: dict) -> str:
    lines = [f"model {report.get('model')} ({report.get('backend')}), {report['n_examples']} answers "
             f"in {report['wall_s']:.1f} s"]
    for key, name in _SHOWN:
        value = report.get(key)
        if value is None:
            continue
        lines.append(f"  {name:<20} {value:.3f}" if isinstance(value, float) else f"  {name:<20} {value}")
    return "\n".join(lines)


def stream_config(args: argparse.Namespace):
    """The StreamAccuracyConfig of --stream / --window / --stride / --duration / --seed / --max-new-tokens."""
    from pydantic import ValidationError

    from molmo_edge.stream.accuracy import StreamAccuracyConfig

    values = {"n_scenes": args.stream, "window": args.window, "stride": args.stride, "duration_s": args.duration,
              "seed": args.seed, "max_new_tokens": args.max_new_tokens}
    try:
        return StreamAccuracyConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError(f"bad --stream settings: {problems}") from None


def format_stream_summary(report: dict) -> str:
    lines = [f"model {report.get('model')} ({report.get('backend')}), {len(report['scenes'])} streamed scenes "
             f"in {report['wall_s']:.1f} s (window {report['config']['window']}, stride {report['config']['stride']})",
             f"  {'':<10} {'HOTA':>6} {'DetA':>6} {'AssA':>6} {'ID sw':>6}"]
    for name in ("stream", "offline"):
        r = report[name]
        lines.append(f"  {name:<10} {r['hota']:>6.3f} {r['deta']:>6.3f} {r['assa']:>6.3f} {r['id_switches']:>6}")
    lines.append(f"  stream - offline HOTA: {report['hota_difference']:+.3f}")
    return "\n".join(lines)


def run_stream(args: argparse.Namespace) -> int:
    from molmo_edge.engine.engine import Engine
    from molmo_edge.engine.loading import resolve_model_path
    from molmo_edge.report_paths import portable_path
    from molmo_edge.stream.accuracy import stream_accuracy
    from molmo_edge.training.evaluate import write_report

    config = stream_config(args)
    folder, _ = resolve_model_path(args.model)
    with Engine.from_pretrained(folder, backend=args.backend, device=args.device, dtype=args.dtype) as engine:
        report = stream_accuracy(engine, config, progress=not args.no_progress)
        report["backend"] = engine.backend.name
    report["model"] = portable_path(folder)
    print(format_stream_summary(report))
    if args.json:
        print(f"wrote {write_report(report, args.json)}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    from molmo_edge.training.evaluate import evaluate, write_report

    if args.stream is not None:
        return run_stream(args)
    if args.window is not None or args.stride is not None or args.duration is not None:
        raise InputError("--window, --stride and --duration go with --stream N")
    config = eval_config(args)  # before loading the model: bad flags fail fast
    report = evaluate(args.model, config, backend=args.backend, device=args.device, dtype=args.dtype,
                      progress=not args.no_progress)
    print(format_summary(report))
    if args.json:
        path = write_report(report, args.json)
        print(f"wrote {path}", file=sys.stderr)
    return 0


__all__ = ["add_arguments", "run", "eval_config", "format_summary", "stream_config"]
