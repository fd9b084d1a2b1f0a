"""Video frame sampling (official uniform_last_frame), frame preprocessing, and the OpenCV file reader."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.errors import SourceError
from molmo_edge.processing import (InputError, ProcessorConfig, concat_frames, preprocess_frame, preprocess_frames,
                                   read_video, sample_frame_indices, sample_frame_times)

from .processing_reference import ReferenceVideoProcessor, ref_video

DEFAULT = ProcessorConfig()


def _cfg(fps: float = 2.0, max_frames: int = 128) -> ProcessorConfig:
    return ProcessorConfig(fps=fps, max_frames=max_frames)


# (duration_s, fps, max_frames, expected times), worked out by hand from the official rule:
# sample every 1/fps seconds while t < duration, append duration; if (max_frames - 1) / fps < duration,
# use max_frames times evenly over [0, duration] instead.
SAMPLING_TABLE = [
    (10.0, 2.0, 128, [i * 0.5 for i in range(20)] + [10.0]),
    (3.3, 2.0, 128, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.3]),
    (0.0, 2.0, 128, [0.0]),
    (0.4, 2.0, 128, [0.0, 0.4]),
    (3.0, 1.0, 4, [0.0, 1.0, 2.0, 3.0]),                       # (4-1)/1 = 3 is not < 3: fps branch
    (3.01, 1.0, 4, [0.0, 3.01 / 3, 2 * 3.01 / 3, 3.01]),          # 3 < 3.01: uniform fallback
    (63.5, 2.0, 128, [i * 0.5 for i in range(127)] + [63.5]),   # exactly max_frames frames
    (100.0, 2.0, 128, [100.0 * i / 127 for i in range(128)]),
    (5.0, 2.0, 1, [0.0]),                                       # max_frames 1: linspace with one point
    (1.0, 30.0, 128, [i / 30 for i in range(30)] + [1.0]),
]


@pytest.mark.parametrize("duration_s,fps,max_frames,expected", SAMPLING_TABLE)
def test_uniform_last_frame_times(duration_s, fps, max_frames, expected):
    times = sample_frame_times(duration_s, _cfg(fps, max_frames))
    np.testing.assert_allclose(times, expected, rtol=0, atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(duration_s=st.floats(0, 2000, allow_nan=False), fps=st.sampled_from([0.5, 1.0, 2.0, 4.0, 7.5]),
       max_frames=st.integers(2, 400))
def test_sampling_invariants(duration_s, fps, max_frames):
    times = sample_frame_times(duration_s, _cfg(fps, max_frames))
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(duration_s)                  # the last frame is always included
    assert len(times) <= max_frames
    assert np.all(np.diff(times) > 0)                               # sorted and unique
    if (max_frames - 1) / fps >= duration_s:
        # short clip: every 1/fps from 0 while before the end (none skipped), then the end itself
        np.testing.assert_allclose(np.diff(times[:-1]), 1 / fps)
        assert np.all(times[:-1] < duration_s)
        assert times[-2] + 1 / fps >= duration_s - 1e-9 if len(times) > 1 else duration_s == 0
    else:
        np.testing.assert_allclose(times, np.linspace(0, duration_s, max_frames))


@pytest.mark.parametrize("n_frames,native_fps,expected_indices", [
    (300, 30.0, [15 * i for i in range(20)] + [299]),   # 10 s: one frame every 15, then the last
    (25, 10.0, [0, 5, 10, 15, 20, 24]),                  # 2.5 s
    (1, 30.0, [0, 0]),                                   # a still: the only frame, at 0 and at 1/30 s
    (4, 1.0, [0, 0, 1, 1, 2, 2, 3, 3, 3]),               # slower than 2 fps: frames repeat
])
def test_constant_rate_clip_indices(n_frames, native_fps, expected_indices):
    indices, times = sample_frame_indices(n_frames, native_fps, DEFAULT)
    assert indices.tolist() == expected_indices
    assert times[-1] == pytest.approx(n_frames / native_fps)


def test_official_sampling_differs_from_transformers_native_sampling():
    """Trap 5: the HF port's own sample_frames drops the last frame and caps at 64 frames."""
    from transformers.video_utils import VideoMetadata

    hf_self = SimpleNamespace(max_fps=2, num_frames=64)
    hf_indices = ref_video.Molmo2VideoProcessor.sample_frames(
        hf_self, VideoMetadata(total_num_frames=300, fps=30.0, duration=10.0)).tolist()
    ours, times = sample_frame_indices(300, 30.0, DEFAULT)
    assert hf_indices == [15 * i for i in range(20)]               # 20 frames, last at 9.5 s
    assert ours.tolist() == hf_indices + [299] and times[-1] == 10.0  # 21 frames, last at 10.0 s


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_durations_are_refused(bad):
    with pytest.raises(InputError):
        sample_frame_times(bad, DEFAULT)


