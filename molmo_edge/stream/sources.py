"""Frame sources: a reader plus what every input needs (latest-frame slot, reconnects, counters).

    with open_source("0") as source:                 # camera 0, a capture thread keeps the newest frame
        frame = source.read_latest(max_age_ms=200)   # raises StaleFrameError when the camera stalls
    with open_source("clip.mp4") as source:           # a file: every frame, in order, file clock
        for frame in source: ...

Two kinds of source share one interface (`FrameSource`):
- `LiveSource`: a capture thread reads as fast as the input delivers and keeps only the newest
  frame (one slot, no queue), so a slow consumer sees fresh frames and frames in between are
  dropped (counted). Cameras, network streams and GStreamer pipelines are always live; files,
  folders and synthetic scenes are live when `realtime=True` (played at their own frame rate).
- `InOrderSource`: files, folders and synthetic scenes read on demand in the caller's thread,
  every frame, in order, however slow the consumer is.

Both skip and count corrupt frames, and reconnect with capped exponential back-off when the input
fails (camera unplugged, stream dropped), counting `reconnects`.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from molmo_edge.errors import ConfigError, SourceError
from molmo_edge.stream.frame import Frame
from molmo_edge.stream.readers import (
    CameraReader,
    CorruptFrameError,
    FrameReader,
    GStreamerReader,
    ImageFolderReader,
    RawFrame,
    SyntheticReader,
    UrlReader,
    VideoFileReader,
)
from molmo_edge.stream.source_spec import SourceSpec, parse_source_spec

log = logging.getLogger(__name__)


class StaleFrameError(SourceError):
    """The newest frame is older than the caller's `max_age_ms`: the input has stalled."""


class FrameTimeoutError(SourceError):
    """No new frame arrived within the caller's timeout."""


class ReconnectPolicy(BaseModel):
    """Capped exponential back-off between attempts to reopen a failed input."""

    model_config = ConfigDict(extra="forbid")
    initial_delay_s: float = Field(0.1, gt=0)
    max_delay_s: float = Field(5.0, gt=0)
    factor: float = Field(2.0, ge=1.0)
    # Consecutive failed reopen attempts before the source gives up with a SourceError.
    # None: keep trying forever (the default for live inputs, which may come back at any time).
    max_attempts: int | None = Field(None, ge=1)

    def delay_s(self, attempt: int) -> float:
        return min(self.initial_delay_s * self.factor ** attempt, self.max_delay_s)


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_id: str | None = None  # stream id in events; derived from the spec when None
    # None: live for cameras/URLs/pipelines/synthetic scenes, in order for files and folders.
    realtime: bool | None = None
    fps: float = Field(30.0, gt=0)  # frame rate of image folders and synthetic scenes
    width_px: int | None = Field(None, gt=0)  # camera request; synthetic scene size
    height_px: int | None = Field(None, gt=0)
    duration_s: float | None = Field(None, gt=0)  # synthetic scenes end after this much scene time
    reconnect: ReconnectPolicy = ReconnectPolicy()
    # This many undecodable frames in a row means the input itself is broken: reconnect.
    max_consecutive_corrupt: int = Field(30, ge=1)
    open_timeout_s: float = Field(10.0, gt=0)  # network streams
    read_timeout_s: float = Field(5.0, gt=0)


class SourceStats(BaseModel):
    """A snapshot of a source's counters (`source.stats` returns a copy)."""

    frames_read: int = 0  # good frames taken from the input
    frames_dropped: int = 0  # live sources: frames replaced by a newer one before anyone read them
    corrupt_frames: int = 0  # undecodable / malformed pictures, skipped
    failures: int = 0  # times the input failed (each starts a reconnect)
    reconnects: int = 0  # successful reopenings after a failure
    connected: bool = False
    ended: bool = False
    last_error: str | None = None


