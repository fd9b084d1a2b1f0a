"""Across processes over real DDS: another process publishes a PointCloud2 we packed; we receive
and unpack it here."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from molmo_edge.ros.pointcloud import pointcloud_to_array  # noqa: E402

pytestmark = pytest.mark.ros

PUBLISHER = Path(__file__).with_name("pointcloud_publisher.py")


def test_pointcloud_crosses_processes(ros_env, ros_context, spin_until):
    points = [
        {"u_px": 101.5, "v_px": 202.25, "track_id": 1, "query_index": 0, "xyz_m": [0.25, -0.5, 1.75]},
        {"u_px": 17.0, "v_px": 3.5, "track_id": 42, "query_index": 1, "xyz_m": None, "confidence": 0.75},
    ]
    topic = f"/molmo_edge_test/points_{uuid.uuid4().hex[:8]}"
    stamp_ns = 1_699_999_999_000_000_123
    publisher = subprocess.Popen(
        [sys.executable, str(PUBLISHER), topic, json.dumps(points), str(stamp_ns), "cam_optical"],
        env={**os.environ, **ros_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    node = Node("pointcloud_subscriber", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received: list[PointCloud2] = []
    node.create_subscription(PointCloud2, topic, received.append,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    try:
        got_one = spin_until(executor, lambda: bool(received) or publisher.poll() is not None, timeout_s=30.0)
        assert publisher.poll() is None, f"publisher died: {publisher.communicate()[1][-2000:]}"
        assert got_one and received, "no PointCloud2 arrived within 30 s"
    finally:
        publisher.terminate()
        try:
            publisher.wait(timeout=10)
        except subprocess.TimeoutExpired:
            publisher.kill()
            publisher.wait()
        executor.shutdown()
        node.destroy_node()

    msg = received[0]
    assert msg.header.frame_id == "cam_optical"
    assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == stamp_ns
    cloud = pointcloud_to_array(msg)
    assert cloud["track_id"].tolist() == [1, 42] and cloud["query_index"].tolist() == [0, 1]
    assert cloud["u"].tolist() == [101.5, 17.0] and cloud["v"].tolist() == [202.25, 3.5]
    assert cloud[0][["x", "y", "z"]].tolist() == (0.25, -0.5, 1.75)
    assert np.isnan(cloud[1][["x", "y", "z"]].tolist()).all()
    assert math.isnan(cloud["confidence"][0]) and cloud["confidence"][1] == 0.75
