"""The tracker node's ROS parameters as one typed model, declared on and read from an rclpy node.

`TrackerParams` is the single source of truth: `config/molmo_edge.yaml` sets these keys, the
launch file overrides some, `declare_tracker_parameters` declares each with a ParameterDescriptor
(type, description, range, read-only) built from the model's fields, and
`read_tracker_parameters` returns a validated `TrackerParams` (ConfigError naming the bad
parameter otherwise). `parameter_change_validator` is an on-set-parameters callback that only
validates, as ROS practice asks; the node reacts to accepted changes afterwards.

Input topics are parameters (`image_topic`, `depth_topic`, `camera_info_topic`; read-only, set
them with `-p` or a params file) whose relative defaults can also be remapped: the node subscribes
to `image` (+ `image/compressed`), `camera_info` and `depth`, and `~/query`; it publishes
`~/points`, `~/markers`, `~/detections`, `~/events` and `/diagnostics`.
"""
from __future__ import annotations

import typing
from typing import Any, Callable, Literal

import annotated_types
import pydantic
from pydantic import BaseModel, ConfigDict, Field
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from molmo_edge.errors import ConfigError, InputError
from molmo_edge.stream.queries import Query

Backend = Literal["auto", "torch", "onnx", "tensorrt"]

# Changing these means reloading the model or re-subscribing: they are read at configure/activate,
# so they are declared read-only (set them in the YAML, the launch file or with -p).
READ_ONLY = frozenset({"model", "backend", "device", "image_topic", "depth_topic", "camera_info_topic",
                       "autostart"})