class FrameSource(ABC):
    """`open()` / `read_latest(max_age_ms)` / `read(timeout_s)` / `close()`; a context manager and
    an iterator of frames. One consumer per source."""

    is_live: bool = False

    def __init__(self, reader: FrameReader, source_id: str, config: SourceConfig | None = None) -> None:
        self.reader = reader
        self.source_id = source_id
        self.config = config or SourceConfig()
        self._lock = threading.Lock()
        self._stats = SourceStats()
        self._stop = threading.Event()
        self._opened = False

    # -- the interface -------------------------------------------------------------------------
    @abstractmethod
    def open(self) -> FrameSource: ...

    @abstractmethod
    def read_latest(self, max_age_ms: float | None = None) -> Frame | None: ...

    @abstractmethod
    def read(self, timeout_s: float | None = None) -> Frame | None: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    def stats(self) -> SourceStats:
        with self._lock:
            return self._stats.model_copy()

    @property
    def description(self) -> str:
        return self.reader.description

    def frames(self) -> Iterator[Frame]:
        """Every frame `read()` gives until the end of the stream (or `close()`)."""
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def __enter__(self) -> FrameSource:
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- shared machinery ----------------------------------------------------------------------
    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, amount in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + amount)

    def _set(self, **values) -> None:
        with self._lock:
            for name, value in values.items():
                setattr(self._stats, name, value)

    def _open_reader(self) -> None:
        self.reader.open()
        self._set(connected=True)

    def _next_raw(self) -> RawFrame | None:
        """The next good picture from the reader, skipping corrupt ones and reconnecting after
        failures. None at the end of the stream or when the source is being closed; raises
        SourceError when reconnecting gives up."""
        corrupt_in_a_row = 0
        while not self._stop.is_set():
            try:
                raw = self.reader.read()
            except CorruptFrameError as exc:
                corrupt_in_a_row += 1
                self._count(corrupt_frames=1)
                self._set(last_error=str(exc))
                log.warning("%s: skipped a corrupt frame: %s", self.description, exc)
                if corrupt_in_a_row >= self.config.max_consecutive_corrupt:
                    self._reconnect(f"{corrupt_in_a_row} corrupt frames in a row")
                    corrupt_in_a_row = 0
                continue
            except Exception as exc:  # noqa: BLE001 - any failure of the input means: reopen it
                self._reconnect(str(exc) or type(exc).__name__)
                corrupt_in_a_row = 0
                continue
            if raw is None:
                if self.reader.live:
                    self._reconnect("the stream ended")  # a live input never ends on purpose
                    continue
                return None
            return raw
        return None

    def _reconnect(self, reason: str) -> None:
        policy = self.config.reconnect
        self._count(failures=1)
        self._set(connected=False, last_error=reason)
        log.warning("%s failed (%s); reconnecting", self.description, reason)
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001 - closing a broken input may fail too; we reopen anyway
            log.debug("closing %s after a failure raised", self.description, exc_info=True)
        attempt = 0
        while True:
            if self._stop.wait(policy.delay_s(attempt)):
                return  # closing: give up quietly, the caller sees the stop flag
            try:
                self._open_reader()
            except Exception as exc:  # noqa: BLE001
                attempt += 1
                self._set(last_error=str(exc))
                log.info("%s: reopen attempt %d failed: %s", self.description, attempt, exc)
                if policy.max_attempts is not None and attempt >= policy.max_attempts:
                    raise SourceError(f"{self.description} failed ({reason}) and could not be reopened "
                                      f"after {attempt} attempts: {exc}") from exc
                continue
            self._count(reconnects=1)
            log.info("%s reconnected after %d failed attempts", self.description, attempt)
            return


