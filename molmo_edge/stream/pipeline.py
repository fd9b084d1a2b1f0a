"""`Pipeline`: a model, a source and queries in; `Event`s out. Usable from Python without the CLI.

    from molmo_edge.stream.pipeline import Pipeline

    for event in Pipeline(source="video.mp4", queries=["Track the red circle."]):
        print(event.window_t1_s, [(o.track_id, o.u_px, o.v_px) for o in event.objects])

    with Pipeline("ckpt/", source=0, queries=["Track all stars.", "count: circles"],
                  window=8, stride=2, fps=2.0, max_new_tokens=128) as pipeline:
        for event in pipeline:                # runs until the source ends or stop() is called
            ...

The public API (stable; the ROS node, the daemon and the CLI build on it):

    Pipeline(model=None, source=None, queries=(), *, config=None, sinks=(), intrinsics=None,
             depth=None, backend="auto", device=None, dtype=None, quantization=None,
             source_options=None, **config_fields)
        model    None (the shipped model) | checkpoint or bundle folder | Backend | Engine.
                 A model the pipeline loads is closed by `close()`; a Backend/Engine you pass is not.
        source   camera index, path, URL, GStreamer pipeline, "synthetic:SEED" (see
                 `stream.source_spec`) | an unopened or opened FrameSource | None for push mode.
                 `source_options` are SourceConfig fields (e.g. {"realtime": True}).
        queries  texts or `Query` objects (see `stream.queries`: "Track the red circle.",
                 "count: stars", ...). Zero queries is allowed: frames are sampled and encoded,
                 no events are made until a query is added.
        config   `PipelineConfig`; keyword fields override it: window=8, stride=2, fps=2.0,
                 max_new_tokens=256, tracker=TrackerConfig(...), stream_id=..., max_windows=...,
                 max_seconds=..., ...
        sinks    objects with `write(event)` (EventPublisher, JsonlSink, CallbackSink, ...) or plain
                 callables; each event is written to every sink the moment it is built.
        intrinsics, depth   `CameraIntrinsics` and a function Frame -> depth image (or None) for
                 3-D points (`xyz_m`, camera optical frame); `depth_encoding` "32FC1" (m) / "16UC1" (mm).
                 Both are plain attributes: assign new ones at any time (a new CameraInfo); the
                 intrinsics are rescaled when the frame size differs from theirs.
    iter(pipeline) / pipeline.events()   the events, one per window per query, in order
    pipeline.run() -> PipelineStats      consume every event (sinks get them), return the counters
    pipeline.process(frame) -> [Event]   push mode: offer one Frame (ROS callbacks, your own loop):
                                         `Frame(rgb, stamp_ns, t_s, index, source_id)` with RGB uint8
                                         [H, W, 3], t_s increasing media seconds (e.g. seconds since
                                         the first image) and a distinct index per frame
    pipeline.flush() -> [Event]          evaluate the frames that arrived since the last window
    pipeline.set_query(text) / set_queries([texts]) / add_query(text) -> ActiveQuery /
        remove_query(index) / queries -> [ActiveQuery]
        thread-safe; a change takes effect at the next window
    pipeline.pause() / resume() / paused     stop evaluating (a live source keeps only its newest
                                             frame meanwhile); the window restarts on resume
    pipeline.stop()                      thread-safe: the window in progress finishes, its events
                                         are delivered, then iteration ends
    pipeline.stats -> PipelineStats      counters, safe to read from any thread
    pipeline.close() / `with Pipeline(...)`

Event rules:
- One `Event` per evaluated window and live query; `seq` counts per query index and never
  restarts while the pipeline lives (a gap means a subscriber missed events).
- Every query goes through its own `WindowTracker`, so every object gets a persistent `track_id`:
  tracking queries (ids stitched across windows at shared frames), and pointing and counting
  queries too (a point near a track's predicted position keeps its id). Track ids are unique in
  the whole pipeline: a new or changed query never reuses an id of another.
- `objects` are all of the window's points (each with its frame time `t_s`); overlapping windows
  report a frame again with the newer opinion. `latest_objects(event)` keeps each track's newest.
- The model's text goes through `grounding.parse`; anything wrong (a cut answer, broken coords, no
  points and no "There are none.", times matching no frame) is listed in `parse_errors`, with the
  points that could be read still in `objects`. A model failure on one window gives an event with
  the error in `parse_errors` and the stream goes on.
- `count`: the number the model wrote for counting answers ("... shows a total of N."), else the
  number of distinct tracks in the window; 0 for "There are none.".
- `latency_ms`: vision = encoding the window's new frames (the cached ones cost nothing), prefill,
  decode, total = vision + from the window being ready to the event being built;
  capture_to_publish = the window's last frame capture to the event being handed to the sinks.
- `frame_width_px` / `frame_height_px` and `u_px`, `v_px` are those of the window's last frame.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from molmo_edge.engine.backend import Backend
from molmo_edge.engine.engine import Answer, Engine
from molmo_edge.engine.generation import merge_options
from molmo_edge.errors import ConfigError, MolmoEdgeError
from molmo_edge.stream.events import Event, EventObject, Latency, objects_from_points
from molmo_edge.stream.frame import Frame
from molmo_edge.stream.queries import ActiveQuery, Query, QueryKind, QuerySet
from molmo_edge.stream.sampler import FrameSampler, SamplerConfig
from molmo_edge.stream.sources import FrameSource, FrameTimeoutError, SourceConfig, SourceStats, make_source
from molmo_edge.stream.tracker import TrackerConfig, TrackerUpdate, WindowPoint, WindowTracker, snap_to_frame_times
from molmo_edge.stream.window import SlidingWindow, Window, WindowConfig

log = logging.getLogger(__name__)

NO_POINTS_ERROR = "the answer has no <points> or <tracks> and is not 'There are none.'"
# This many model failures in a row means the model itself is broken: stop instead of spinning.
MAX_CONSECUTIVE_MODEL_ERRORS = 10


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: int = Field(8, ge=1, le=128)  # sampled frames per window
    stride: int = Field(2, ge=1)  # evaluate every this many new sampled frames
    fps: float = Field(2.0, gt=0, le=30)  # sampling rate into the model (Molmo2 is trained at 2)
    min_window_frames: int | None = Field(None, ge=1)  # the first window once this many; None: window
    max_gap_s: float | None = Field(5.0, gt=0)  # sampled frames further apart start a fresh window
    max_new_tokens: int = Field(256, ge=1)
    generation: dict[str, Any] = Field(default_factory=dict)  # other GenerationOptions fields
    default_kind: QueryKind = "track"  # what a bare label ("red circle") asks for
    max_queries: int = Field(16, ge=1)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    # Points further than this from every frame of the window are dropped (and reported); None:
    # half a sampling period.
    snap_max_offset_s: float | None = Field(None, gt=0)
    stream_id: str | None = None  # None: the source's id
    max_windows: int | None = Field(None, ge=1)  # iteration ends after this many windows
    max_seconds: float | None = Field(None, gt=0)  # ... or after this much wall time
    flush_at_end: bool = True  # evaluate the frames after the last window when a file ends
    read_timeout_s: float = Field(0.25, gt=0)  # how often a wait for frames checks stop()
    depth_encoding: str = "32FC1"
    depth_window_px: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _window_fits(self) -> PipelineConfig:
        self.window_config()  # stride <= window, min_window_frames <= window
        return self

    def window_config(self) -> WindowConfig:
        return WindowConfig(size=self.window, stride=self.stride, min_frames=self.min_window_frames,
                            max_gap_s=self.max_gap_s)


class PipelineStats(BaseModel):
    """A snapshot of the pipeline's counters (`pipeline.stats`)."""

    running: bool = False
    paused: bool = False
    uptime_s: float = 0.0
    frames_in: int = 0  # frames offered to the pipeline (read from the source or pushed)
    frames_sampled: int = 0  # taken by the sampler at the model's fps
    frames_encoded: int = 0  # ViT + connector runs (once per sampled frame)
    cache_hits: int = 0  # window frames whose features were reused from an earlier window
    encode_ms_total: float = 0.0
    windows: int = 0  # windows evaluated
    window_resets: int = 0  # gaps / pauses that restarted the window
    events: int = 0
    parse_failures: int = 0  # events with parse_errors
    model_errors: int = 0  # windows where the model call failed
    sink_errors: int = 0  # sink writes that raised or returned False
    queries: int = 0
    windows_per_s: float = 0.0
    last_latency_ms: Latency | None = None
    source: SourceStats | None = None  # frames read / dropped, corrupt frames, reconnects, ...


