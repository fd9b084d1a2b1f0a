"""The sliding window over sampled frames and the per-frame feature cache behind it.

    window = SlidingWindow(engine.encode_frame, WindowConfig(size=8, stride=2))
    for frame in sampled_frames:
        for ready in window.push(frame):                  # usually [] or one Window
            engine.ask_frames(ready.features, ready.timestamps_s, prompt)
    for ready in window.flush(): ...                      # the tail of a file

Why a cache: consecutive windows overlap (a window of 8 frames every 2 new frames shares 6 frames
with the one before), and the ViT + connector dominate the cost of a frame. Each sampled frame is
encoded once, when it is pushed, and its visual tokens ([T_f, D] on the backend's device) are kept
while the frame is in the window; every window (and every query of a window) reuses them. The
prompt is rebuilt per window from the cached tokens with timestamps relative to the window's first
frame (`Engine.ask_frames`), which is exactly what `Engine.ask_video` builds for the same frames.

Bounded memory: the cache holds the frames of the current window and nothing else; a frame's
features are dropped the moment it leaves the window (`stats.cache_size <= size` always).

When a window is evaluated: once `min_frames` frames are in (default: a full window) and then
every `stride` new frames. `flush()` evaluates the frames that arrived since the last window (the
end of a file), so every sampled frame is in at least one evaluated window.

Gaps: a sampled frame more than `max_gap_s` after the previous one, or earlier than it (a file
that looped, a clock reset), starts a fresh window: mixing frames from both sides of a gap would
show the model a jump it was never trained on. Unevaluated frames before the gap are flushed first.

Counters (`stats`): frames pushed, frames encoded (== distinct frames pushed: the "exactly once"
guarantee), cache hits (a window reusing a frame encoded for an earlier window), windows, resets.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from molmo_edge.engine.engine import FrameFeatures
from molmo_edge.stream.frame import Frame

FrameEncoder = Callable[[np.ndarray], FrameFeatures]  # RGB uint8 [H, W, 3] -> features


class WindowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(8, ge=1, le=128)  # frames per window (the model's max_frames is 128)
    stride: int = Field(2, ge=1)  # evaluate every this many new frames
    min_frames: int | None = Field(None, ge=1)  # the first window once this many are in; None: size
    max_gap_s: float | None = Field(5.0, gt=0)  # sampled frames further apart start a fresh window

    @model_validator(mode="after")
    def _fits_the_window(self) -> WindowConfig:
        if self.min_frames is not None and self.min_frames > self.size:
            raise ValueError(f"min_frames ({self.min_frames}) cannot exceed the window size ({self.size})")
        if self.stride > self.size:
            # frames would leave the window before any window showed them: encoded for nothing
            raise ValueError(f"stride ({self.stride}) cannot exceed the window size ({self.size}); lower the "
                             "sampling fps instead to look less often")
        return self

    @property
    def first_window_frames(self) -> int:
        return self.min_frames or self.size


class FrameKey(NamedTuple):
    """What makes a frame the same frame: its source, its position there, its capture stamp."""

    source_id: str
    index: int
    stamp_ns: int

    @classmethod
    def of(cls, frame: Frame) -> FrameKey:
        return cls(frame.source_id, frame.index, frame.stamp_ns)


class WindowStats(BaseModel):
    frames_pushed: int = 0
    duplicate_frames: int = 0  # the same frame pushed again (a live source re-read): ignored
    frames_encoded: int = 0
    encode_ms_total: float = 0.0
    cache_hits: int = 0
    windows: int = 0
    resets: int = 0  # gaps and backward jumps that started a fresh window
    cache_size: int = 0  # frames whose features are held right now (<= size)


class FeatureCache:
    """Frame key -> FrameFeatures, for the frames of the current window only.

    `get_or_encode` is the one place frames are encoded, so a frame is encoded once however many
    windows or queries use it; `evict` drops a frame that left the window.
    """

    def __init__(self, encode: FrameEncoder) -> None:
        self._encode = encode
        self._entries: OrderedDict[FrameKey, FrameFeatures] = OrderedDict()
        self.encoded = 0
        self.encode_ms_total = 0.0

    def get_or_encode(self, frame: Frame) -> tuple[FrameFeatures, bool]:
        """(features, was_cached)."""
        key = FrameKey.of(frame)
        cached = self._entries.get(key)
        if cached is not None:
            return cached, True
        start = time.perf_counter()
        features = self._encode(frame.rgb)
        if not features.encode_ms:
            features = FrameFeatures(features.visual_tokens, features.width_px, features.height_px,
                                     (time.perf_counter() - start) * 1e3)
        self._entries[key] = features
        self.encoded += 1
        self.encode_ms_total += features.encode_ms
        return features, False

    def get(self, key: FrameKey) -> FrameFeatures | None:
        return self._entries.get(key)

    def evict(self, key: FrameKey) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Window:
    """A window ready for the model: frames oldest first, their cached features, and timing."""

    number: int  # 1-based count of windows of this SlidingWindow
    frames: tuple[Frame, ...]
    features: tuple[FrameFeatures, ...]
    new_frames: int  # frames not in any earlier window
    vision_ms: float  # encode time of those new frames (the cached ones cost nothing now)
    ready_monotonic_ns: int  # when the window became ready (latency is measured from here)
    final: bool = False  # made by flush() or before a gap, not by the stride

    @property
    def timestamps_s(self) -> list[float]:
        """Media times of the frames; the prompt uses them relative to the first."""
        return [f.t_s for f in self.frames]

    @property
    def t0_s(self) -> float:
        return self.frames[0].t_s

    @property
    def t1_s(self) -> float:
        return self.frames[-1].t_s

    @property
    def last_frame(self) -> Frame:
        return self.frames[-1]


class SlidingWindow:
    """The last `size` sampled frames with their features (see the module docstring).

    Not thread-safe: one pipeline thread pushes; `stats` may be read from anywhere (a copy).
    """

    def __init__(self, encode: FrameEncoder, config: WindowConfig | None = None, **overrides) -> None:
        if overrides:
            config = WindowConfig.model_validate({**(config.model_dump() if config else {}), **overrides})
        self.config = config or WindowConfig()
        self.cache = FeatureCache(encode)
        self._frames: list[Frame] = []  # oldest first, at most config.size
        self._used: set[FrameKey] = set()  # frames of the current run already in an evaluated window
        self._new_since_window = 0
        self._vision_ms_pending = 0.0
        self._run_has_window = False  # a window was made since the last reset
        self._windows = 0
        self._pushed = 0
        self._duplicates = 0
        self._hits = 0
        self._resets = 0

    @property
    def stats(self) -> WindowStats:
        return WindowStats(frames_pushed=self._pushed, duplicate_frames=self._duplicates,
                           frames_encoded=self.cache.encoded, encode_ms_total=self.cache.encode_ms_total,
                           cache_hits=self._hits, windows=self._windows, resets=self._resets,
                           cache_size=len(self.cache))

    @property
    def frames(self) -> list[Frame]:
        return list(self._frames)

    def push(self, frame: Frame) -> list[Window]:
        """Add one sampled frame (encoding it now); the windows that became ready, usually 0 or 1."""
        key = FrameKey.of(frame)
        if key in self.cache:
            self._duplicates += 1
            return []
        ready: list[Window] = []
        if self._frames and self._is_gap(self._frames[-1], frame):
            ready.extend(self.flush())
            self._resets += 1
            self.reset()
        self._pushed += 1
        features, _ = self.cache.get_or_encode(frame)
        self._vision_ms_pending += features.encode_ms
        self._frames.append(frame)
        self._new_since_window += 1
        while len(self._frames) > self.config.size:
            self._forget(self._frames.pop(0))
        # The first window of a run waits only for `first_window_frames`; later ones for `stride`.
        if len(self._frames) >= self.config.first_window_frames and (
                not self._run_has_window or self._new_since_window >= self.config.stride):
            ready.append(self._make_window(final=False))
        return ready

    def flush(self) -> list[Window]:
        """A window of the current frames when some arrived since the last window, else []."""
        if not self._frames or self._new_since_window == 0:
            return []
        return [self._make_window(final=True)]

    def reset(self) -> None:
        """Forget every frame and its features (a gap, a pause, a new source)."""
        for frame in self._frames:
            self.cache.evict(FrameKey.of(frame))
        self.cache.clear()
        self._frames.clear()
        self._used.clear()
        self._new_since_window = 0
        self._vision_ms_pending = 0.0
        self._run_has_window = False

    # -- internals ------------------------------------------------------------------------------
    def _is_gap(self, previous: Frame, frame: Frame) -> bool:
        if frame.t_s < previous.t_s:
            return True
        return self.config.max_gap_s is not None and frame.t_s - previous.t_s > self.config.max_gap_s

    def _forget(self, frame: Frame) -> None:
        key = FrameKey.of(frame)
        self.cache.evict(key)
        self._used.discard(key)

    def _make_window(self, final: bool) -> Window:
        features = []
        for frame in self._frames:
            key = FrameKey.of(frame)
            cached = self.cache.get(key)
            if cached is None:  # cannot happen: frames in the window are always cached
                raise RuntimeError(f"frame {key} is in the window but not in the feature cache")
            if key in self._used:
                self._hits += 1
            features.append(cached)
        self._windows += 1
        window = Window(number=self._windows, frames=tuple(self._frames), features=tuple(features),
                        new_frames=self._new_since_window, vision_ms=self._vision_ms_pending,
                        ready_monotonic_ns=time.monotonic_ns(), final=final)
        self._used.update(FrameKey.of(f) for f in self._frames)
        self._run_has_window = True
        self._new_since_window = 0
        self._vision_ms_pending = 0.0
        return window


__all__ = ["FeatureCache", "FrameEncoder", "FrameKey", "SlidingWindow", "Window", "WindowConfig", "WindowStats"]
