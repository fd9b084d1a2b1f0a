"""Latency of the node on this machine: image stamp → `~/points` publish, per window.

    python tests/ros/measure_node_latency.py [--model DIR] [--seconds 60] [--window 8 --stride 2]

Runs the three processes of the cross-process test (synthetic RGB-D camera at --camera-fps, the
node as `molmo-edge-ros`, a listener here) for --seconds and prints, per window, the stamp → arrival
time of `~/points` and the node's own breakdown from `~/events` (vision = encoding the window's new
frames, prefill, decode, total; capture_to_publish = last frame received → event built), then a
summary. Without --model the shipped model is used.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import rclpy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests` importable when run as a script
from molmo_edge.training.scenes import SceneSimulator  # noqa: E402
from tests.ros.node_helpers import visible_shape_query  # noqa: E402
from tests.ros.node_processes import Listener, process_env, start_camera, start_node, stop  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="checkpoint or bundle folder; default: the shipped model")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to measure after the first window")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--fps", type=float, default=2.0, help="sampling rate into the model")
    parser.add_argument("--camera-fps", type=float, default=15.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    domain = random.randint(100, 200)
    scene = SceneSimulator(args.seed, args.size, args.size)
    _, query = visible_shape_query(scene)
    with tempfile.TemporaryDirectory() as log_dir:
        env = process_env({"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}, Path(log_dir))
        context = rclpy.context.Context()
        rclpy.init(context=context, domain_id=domain)
        camera, _ = start_camera(env, args.seed, args.camera_fps, f"{args.size}x{args.size}")
        node = start_node(env, {"model": args.model, "backend": args.backend, "query": query,
                                "window": args.window, "stride": args.stride, "fps": args.fps,
                                "max_new_tokens": args.max_new_tokens})
        listener = Listener(context)
        try:
            if not listener.spin_until(lambda: bool(listener.clouds) or node.poll() is not None, 600.0):
                print("no window within 600 s", file=sys.stderr)
                return 1
            first = len(listener.clouds)
            listener.spin_until(lambda: node.poll() is not None, args.seconds)
        finally:
            code, log = stop(node)
            stop(camera)
            listener.close()
            context.try_shutdown()
        if code != 0:
            print(log[-3000:], file=sys.stderr)
    clouds = listener.clouds[first:] or listener.clouds
    events = {e["stamp_ns"]: e for e in listener.events}
    print(f"model {args.model or '(shipped)'}, query {query!r}, {args.size}x{args.size} camera at "
          f"{args.camera_fps} Hz, window {args.window} stride {args.stride} at {args.fps} fps, "
          f"max_new_tokens {args.max_new_tokens}")
    print(f"{'window':>6} {'stamp->points ms':>17} {'vision':>8} {'prefill':>8} {'decode':>8} {'total':>8} "
          f"{'capture->publish':>17} {'points':>6}")
    rows = []
    for i, received in enumerate(clouds):
        event = events.get(received.stamp_ns, {})
        latency = event.get("latency_ms", {})
        row = [received.latency_ms] + [float(latency.get(k) or np.nan) for k in
                                       ("vision", "prefill", "decode", "total", "capture_to_publish")]
        rows.append(row)
        print(f"{i:>6} {row[0]:>17.0f} {row[1]:>8.0f} {row[2]:>8.0f} {row[3]:>8.0f} {row[4]:>8.0f} {row[5]:>17.0f} "
              f"{received.cloud.width:>6}")
    table = np.array(rows)
    median, mean, worst = np.nanmedian(table, axis=0), np.nanmean(table, axis=0), np.nanmax(table, axis=0)
    span_s = (clouds[-1].received_ns - clouds[0].received_ns) / 1e9 if len(clouds) > 1 else float("nan")
    print(f"{len(clouds)} windows in {span_s:.1f} s ({(len(clouds) - 1) / span_s:.2f} windows/s)")
    for name, values in (("median", median), ("mean", mean), ("max", worst)):
        print(f"{name:>6} {values[0]:>17.0f} {values[1]:>8.0f} {values[2]:>8.0f} {values[3]:>8.0f} {values[4]:>8.0f} "
              f"{values[5]:>17.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
