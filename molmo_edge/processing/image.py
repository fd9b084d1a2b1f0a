"""One image -> crops, patches, pooling windows and the token grid (Molmo2 multi-crop tiling).

The image gives
* crop 0, the *global* (low-res) crop: the whole image squashed to crop_size × crop_size, and
* crops 1..n, the *high-res* crops: the image is resized once to a canvas of
  `tiling · window + margins` pixels and cut into overlapping crop_size squares with stride
  `window` (window = crop minus the two overlap margins). Patches that fall into another crop's
  overlap margin are dropped from the index grid, so each canvas patch is used exactly once.

Pooling windows (2×2 by default) over the global crop's patch grid come first, then those over the
high-res canvas grid, offset by P (the global crop's patches come first in the flat patch list).
The grid (lowres_rows, lowres_cols, highres_rows, highres_cols) says how many pooled tokens the
prompt holds for each part.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from molmo_edge.processing.config import ProcessorConfig
from molmo_edge.processing.pixels import as_rgb_uint8, normalise, patchify, resize_bilinear, to_nchw_float
from molmo_edge.processing.pooling import offset_indices, pooling_windows


@dataclass(frozen=True)
class ImageInputs:
    """The model inputs of one image."""

    pixel_values: torch.Tensor   # float32 [n_crops, P, patch_size²·3]; crop 0 is the global crop
    token_pooling: torch.Tensor  # int64 [T, K]: indices into the flattened [n_crops·P] patches, −1 = padding
    grid: tuple[int, int, int, int]  # (lowres_rows, lowres_cols, highres_rows, highres_cols) in pooled tokens

    @property
    def n_crops(self) -> int:
        return int(self.pixel_values.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.token_pooling.shape[0])


@dataclass(frozen=True)
class ImageBatch:
    """Several images of one prompt, concatenated in prompt order."""

    pixel_values: torch.Tensor   # float32 [Σ n_crops, P, patch_size²·3]
    token_pooling: torch.Tensor  # int64 [Σ T, K], indices offset into the concatenated patch list
    grids: torch.Tensor          # int64 [n_images, 4]


@dataclass(frozen=True)
class CropGeometry:
    tiling_rows: int
    tiling_cols: int
    canvas_height: int  # pixels
    canvas_width: int


def select_tiling(height: float, width: float, window_px: int, max_crops: int) -> tuple[int, int]:
    """The (rows, cols) crop grid for content of `height` × `width` pixels, each crop covering `window_px`.

    Candidates are all grids with rows·cols ≤ max_crops, ordered by (rows·cols, rows). The scale a
    candidate needs is min(rows·window/height, cols·window/width). If every candidate must shrink the
    image (scale < 1), the one shrinking least wins; otherwise the one needing the smallest upscale
    (≥ 1) wins; ties go to the earlier candidate. float32 arithmetic, as in the reference."""
    candidates = sorted(((r, c) for r in range(1, max_crops + 1) for c in range(1, max_crops + 1)
                         if r * c <= max_crops), key=lambda rc: (rc[0] * rc[1], rc[0]))
    sizes_px = np.array(candidates, dtype=np.float32) * np.float32(window_px)
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = (sizes_px / np.array([height, width], dtype=np.float32)).min(axis=1)
    if np.all(scales < 1):
        return candidates[int(np.argmax(scales))]
    upscales = np.where(scales < 1, np.float32(1e10), scales)
    return candidates[int(np.argmin(upscales))]


def crop_geometry(height: int, width: int, cfg: ProcessorConfig) -> CropGeometry:
    """Tiling and canvas size for an image of height × width pixels."""
    margin_px = sum(cfg.overlap_margins) * cfg.patch_size
    rows, cols = select_tiling(height - margin_px, width - margin_px, cfg.window_px, cfg.max_crops)
    return CropGeometry(rows, cols, rows * cfg.window_px + margin_px, cols * cfg.window_px + margin_px)


def canvas_patch_grid(geometry: CropGeometry, cfg: ProcessorConfig) -> np.ndarray:
    """Index grid [canvas_h/ps, canvas_w/ps] of the high-res crops' patches (index = crop·P + patch).

    A patch inside the left/top margin of a crop that has a neighbour on that side, or inside the
    right/bottom margin of a crop with a neighbour there, belongs to the neighbour and is dropped."""
    n = cfg.patches_per_side
    left, right = cfg.overlap_margins
    rows, cols = geometry.tiling_rows, geometry.tiling_cols
    index = np.arange(rows * cols * n * n, dtype=np.int64).reshape(rows, cols, n, n)
    keep = np.ones((rows, cols, n, n), dtype=bool)
    if left:
        keep[1:, :, :left, :] = False
        keep[:, 1:, :, :left] = False
    if right:
        keep[:-1, :, n - right:, :] = False
        keep[:, :-1, :, n - right:] = False
    # canvas order: crop row, patch row, crop col, patch col
    index = index.transpose(0, 2, 1, 3).reshape(-1)
    keep = keep.transpose(0, 2, 1, 3).reshape(-1)
    return index[keep].reshape(geometry.canvas_height // cfg.patch_size, geometry.canvas_width // cfg.patch_size)


def preprocess_image(image: np.ndarray, cfg: ProcessorConfig) -> ImageInputs:
    """RGB uint8 [H, W, 3] -> ImageInputs (global crop + overlapping high-res crops)."""
    image = as_rgb_uint8(image)
    pixels = to_nchw_float(image)                                      # [1, 3, H, W]
    geometry = crop_geometry(image.shape[0], image.shape[1], cfg)
    crop, window_px = cfg.crop_size, cfg.window_px

    canvas = normalise(resize_bilinear(pixels, geometry.canvas_height, geometry.canvas_width),
                       cfg.image_mean, cfg.image_std)                 # [1, 3, Hc, Wc]
    # [1, 3, rows, cols, crop, crop] -> [rows·cols, crop, crop, 3]
    tiles = canvas.unfold(2, crop, window_px).unfold(3, crop, window_px)
    tiles = tiles.permute(0, 2, 3, 4, 5, 1).reshape(-1, crop, crop, 3)

    global_crop = normalise(resize_bilinear(pixels, crop, crop), cfg.image_mean, cfg.image_std)
    global_crop = global_crop.permute(0, 2, 3, 1)                      # [1, crop, crop, 3]

    crops = torch.cat([global_crop, tiles], dim=0).contiguous()        # [1 + rows·cols, crop, crop, 3]
    pixel_values = patchify(crops, cfg.patch_size)                     # [n_crops, P, ps²·3]

    pool_h, pool_w = cfg.image_pooling
    n = cfg.patches_per_side
    low_pool, low_rows, low_cols = pooling_windows(np.arange(n * n, dtype=np.int64).reshape(n, n), pool_h, pool_w)
    high_pool, high_rows, high_cols = pooling_windows(canvas_patch_grid(geometry, cfg), pool_h, pool_w)
    pooling = np.concatenate([low_pool, offset_indices(high_pool, cfg.patches_per_crop)])
    return ImageInputs(pixel_values=pixel_values, token_pooling=torch.from_numpy(pooling),
                       grid=(low_rows, low_cols, high_rows, high_cols))


def image_grid(height: int, width: int, cfg: ProcessorConfig) -> tuple[int, int, int, int]:
    """The token grid of an image of this size, without touching pixels (for token budgeting)."""
    geometry = crop_geometry(height, width, cfg)
    pool_h, pool_w = cfg.image_pooling
    n = cfg.patches_per_side
    return (-(-n // pool_h), -(-n // pool_w),
            -(-(geometry.canvas_height // cfg.patch_size) // pool_h),
            -(-(geometry.canvas_width // cfg.patch_size) // pool_w))


def concat_images(images: Sequence[ImageInputs]) -> ImageBatch:
    """Concatenate images in prompt order; each image's pooling indices shift past the earlier patches."""
    if not images:
        raise ValueError("concat_images needs at least one image")
    pooling, offset = [], 0
    for item in images:
        pooling.append(torch.where(item.token_pooling >= 0, item.token_pooling + offset, item.token_pooling))
        offset += item.pixel_values.shape[0] * item.pixel_values.shape[1]
    return ImageBatch(pixel_values=torch.cat([item.pixel_values for item in images]),
                      token_pooling=torch.cat(pooling),
                      grids=torch.tensor([item.grid for item in images], dtype=torch.int64))