class InOrderSource(FrameSource):
    """Every frame of a file, folder or synthetic scene, read in the caller's thread.

    Files have no capture clock: `stamp_ns` is the wall time at `open()` plus the frame's media
    time, so stamps increase and are spaced like the video. `read_latest` is the same as `read`
    here (every frame is "the latest" of a file) and ignores `max_age_ms`.
    """

    is_live = False

    def open(self) -> InOrderSource:
        if not self._opened:
            self._open_reader()
            self._opened = True
            self._stop.clear()
            self._open_stamp_ns = time.time_ns()
        return self

    def read(self, timeout_s: float | None = None) -> Frame | None:
        if not self._opened:
            raise SourceError(f"{self.description} is not open: call open() or use `with`")
        raw = self._next_raw()
        if raw is None:
            self._set(ended=True)
            return None
        self._count(frames_read=1)
        t_s = float(raw.t_s or 0.0)
        return Frame(raw.rgb, self._open_stamp_ns + round(t_s * 1e9), t_s, raw.index, self.source_id)

    def read_latest(self, max_age_ms: float | None = None) -> Frame | None:
        return self.read()

    def close(self) -> None:
        self._stop.set()
        if self._opened:
            self.reader.close()
            self._opened = False
            self._set(connected=False)


class LiveSource(FrameSource):
    """A capture thread keeps the newest frame in a single slot (latest-only, never a queue).

    `t_s` is seconds since `open()` for live inputs and the media time for a file played in
    real time (`realtime=True`), which the thread paces at its own frame rate.
    """

    is_live = True

    def __init__(self, reader: FrameReader, source_id: str, config: SourceConfig | None = None) -> None:
        super().__init__(reader, source_id, config)
        self._new_frame = threading.Condition(self._lock)
        self._latest: Frame | None = None
        self._latest_seq = 0  # number of frames put in the slot so far
        self._seen_seq = 0  # slot sequence number of the last frame handed to the consumer
        self._error: SourceError | None = None
        self._ended = False
        self._thread: threading.Thread | None = None

    def open(self) -> LiveSource:
        if self._opened:
            return self
        # The first open is synchronous so that a wrong device or address fails right here with a
        # clear error; later failures are reconnected in the background.
        self._open_reader()
        self._opened = True
        self._stop.clear()
        self._open_monotonic_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._capture_loop, name=f"capture-{self.source_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def _capture_loop(self) -> None:
        first_media_t_s: float | None = None
        try:
            while not self._stop.is_set():
                raw = self._next_raw()
                if raw is None:
                    break
                if not self.reader.live:
                    # A file/scene played in real time: wait until its media time comes round.
                    first_media_t_s = raw.t_s if first_media_t_s is None else first_media_t_s
                    due_ns = self._open_monotonic_ns + round((raw.t_s - first_media_t_s) * 1e9)
                    if self._stop.wait(max(0.0, (due_ns - time.monotonic_ns()) / 1e9)):
                        break
                now_ns = time.monotonic_ns()
                t_s = raw.t_s if raw.t_s is not None else (now_ns - self._open_monotonic_ns) / 1e9
                frame = Frame(raw.rgb, time.time_ns(), t_s, raw.index, self.source_id, now_ns)
                with self._new_frame:
                    if self._latest is not None and self._seen_seq < self._latest_seq:
                        self._stats.frames_dropped += 1  # replaced before anyone read it
                    self._latest = frame
                    self._latest_seq += 1
                    self._stats.frames_read += 1
                    self._new_frame.notify_all()
        except SourceError as exc:
            self._error = exc
            log.error("%s", exc)
        except Exception as exc:  # noqa: BLE001 - report instead of dying silently in a thread
            self._error = SourceError(f"{self.description}: capture thread failed: {exc}")
            log.exception("%s: capture thread failed", self.description)
        finally:
            try:
                self.reader.close()
            except Exception:  # noqa: BLE001
                log.debug("closing %s raised", self.description, exc_info=True)
            with self._new_frame:
                self._ended = True
                self._stats.ended = True
                self._stats.connected = False
                if self._error is not None:
                    self._stats.last_error = str(self._error)
                self._new_frame.notify_all()

    def read_latest(self, max_age_ms: float | None = None) -> Frame | None:
        """The newest frame, possibly one already returned (compare `frame.index`).

        None when no frame has arrived yet or the stream has ended; raises `StaleFrameError` when
        the newest frame is older than `max_age_ms`, and `SourceError` when the input has failed
        for good.
        """
        with self._new_frame:
            if self._error is not None:
                raise self._error
            if self._ended or self._latest is None:
                if not self._opened and not self._ended:
                    raise SourceError(f"{self.description} is not open: call open() or use `with`")
                return None
            frame = self._latest
            self._seen_seq = self._latest_seq
            reconnects = self._stats.reconnects
        if max_age_ms is not None:
            age_ms = frame.age_ms()
            if age_ms > max_age_ms:
                raise StaleFrameError(
                    f"the newest frame from {self.description} is {age_ms:.0f} ms old "
                    f"(max_age_ms={max_age_ms:g}); the input has stalled or is reconnecting "
                    f"(reconnects so far: {reconnects})"
                )
        return frame

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """Wait for a frame newer than the last one returned; None at the end of the stream.

        Raises `FrameTimeoutError` after `timeout_s` without a new frame (the source keeps
        running and reconnecting; call again) and `SourceError` when it has failed for good.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._new_frame:
            if not self._opened and not self._ended:
                raise SourceError(f"{self.description} is not open: call open() or use `with`")
            while True:
                if self._latest is not None and self._seen_seq < self._latest_seq:
                    self._seen_seq = self._latest_seq
                    return self._latest
                if self._error is not None:
                    raise self._error
                if self._ended:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise FrameTimeoutError(
                        f"no new frame from {self.description} within {timeout_s:g} s "
                        f"(connected={self._stats.connected}, reconnects={self._stats.reconnects})")
                self._new_frame.wait(remaining)

    def close(self, join_timeout_s: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # A capture blocked inside the driver returns within its read timeout; the thread is a
            # daemon, so a driver that never returns cannot keep the process alive.
            thread.join(join_timeout_s)
        with self._new_frame:
            self._ended = True
            self._opened = False
            self._new_frame.notify_all()


def make_reader(spec: SourceSpec, config: SourceConfig) -> FrameReader:
    if spec.kind == "camera":
        return CameraReader(spec.target, config.width_px, config.height_px)
    if spec.kind == "url":
        return UrlReader(str(spec.target), config.open_timeout_s, config.read_timeout_s)
    if spec.kind == "gstreamer":
        return GStreamerReader(str(spec.target))
    if spec.kind == "file":
        return VideoFileReader(Path(str(spec.target)))
    if spec.kind == "folder":
        return ImageFolderReader(Path(str(spec.target)), fps=config.fps)
    return SyntheticReader(int(spec.target), width_px=spec.width_px or config.width_px or 320,
                           height_px=spec.height_px or config.height_px or 240, fps=config.fps,
                           duration_s=config.duration_s)


def make_source(spec: str | int | Path, config: SourceConfig | None = None, **overrides) -> FrameSource:
    """The source for `spec`, not yet opened (see `open_source`)."""
    if overrides:
        base = config.model_dump() if config is not None else {}
        try:
            config = SourceConfig.model_validate({**base, **overrides})
        except ValidationError as exc:
            raise ConfigError(f"bad source settings for {spec!r}: {exc}") from exc
    config = config or SourceConfig()
    parsed = parse_source_spec(spec)
    reader = make_reader(parsed, config)
    if parsed.kind in ("file", "folder") and config.reconnect.max_attempts is None:
        # A file that fails to reopen three times is gone; do not wait for it forever.
        config = config.model_copy(update={"reconnect": config.reconnect.model_copy(update={"max_attempts": 3})})
    realtime = config.realtime if config.realtime is not None else parsed.kind not in ("file", "folder")
    source_cls = LiveSource if (parsed.live or realtime) else InOrderSource
    return source_cls(reader, config.source_id or parsed.default_id, config)


def open_source(spec: str | int | Path, config: SourceConfig | None = None, **overrides) -> FrameSource:
    """Open `spec` ("0", "clip.mp4", "frames/", "rtsp://...", a GStreamer pipeline, "synthetic:SEED[:WxH]").

    Keyword overrides are `SourceConfig` fields, e.g. `open_source("clip.mp4", realtime=True)`.
    Raises `SourceError` / `ConfigError` when the input cannot be opened.
    """
    return make_source(spec, config, **overrides).open()
