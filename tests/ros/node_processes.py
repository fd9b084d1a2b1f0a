"""Three-process runs of the node, shared by test_node_cross_process.py and measure_node_latency.py:
the synthetic camera (camera_publisher.py), the node as the real `molmo-edge-ros` console script,
and a listener node here that collects `~/points`, `~/events` and `/diagnostics`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String

from molmo_edge.ros.headers import stamp_to_ns

CAMERA_SCRIPT = Path(__file__).with_name("camera_publisher.py")
CONSOLE_SCRIPT = Path(sys.executable).parent / "molmo-edge-ros"
IMAGE_TOPIC, DEPTH_TOPIC, INFO_TOPIC = "/cam/image_raw", "/cam/depth", "/cam/camera_info"
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def shipped_model_present() -> bool:
    import molmo_edge

    try:
        molmo_edge.default_model_path()
    except molmo_edge.ModelNotFoundError:
        return False
    return True


def start_camera(env: dict[str, str], seed: int, fps: float, size: str = "256x256",
                 depth_encoding: str = "32FC1", bad_every: int = 0) -> tuple[subprocess.Popen, int]:
    """The camera process and its START stamp (ns)."""
    process = subprocess.Popen(
        [sys.executable, str(CAMERA_SCRIPT), "--seed", str(seed), "--fps", str(fps), "--size", size,
         "--image-topic", IMAGE_TOPIC, "--depth-topic", DEPTH_TOPIC, "--info-topic", INFO_TOPIC,
         "--depth-encoding", depth_encoding, "--bad-every", str(bad_every)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith("START "):
        stop(process)
        raise RuntimeError(f"the camera did not start: {line!r} {process.stderr.read()[-2000:]}")
    return process, int(line.split()[1])


def start_node(env: dict[str, str], parameters: dict[str, object], namespace: str = "") -> subprocess.Popen:
    """`molmo-edge-ros --ros-args -p k:=v ...` (autostart, the camera's topics, depth on)."""
    settings = {"autostart": True, "image_topic": IMAGE_TOPIC, "use_depth": True, "depth_topic": DEPTH_TOPIC,
                "camera_info_topic": INFO_TOPIC, **parameters}
    args = [str(CONSOLE_SCRIPT), "--ros-args"]
    for key, value in settings.items():
        args += ["-p", f"{key}:={_ros_value(value)}"]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ros_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # quoted: a query has spaces and punctuation
    return str(value)


def stop(process: subprocess.Popen, timeout_s: float = 60.0) -> tuple[int, str]:
    """SIGINT (what Ctrl-C sends), then wait; kill if it hangs. -> (exit code, output)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        return -9, out or ""
    return process.returncode, out or ""


@dataclass
class Received:
    cloud: PointCloud2
    stamp_ns: int
    received_ns: int  # wall clock at the listener

    @property
    def latency_ms(self) -> float:
        """Image stamp to arrival here: the node's stamp-to-publish plus the DDS hop (~1 ms)."""
        return (self.received_ns - self.stamp_ns) / 1e6


@dataclass
class Listener:
    """Collects the node's outputs; `spin(seconds)` or `spin_until(predicate, timeout_s)`."""

    context: object
    node_path: str = "/molmo_edge"
    clouds: list[Received] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    diagnostics: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node = Node("molmo_edge_listener", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.node.create_subscription(PointCloud2, f"{self.node_path}/points", self._on_cloud, RELIABLE)
        self.node.create_subscription(String, f"{self.node_path}/events",
                                      lambda m: self.events.append(json.loads(m.data)), RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE)

    def _on_cloud(self, msg: PointCloud2) -> None:
        self.clouds.append(Received(msg, stamp_to_ns(msg.header.stamp), time.time_ns()))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f"{self.node_path}: tracker":
                self.diagnostics.append({"level": str(int.from_bytes(status.level, "little")
                                                      if isinstance(status.level, bytes) else status.level),
                                         "message": status.message,
                                         **{kv.key: kv.value for kv in status.values}})

    def spin_until(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def process_env(extra: dict[str, str], log_dir: Path) -> dict[str, str]:
    return {**os.environ, **extra, "ROS_LOG_DIR": str(log_dir), "PYTHONUNBUFFERED": "1"}
