"""The molmo_edge lifecycle (managed) node: camera images in, tracked points out.

States and what each holds (ROS 2 managed-node practice):
- unconfigured: parameters declared (with descriptors), nothing else.
- configure: parameters read and validated; result publishers (`~/points`, `~/markers`,
  `~/events`, `~/detections` when vision_msgs is installed) and `/diagnostics` created; a
  `camera_info_file` read.
- activate: the model loaded, the `Pipeline` built around it, subscriptions made (`image` and
  `image/compressed` with sensor-data QoS, `depth` + `camera_info` when `use_depth`, `~/query`),
  the inference thread started.
- deactivate: subscriptions removed, the thread stopped (after the window in progress), the
  pipeline closed and the model freed; activate loads it again.
- cleanup / shutdown: everything released.

Threads: subscription callbacks only store messages (`FrameInput`, a latest-frame slot); one
inference thread takes the newest frame and pushes it into the pipeline (`Pipeline.process`,
push mode), then publishes what the window produced. Inference never runs in a callback, so the
executor (a MultiThreadedExecutor in `main`) keeps answering lifecycle, parameter and query
requests while the model works.

Queries change at run time through the `query` / `queries` parameters (validated in the
set-parameters callback, applied after it) and through `~/query` (std_msgs/String), which sets
the `query` parameter. `query`, when not empty, is what runs; `queries` runs when it is empty.
`fps`, `window`, `stride`, `max_new_tokens` and `depth_window_px` changes rebuild the pipeline
around the loaded model at the next frame (track ids start again).
"""
from __future__ import annotations

import functools
import gc
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from molmo_edge.errors import ConfigError, MolmoEdgeError
from molmo_edge.stream.frame import Frame

from .camera_info import camera_info_to_intrinsics
from .diagnostics import DiagnosticThresholds, stats_to_diagnostics
from .frame_input import CameraFrame, FrameInput, MediaClock
from .headers import make_header
from .health import NodeHealth
from .image_conversion import ImageConversionError
from .outputs import NodeOutputs, OutputSettings, group_by_window
from .params import TrackerParams, declare_tracker_parameters, parameter_change_validator, read_tracker_parameters

DEFAULT_NODE_NAME = "molmo_edge"
# How long deactivation waits for the window the model is working on.
STOP_TIMEOUT_S = 120.0
# Throttle for the warnings a bad stream would repeat on every frame.
WARN_EVERY_S = 5.0
# Parameters whose change means a new Pipeline (same model).
PIPELINE_PARAMS = frozenset({"fps", "window", "stride", "max_new_tokens", "depth_window_px"})
QUERY_PARAMS = frozenset({"query", "queries"})

EngineFactory = Callable[[TrackerParams], Any]  # TrackerParams -> molmo_edge Engine (or Backend)


