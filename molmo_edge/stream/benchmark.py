"""The streaming benchmark: what `molmo-edge bench --stream` measures on a live-like source.

    report = run_stream_benchmark(engine, "synthetic:0:256x256", StreamBenchSettings(seconds=600))
    report.to_dict()["sustained"]["windows_per_s"], report.to_dict()["rss"]["ok"]

Three measurements, on one loaded model:

1. Feature cache against recomputing, side by side: the same sampled frames go through the same
   sliding windows twice, window by window, in alternating order: once with the pipeline's
   per-frame feature cache (a window encodes only the frames new to it, `stride` of them) and
   once encoding every frame of every window again. Both ask the model the same question about
   the same frames, so their answers must be identical; the speed-up is the ratio of the median
   window times (vision + model) and of the vision times alone.
2. Sustained run: a `Pipeline` (the same object the daemon serves) reads the source for
   `seconds`, as fast as the model allows (`realtime=False`: frames are produced on demand at
   the model's fps, so every frame read is sampled) or at the source's own pace (`realtime=True`,
   a live camera). Per window: latency from the capture of the window's last frame to the event
   having been handed to every sink (`sinks`, e.g. a ZeroMQ publisher: the daemon's path), the
   stage timings, and windows per second after the warm-up windows.
3. RSS over that run, sampled every `rss_interval_s` in a background thread; after the warm-up
   a least-squares line through the samples gives the growth rate, and the growth over the run
   is compared with the noise around the line (`rss.ok`: no growth beyond noise).

This module only imports the core and the stream; the CLI adds the publisher as a sink.
"""
from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.engine.benchmark import describe_machine, release_freed_memory, rss_bytes, summarize
from molmo_edge.engine.engine import Engine
from molmo_edge.errors import ConfigError, SourceError
from molmo_edge.stream.events import Event
from molmo_edge.stream.frame import Frame
from molmo_edge.stream.pipeline import Pipeline
from molmo_edge.stream.queries import Query
from molmo_edge.stream.sources import FrameSource, make_source
from molmo_edge.stream.window import SlidingWindow, WindowConfig


class StreamBenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = "Track all circles."
    window: int = Field(8, ge=1, le=128)
    stride: int = Field(2, ge=1)
    fps: float = Field(2.0, gt=0, description="sampling rate into the model")
    max_new_tokens: int = Field(256, ge=1)
    seconds: float = Field(60.0, gt=0, description="length of the sustained run (600 for the report)")
    realtime: bool = Field(False, description="play the source at its own pace instead of as fast as the model goes")
    source_fps: float | None = Field(None, gt=0, description="frame rate of synthetic / folder sources; None: "
                                                             "the sampling fps (non-realtime) or 30 (realtime)")
    warmup_windows: int = Field(2, ge=0, description="windows left out of the rates and latencies")
    cache_windows: int = Field(6, ge=0, description="windows of the cached-vs-recompute comparison (0: skip)")
    rss_interval_s: float = Field(1.0, gt=0)
    rss_warmup_fraction: float = Field(0.1, ge=0, lt=1, description="first part of the run left out of the RSS fit")
    rss_tolerance_mb: float = Field(4.0, ge=0, description="growth always accepted as noise (allocator steps)")


