"""The lifecycle node in-process on real rclpy: transitions load, free and reload the model;
parameters and ~/query change the queries at run time; bad settings fail a transition and leave
the node alive."""
from __future__ import annotations

import gc
import weakref

import pytest

rclpy = pytest.importorskip("rclpy")
from lifecycle_msgs.srv import GetState  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from molmo_edge.ros.node import MolmoEdgeNode  # noqa: E402
from tests.ros.node_helpers import call_service, wait_for  # noqa: E402

pytestmark = pytest.mark.ros

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


@pytest.fixture
def make_node(ros_context, tiny_checkpoint_dir):
    nodes, executors = [], []

    def make(**params) -> tuple[MolmoEdgeNode, MultiThreadedExecutor]:
        settings = {"model": str(tiny_checkpoint_dir), "backend": "torch", "device": "cpu", "window": 2,
                    "stride": 1, "max_new_tokens": 8, **params}
        node = MolmoEdgeNode(context=ros_context,
                             parameter_overrides=[Parameter(k, value=v) for k, v in settings.items()])
        executor = MultiThreadedExecutor(num_threads=2, context=ros_context)
        executor.add_node(node)
        nodes.append(node)
        executors.append(executor)
        return node, executor

    yield make
    for executor in executors:
        executor.shutdown(timeout_sec=1.0)
    for node in nodes:
        node.destroy_node()


def _lifecycle_state(node: MolmoEdgeNode, executor) -> str:
    """The state as the lifecycle service reports it (what `ros2 lifecycle get` shows)."""
    client = node.create_client(GetState, f"{node.get_fully_qualified_name()}/get_state")
    try:
        assert client.wait_for_service(timeout_sec=10.0)
        reply = call_service(client, GetState.Request(), lambda: executor.spin_once(timeout_sec=0.05),
                             timeout_s=30.0, retry_after_s=2.0)
        assert reply is not None, "no reply from get_state"
        return reply.current_state.label
    finally:
        node.destroy_client(client)


def test_transitions_load_free_and_reload_the_model(make_node):
    node, executor = make_node()
    assert node.get_name() == "molmo_edge" and node.engine is None
    assert _lifecycle_state(node, executor) == "unconfigured"

    assert node.trigger_configure() == SUCCESS
    assert node.engine is None, "configure creates publishers; the model is loaded at activate"
    assert node.count_publishers("/molmo_edge/points") == 1 and node.count_publishers("/molmo_edge/events") == 1
    assert _lifecycle_state(node, executor) == "inactive"

    assert node.trigger_activate() == SUCCESS
    first_engine = weakref.ref(node.engine)
    first_model = weakref.ref(node.engine.backend.model)
    assert node.count_subscribers("/image") == 1 and node.count_subscribers("/image/compressed") == 1
    assert node.count_subscribers("/molmo_edge/query") == 1
    assert _lifecycle_state(node, executor) == "active"

    assert node.trigger_deactivate() == SUCCESS
    assert node.engine is None and node.pipeline is None
    gc.collect()
    assert first_engine() is None and first_model() is None, "deactivate must release the model"
    assert node.count_subscribers("/image") == 0

    assert node.trigger_activate() == SUCCESS
    assert node.engine is not None and node.engine.backend.model is not None
    assert first_model() is None  # a new model object, not the old one kept alive

    assert node.trigger_deactivate() == SUCCESS
    assert node.trigger_cleanup() == SUCCESS
    assert node.count_publishers("/molmo_edge/points") == 0
    assert _lifecycle_state(node, executor) == "unconfigured"
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    model = weakref.ref(node.engine.backend.model)
    assert node.trigger_shutdown() == SUCCESS
    gc.collect()
    assert node.engine is None and model() is None
    assert _lifecycle_state(node, executor) == "finalized"


def test_a_model_that_cannot_load_fails_activate_and_the_node_stays_usable(make_node, tmp_path):
    node, executor = make_node(model=str(tmp_path / "no_such_model"))
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() == FAILURE
    assert node.engine is None and _lifecycle_state(node, executor) == "inactive"
    assert node.count_subscribers("/image") == 0
    assert node.trigger_cleanup() == SUCCESS


