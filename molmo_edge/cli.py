"""`molmo-edge <verb>`: one entry point, one module per verb under `molmo_edge/commands/`.

Each verb module defines `add_arguments(parser)` and `run(args) -> int` and is imported only when
its verb is used, so `molmo-edge listen` does not import torch and a broken optional dependency of
one verb never breaks the others.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from molmo_edge.errors import MolmoEdgeError

# verb -> (module under molmo_edge.commands, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the shipped model on a generated video; write an annotated video and a contact sheet"),
    "point": ("point", "point at objects in an image file"),
    "track": ("track", "track objects through a video file, write events as JSONL"),
    "serve": ("serve", "camera-stream tracking daemon publishing events on ZeroMQ"),
    "listen": ("listen", "subscribe to a molmo-edge ZeroMQ publisher and print its events"),
    "train": ("train", "train or fine-tune a Molmo2 model"),
    "eval": ("evaluate", "evaluate a model on held-out synthetic scenes"),
    "export": ("export", "export a model to an ONNX / TensorRT bundle"),
    "bench": ("bench", "benchmark backends side by side (and against transformers)"),
    "synth": ("synth", "generate synthetic scenes with ground truth"),
    "calibrate-camera": ("calibrate_camera", "camera intrinsics from checkerboard images"),
}


class CliError(Exception):
    """An error meant for the user: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    from molmo_edge import __version__

    parser = argparse.ArgumentParser(prog="molmo-edge", description="Molmo2 on robots and edge GPUs.")
    parser.add_argument("--version", action="version", version=f"molmo-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb, (module, help_text) in VERBS.items():
        sub.add_parser(verb, help=help_text, add_help=False)
    return parser


def _load_verb(verb: str):
    module_name, _ = VERBS[verb]
    return importlib.import_module(f"molmo_edge.commands.{module_name}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    # Parse only up to the verb here; the verb's own parser takes the rest, so that a verb's
    # arguments are declared next to the code that uses them.
    args, rest = top.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        module = _load_verb(args.verb)
    except ImportError as exc:
        print(f"molmo-edge {args.verb}: a dependency is missing: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"molmo-edge {args.verb}", description=VERBS[args.verb][1])
    module.add_arguments(parser)
    verb_args = parser.parse_args(rest)
    verb_args.verbose = args.verbose
    try:
        return int(module.run(verb_args) or 0)
    except (CliError, MolmoEdgeError) as exc:
        print(f"molmo-edge {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
