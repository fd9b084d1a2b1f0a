"""What the node publishes, checked against the synthetic scene's ground truth, in-process on real
rclpy with images, depth and CameraInfo sent over DDS.

The model is `SceneOracleBackend` (tests/stream/oracle_model.py): a real Backend, driven by the real
Engine and Pipeline, that answers from the scene itself, so every point it gives is inside the
right object. What is under test is the node: image conversion, the latest-frame slot, depth
pairing by stamp, deprojection with the CameraInfo, stamps and frame ids, the PointCloud2 / marker
/ event messages. (The cross-process test runs the real console script with a trained model.)
"""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from molmo_edge.engine.engine import Engine  # noqa: E402
from molmo_edge.ros.headers import stamp_to_ns  # noqa: E402
from molmo_edge.ros.node import MolmoEdgeNode  # noqa: E402
from molmo_edge.ros.pointcloud import pointcloud_to_array  # noqa: E402
from molmo_edge.stream.events import Event  # noqa: E402
from tests.ros.node_helpers import (  # noqa: E402
    FRAME_ID,
    SyntheticCamera,
    expected_xyz_m,
    median_depth_m,
    object_under,
    wait_for,
)
from tests.stream.oracle_model import SceneOracleBackend  # noqa: E402

pytestmark = pytest.mark.ros

SEED, W_PX, H_PX = 7, 160, 120  # three stars and a square moving through the frame
SOURCE_FPS, N_FRAMES = 5.0, 16
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def oracle_factory(tiny_checkpoint_dir):
    def make(params):
        return Engine(SceneOracleBackend(tiny_checkpoint_dir, SEED, W_PX, H_PX, SOURCE_FPS,
                                         duration_s=N_FRAMES / SOURCE_FPS))
    return make