def test_invalid_parameters_fail_configure_with_the_node_unconfigured(make_node):
    node, executor = make_node(window=2, stride=4)
    assert node.trigger_configure() == FAILURE
    assert _lifecycle_state(node, executor) == "unconfigured"


def test_autostart_configures_and_activates(make_node):
    node, executor = make_node(autostart=True)
    assert wait_for(lambda: node.engine is not None, 60.0, lambda: executor.spin_once(timeout_sec=0.1))
    assert _lifecycle_state(node, executor) == "active"


def test_queries_change_through_parameters_and_the_query_topic(make_node, ros_context):
    node, executor = make_node(queries=["Track all stars.", "count: squares"])
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    texts = lambda: [q.query.text for q in node.pipeline.queries]  # noqa: E731
    assert texts() == ["Track all stars.", "count: squares"]

    assert node.set_parameters([Parameter("query", value="Point to the red circle")])[0].successful
    assert texts() == ["Point to the red circle"]  # `query` set: it is what runs
    refused = node.set_parameters([Parameter("query", value="bad\x01query")])[0]
    assert not refused.successful and "control characters" in refused.reason
    assert not node.set_parameters([Parameter("queries", value=[])])[0].successful
    assert texts() == ["Point to the red circle"]  # nothing half-applied
    assert node.set_parameters([Parameter("query", value="")])[0].successful
    assert texts() == ["Track all stars.", "count: squares"]  # back to `queries`

    sender = rclpy.create_node("query_sender", context=ros_context)
    executor.add_node(sender)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publisher = sender.create_publisher(String, "/molmo_edge/query", reliable)
    spin = lambda: executor.spin_once(timeout_sec=0.05)  # noqa: E731
    try:
        assert wait_for(lambda: publisher.get_subscription_count() > 0, 10.0, spin)
        publisher.publish(String(data="  Track the blue triangle.  "))
        assert wait_for(lambda: texts() == ["Track the blue triangle."], 10.0, spin)
        assert node.get_parameter("query").value == "Track the blue triangle."
        publisher.publish(String(data=""))  # an empty query is refused; the last good one stays
        publisher.publish(String(data="Track all circles."))
        assert wait_for(lambda: texts() == ["Track all circles."], 10.0, spin)
    finally:
        executor.remove_node(sender)
        sender.destroy_node()


def test_window_changes_rebuild_the_pipeline_around_the_same_model(make_node):
    node, executor = make_node()
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    engine, pipeline = node.engine, node.pipeline
    assert pipeline.config.window == 2
    assert node.set_parameters([Parameter("window", value=4), Parameter("stride", value=3)])[0].successful
    assert wait_for(lambda: node.pipeline is not pipeline, 10.0, lambda: executor.spin_once(timeout_sec=0.05))
    assert (node.pipeline.config.window, node.pipeline.config.stride) == (4, 3)
    assert node.engine is engine  # no reload
    refused = node.set_parameters([Parameter("stride", value=5)])[0]  # stride > window
    assert not refused.successful and "stride" in refused.reason
    assert not node.set_parameters([Parameter("model", value="/elsewhere")])[0].successful  # read-only


def test_camera_info_file_is_read_at_configure_and_a_bad_one_fails_it(make_node, tmp_path):
    from molmo_edge.calibration.camera import CameraIntrinsics, write_camera_info_yaml

    camera = CameraIntrinsics(width_px=640, height_px=480, fx_px=500.0, fy_px=505.0, cx_px=319.5, cy_px=239.5)
    good = write_camera_info_yaml(camera, tmp_path / "camera.yaml")
    node, _ = make_node(use_depth=True, camera_info_file=str(good))
    assert node.trigger_configure() == SUCCESS
    assert node.diagnostics_stats()["has_camera_info"] is True
    assert node.trigger_activate() == SUCCESS
    assert node.pipeline.intrinsics.fy_px == 505.0
    assert node.count_subscribers("/camera_info") == 0  # the file replaces the topic
    assert node.count_subscribers("/depth") == 1

    bad = tmp_path / "broken.yaml"
    bad.write_text("image_width: [not, a, number")
    node, executor = make_node(use_depth=True, camera_info_file=str(bad))
    assert node.trigger_configure() == FAILURE
    assert _lifecycle_state(node, executor) == "unconfigured"