# ----------------------------------------------------------------------------- RSS trend
def rss_trend(samples: list[tuple[float, float]], warmup_fraction: float = 0.1,
              tolerance_mb: float = 4.0) -> dict[str, Any]:
    """Fit RSS(t) after the warm-up: slope, growth over the fitted span, noise, verdict.

    samples: (t_s since start, rss_mb). `ok` when the fitted growth over the span is within
    max(3 x the residual standard deviation, tolerance_mb): no growth beyond noise.
    """
    if not samples:
        return {"ok": None, "n": 0}
    t_end = samples[-1][0]
    kept = [(t, mb) for t, mb in samples if t >= warmup_fraction * t_end] or samples
    t = np.array([s[0] for s in kept])
    mb = np.array([s[1] for s in kept])
    if len(kept) >= 3 and float(t.max() - t.min()) > 0:
        slope, intercept = np.polyfit(t, mb, 1)  # MB per second
        noise = float(np.std(mb - (slope * t + intercept)))
    else:
        slope, noise = 0.0, 0.0
    span_s = float(t.max() - t.min())
    growth = float(slope * span_s)
    return {"n": len(samples), "fitted": len(kept), "warmup_s": float(kept[0][0]), "span_s": span_s,
            "start_mb": float(samples[0][1]), "end_mb": float(samples[-1][1]), "min_mb": float(mb.min()),
            "max_mb": float(mb.max()), "slope_mb_per_min": float(slope * 60.0), "growth_mb": growth,
            "noise_mb": noise, "tolerance_mb": max(3.0 * noise, tolerance_mb),
            "ok": bool(growth <= max(3.0 * noise, tolerance_mb))}