def _logged_transition(method: Callable) -> Callable:
    """rclpy turns an exception in a transition callback into ERROR without a word: log it first."""

    @functools.wraps(method)
    def transition(self: "MolmoEdgeNode", state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return method(self, state)
        except Exception:  # noqa: BLE001 - reported, then the state machine handles the ERROR
            self.get_logger().error(f"{method.__name__} raised:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR

    return transition


def load_engine(params: TrackerParams) -> Any:
    """The default model loader: `params.model` (empty: the shipped model) on `params.backend`."""
    from molmo_edge.engine.engine import Engine

    return Engine.from_pretrained(params.model or None, backend=params.backend, device=params.device or None)


@dataclass(frozen=True)
class _SampledFrame:
    """What the outputs and the depth lookup need of a frame the pipeline may still use."""

    stamp_ns: int
    header: Header
    depth_m: np.ndarray | None


class MolmoEdgeNode(LifecycleNode):
    """See the module docstring. `engine_factory` replaces how the model is loaded at activation
    (default: `load_engine`); whatever it returns is closed at deactivation."""

    def __init__(self, node_name: str = DEFAULT_NODE_NAME, *, engine_factory: EngineFactory | None = None,
                 **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        declare_tracker_parameters(self)
        self.add_on_set_parameters_callback(parameter_change_validator(self))
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._engine_factory = engine_factory or load_engine
        self._input_group = ReentrantCallbackGroup()  # image/depth/camera_info callbacks only store
        self._control_group = MutuallyExclusiveCallbackGroup()  # ~/query, timers
        self.health = NodeHealth()
        self.frame_input: FrameInput | None = None
        self._params: TrackerParams | None = None
        self._settings = OutputSettings()
        self._outputs: NodeOutputs | None = None
        self._diagnostics_pub = None
        self._diagnostics_timer = None
        self._input_subscriptions: list[Any] = []
        self._intrinsics = None  # CameraIntrinsics from camera_info_file or the camera_info topic
        self._camera_info_key: tuple | None = None
        self._engine: Any = None
        self._pipeline: Any = None
        self._pipeline_lock = threading.Lock()  # the pipeline object is swapped on rebuilds
        self._rebuild = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._media_clock = MediaClock()
        self._frame_index = 0
        self._recent: OrderedDict[int, _SampledFrame] = OrderedDict()  # frame index -> extras
        self._retired_counts: dict[str, int] = {}  # counters of pipelines replaced or closed
        self._state_label = "unconfigured"
        self._autostart_timer = None
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart, callback_group=self._control_group)

    # -- what tests and embedding code may look at --------------------------------------------------
    @property
    def engine(self) -> Any:
        """The loaded model (an Engine), None unless the node is active."""
        return self._engine

    @property
    def pipeline(self) -> Any:
        with self._pipeline_lock:
            return self._pipeline

    @property
    def state_label(self) -> str:
        return self._state_label

    # -- lifecycle transitions --------------------------------------------------------------------
    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = self._read_params()
            intrinsics = None
            if params.camera_info_file:
                from molmo_edge.calibration.camera import read_camera_info_yaml

                intrinsics = read_camera_info_yaml(params.camera_info_file)
        except (MolmoEdgeError, OSError) as exc:  # bad parameters, an unreadable camera_info_file
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._intrinsics = intrinsics
        self.frame_input = FrameInput(max_depth_offset_ms=params.max_depth_offset_ms)
        self._outputs = NodeOutputs(self)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._start_diagnostics_timer(params.diagnostics_period_s)
        self._state_label = "inactive"
        self.get_logger().info(f"configured: queries {params.active_queries}, model "
                               f"{params.model or '(shipped)'}, backend {params.backend}")
        return super().on_configure(state)

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = self._read_params()
        except ConfigError as exc:
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        started = time.monotonic()
        try:
            engine = self._engine_factory(params)
        except Exception as exc:  # noqa: BLE001 - any loader failure leaves the node inactive, alive
            self.get_logger().error(f"activate failed: the model could not be loaded: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        try:
            pipeline = self._make_pipeline(engine, params)
        except Exception as exc:  # noqa: BLE001
            _close(engine)
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._engine, self._pipeline = engine, pipeline
        self.get_logger().info(f"model loaded in {time.monotonic() - started:.1f} s")
        try:
            self._subscribe(params)
        except Exception as exc:  # noqa: BLE001 - e.g. an invalid topic name in the parameters
            self.get_logger().error(f"activate failed: cannot subscribe: {exc}")
            self._deactivate()
            return TransitionCallbackReturn.FAILURE
        result = super().on_activate(state)  # lifecycle publishers on
        self.health.reset()
        self._media_clock.reset()
        self._stop.clear()
        self._rebuild.clear()
        self._thread = threading.Thread(target=self._run, name="molmo_edge_inference", daemon=True)
        self._thread.start()
        self._state_label = "active"
        return result

    @_logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info("deactivated: the model is released")
        self._state_label = "inactive"
        return super().on_deactivate(state)

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        self._state_label = "unconfigured"
        return super().on_cleanup(state)

    @_logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._cleanup()
        self._state_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error during a transition from {state.label}; releasing everything")
        self._deactivate()
        self._cleanup()
        self._state_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._deactivate()
        self._cleanup()
        super().destroy_node()

    # -- transitions' work ---------------------------------------------------------------------------
    def _read_params(self) -> TrackerParams:
        params = read_tracker_parameters(self)
        self._params = params
        self._settings = OutputSettings(frame_id=params.frame_id, publish_markers=params.publish_markers,
                                        publish_detections=params.publish_detections,
                                        marker_lifetime_s=params.marker_lifetime_s)
        return params

    def _make_pipeline(self, engine: Any, params: TrackerParams) -> Any:
        from molmo_edge.stream.pipeline import Pipeline

        return Pipeline(engine, None, params.active_queries,
                        intrinsics=self._intrinsics if params.use_depth else None,
                        depth=self._depth_for_frame if params.use_depth else None,
                        window=params.window, stride=params.stride, fps=params.fps,
                        max_new_tokens=params.max_new_tokens, depth_encoding="32FC1",
                        depth_window_px=params.depth_window_px,
                        stream_id=self.get_fully_qualified_name())

    def _subscribe(self, params: TrackerParams) -> None:
        sensor, group = qos_profile_sensor_data, self._input_group
        image = params.image_topic
        self._input_subscriptions = [
            self.create_subscription(Image, image, self._on_image, sensor, callback_group=group),
            self.create_subscription(CompressedImage, image.rstrip("/") + "/compressed", self._on_compressed,
                                     sensor, callback_group=group),
            self.create_subscription(String, "~/query", self._on_query_msg,
                                     QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
                                     callback_group=self._control_group),
        ]
        if params.use_depth:
            self._input_subscriptions.append(
                self.create_subscription(Image, params.depth_topic, self._on_depth, sensor, callback_group=group))
            if not params.camera_info_file:
                self._input_subscriptions.append(self.create_subscription(
                    CameraInfo, params.camera_info_topic, self._on_camera_info, sensor, callback_group=group))

    def _deactivate(self) -> None:
        """Stop the thread, drop subscriptions, close the pipeline and free the model (idempotent)."""
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                self.get_logger().error(f"the inference thread did not stop within {STOP_TIMEOUT_S:.0f} s; "
                                        "the model is released when it does")
        with self._pipeline_lock:
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            self._retire(pipeline)
            pipeline.close()
        engine, self._engine = self._engine, None
        if engine is not None and (thread is None or not thread.is_alive()):
            _close(engine)
        del engine, pipeline
        self._recent.clear()
        if self.frame_input is not None:
            self.frame_input.clear()
        gc.collect()  # the model's tensors go now, not at some later collection

    def _cleanup(self) -> None:
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        self.frame_input = None
        self._intrinsics = None
        self._camera_info_key = None

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        self._autostart_timer = None
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().error("autostart: configure failed; fix the parameters and configure again")
            return
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().error("autostart: activate failed; the node stays inactive")

    # -- subscription callbacks (store only) ---------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self._offer(lambda: self.frame_input.offer_image(msg, time.monotonic_ns()))

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._offer(lambda: self.frame_input.offer_compressed(msg, time.monotonic_ns()))

    def _on_depth(self, msg: Image) -> None:
        self._offer(lambda: self.frame_input.offer_depth(msg))

    def _offer(self, store: Callable[[], None]) -> None:
        if self.frame_input is None:
            return
        try:
            store()
        except ImageConversionError as exc:
            self.get_logger().warning(f"image dropped: {exc}", throttle_duration_sec=WARN_EVERY_S)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        key = (tuple(msg.k), tuple(msg.d), tuple(msg.p), msg.width, msg.height, msg.distortion_model)
        if key == self._camera_info_key:
            return  # the same calibration again (drivers repeat it with every frame)
        try:
            intrinsics = camera_info_to_intrinsics(msg)
        except ConfigError as exc:
            self.get_logger().warning(f"camera_info ignored: {exc}", throttle_duration_sec=WARN_EVERY_S)
            return
        self._camera_info_key, self._intrinsics = key, intrinsics
        pipeline = self.pipeline
        if pipeline is not None:
            pipeline.intrinsics = intrinsics  # a plain attribute by the Pipeline contract

    def _on_query_msg(self, msg: String) -> None:
        result = self.set_parameters([Parameter("query", value=msg.data.strip())])[0]
        if not result.successful:
            self.get_logger().warning(f"~/query refused: {result.reason}")

    # -- parameters (validated before, applied here) -------------------------------------------------
    def _on_parameters_set(self, changed: list[Parameter]) -> None:
        names = {p.name for p in changed}
        try:
            params = self._read_params()
        except ConfigError as exc:  # cannot happen after validation; never break the executor
            self.get_logger().error(f"parameters: {exc}")
            return
        pipeline = self.pipeline
        if names & QUERY_PARAMS and pipeline is not None:
            pipeline.set_queries(params.active_queries)
            self.get_logger().info(f"queries now {params.active_queries} (from the next window)")
        if names & PIPELINE_PARAMS and pipeline is not None:
            self._rebuild.set()
        if "max_depth_offset_ms" in names and self.frame_input is not None:
            self.frame_input.max_depth_offset_ns = int(params.max_depth_offset_ms * 1e6)
        if "diagnostics_period_s" in names and self._diagnostics_pub is not None:
            self._start_diagnostics_timer(params.diagnostics_period_s)

    # -- the inference thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - a long-running node keeps serving
                if not self.context.ok():
                    return  # the process is shutting down: nothing can be published any more
                message = f"{type(exc).__name__}: {exc}"
                self.health.error(message)
                self.get_logger().error(f"inference: {message}", throttle_duration_sec=WARN_EVERY_S)
                self._stop.wait(0.2)  # a persistent failure must not spin a core

    def _step(self) -> None:
        if self._rebuild.is_set():
            self._rebuild_pipeline()
        params, frame_input = self._params, self.frame_input
        try:
            frame = frame_input.take(timeout_s=0.1, max_age_ms=params.max_image_age_ms)
        except ImageConversionError as exc:
            self.get_logger().warning(f"frame dropped: {exc}", throttle_duration_sec=WARN_EVERY_S)
            return
        if frame is None:
            return
        if frame.depth_problem:
            self.get_logger().warning(f"no depth for this frame: {frame.depth_problem}",
                                      throttle_duration_sec=WARN_EVERY_S)
        pipeline = self.pipeline
        if frame.size_changed:
            self.get_logger().warning(f"frame size changed to {frame.width_px}x{frame.height_px}; "
                                      "the model's window starts again")
            pipeline.pause()
            pipeline.resume()  # by the Pipeline contract the window restarts on resume
        events = self._push(pipeline, frame)
        for window_events in group_by_window(events):
            header = self._header_for(window_events[0].stamp_ns, frame)
            n_points = self._outputs.publish_window(window_events, header, self._settings)
            latency_ms = (self.get_clock().now().nanoseconds - window_events[0].stamp_ns) / 1e6
            self.health.window_published(latency_ms, n_points)

    def _push(self, pipeline: Any, frame: CameraFrame) -> list:
        """Hand one frame to the pipeline; keep its header and depth while the pipeline may use them."""
        self._frame_index += 1
        index = self._frame_index
        self._recent[index] = _SampledFrame(frame.stamp_ns, frame.header, frame.depth_m)
        sampled_before = pipeline.stats.frames_sampled
        pushed = Frame(rgb=frame.rgb, stamp_ns=frame.stamp_ns, t_s=self._media_clock.t_s(frame.stamp_ns), index=index,
                       source_id=frame.header.frame_id or "camera", monotonic_ns=frame.received_monotonic_ns)
        try:
            events = pipeline.process(pushed)
        finally:
            if pipeline.stats.frames_sampled == sampled_before:
                self._recent.pop(index, None)  # not sampled: the pipeline never looks at it again
            while len(self._recent) > pipeline.config.window + 1:
                self._recent.popitem(last=False)
        return events

    def _depth_for_frame(self, frame: Frame) -> np.ndarray | None:
        extras = self._recent.get(frame.index)
        return None if extras is None else extras.depth_m

    def _header_for(self, stamp_ns: int, fallback: CameraFrame) -> Header:
        for extras in reversed(self._recent.values()):
            if extras.stamp_ns == stamp_ns:
                return extras.header
        return make_header(stamp_ns, fallback.header.frame_id)

    def _rebuild_pipeline(self) -> None:
        self._rebuild.clear()
        params = self._params
        with self._pipeline_lock:
            old = self._pipeline
            if old is None:
                return
            self._pipeline = self._make_pipeline(self._engine, params)
        self._retire(old)
        old.close()  # it does not own the engine: the model stays loaded
        self._recent.clear()
        self.get_logger().info(f"pipeline rebuilt: window {params.window}, stride {params.stride}, "
                               f"fps {params.fps}, max_new_tokens {params.max_new_tokens}")

    def _retire(self, pipeline: Any) -> None:
        stats = pipeline.stats
        for name in ("frames_sampled", "frames_encoded", "windows", "events", "parse_failures", "model_errors"):
            self._retired_counts[name] = self._retired_counts.get(name, 0) + int(getattr(stats, name))

    # -- /diagnostics ---------------------------------------------------------------------------------
    def _start_diagnostics_timer(self, period_s: float) -> None:
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        self._diagnostics_timer = self.create_timer(period_s, self._publish_diagnostics,
                                                    callback_group=self._control_group)

    def diagnostics_stats(self) -> dict[str, Any]:
        """Everything /diagnostics reports, as one flat dict."""
        stats: dict[str, Any] = {"state": self._state_label}
        stats.update(self.health.snapshot())
        if self.frame_input is not None:
            stats.update(self.frame_input.stats())
        counts = dict(self._retired_counts)
        pipeline = self.pipeline
        if pipeline is not None:
            live = pipeline.stats
            for name in ("frames_sampled", "frames_encoded", "windows", "events", "parse_failures", "model_errors"):
                counts[name] = counts.get(name, 0) + int(getattr(live, name))
            stats["queries"] = len(pipeline.queries)
        stats.update(counts)
        stats["has_camera_info"] = self._intrinsics is not None
        return stats

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None:
            return
        params = self._params or TrackerParams()
        active = self._state_label == "active"
        thresholds = DiagnosticThresholds(min_rate_hz=params.min_rate_hz if active else 0.0,
                                          max_latency_ms=params.max_latency_ms)
        header = make_header(self.get_clock().now().nanoseconds, "")
        self._diagnostics_pub.publish(stats_to_diagnostics(
            self.diagnostics_stats(), header, name=f"{self.get_fully_qualified_name()}: tracker",
            hardware_id=params.device or params.backend, thresholds=thresholds))


def _close(engine: Any) -> None:
    close = getattr(engine, "close", None)
    if callable(close):
        close()
