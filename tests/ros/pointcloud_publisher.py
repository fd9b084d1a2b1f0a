"""Helper process for test_ros_cross_process.py: publishes a PointCloud2 of given points until killed.

    python pointcloud_publisher.py TOPIC POINTS_JSON STAMP_NS FRAME_ID
"""
from __future__ import annotations

import json
import sys

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from molmo_edge.ros.headers import make_header
from molmo_edge.ros.pointcloud import points_to_pointcloud
from molmo_edge.ros.points import RosPoint


def main() -> None:
    topic, points_json, stamp_ns, frame_id = sys.argv[1:5]
    points = [RosPoint(**p) for p in json.loads(points_json)]
    msg = points_to_pointcloud(points, make_header(int(stamp_ns), frame_id))
    rclpy.init()
    node = Node("pointcloud_publisher")
    publisher = node.create_publisher(msg.__class__, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    # Publish repeatedly: the subscriber may be discovered after the first messages went out.
    node.create_timer(0.1, lambda: publisher.publish(msg))
    print("publishing", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