@dataclass
class _QueryState:
    """Per query index: its tracker and the tracker-id -> pipeline-id map of the current query."""

    uid: int
    tracker: WindowTracker
    track_ids: dict[int, int] = field(default_factory=dict)


def _load_engine(model: Any, **load_kwargs: Any) -> tuple[Engine, bool]:
    """(engine, owned): a model the pipeline loads itself is its to close."""
    if isinstance(model, Engine):
        return model, False
    if isinstance(model, Backend):
        return Engine(model), False
    if model is None or isinstance(model, (str, Path)):
        return Engine.from_pretrained(model, **load_kwargs), True
    raise ConfigError(f"model must be None (the shipped model), a checkpoint or bundle folder, a Backend or an "
                      f"Engine; got {type(model).__name__}")


def _as_sink(sink: Any) -> Callable[[Event], Any]:
    write = getattr(sink, "write", None)
    if callable(write):
        return write
    if callable(sink):
        return sink
    raise ConfigError(f"a sink must have a write(event) method or be callable, got {type(sink).__name__}")


def latest_objects(event: Event) -> list[EventObject]:
    """Each track's newest point in the event (what a robot usually acts on), by track id."""
    newest: dict[int, EventObject] = {}
    for obj in event.objects:
        if obj.track_id not in newest or obj.t_s >= newest[obj.track_id].t_s:
            newest[obj.track_id] = obj
    return [newest[k] for k in sorted(newest)]


