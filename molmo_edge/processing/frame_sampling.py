"""Which moments of a video the model sees: the official Molmo2 "uniform_last_frame" time sampling.

The rule (Ai2's training and evaluation code, time-based sampling):
* sample at `fps` (2 by default) on the video's own clock: t = 0, 0.5, 1.0, ... while t < duration,
  then always append t = duration, so the last frame is included;
* if that would exceed `max_frames`, i.e. (max_frames − 1) / fps < duration, take instead
  `max_frames` times spread uniformly over [0, duration], first and last included (linspace);
* a frame shown during [start_i, end_i) is the one picked for every t in that interval; t = duration
  picks the last frame. Timestamps given to the prompt are these sampled times t (seconds).

NOT the same as transformers' `Molmo2VideoProcessor.sample_frames` (trap 5): that one works on
frame indices, takes `min(num_frames=64, int(duration · max_fps))` indices
`arange(0, n_total, n_total / n_target)` (floored), never appends the last frame, and stamps each
frame with index / native_fps. On a 10 s, 30 fps clip the official rule gives 21 frames ending at
10.0 s; the HF rule gives 20 frames ending at 9.5 s.

`frame_sample_mode="uniform"` is the official plain variant: `max_frames` times
linspace(0, duration) without the end point.
"""
from __future__ import annotations

import numpy as np

from molmo_edge.processing.config import ProcessorConfig
from molmo_edge.processing.errors import InputError


def sample_frame_times(duration_s: float, cfg: ProcessorConfig) -> np.ndarray:
    """Sampled times in seconds from the video start, float64 [n], strictly increasing."""
    duration_s = float(duration_s)
    if not np.isfinite(duration_s) or duration_s < 0:
        raise InputError(f"video duration must be a finite number of seconds >= 0, got {duration_s}")
    if cfg.frame_sample_mode == "uniform":
        return np.linspace(0.0, duration_s, num=cfg.max_frames, endpoint=False, dtype=np.float64)
    longest_at_fps_s = (cfg.max_frames - 1) / cfg.fps  # −1: the appended last frame
    if longest_at_fps_s < duration_s:
        return np.linspace(0.0, duration_s, num=cfg.max_frames, endpoint=True, dtype=np.float64)
    times = np.arange(0.0, duration_s, 1.0 / cfg.fps, dtype=np.float64)
    return np.concatenate([times, [duration_s]])


def frames_at_times(times_s: np.ndarray, frame_starts_s: np.ndarray, duration_s: float) -> np.ndarray:
    """Index of the frame on screen at each sampled time (relative to the first frame's start).

    frame_starts_s: presentation time of every decoded frame, increasing; frame i lasts until
    frame i+1 starts, the last one until frame_starts_s[0] + duration_s."""
    starts = np.asarray(frame_starts_s, dtype=np.float64)
    if starts.ndim != 1 or len(starts) == 0:
        raise InputError("a video needs at least one frame")
    ends = np.append(starts[1:], starts[0] + duration_s)
    indices = np.searchsorted(ends, np.asarray(times_s, dtype=np.float64) + starts[0], side="right")
    return np.minimum(indices, len(starts) - 1).astype(np.int64)


def sample_frame_indices(n_frames: int, native_fps: float, cfg: ProcessorConfig) -> tuple[np.ndarray, np.ndarray]:
    """For a constant-rate clip of n_frames at native_fps: (frame indices int64 [n], times_s float64 [n])."""
    if n_frames < 1:
        raise InputError(f"a video needs at least one frame, got {n_frames}")
    if not native_fps or native_fps <= 0 or not np.isfinite(native_fps):
        raise InputError(f"native_fps must be a positive frame rate, got {native_fps}")
    duration_s = n_frames / native_fps
    times_s = sample_frame_times(duration_s, cfg)
    starts_s = np.arange(n_frames, dtype=np.float64) / native_fps
    return frames_at_times(times_s, starts_s, duration_s), times_s
