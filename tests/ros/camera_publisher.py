"""Helper process: a synthetic RGB-D camera on ROS 2, in real time, until killed.

    python camera_publisher.py --seed 5 --fps 10 --size 256x256 --image-topic /cam/image_raw \\
        --depth-topic /cam/depth --info-topic /cam/camera_info [--depth-encoding 16UC1] [--bad-every 7]

Frame k shows `SceneSimulator(seed)` at t = k / fps and is stamped START + t, where START (ns, the
wall clock at start) is printed first as `START <ns>`: a listener turns any output stamp back into
the scene time and checks it against the scene's masks and depth. Each frame goes out as
CameraInfo, depth (registered, same stamp) and then the colour image. With --bad-every N, every
Nth colour image has an encoding the node cannot read (it must count it and go on).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from sensor_msgs.msg import CameraInfo, Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests` importable when run as a script
from tests.ros.node_helpers import SyntheticCamera  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--depth-topic", default="/camera/depth")
    parser.add_argument("--info-topic", default="/camera/camera_info")
    parser.add_argument("--depth-encoding", default="32FC1", choices=["32FC1", "16UC1"])
    parser.add_argument("--bad-every", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    camera = SyntheticCamera(args.seed, args.fps, width, height, depth_encoding=args.depth_encoding)

    rclpy.init()
    node = rclpy.create_node("synthetic_camera")
    image_pub = node.create_publisher(Image, args.image_topic, 5)
    depth_pub = node.create_publisher(Image, args.depth_topic, 5)
    info_pub = node.create_publisher(CameraInfo, args.info_topic, 5)
    print(f"START {camera.start_ns}", flush=True)
    start_monotonic = time.monotonic()
    k = 0
    try:
        while rclpy.ok():
            delay = start_monotonic + k / args.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            image, depth, info = camera.messages(k)
            if args.bad_every and k % args.bad_every == args.bad_every - 1:
                image.encoding = "yuv422"  # a camera misconfigured for one frame
            info_pub.publish(info)
            depth_pub.publish(depth)
            image_pub.publish(image)
            k += 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
