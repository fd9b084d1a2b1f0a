"""`molmo-edge serve`: the camera-stream tracking daemon, publishing events on ZeroMQ.

    molmo-edge serve --source 0 --query "Track the red circle." \\
        --pub tcp://127.0.0.1:5560 --control tcp://127.0.0.1:5562
    molmo-edge serve --source rtsp://cam/stream --query "Track all stars." --query "count: circles" \\
        --model bundle/ --latest 5561 --jsonl events.jsonl --log-json
    molmo-edge serve --source synthetic:3 --query "Track all circles." --max-windows 20

SRC is a camera index, a video file, an image folder, an RTSP/HTTP URL, a GStreamer pipeline or
`synthetic:SEED[:WxH]`. Stop with SIGTERM or Ctrl-C: the window in progress finishes and is
published first. Change queries, pause and read counters with the control socket, e.g.
`{"cmd": "set_query", "query": "Track the blue star."}` (see docs/daemon.md).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from molmo_edge.errors import ConfigError

_REALTIME = {"auto": None, "yes": True, "no": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from molmo_edge.engine.loading import BACKEND_CHOICES, QUANTIZATION_CHOICES

    parser.add_argument("--source", required=True, help="camera index, file, folder, URL, GStreamer pipeline "
                                                        "or synthetic:SEED[:WxH]")
    parser.add_argument("--query", action="append", default=None, required=True,
                        help='what to track / point at / count (repeatable): "Track the red circle.", '
                             '"count: stars", a bare label means tracking')
    parser.add_argument("--model", default=None, help="checkpoint or bundle folder (default: the shipped model)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="torch backend: float32, bfloat16, float16")
    parser.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None)
    parser.add_argument("--pub", default="tcp://127.0.0.1:5560", help="event PUB address (default %(default)s)")
    parser.add_argument("--control", default="tcp://127.0.0.1:5562", help="control address (default %(default)s)")
    parser.add_argument("--latest", default=None, help="single-frame latest-state PUB address for conflating "
                                                       "subscribers (default: none)")
    parser.add_argument("--topic", default="events", help="base topic (default %(default)s)")
    parser.add_argument("--send-hwm", type=int, default=100,
                        help="events queued per subscriber before ZeroMQ drops for it (default %(default)s)")
    parser.add_argument("--jsonl", type=Path, default=None, help="also append every event to this JSONL file")
    parser.add_argument("--window", type=int, default=8, help="sampled frames per window (default 8)")
    parser.add_argument("--stride", type=int, default=2, help="evaluate every K new frames (default 2)")
    parser.add_argument("--fps", type=float, default=2.0, help="frames per second into the model (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit (default 256)")
    parser.add_argument("--max-windows", type=int, default=None, help="stop after this many windows")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--stream-id", default=None, help="stream id in events (default: from the source)")
    parser.add_argument("--realtime", choices=sorted(_REALTIME), default="auto",
                        help="play files/folders/synthetic scenes at their own rate (auto: synthetic yes, "
                             "files no)")
    parser.add_argument("--source-fps", type=float, default=None, help="frame rate of folders and synthetic scenes")
    parser.add_argument("--duration", type=float, default=None, help="synthetic scenes end after this many seconds")
    parser.add_argument("--curve-secret-key", type=Path, default=None,
                        help="this server's CurveZMQ .key_secret: encrypt the PUB and control sockets")
    parser.add_argument("--curve-clients", type=Path, default=None,
                        help="folder of allowed clients' public .key files (CurveZMQ allow-list)")
    parser.add_argument("--log-json", action="store_true", help="structured JSON-lines logs on stderr")
    parser.add_argument("--status-interval", type=float, default=10.0, help="seconds between status log lines")


def daemon_config(args: argparse.Namespace):
    """DaemonConfig from the parsed flags (ConfigError naming the bad flag)."""
    from pydantic import ValidationError

    from molmo_edge.publish.endpoints import normalize_endpoint
    from molmo_edge.publish.daemon import DaemonConfig
    from molmo_edge.stream.pipeline import PipelineConfig

    source_options = {}
    if _REALTIME[args.realtime] is not None:
        source_options["realtime"] = _REALTIME[args.realtime]
    if args.source_fps is not None:
        source_options["fps"] = args.source_fps
    if args.duration is not None:
        source_options["duration_s"] = args.duration
    try:
        pipeline = PipelineConfig(window=args.window, stride=args.stride, fps=args.fps,
                                  max_new_tokens=args.max_new_tokens, max_windows=args.max_windows,
                                  max_seconds=args.max_seconds, stream_id=args.stream_id)
        return DaemonConfig(source=args.source, queries=args.query, model=args.model, backend=args.backend,
                            device=args.device, dtype=args.dtype, quantization=args.quantization,
                            pub=normalize_endpoint(args.pub), control=normalize_endpoint(args.control),
                            latest=normalize_endpoint(args.latest) if args.latest else None, topic=args.topic,
                            send_hwm=args.send_hwm,
                            jsonl=args.jsonl, curve_secret_key=args.curve_secret_key,
                            curve_clients_dir=args.curve_clients, pipeline=pipeline, source_options=source_options,
                            status_interval_s=args.status_interval)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {_problems(exc)}") from None


def _problems(exc) -> str:
    """'--flag-name: message' per pydantic error (the message alone when it concerns several flags)."""
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        loc = [str(p) for p in error["loc"] if p != "pipeline"]
        parts.append(f"--{'-'.join(loc).replace('_', '-')}: {message}" if loc else message)
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    from molmo_edge.publish.daemon import Daemon, configure_logging

    config = daemon_config(args)
    verbose = getattr(args, "verbose", False)
    configure_logging(json_lines=args.log_json, level=logging.DEBUG if verbose else logging.INFO)
    return Daemon(config).run()
