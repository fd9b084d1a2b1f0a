"""The sliding window and its per-frame feature cache: every frame encoded once, memory bounded."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from molmo_edge.engine.engine import FrameFeatures
from molmo_edge.stream.frame import Frame
from molmo_edge.stream.window import FrameKey, SlidingWindow, WindowConfig


def make_frame(i: int, t_s: float | None = None, source_id: str = "test") -> Frame:
    rgb = np.full((12, 16, 3), i % 256, np.uint8)
    t = 0.5 * i if t_s is None else t_s
    return Frame(rgb=rgb, stamp_ns=1_000_000_000 + round(t * 1e9), t_s=t, index=i, source_id=source_id)


class RecordingEncoder:
    """A stand-in for ViT + connector that is cheap and remembers every frame it was given."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, rgb: np.ndarray) -> FrameFeatures:
        value = int(rgb[0, 0, 0])
        self.calls.append(value)
        return FrameFeatures(visual_tokens=torch.full((3, 4), float(value)), width_px=rgb.shape[1],
                             height_px=rgb.shape[0], encode_ms=1.0)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 9), stride=st.integers(1, 6), min_frames=st.one_of(st.none(), st.integers(1, 9)),
       n_frames=st.integers(0, 40))
def test_each_frame_is_encoded_once_and_every_frame_is_in_a_window(size, stride, min_frames, n_frames):
    min_frames = None if min_frames is None else min(min_frames, size)
    stride = min(stride, size)
    encoder = RecordingEncoder()
    window = SlidingWindow(encoder, WindowConfig(size=size, stride=stride, min_frames=min_frames))
    windows = []
    for i in range(n_frames):
        windows.extend(window.push(make_frame(i)))
        assert window.stats.cache_size <= size  # bounded memory at every step
        assert len(window.frames) <= size
    windows.extend(window.flush())

    assert sorted(encoder.calls) == [i % 256 for i in range(n_frames)]  # once each, never again
    assert window.stats.frames_encoded == n_frames
    covered = {f.index for w in windows for f in w.frames}
    assert covered == set(range(n_frames))
    assert sum(w.new_frames for w in windows) == n_frames
    assert window.stats.cache_hits == sum(len(w.frames) - w.new_frames for w in windows)
    for w in windows:
        indices = [f.index for f in w.frames]
        assert indices == list(range(indices[0], indices[0] + len(indices)))  # consecutive, oldest first
        assert 1 <= len(indices) <= size
        # the features handed out are the ones encoded for exactly these frames
        assert [int(feat.visual_tokens[0, 0]) for feat in w.features] == [i % 256 for i in indices]
        assert w.vision_ms == pytest.approx(w.new_frames * 1.0)
    stride_windows = [w for w in windows if not w.final]
    first = min_frames or size
    if n_frames >= first:
        assert stride_windows[0].frames[-1].index == first - 1  # the first window as soon as it can be


def test_stride_and_window_positions():
    window = SlidingWindow(RecordingEncoder(), size=4, stride=2)
    ready = []
    for i in range(9):
        ready.extend((i, w) for w in window.push(make_frame(i)))
    # full windows of 4, every 2 new frames: after frames 3, 5, 7
    assert [(i, [f.index for f in w.frames]) for i, w in ready] == [
        (3, [0, 1, 2, 3]), (5, [2, 3, 4, 5]), (7, [4, 5, 6, 7])]
    tail = window.flush()
    assert [f.index for f in tail[0].frames] == [5, 6, 7, 8] and tail[0].final and tail[0].new_frames == 1
    assert window.flush() == []  # nothing new since


def test_frames_leave_the_cache_with_the_window():
    window = SlidingWindow(RecordingEncoder(), size=3, stride=1)
    for i in range(6):
        window.push(make_frame(i))
    assert window.stats.cache_size == 3
    assert FrameKey.of(make_frame(2)) not in window.cache
    assert all(FrameKey.of(make_frame(i)) in window.cache for i in (3, 4, 5))


def test_the_same_frame_pushed_twice_is_not_encoded_twice():
    encoder = RecordingEncoder()
    window = SlidingWindow(encoder, size=4, stride=1, min_frames=1)
    frame = make_frame(7)
    assert len(window.push(frame)) == 1
    assert window.push(frame) == []
    assert encoder.calls == [7]
    assert window.stats.duplicate_frames == 1


def test_a_gap_flushes_the_old_frames_and_starts_afresh():
    window = SlidingWindow(RecordingEncoder(), size=4, stride=2, max_gap_s=2.0)
    for i in range(5):  # windows after frame 3; frame 4 is new and unevaluated
        window.push(make_frame(i))
    ready = window.push(make_frame(5, t_s=20.0))  # 18 s later
    assert len(ready) == 1 and ready[0].final and [f.index for f in ready[0].frames] == [1, 2, 3, 4]
    assert [f.index for f in window.frames] == [5]
    assert window.stats.resets == 1 and window.stats.cache_size == 1


def test_time_going_backwards_restarts_the_window():
    window = SlidingWindow(RecordingEncoder(), size=4, stride=2)
    for i in range(4):
        window.push(make_frame(i))
    window.push(make_frame(10, t_s=0.0))  # a file that looped
    assert [f.index for f in window.frames] == [10] and window.stats.resets == 1


def test_bad_window_settings_are_refused():
    with pytest.raises(ValidationError):
        WindowConfig(size=4, min_frames=5)
    with pytest.raises(ValidationError):
        WindowConfig(size=0)
    with pytest.raises(ValidationError):
        WindowConfig(stride=0)
    with pytest.raises(ValidationError, match="stride"):
        WindowConfig(size=4, stride=5)  # frames would be encoded and never shown to the model
