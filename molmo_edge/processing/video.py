"""Video frames -> patches and pooling windows (each frame is one squashed crop, pooled 3×3).

Every frame is resized to crop_size × crop_size (no tiling) and split into P patches; its pooling
windows cover the frame's own patch grid (27×27 -> 9×9 = 81 tokens for 378/14 with 3×3 pooling),
offset by frame_index · P into the flattened patch list of the whole clip.

The stream encodes frames one at a time: `preprocess_frame` gives one frame's inputs, and
`concat_frames` of those equals `preprocess_frames` of the whole list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from molmo_edge.processing.config import ProcessorConfig
from molmo_edge.processing.errors import InputError
from molmo_edge.processing.frame_sampling import (frames_at_times, sample_frame_indices,  # noqa: F401 (re-export)
                                                  sample_frame_times)
from molmo_edge.processing.pixels import as_rgb_uint8, normalise, patchify, resize_bilinear, to_nchw_float
from molmo_edge.processing.pooling import pooling_windows


@dataclass(frozen=True)
class VideoInputs:
    """The model inputs of a clip (or of one frame, n_frames = 1)."""

    pixel_values: torch.Tensor   # float32 [n_frames, P, patch_size²·3]
    token_pooling: torch.Tensor  # int64 [n_frames · rows · cols, K]: indices into the [n_frames·P] patches
    grid: tuple[int, int, int]   # (n_frames, rows, cols) in pooled tokens per frame

    @property
    def n_frames(self) -> int:
        return int(self.pixel_values.shape[0])

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[1] * self.grid[2]


def frame_pooling(cfg: ProcessorConfig) -> tuple[np.ndarray, int, int]:
    """Pooling windows of one frame: (indices int64 [rows·cols, pool_h·pool_w], rows, cols)."""
    n = cfg.patches_per_side
    return pooling_windows(np.arange(n * n, dtype=np.int64).reshape(n, n), *cfg.video_pooling)


def _frame_list(frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if isinstance(frames, np.ndarray) or not isinstance(frames, (list, tuple)):
        raise InputError("frames must be a list of RGB uint8 arrays [H, W, 3] or one array [N, H, W, 3]")
    if not frames:
        raise InputError("a video needs at least one frame")
    return [as_rgb_uint8(frame, what=f"frame {i}") for i, frame in enumerate(frames)]


def preprocess_frames(frames: Sequence[np.ndarray] | np.ndarray, cfg: ProcessorConfig) -> VideoInputs:
    """RGB uint8 frames -> VideoInputs for the whole clip (frames may differ in size)."""
    frames = _frame_list(frames)
    crop = cfg.crop_size
    pixel_values = []
    # Frames of one size are resized in one batch (the reference resizes the whole clip at once).
    start = 0
    while start < len(frames):
        stop = start + 1
        while stop < len(frames) and frames[stop].shape == frames[start].shape:
            stop += 1
        resized = resize_bilinear(to_nchw_float(np.stack(frames[start:stop])), crop, crop)
        squashed = normalise(resized, cfg.image_mean, cfg.image_std).permute(0, 2, 3, 1).contiguous()
        pixel_values.append(patchify(squashed, cfg.patch_size))      # [n, P, ps²·3]
        start = stop
    pixel_values = torch.cat(pixel_values)

    pooling, rows, cols = frame_pooling(cfg)
    n_frames = len(frames)
    # frame i's windows index its own patches: shift by i·P, keep −1 padding
    offsets = (np.arange(n_frames, dtype=np.int64) * cfg.patches_per_crop)[:, None, None]
    all_pooling = np.where(pooling[None] >= 0, pooling[None] + offsets, -1).reshape(-1, pooling.shape[1])
    return VideoInputs(pixel_values=pixel_values, token_pooling=torch.from_numpy(all_pooling),
                       grid=(n_frames, rows, cols))


def preprocess_frame(frame: np.ndarray, cfg: ProcessorConfig) -> VideoInputs:
    """One RGB uint8 frame -> VideoInputs with n_frames = 1 (what the stream's feature cache stores)."""
    return preprocess_frames([frame], cfg)


def concat_frames(items: Sequence[VideoInputs]) -> VideoInputs:
    """Join per-frame (or per-chunk) inputs into one clip; pooling indices shift past earlier patches."""
    if not items:
        raise InputError("concat_frames needs at least one item")
    grids = {item.grid[1:] for item in items}
    if len(grids) != 1:
        raise InputError(f"cannot join frames with different token grids {sorted(grids)}")
    pooling, offset = [], 0
    for item in items:
        pooling.append(torch.where(item.token_pooling >= 0, item.token_pooling + offset, item.token_pooling))
        offset += item.pixel_values.shape[0] * item.pixel_values.shape[1]
    rows, cols = items[0].grid[1:]
    return VideoInputs(pixel_values=torch.cat([item.pixel_values for item in items]),
                       token_pooling=torch.cat(pooling), grid=(sum(item.n_frames for item in items), rows, cols))
