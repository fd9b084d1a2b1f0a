"""Bad camera input never stops the node: an unsupported encoding, a data size that does not match
the header, a frame of the wrong size and an undecodable JPEG are each refused, counted on
/diagnostics, and the next good frame is processed and published as usual."""
from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, PointCloud2  # noqa: E402

from molmo_edge.ros.headers import make_header, stamp_to_ns  # noqa: E402
from molmo_edge.ros.image_conversion import numpy_to_image  # noqa: E402
from molmo_edge.ros.node import MolmoEdgeNode  # noqa: E402
from tests.ros.node_helpers import FRAME_ID, SyntheticCamera, wait_for  # noqa: E402

pytestmark = pytest.mark.ros

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def test_bad_images_are_counted_and_the_node_keeps_publishing(ros_context, tiny_checkpoint_dir):
    camera = SyntheticCamera(seed=3, fps=10.0, width_px=128, height_px=96)
    node = MolmoEdgeNode(context=ros_context, parameter_overrides=[
        Parameter("model", value=str(tiny_checkpoint_dir)), Parameter("backend", value="torch"),
        Parameter("device", value="cpu"), Parameter("window", value=1), Parameter("stride", value=1),
        Parameter("fps", value=30.0), Parameter("max_new_tokens", value=4),
        Parameter("diagnostics_period_s", value=0.2), Parameter("max_image_age_ms", value=5000.0)])
    io = rclpy.create_node("bad_camera", context=ros_context)
    executor = MultiThreadedExecutor(num_threads=3, context=ros_context)
    executor.add_node(node)
    executor.add_node(io)
    spin = lambda: executor.spin_once(timeout_sec=0.02)  # noqa: E731
    clouds: list[PointCloud2] = []
    diagnostics: list[DiagnosticArray] = []
    io.create_subscription(PointCloud2, "/molmo_edge/points", clouds.append, RELIABLE)
    io.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, RELIABLE)
    image_pub = io.create_publisher(Image, "/image", 5)
    compressed_pub = io.create_publisher(CompressedImage, "/image/compressed", 5)
    cloud_stamps = lambda: {stamp_to_ns(c.header.stamp) for c in clouds}  # noqa: E731
    counts = lambda: node.frame_input.stats()  # noqa: E731

    def send(publisher, msg, counter: str) -> None:
        before = counts()[counter]
        for _ in range(3):  # again if DDS lost it
            publisher.publish(msg)
            if wait_for(lambda: counts()[counter] > before, 3.0, spin):
                return
        raise AssertionError(f"the node never counted {counter}")

    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert wait_for(lambda: image_pub.get_subscription_count() and compressed_pub.get_subscription_count(),
                        10.0, spin)
        good_1 = camera.messages(0)[0]
        send(image_pub, good_1, "frames_taken")
        assert wait_for(lambda: camera.stamp_ns(0) in cloud_stamps(), 30.0, spin), "no cloud for a good frame"

        wrong_encoding = camera.messages(1)[0]
        wrong_encoding.encoding = "yuv422"
        send(image_pub, wrong_encoding, "bad_encoding")
        truncated = camera.messages(2)[0]
        truncated.data = bytes(truncated.data)[: len(truncated.data) // 2]
        send(image_pub, truncated, "bad_data_size")
        wrong_size = numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8", make_header(camera.stamp_ns(3), FRAME_ID))
        send(image_pub, wrong_size, "frame_size_changes")
        time.sleep(1.1)  # compressed images are read once raw ones have stopped for a second
        garbage = CompressedImage(header=make_header(camera.stamp_ns(4), FRAME_ID), format="jpeg",
                                  data=b"\xff\xd8 this is not a jpeg")
        send(compressed_pub, garbage, "undecodable")

        good_2 = camera.messages(5)[0]
        send(image_pub, good_2, "frames_taken")
        assert wait_for(lambda: camera.stamp_ns(5) in cloud_stamps(), 30.0, spin), "the node stopped publishing"
        assert cloud_stamps() <= {camera.stamp_ns(0), camera.stamp_ns(5)}  # nothing for the bad frames

        def reported() -> dict[str, str]:
            return {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}

        expected = {"bad_encoding": "1", "bad_data_size": "1", "frame_size_changes": "1", "undecodable": "1",
                    "bad_images": "4", "frames_taken": "2", "state": "active"}
        assert wait_for(lambda: all(reported().get(k) == v for k, v in expected.items()), 10.0, spin), reported()
        assert node.engine is not None
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        io.destroy_node()