def _frames(n: int, height: int = 90, width: int = 120, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("cfg", [DEFAULT, ProcessorConfig(crop_size=56, overlap_margins=(1, 1)),
                                 ProcessorConfig(crop_size=70, overlap_margins=(1, 1), video_pooling=(2, 3))],
                         ids=["default", "tiny", "uneven-pooling"])
def test_frames_match_reference(cfg):
    frames = _frames(3)
    ours = preprocess_frames(frames, cfg)
    theirs = ReferenceVideoProcessor(cfg, [0.0, 0.5, 1.0])([frames])
    assert torch.equal(ours.pixel_values, theirs["pixel_values_videos"])
    assert torch.equal(ours.token_pooling, theirs["video_token_pooling"].long())
    assert list(ours.grid) == theirs["video_grids"][0].tolist()


def test_default_frame_has_81_tokens_of_9_patches():
    frame = preprocess_frame(_frames(1)[0], DEFAULT)
    assert frame.grid == (1, 9, 9) and frame.token_pooling.shape == (81, 9)
    assert frame.pixel_values.shape == (1, 729, 588)


def test_frames_encoded_one_at_a_time_equal_the_clip():
    cfg = ProcessorConfig(crop_size=56, overlap_margins=(1, 1))
    frames = _frames(5, seed=4)
    clip = preprocess_frames(frames, cfg)
    joined = concat_frames([preprocess_frame(frame, cfg) for frame in frames])
    assert joined.grid == clip.grid
    assert torch.equal(joined.pixel_values, clip.pixel_values)
    assert torch.equal(joined.token_pooling, clip.token_pooling)


def test_frames_of_different_sizes_are_each_squashed():
    cfg = ProcessorConfig(crop_size=56, overlap_margins=(1, 1))
    a, b = _frames(1, 40, 60, seed=1)[0], _frames(1, 100, 30, seed=2)[0]
    mixed = preprocess_frames([a, b], cfg)
    assert torch.equal(mixed.pixel_values[0], preprocess_frame(a, cfg).pixel_values[0])
    assert torch.equal(mixed.pixel_values[1], preprocess_frame(b, cfg).pixel_values[0])


@pytest.mark.parametrize("bad", [[], np.zeros((2, 10, 10), dtype=np.uint8), [np.zeros((5, 5, 3), dtype=np.int16)]])
def test_bad_frames_get_a_clear_error(bad):
    with pytest.raises(InputError):
        preprocess_frames(bad, DEFAULT)


def _write_video(path, n_frames: int, fps: float, size=(64, 48)) -> int:
    """Frame i is a flat grey of level step·i (so the decoder's choice of frame can be read back)."""
    step = 250 // n_frames
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n_frames):
        writer.write(np.full((size[1], size[0], 3), step * i, dtype=np.uint8))
    writer.release()
    return step


def test_read_video_samples_by_the_files_clock(tmp_path):
    path = tmp_path / "clip.avi"
    step = _write_video(path, n_frames=25, fps=10.0)   # 2.5 s
    frames, times = read_video(path, DEFAULT)
    np.testing.assert_allclose(times, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5], atol=1e-9)
    assert frames.dtype == np.uint8 and frames.shape == (6, 48, 64, 3)
    levels = frames.reshape(6, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [step * i for i in [0, 5, 10, 15, 20, 24]], atol=3)


def test_read_video_respects_max_frames(tmp_path):
    path = tmp_path / "long.avi"
    step = _write_video(path, n_frames=40, fps=4.0)    # 10 s at 2 fps would be 21 frames
    frames, times = read_video(path, _cfg(max_frames=5))
    np.testing.assert_allclose(times, [0.0, 2.5, 5.0, 7.5, 10.0], atol=1e-9)
    levels = frames.reshape(5, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [step * i for i in [0, 10, 20, 30, 39]], atol=3)


def test_read_video_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        read_video(tmp_path / "missing.mp4", DEFAULT)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError):
        read_video(junk, DEFAULT)
