"""The tracker's ROS parameters: declared from TrackerParams on a real rclpy node, read back,
validated on change; the shipped config/molmo_edge.yaml is parsed by rcl's own YAML parser."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from molmo_edge.errors import ConfigError  # noqa: E402
from molmo_edge.ros.params import (  # noqa: E402
    TrackerParams,
    declare_tracker_parameters,
    parameter_change_validator,
    parameter_descriptor,
    read_tracker_parameters,
)

pytestmark = pytest.mark.ros

CONFIG = Path(__file__).resolve().parents[2] / "ros2_nodes" / "config" / "molmo_edge.yaml"


def _node(context, params_file: Path | None = None) -> Node:
    cli_args = ["--ros-args", "--params-file", str(params_file)] if params_file else None
    node = Node("molmo_edge_params_test", context=context, cli_args=cli_args, start_parameter_services=False)
    declare_tracker_parameters(node)
    node.add_on_set_parameters_callback(parameter_change_validator(node))
    return node


def test_shipped_config_sets_every_parameter_and_matches_the_defaults(ros_context):
    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    assert set(values) == set(TrackerParams.model_fields)  # documents every parameter, no typos
    node = _node(ros_context, CONFIG)
    try:
        assert read_tracker_parameters(node) == TrackerParams(**values) == TrackerParams()
    finally:
        node.destroy_node()


def test_params_file_values_are_read_typed(ros_context, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "model": "/models/bundle", "backend": "onnx", "queries": ["Track the red circle.", "Point to all stars."],
        "fps": 4.0, "use_depth": True, "depth_window_px": 9}}}))
    node = _node(ros_context, params)
    try:
        got = read_tracker_parameters(node)
        assert (got.model, got.backend, got.fps, got.use_depth, got.depth_window_px) == (
            "/models/bundle", "onnx", 4.0, True, 9)
        assert got.queries == ["Track the red circle.", "Point to all stars."]
    finally:
        node.destroy_node()


def test_invalid_params_file_value_is_a_config_error_naming_it(ros_context, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"backend": "gpu"}}}))
    node = _node(ros_context, params)
    try:
        with pytest.raises(ConfigError, match="backend"):
            read_tracker_parameters(node)
    finally:
        node.destroy_node()


def test_changes_are_validated_and_read_only_ones_refused(ros_context):
    node = _node(ros_context)
    try:
        assert node.set_parameters([Parameter("fps", value=5.0)])[0].successful
        assert read_tracker_parameters(node).fps == 5.0
        rejected = node.set_parameters([Parameter("fps", value=0.0)])[0]  # inside the ROS range, but fps > 0
        assert not rejected.successful and "fps" in rejected.reason
        assert not node.set_parameters([Parameter("queries", value=[])])[0].successful
        assert not node.set_parameters([Parameter("model", value="/elsewhere")])[0].successful  # read-only
        assert read_tracker_parameters(node).fps == 5.0  # nothing half-applied
    finally:
        node.destroy_node()


def test_descriptors_carry_type_range_and_description():
    fps = parameter_descriptor("fps")
    assert fps.type == ParameterType.PARAMETER_DOUBLE and fps.description
    assert (fps.floating_point_range[0].from_value, fps.floating_point_range[0].to_value) == (0.0, 30.0)
    window = parameter_descriptor("depth_window_px")
    assert window.type == ParameterType.PARAMETER_INTEGER
    assert (window.integer_range[0].from_value, window.integer_range[0].to_value) == (1, 51)
    assert parameter_descriptor("queries").type == ParameterType.PARAMETER_STRING_ARRAY
    assert "tensorrt" in parameter_descriptor("backend").additional_constraints
    assert parameter_descriptor("model").read_only
