"""`molmo-edge listen ADDR`: print the events a molmo-edge publisher sends, one line each.

    molmo-edge listen tcp://127.0.0.1:5560                    # every event, human-readable
    molmo-edge listen 5560 --topic events/0/ --json            # query 0 only, as JSON lines
    molmo-edge listen 5561 --conflate --count 1                # the latest state, then exit
    molmo-edge listen tcp://robot:5560 --curve-server-key server.key --curve-client-keys me.key_secret

Imports no torch: it runs on any machine with pyzmq and msgpack.
Exit status: 0 when done (`--count` events received, or `--timeout` reached without `--count`),
1 when `--timeout` ran out before `--count` events arrived.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from molmo_edge.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", help="publisher address: tcp://HOST:PORT, HOST:PORT or PORT (127.0.0.1)")
    parser.add_argument("--topic", action="append", default=None,
                        help="topic prefix to subscribe to (repeatable; default 'events' = all; "
                             "'events/N/' = query N only)")
    parser.add_argument("--json", action="store_true", help="print each event as one JSON line")
    parser.add_argument("--count", type=int, default=None, help="exit after this many events")
    parser.add_argument("--timeout", type=float, default=None, help="exit after this many seconds")
    parser.add_argument("--conflate", action="store_true",
                        help="keep only the newest message (use with the publisher's latest-state address)")
    parser.add_argument("--curve-server-key", type=Path, default=None, help="the server's public .key file")
    parser.add_argument("--curve-client-keys", type=Path, default=None,
                        help="this client's .key_secret file, or a folder holding exactly one")


def _curve_config(args: argparse.Namespace):
    if args.curve_server_key is None and args.curve_client_keys is None:
        return None
    if args.curve_server_key is None or args.curve_client_keys is None:
        raise ConfigError("CurveZMQ needs both --curve-server-key (the server's .key) and "
                          "--curve-client-keys (this client's .key_secret)")
    from molmo_edge.publish.curve import CurveClientConfig

    secret = args.curve_client_keys
    if secret.is_dir():
        candidates = sorted(secret.glob("*.key_secret"))
        if len(candidates) != 1:
            raise ConfigError(f"{secret} must hold exactly one .key_secret file, found {len(candidates)}")
        secret = candidates[0]
    return CurveClientConfig(client_secret_key_file=secret, server_public_key_file=args.curve_server_key)


def format_event(event: dict[str, Any]) -> str:
    """One human-readable line; tolerant of fields missing in odd or newer messages."""
    objects = event.get("objects") or []
    parts = []
    for obj in objects[:20] if isinstance(objects, list) else []:
        if isinstance(obj, dict):
            try:
                parts.append(f"#{obj.get('track_id')}({float(obj.get('x', 0)):.3f},{float(obj.get('y', 0)):.3f}"
                             f"@{float(obj.get('t_s', 0)):.2f}s {obj.get('state', '')})")
            except (TypeError, ValueError):
                parts.append(f"#{obj.get('track_id')}(?)")
    if isinstance(objects, list) and len(objects) > 20:
        parts.append(f"... +{len(objects) - 20}")
    latency = event.get("latency_ms") if isinstance(event.get("latency_ms"), dict) else {}
    try:
        window = f"[{float(event.get('window_t0_s', 0)):.2f},{float(event.get('window_t1_s', 0)):.2f}]s"
        total = f"{float(latency.get('total', 0)):.0f}ms"
    except (TypeError, ValueError):
        window, total = "[?]", "?"
    line = (f"{event.get('stream_id', '?')} seq={event.get('seq', '?')} q{event.get('query_index', '?')} "
            f"{json.dumps(str(event.get('query', '')))} {window} count={event.get('count', '?')} "
            f"latency={total} " + " ".join(parts))
    errors = event.get("parse_errors")
    if errors:
        line += f" parse_errors={len(errors) if isinstance(errors, list) else errors}"
    return line.rstrip()


def run(args: argparse.Namespace) -> int:
    from molmo_edge.publish.subscriber import EventSubscriber

    if args.count is not None and args.count < 1:
        raise ConfigError(f"--count must be at least 1, got {args.count}")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout}")
    topics = args.topic or ["events"]
    received = 0
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with EventSubscriber(args.address, topics=topics, conflate=args.conflate, curve=_curve_config(args)) as sub:
        print(f"listening on {sub.endpoint} topics={topics}", file=sys.stderr, flush=True)
        while args.count is None or received < args.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            message = sub.receive(timeout_s=remaining)
            if message is None:
                break
            received += 1
            if args.json:
                line = json.dumps(message.event, separators=(",", ":"), ensure_ascii=False, default=repr)
            else:
                line = f"{message.topic} {format_event(message.event)}"
            print(line, flush=True)
        stats = sub.stats
    print(f"received {received} events, missed {stats.missed} (seq gaps), "
          f"{stats.undecodable} undecodable messages", file=sys.stderr, flush=True)
    if args.count is not None and received < args.count:
        print(f"timed out after {args.timeout:g} s with {received} of {args.count} events", file=sys.stderr)
        return 1
    return 0