class TrackerParams(BaseModel):
    """Everything the tracker node can be told through ROS parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: str = Field("", description="checkpoint or exported bundle folder; empty: the model shipped with molmo-edge")
    backend: Backend = Field("auto", description="inference backend: auto, torch, onnx or tensorrt")
    device: str = Field("", description="device such as cpu, cuda or cuda:1; empty: the backend's default")
    queries: list[str] = Field(["Track all circles."], min_length=1,
                               description="what to point at / track, one prompt per entry")
    query: str = Field("", description="one query; when set it replaces `queries` (also settable on ~/query)")
    fps: float = Field(2.0, gt=0, le=30, description="frames per second sampled into the model")
    window: int = Field(8, ge=1, le=128, description="sampled frames the model sees per window")
    stride: int = Field(2, ge=1, le=128, description="evaluate a window every this many new sampled frames")
    max_new_tokens: int = Field(256, ge=1, le=4096, description="longest answer the model may write per window")
    max_image_age_ms: float = Field(500.0, gt=0, description="drop camera frames older than this")
    frame_id: str = Field("", description="frame of the outputs; empty: the image's own frame_id")
    use_depth: bool = Field(False, description="look up depth on the `depth` topic to publish 3-D points")
    depth_window_px: int = Field(5, ge=1, le=51, description="side of the square window for the median depth")
    max_depth_offset_ms: float = Field(100.0, gt=0, le=10_000,
                                       description="a depth image further than this in time from a frame is not used")
    camera_info_file: str = Field("", description="camera_info YAML to use instead of the camera_info topic")
    publish_markers: bool = Field(True, description="publish ~/markers (visualization_msgs/MarkerArray)")
    publish_detections: bool = Field(True, description="publish ~/detections when vision_msgs is installed")
    marker_lifetime_s: float = Field(0.0, ge=0, le=3600, description="marker lifetime; 0: until replaced")
    diagnostics_period_s: float = Field(1.0, gt=0, le=60, description="how often /diagnostics is published")
    min_rate_hz: float = Field(0.5, ge=0, le=1000, description="diagnostics WARN below this window rate")
    max_latency_ms: float = Field(2000.0, gt=0, description="diagnostics WARN above this latency")
    image_topic: str = Field("image", min_length=1,
                             description="sensor_msgs/Image topic; its `/compressed` sibling is read too")
    depth_topic: str = Field("depth", min_length=1, description="depth image registered to the image (use_depth)")
    camera_info_topic: str = Field("camera_info", min_length=1, description="sensor_msgs/CameraInfo of the camera")
    autostart: bool = Field(False, description="configure and activate the lifecycle node right after start")

    @pydantic.field_validator("queries")
    @classmethod
    def _queries_parse(cls, queries: list[str]) -> list[str]:
        for text in queries:
            _parse_query(text)
        return queries

    @pydantic.field_validator("query")
    @classmethod
    def _query_parses(cls, text: str) -> str:
        if text:
            _parse_query(text)
        return text

    @pydantic.model_validator(mode="after")
    def _stride_fits(self) -> "TrackerParams":
        if self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) cannot exceed window ({self.window})")
        return self

    @property
    def active_queries(self) -> list[str]:
        """What the model is asked: `query` when set, else `queries`."""
        return [self.query] if self.query else list(self.queries)


def _parse_query(text: str) -> None:
    try:
        Query.parse(text)
    except InputError as exc:
        raise ValueError(str(exc)) from None


_ROS_TYPES: dict[Any, ParameterType] = {
    str: ParameterType.PARAMETER_STRING,
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    list[str]: ParameterType.PARAMETER_STRING_ARRAY,
}


def _ros_type(annotation: Any) -> int:
    if typing.get_origin(annotation) is Literal:
        return ParameterType.PARAMETER_STRING
    try:
        return _ROS_TYPES[annotation]
    except KeyError:
        raise TypeError(f"no ROS parameter type for {annotation!r}") from None


def _bounds(field: pydantic.fields.FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for item in field.metadata:
        if isinstance(item, (annotated_types.Ge, annotated_types.Gt)):
            low = item.ge if isinstance(item, annotated_types.Ge) else item.gt
        if isinstance(item, (annotated_types.Le, annotated_types.Lt)):
            high = item.le if isinstance(item, annotated_types.Le) else item.lt
    return low, high


def parameter_descriptor(name: str) -> ParameterDescriptor:
    """The descriptor of one TrackerParams field (type, description, inclusive range, read-only)."""
    field = TrackerParams.model_fields[name]
    ros_type = _ros_type(field.annotation)
    descriptor = ParameterDescriptor(name=name, type=ros_type, description=field.description or "",
                                     read_only=name in READ_ONLY)
    if typing.get_origin(field.annotation) is Literal:
        descriptor.additional_constraints = "one of: " + ", ".join(typing.get_args(field.annotation))
    low, high = _bounds(field)
    # A ROS range needs both ends and is inclusive; strict bounds (gt/lt) are enforced by the
    # validator callback, the range is what tools such as rqt_reconfigure show.
    if low is not None and high is not None:
        if ros_type == ParameterType.PARAMETER_INTEGER:
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        elif ros_type == ParameterType.PARAMETER_DOUBLE:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    return descriptor


def declare_tracker_parameters(node: Node, defaults: TrackerParams | None = None) -> None:
    """Declare every TrackerParams field on `node` (values from a params file override defaults)."""
    defaults = defaults or TrackerParams()
    for name in TrackerParams.model_fields:
        node.declare_parameter(name, getattr(defaults, name), parameter_descriptor(name))


def _validate(values: dict[str, Any]) -> TrackerParams:
    try:
        return TrackerParams(**values)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'parameters'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid tracker parameters: {problems}") from None


def read_tracker_parameters(node: Node) -> TrackerParams:
    """The node's current parameters, validated; ConfigError naming each bad one."""
    values = {name: node.get_parameter(name).value for name in TrackerParams.model_fields}
    if "queries" in values:
        values["queries"] = list(values["queries"])
    return _validate(values)


def parameter_change_validator(node: Node) -> Callable[[list[Parameter]], SetParametersResult]:
    """An on-set-parameters callback: accept a change only if the resulting set is valid."""

    def validate(changes: list[Parameter]) -> SetParametersResult:
        values = {name: node.get_parameter(name).value for name in TrackerParams.model_fields}
        for change in changes:
            if change.name in values:
                values[change.name] = list(change.value) if change.name == "queries" else change.value
        try:
            _validate(values)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    return validate