def test_points_are_inside_the_objects_with_depth_and_the_image_stamp(ros_context, oracle_factory):
    camera = SyntheticCamera(SEED, SOURCE_FPS, W_PX, H_PX, depth_encoding="16UC1")
    queries = ["Track all stars.", "Point to all squares"]
    node = MolmoEdgeNode(context=ros_context, engine_factory=oracle_factory, parameter_overrides=[
        Parameter("queries", value=queries), Parameter("fps", value=SOURCE_FPS),  # every frame is sampled
        Parameter("window", value=3), Parameter("stride", value=1),
        Parameter("max_new_tokens", value=512), Parameter("use_depth", value=True),
        Parameter("image_topic", value="/cam/image_raw"), Parameter("depth_topic", value="/cam/depth"),
        Parameter("camera_info_topic", value="/cam/camera_info"), Parameter("max_image_age_ms", value=5000.0)])
    io = rclpy.create_node("camera_and_listener", context=ros_context)
    executor = MultiThreadedExecutor(num_threads=3, context=ros_context)
    executor.add_node(node)
    executor.add_node(io)
    spin = lambda: executor.spin_once(timeout_sec=0.02)  # noqa: E731
    clouds: list[PointCloud2] = []
    events: list[Event] = []
    markers: list[MarkerArray] = []
    io.create_subscription(PointCloud2, "/molmo_edge/points", clouds.append, RELIABLE)
    io.create_subscription(String, "/molmo_edge/events", lambda m: events.append(Event.from_dict(_json(m.data))),
                           RELIABLE)
    io.create_subscription(MarkerArray, "/molmo_edge/markers", markers.append, RELIABLE)
    image_pub = io.create_publisher(Image, "/cam/image_raw", 5)
    depth_pub = io.create_publisher(Image, "/cam/depth", 5)
    info_pub = io.create_publisher(CameraInfo, "/cam/camera_info", 5)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert wait_for(lambda: all(p.get_subscription_count() for p in (image_pub, depth_pub, info_pub)), 10.0, spin)
        for k in range(N_FRAMES):
            image, depth, info = camera.messages(k)
            # Depth first, and wait until the node holds it: the executor runs the depth and image
            # callbacks on different threads in any order, and a frame taken before its depth
            # arrived is (correctly) published without z. This test checks the pairing itself.
            _send_depth_until_received(node, spin, lambda: (info_pub.publish(info), depth_pub.publish(depth)))
            _send_until_taken(node, k, spin, lambda: image_pub.publish(image))
        wait_for(lambda: False, 1.0, spin)  # the last frame's window finishes
        n_windows = node.diagnostics_stats()["windows_published"]
        assert n_windows == N_FRAMES - 2, f"{n_windows} windows of 3 frames from {N_FRAMES} frames"
        assert wait_for(lambda: len(clouds) >= n_windows and len(events) >= 2 * n_windows, 20.0, spin)
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        io.destroy_node()

    stamps = {camera.stamp_ns(k) for k in range(N_FRAMES)}
    n_points = 0
    star_tracks: set[int] = set()
    for cloud in clouds:
        stamp = stamp_to_ns(cloud.header.stamp)
        assert cloud.header.frame_id == FRAME_ID and stamp in stamps
        t_s = camera.t_s(stamp)
        depth_m = camera.scene.depth_at(t_s)
        depth_m = np.round(depth_m * 1000.0) / 1000.0  # what the 16UC1 message carried
        for point in pointcloud_to_array(cloud):
            n_points += 1
            u, v, z = float(point["u"]), float(point["v"]), float(point["z"])
            scene_id = object_under(camera.scene, t_s, u, v, grow_px=2)
            assert scene_id != 0, f"point ({u:.1f}, {v:.1f}) at {t_s} s is on the background"
            shape = next(o.shape for o in camera.scene.objects if o.object_id == scene_id)
            assert shape == ("star" if point["query_index"] == 0 else "square")
            assert z == pytest.approx(median_depth_m(depth_m, u, v), abs=1.5e-3)
            assert (float(point["x"]), float(point["y"])) == pytest.approx(expected_xyz_m(u, v, z, W_PX, H_PX)[:2],
                                                                           abs=1e-3)
            if point["query_index"] == 0:
                star_tracks.add(int(point["track_id"]))
    assert n_points >= 10
    n_stars = sum(o.shape == "star" for o in camera.scene.objects)
    assert 1 <= len(star_tracks) <= n_stars + 1, f"track ids {star_tracks} for {n_stars} stars: ids not persistent"

    by_stamp = {stamp_to_ns(c.header.stamp): c for c in clouds}
    for event in events:
        assert event.stamp_ns in by_stamp and event.query == queries[event.query_index]
        assert event.frame_width_px == W_PX and event.stream_id == "/molmo_edge"
        last = [o for o in event.objects if o.t_s == event.window_t1_s]
        in_cloud = pointcloud_to_array(by_stamp[event.stamp_ns])
        assert len(last) == int((in_cloud["query_index"] == event.query_index).sum())
        for obj in event.objects:
            assert obj.xyz_m is None or obj.xyz_m[2] > 0
    drawn = [m for array in markers for m in array.markers]
    assert drawn[0].action == Marker.DELETEALL
    assert sum(m.type == Marker.SPHERE for m in drawn) == n_points


def _send_depth_until_received(node: MolmoEdgeNode, spin, send) -> None:
    """Publish CameraInfo + depth (again if DDS lost them) until the node has both."""
    received_before = node.frame_input.stats()["depth_received"]
    for _ in range(3):
        send()
        if wait_for(lambda: node.frame_input.stats()["depth_received"] > received_before
                    and node.diagnostics_stats()["has_camera_info"], 3.0, spin):
            return
    raise AssertionError("the node never received the depth image and CameraInfo")


def _send_until_taken(node: MolmoEdgeNode, k: int, spin, send) -> None:
    """Publish frame k (again if DDS lost it) until the node's inference thread has taken it."""
    received_before = node.frame_input.stats()["frames_received"]
    for _ in range(3):
        send()
        if wait_for(lambda: node.frame_input.stats()["frames_received"] > received_before, 3.0, spin):
            break
    assert wait_for(lambda: not node.frame_input.pending, 20.0, spin), f"frame {k} was never taken"


def _json(text: str) -> dict:
    import json

    return json.loads(text)
