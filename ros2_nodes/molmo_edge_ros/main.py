"""`molmo-edge-ros` (pip) and `ros2 run molmo_edge_ros tracker` (colcon): run the molmo_edge node.

    molmo-edge-ros --ros-args -p autostart:=true -p query:="Track all circles." \\
        -p image_topic:=/camera/color/image_raw -p model:=/models/bundle
    molmo-edge-ros --ros-args -r __node:=tracker_left -r image:=/left/image_raw --params-file p.yaml

Standard ROS arguments apply (`--ros-args`, `-p`, `-r`, `--params-file`, `--log-level`). Without
`autostart:=true` the node waits unconfigured: `ros2 lifecycle set /molmo_edge configure`, then
`activate`. Ctrl-C (or SIGTERM) deactivates it (the window in progress finishes, the model is freed)
and exits 0.
"""
from __future__ import annotations

import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from .node import MolmoEdgeNode

# Callbacks only store messages and answer services; the model runs in the node's own thread, so
# a few executor threads are plenty.
EXECUTOR_THREADS = 4
# How often the spin loop comes back to Python, where a Ctrl-C can be seen.
SPIN_PERIOD_S = 0.2


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: list[str] | None = None) -> int:
    # rclpy's own handlers would shut the context down at Ctrl-C while the inference thread may
    # still publish; here a signal only ends the spin loop and the node is stopped in order:
    # thread, model, node, then the context.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node = None
    executor = None
    try:
        node = MolmoEdgeNode()
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
        executor.add_node(node)
        while rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()  # stops the inference thread and frees the model
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