class Pipeline:
    """See the module docstring for the whole API."""

    def __init__(self, model: Any = None, source: str | int | Path | FrameSource | None = None,
                 queries: Iterable[str | Query] = (), *, config: PipelineConfig | None = None,
                 sinks: Iterable[Any] = (), intrinsics: Any = None,
                 depth: Callable[[Frame], np.ndarray | None] | None = None, backend: str = "auto",
                 device: Any = None, dtype: Any = None, quantization: str | None = None,
                 source_options: dict[str, Any] | None = None, **config_fields: Any) -> None:
        self.config = self._make_config(config, config_fields)
        cfg = self.config
        if isinstance(queries, (str, Query)):
            queries = [queries]  # one query given bare: a str is not a list of characters
        self.query_set = QuerySet(queries, default_kind=cfg.default_kind, max_queries=cfg.max_queries)
        self._sinks = [_as_sink(s) for s in sinks]
        self.intrinsics = intrinsics
        self.depth = depth
        # Source before model: a wrong path fails in milliseconds, not after loading weights.
        self.source, self._owns_source = self._make_source(source, source_options)
        self.engine, self._owns_engine = _load_engine(model, backend=backend, device=device, dtype=dtype,
                                                      quantization=quantization)
        self._generation = {**cfg.generation, "max_new_tokens": cfg.max_new_tokens}
        try:
            merge_options(self.engine.options, self._generation)  # a bad option fails here, not per window
        except BaseException:
            if self._owns_engine:
                self.engine.close()  # give accelerator memory back: the caller never gets this object
            raise
        self._sampler = FrameSampler(SamplerConfig(target_fps=cfg.fps))
        self._window = SlidingWindow(self.engine.encode_frame, cfg.window_config())
        self._query_states: dict[int, _QueryState] = {}
        self._seq: dict[int, int] = {}  # query_index -> next seq
        self._next_track_id = 1
        self._stop = threading.Event()
        self._resumed = threading.Event()
        self._resumed.set()
        self._restart_window = False  # set by resume(): frames from before the pause are stale
        self._lock = threading.Lock()  # guards the counters below for readers in other threads
        self._counters = PipelineStats()
        self._started_monotonic: float | None = None
        self._running = False
        self._consecutive_model_errors = 0
        self._closed = False

    # -- construction helpers --------------------------------------------------------------------
    @staticmethod
    def _make_config(config: PipelineConfig | None, fields: dict[str, Any]) -> PipelineConfig:
        try:
            if fields:
                return PipelineConfig.model_validate({**(config.model_dump() if config else {}), **fields})
            return config or PipelineConfig()
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid pipeline settings: {problems}") from None

    @staticmethod
    def _make_source(source: Any, options: dict[str, Any] | None) -> tuple[FrameSource | None, bool]:
        if source is None or isinstance(source, FrameSource):
            if options:
                raise ConfigError("source_options apply to a source spec; configure your FrameSource yourself")
            return source, False
        try:
            config = SourceConfig.model_validate(options or {})
        except ValidationError as exc:
            raise ConfigError(f"invalid source_options: {exc}") from None
        return make_source(source, config), True

    # -- queries (thread-safe; effective at the next window) ----------------------------------------
    @property
    def queries(self) -> list[ActiveQuery]:
        return self.query_set.snapshot()

    def set_query(self, query: str | Query) -> ActiveQuery:
        """Replace every query with this one (index 0)."""
        return self.query_set.set(query)

    def set_queries(self, queries: Iterable[str | Query]) -> list[ActiveQuery]:
        """Replace every query with these (indices 0, 1, ...)."""
        return self.query_set.set_all(queries)

    def add_query(self, query: str | Query) -> ActiveQuery:
        return self.query_set.add(query)

    def remove_query(self, index: int) -> ActiveQuery:
        return self.query_set.remove(index)

    # -- control (thread-safe) -------------------------------------------------------------------
    def stop(self) -> None:
        """End iteration after the window in progress (its events are still delivered)."""
        self._stop.set()
        self._resumed.set()  # a paused pipeline must wake up to stop

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def pause(self) -> None:
        self._resumed.clear()

    def resume(self) -> None:
        if not self._resumed.is_set():
            self._restart_window = True
            self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    @property
    def stats(self) -> PipelineStats:
        window = self._window.stats
        with self._lock:
            snapshot = self._counters.model_copy()
        uptime = 0.0 if self._started_monotonic is None else time.monotonic() - self._started_monotonic
        snapshot.running = self._running
        snapshot.paused = self.paused
        snapshot.uptime_s = uptime
        snapshot.frames_encoded = window.frames_encoded
        snapshot.cache_hits = window.cache_hits
        snapshot.encode_ms_total = window.encode_ms_total
        snapshot.window_resets = window.resets
        snapshot.queries = len(self.query_set)
        snapshot.windows_per_s = snapshot.windows / uptime if uptime > 0 else 0.0
        snapshot.source = self.source.stats if self.source is not None else None
        return snapshot

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, amount in increments.items():
                setattr(self._counters, name, getattr(self._counters, name) + amount)

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def events(self) -> Iterator[Event]:
        """Read the source until it ends, `stop()`, `max_windows` or `max_seconds`; yield the events."""
        if self.source is None:
            raise ConfigError("this pipeline has no source: pass source=... or feed frames with process()")
        if self._closed:
            raise ConfigError("this pipeline is closed")
        cfg = self.config
        self.source.open()  # opening an open source is a no-op
        self._mark_started()
        self._running = True
        try:
            while not self._stop.is_set():
                if not self._resumed.is_set():
                    self._resumed.wait(cfg.read_timeout_s)
                    continue
                if self._limits_reached():
                    break
                try:
                    frame = self.source.read(timeout_s=cfg.read_timeout_s)
                except FrameTimeoutError:
                    continue  # a live source with nothing new yet; check stop/limits and wait again
                if frame is None:  # the end of a file / folder / finite scene
                    if cfg.flush_at_end and not self._limits_reached():
                        yield from self.flush()
                    break
                yield from self.process(frame)
        finally:
            self._running = False
            if self._owns_source:
                self.source.close()

    def run(self) -> PipelineStats:
        """Consume every event (the sinks receive them); the final counters."""
        for _ in self.events():
            pass
        return self.stats

    def _mark_started(self) -> None:
        if self._started_monotonic is None:
            self._started_monotonic = time.monotonic()

    def _limits_reached(self) -> bool:
        cfg = self.config
        if cfg.max_windows is not None and self._counters.windows >= cfg.max_windows:
            return True
        if cfg.max_seconds is not None and self._started_monotonic is not None:
            return time.monotonic() - self._started_monotonic >= cfg.max_seconds
        return False

    # -- push mode ---------------------------------------------------------------------------------
    def process(self, frame: Frame) -> list[Event]:
        """Offer one frame; the events of the windows it completed (usually none)."""
        if not isinstance(frame, Frame):
            raise ConfigError(f"process() takes a molmo_edge.stream.frame.Frame, got {type(frame).__name__}")
        self._mark_started()
        self._count(frames_in=1)
        if self.paused:
            return []
        if self._restart_window:
            self._restart_window = False
            self._window.reset()
            self._sampler.reset()
        if not self._sampler.select(frame):
            return []
        self._count(frames_sampled=1)
        events: list[Event] = []
        for window in self._window.push(frame):
            events.extend(self._evaluate(window))
        return events

    def flush(self) -> list[Event]:
        """Evaluate the frames sampled since the last window (e.g. at the end of a file)."""
        events: list[Event] = []
        for window in self._window.flush():
            events.extend(self._evaluate(window))
        return events

    # -- one window --------------------------------------------------------------------------------
    def _evaluate(self, window: Window) -> list[Event]:
        self._count(windows=1)
        active = self.query_set.snapshot()  # a change made from now on waits for the next window
        self._forget_removed_queries(active)
        events = []
        for query in active:
            event = self._event_for(window, query)
            self._deliver(event)
            events.append(event)
        return events

    def _forget_removed_queries(self, active: list[ActiveQuery]) -> None:
        live = {a.index for a in active}
        for index in [i for i in self._query_states if i not in live]:
            del self._query_states[index]

    def _state_for(self, query: ActiveQuery) -> _QueryState:
        state = self._query_states.get(query.index)
        if state is None or state.uid != query.uid:
            state = _QueryState(query.uid, WindowTracker(self.config.tracker))
            self._query_states[query.index] = state
        return state

    def _ask(self, window: Window, query: ActiveQuery) -> tuple[Answer | None, str | None]:
        try:
            answer = self.engine.ask_frames(window.features, window.timestamps_s, query.query.prompt,
                                            vision_ms=window.vision_ms, **self._generation)
        except Exception as exc:  # noqa: BLE001 - one failed window must not end a long-running stream
            self._count(model_errors=1)
            self._consecutive_model_errors += 1
            if self._consecutive_model_errors >= MAX_CONSECUTIVE_MODEL_ERRORS:
                raise MolmoEdgeError(f"the model failed on {self._consecutive_model_errors} windows in a row; "
                                     f"last error: {type(exc).__name__}: {exc}") from exc
            if isinstance(exc, MolmoEdgeError):
                log.error("model error on window %d, query %d: %s", window.number, query.index, exc)
            else:
                log.exception("model failure on window %d, query %d", window.number, query.index)
            return None, f"model error: {type(exc).__name__}: {exc}"
        self._consecutive_model_errors = 0
        return answer, None

    def _event_for(self, window: Window, query: ActiveQuery) -> Event:
        answer, error = self._ask(window, query)
        problems: list[str] = [] if error is None else [error]
        points: list[WindowPoint] = []
        count: int | None = None
        if answer is not None:
            problems.extend(_answer_problems(answer))
            points, dropped = self._window_points(answer, window)
            if dropped:
                problems.append(f"{dropped} point(s) at times no frame of the window has were dropped")
            count = answer.grounding.count if query.query.kind == "count" else None
        state = self._state_for(query)
        update = state.tracker.update(points, window.t0_s, window.t1_s)
        tracked = self._pipeline_ids(state, update)
        last = window.last_frame
        objects = objects_from_points(tracked, last.width_px, last.height_px,
                                      self._xyz_m(window, tracked) if self.intrinsics is not None else None)
        if count is None:
            count = len({o.track_id for o in objects})
        timings = answer.timings_ms if answer is not None else {}
        now_ns = time.monotonic_ns()
        latency = Latency(vision=window.vision_ms, prefill=timings.get("prefill", 0.0),
                          decode=timings.get("decode", 0.0),
                          total=window.vision_ms + (now_ns - window.ready_monotonic_ns) / 1e6,
                          capture_to_publish=max(0.0, (now_ns - last.monotonic_ns) / 1e6))
        seq = self._seq.get(query.index, 0)
        self._seq[query.index] = seq + 1
        return Event(stream_id=self.config.stream_id or last.source_id, seq=seq, query=query.query.text,
                     query_index=query.index, window_t0_s=window.t0_s, window_t1_s=window.t1_s,
                     stamp_ns=max(0, last.stamp_ns), frame_width_px=last.width_px,
                     frame_height_px=last.height_px, objects=objects, count=max(0, count),
                     raw_text=answer.text if answer is not None else "", parse_errors=problems,
                     latency_ms=latency)

    def _window_points(self, answer: Answer, window: Window) -> tuple[list[WindowPoint], int]:
        """The answer's points at absolute media times, snapped onto the window's frames.

        The prompt's timestamps are relative to the window's first frame, so the model's are too.
        A point without a time (an image-style answer) belongs to the newest frame."""
        t0_s = window.t0_s
        last_rel_s = window.t1_s - t0_s
        raw = [(p.object_id, t0_s + (p.t_s if p.t_s is not None else last_rel_s), p.x, p.y)
               for p in answer.grounding.points]
        max_offset_s = self.config.snap_max_offset_s or 0.5 / self.config.fps
        snapped = snap_to_frame_times(raw, window.timestamps_s, max_offset_s=max_offset_s)
        return snapped, len(raw) - len(snapped)

    def _pipeline_ids(self, state: _QueryState, update: TrackerUpdate) -> list:
        """Tracker ids (per query, from 1) -> ids unique in this pipeline."""
        out = []
        for point in update.points:
            global_id = state.track_ids.get(point.track_id)
            if global_id is None:
                global_id = state.track_ids[point.track_id] = self._next_track_id
                self._next_track_id += 1
            out.append(point._replace(track_id=global_id))
        for removed in update.removed_track_ids:
            state.track_ids.pop(removed, None)
        return out

    def _xyz_m(self, window: Window, points: list) -> dict[tuple[int, float], tuple[float, float, float]]:
        """(track_id, t_s) -> 3-D point in metres, for points whose frame has a depth image."""
        if self.depth is None or not points:
            return {}
        from molmo_edge.calibration.camera import points_to_3d

        frames = {f.t_s: f for f in window.frames}
        out: dict[tuple[int, float], tuple[float, float, float]] = {}
        for t_s in sorted({p.t_s for p in points}):
            frame = frames.get(t_s)
            depth = self.depth(frame) if frame is not None else None
            if depth is None:
                continue
            camera = self.intrinsics
            if (camera.width_px, camera.height_px) != (frame.width_px, frame.height_px):
                camera = camera.scaled_to(frame.width_px, frame.height_px)
            at_t = [p for p in points if p.t_s == t_s]
            uv_px = np.array([[p.x_norm * frame.width_px, p.y_norm * frame.height_px] for p in at_t])  # [N, 2]
            try:
                xyz = points_to_3d(camera, uv_px, depth, self.config.depth_encoding, self.config.depth_window_px)
            except (ValueError, MolmoEdgeError) as exc:
                log.warning("no 3-D points for the frame at %.3f s: %s", t_s, exc)
                continue
            for p, row in zip(at_t, xyz):
                if np.all(np.isfinite(row)):
                    out[(p.track_id, p.t_s)] = (float(row[0]), float(row[1]), float(row[2]))
        return out

    def _deliver(self, event: Event) -> None:
        self._count(events=1, parse_failures=1 if event.parse_errors else 0)
        with self._lock:
            self._counters.last_latency_ms = event.latency_ms
        for write in self._sinks:
            try:
                ok = write(event)
            except Exception:  # noqa: BLE001 - one broken output must not stop the others
                log.exception("an event sink raised; the stream goes on")
                ok = False
            if ok is False:
                self._count(sink_errors=1)

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop, close the source and the model if the pipeline opened them."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._owns_source and self.source is not None:
            self.source.close()
        if self._owns_engine:
            self.engine.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _answer_problems(answer: Answer) -> list[str]:
    result = answer.grounding
    problems = list(result.errors)
    if result.truncated and not problems:  # the parser names the cut; say it when it did not
        problems.append("the answer was cut off (max_new_tokens reached?)")
    if not result.elements and not result.none:
        problems.append(NO_POINTS_ERROR)
    return problems


__all__ = ["NO_POINTS_ERROR", "Pipeline", "PipelineConfig", "PipelineStats", "latest_objects"]