class RssRecorder:
    """(seconds since start, RSS in MiB) every `interval_s`, in a daemon thread, while running."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0

    def start(self) -> "RssRecorder":
        self._start = time.monotonic()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="rss-recorder", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        self.samples.append((time.monotonic() - self._start, rss_bytes() / 2**20))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        return self.samples


# ----------------------------------------------------------------------------- the cache comparison
def _collect_frames(source: FrameSource, n_frames: int) -> list[Frame]:
    frames = []
    source.open()
    try:
        while len(frames) < n_frames:
            frame = source.read(timeout_s=5.0)
            if frame is None:
                break
            frames.append(frame)
    finally:
        source.close()
    if len(frames) < n_frames:
        raise SourceError(f"the source ended after {len(frames)} frames; the cache comparison needs {n_frames}")
    return frames


def window_plan(n_frames: int, size: int, stride: int) -> list[tuple[range, range]]:
    """(new frame indices, member frame indices) of each window a SlidingWindow makes from n frames:
    the first once `size` frames are in, then one every `stride` new frames."""
    plan = []
    end = size
    while end <= n_frames:
        first_new = 0 if not plan else end - stride
        plan.append((range(first_new, end), range(end - size, end)))
        end += stride
    return plan


def compare_feature_cache(engine: Engine, frames: list[Frame], settings: StreamBenchSettings) -> dict[str, Any]:
    """Per window: cached (encode the new frames only) vs recompute (encode all), alternating which goes first."""
    window = SlidingWindow(engine.encode_frame, WindowConfig(size=settings.window, stride=settings.stride))
    prompt = Query.parse(settings.query).prompt
    generation = {"max_new_tokens": settings.max_new_tokens}
    times: dict[str, list[float]] = {"cached": [], "recompute": []}
    vision: dict[str, list[float]] = {"cached": [], "recompute": []}
    same, recompute_encodes = [], 0
    for number, (new, members) in enumerate(window_plan(len(frames), settings.window, settings.stride)):
        answers: dict[str, str] = {}
        for path in (("cached", "recompute") if number % 2 == 0 else ("recompute", "cached")):
            start = time.perf_counter()
            if path == "cached":
                ready = [w for i in new for w in window.push(frames[i])]  # encodes each new frame, once
                if len(ready) != 1:
                    raise RuntimeError(f"expected one window after frame {new[-1]}, the sliding window made {len(ready)}")
                features, timestamps_s = ready[0].features, ready[0].timestamps_s
            else:
                features = [engine.encode_frame(frames[i].rgb) for i in members]  # every frame again
                timestamps_s = [frames[i].t_s for i in members]
                recompute_encodes += len(members)
            vision_ms = (time.perf_counter() - start) * 1e3
            answers[path] = engine.ask_frames(features, timestamps_s, prompt, **generation).text
            times[path].append((time.perf_counter() - start) * 1e3)
            vision[path].append(vision_ms)
        same.append(answers["cached"] == answers["recompute"])
    cached, fresh = summarize(times["cached"]), summarize(times["recompute"])
    cached_vision, fresh_vision = summarize(vision["cached"]), summarize(vision["recompute"])
    return {
        "windows": len(same), "window": settings.window, "stride": settings.stride,
        "cached_window_ms": cached, "recompute_window_ms": fresh,
        "cached_vision_ms": cached_vision, "recompute_vision_ms": fresh_vision,
        "speedup": fresh["median"] / cached["median"] if cached and fresh else None,
        "vision_speedup": (fresh_vision["median"] / cached_vision["median"]
                           if cached_vision and fresh_vision and cached_vision["median"] > 0 else None),
        "frames_encoded_cached": window.stats.frames_encoded, "frames_encoded_recompute": recompute_encodes,
        "same_answers": all(same) if same else None,
    }


# ----------------------------------------------------------------------------- the sustained run
class _TimingSink:
    """Hands each event to the real sinks, then records capture -> publish (the event's own
    capture_to_publish, taken when it was built, plus the time the sinks took) and its stage times.

    Only numbers are kept, in flat arrays (8 bytes each): holding the events themselves would grow the
    RSS this benchmark is watching by ~30 KB a window."""

    FIELDS = ("capture_to_publish_ms", "window_total_ms", "vision_ms", "prefill_ms", "decode_ms", "answer_chars")

    def __init__(self, sinks: Iterable[Any]) -> None:
        self.writers: list[Callable[[Event], Any]] = [getattr(s, "write", s) for s in sinks]
        self.values = {name: array("d") for name in self.FIELDS}
        self.count = 0

    def write(self, event: Event) -> None:
        start = time.perf_counter()
        for write in self.writers:
            write(event)
        sink_ms = (time.perf_counter() - start) * 1e3
        latency = event.latency_ms
        for name, value in zip(self.FIELDS, ((latency.capture_to_publish or 0.0) + sink_ms, latency.total,
                                             latency.vision, latency.prefill, latency.decode, len(event.raw_text))):
            self.values[name].append(value)
        self.count += 1

    def summary(self, skip: int) -> dict[str, Any]:
        return {name: summarize(values[skip:]) for name, values in self.values.items()}


def _source_for(source: str | FrameSource, settings: StreamBenchSettings) -> FrameSource:
    if isinstance(source, FrameSource):
        return source
    fps = settings.source_fps or (30.0 if settings.realtime else settings.fps)
    return make_source(source, realtime=settings.realtime, fps=fps)


def sustained_run(engine: Engine, source: str | FrameSource, settings: StreamBenchSettings,
                  sinks: Iterable[Any] = ()) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """Run a Pipeline for `settings.seconds`; (summary, RSS samples)."""
    timing = _TimingSink(sinks)
    recorder = RssRecorder(settings.rss_interval_s)
    release_freed_memory()
    with Pipeline(engine, source=_source_for(source, settings), queries=[settings.query], sinks=[timing],
                  window=settings.window, stride=settings.stride, fps=settings.fps,
                  max_new_tokens=settings.max_new_tokens, max_seconds=settings.seconds,
                  flush_at_end=False) as pipeline:
        recorder.start()
        started = time.monotonic()
        marks = array("d")  # when each window's event was published (s since start)
        for _ in pipeline:
            marks.append(time.monotonic() - started)
        elapsed_s = time.monotonic() - started
        stats = pipeline.stats
    samples = recorder.stop()
    steady = marks[settings.warmup_windows:]
    rate = None
    if len(steady) >= 2:
        rate = (len(steady) - 1) / (steady[-1] - steady[0]) if steady[-1] > steady[0] else None
    return {
        "seconds": elapsed_s, "windows": stats.windows, "events": stats.events,
        "warmup_windows": settings.warmup_windows, "windows_per_s": rate,
        "windows_per_s_overall": stats.windows / elapsed_s if elapsed_s > 0 else None,
        "frames_in": stats.frames_in, "frames_sampled": stats.frames_sampled,
        "frames_encoded": stats.frames_encoded, "cache_hits": stats.cache_hits,
        "parse_failures": stats.parse_failures, "model_errors": stats.model_errors,
        "sink_errors": stats.sink_errors, **timing.summary(settings.warmup_windows),
    }, samples


# ----------------------------------------------------------------------------- everything
class StreamBenchReport(BaseModel):
    backend: str
    settings: StreamBenchSettings
    source: str
    feature_cache: dict[str, Any] | None
    sustained: dict[str, Any]
    rss: dict[str, Any]
    rss_samples: list[tuple[float, float]]
    machine: dict[str, Any] = Field(default_factory=describe_machine)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "molmo-edge-stream-bench", "version": 1, **self.model_dump(mode="json")}

    def summary(self) -> str:
        s, c, r = self.sustained, self.feature_cache, self.rss
        lines = [f"stream benchmark ({self.backend}, {self.source}, window {self.settings.window} / stride "
                 f"{self.settings.stride} at {self.settings.fps:g} fps, {s['seconds']:.0f} s)"]
        if c:
            lines.append(f"  feature cache: {c['cached_window_ms']['median']:.0f} ms per window cached vs "
                         f"{c['recompute_window_ms']['median']:.0f} ms recomputing ({c['speedup']:.2f}x; vision alone "
                         f"{c['vision_speedup']:.2f}x) over {c['windows']} windows; same answers: {c['same_answers']}")
        latency = s["capture_to_publish_ms"]
        rate = s["windows_per_s"]
        lines.append(f"  sustained: {s['windows']} windows, {rate:.3f} windows/s" if rate else
                     f"  sustained: {s['windows']} windows (too few for a rate)")
        if latency:
            lines.append(f"  capture -> publish: median {latency['median']:.0f} ms, p90 {latency['p90']:.0f} ms")
        if r.get("n"):
            lines.append(f"  RSS: {r['start_mb']:.0f} -> {r['end_mb']:.0f} MiB, fitted growth {r['growth_mb']:+.1f} MiB "
                         f"over {r['span_s']:.0f} s ({r['slope_mb_per_min']:+.2f} MiB/min), noise {r['noise_mb']:.1f} "
                         f"MiB -> {'no growth beyond noise' if r['ok'] else 'GROWING'}")
        return "\n".join(lines)


def run_stream_benchmark(engine: Engine, source: str | Callable[[], FrameSource] = "synthetic:0:256x256",
                         settings: StreamBenchSettings | None = None, sinks: Iterable[Any] = (),
                         progress: Callable[[str], None] | None = None) -> StreamBenchReport:
    """The three measurements of the module docstring. `source`: a source spec, or a function returning a
    fresh unopened FrameSource (each measurement reads the source from its start)."""
    settings = settings or StreamBenchSettings()
    say = progress or (lambda message: None)
    if not isinstance(engine, Engine):
        raise ConfigError(f"run_stream_benchmark takes an Engine, got {type(engine).__name__}")
    if isinstance(source, str):
        spec = source
        fresh = lambda: _source_for(spec, settings)  # noqa: E731
        in_order = lambda: make_source(spec, realtime=False, fps=settings.fps)  # noqa: E731
    else:
        fresh = in_order = source
    cache = None
    if settings.cache_windows:
        n_frames = settings.window + settings.stride * (settings.cache_windows - 1)
        say(f"feature cache vs recompute over {settings.cache_windows} windows")
        cache = compare_feature_cache(engine, _collect_frames(in_order(), n_frames), settings)
    say(f"sustained run for {settings.seconds:g} s")
    live = fresh()
    try:
        sustained, samples = sustained_run(engine, live, settings, sinks)
    finally:
        live.close()
    rss = rss_trend(samples, settings.rss_warmup_fraction, settings.rss_tolerance_mb)
    return StreamBenchReport(backend=engine.backend.name, settings=settings,
                             source=source if isinstance(source, str) else "custom", feature_cache=cache,
                             sustained=sustained, rss=rss, rss_samples=samples)


__all__ = ["RssRecorder", "StreamBenchReport", "StreamBenchSettings", "compare_feature_cache", "rss_trend",
           "run_stream_benchmark", "sustained_run", "window_plan"]
