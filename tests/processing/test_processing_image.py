"""Image tiling, resize, patches and pooling against transformers' Molmo2 image processor code."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.processing import InputError, ProcessorConfig, concat_images, image_grid, preprocess_image
from molmo_edge.processing.image import crop_geometry, select_tiling
from molmo_edge.processing.pixels import normalise, patchify, resize_bilinear, to_nchw_float
from molmo_edge.processing.pooling import pooling_windows

from .processing_reference import ReferenceImageProcessor, reference_kwargs, ref_image

SMALL = ProcessorConfig(crop_size=56, patch_size=14, overlap_margins=(1, 1), max_crops=6)

# (height, width, max_crops): tiny, 1×1, extreme aspect ratios, exact crop size, camera sizes, huge
IMAGE_SIZES = [(1, 1, 8), (1, 1, 1), (5, 300, 8), (300, 5, 8), (378, 378, 8), (379, 378, 8), (100, 150, 8),
               (480, 640, 8), (720, 1280, 24), (2000, 30, 8), (30, 2000, 8), (57, 1000, 3), (4000, 3000, 8)]


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("height,width,max_crops", IMAGE_SIZES + [(-50, 200, 8), (0, 0, 8), (10**6, 7, 8)])
def test_select_tiling_matches_reference(height, width, max_crops):
    # The reference's height/width may be negative (image smaller than the margins): kept on purpose.
    assert select_tiling(height, width, 266, max_crops) == ref_image.select_tiling(height, width, 266, max_crops)


@settings(max_examples=200, deadline=None)
@given(height=st.integers(-300, 5000), width=st.integers(-300, 5000), window=st.integers(1, 400),
       max_crops=st.integers(1, 24))
def test_select_tiling_matches_reference_everywhere(height, width, window, max_crops):
    assert select_tiling(height, width, window, max_crops) == ref_image.select_tiling(height, width, window, max_crops)


@pytest.mark.parametrize("height,width,max_crops", IMAGE_SIZES)
@pytest.mark.parametrize("cfg", [ProcessorConfig(), SMALL, ProcessorConfig(overlap_margins=(2, 5))],
                         ids=["default", "small", "asymmetric-margins"])
def test_crop_geometry_matches_reference(height, width, max_crops, cfg):
    cfg = cfg.model_copy(update={"max_crops": max_crops})
    ours = crop_geometry(height, width, cfg)
    theirs = ref_image.compute_crop_geometry(height, width, max_crops, list(cfg.overlap_margins), cfg.crop_size,
                                             cfg.patch_size)
    assert (ours.tiling_rows, ours.tiling_cols, ours.canvas_height, ours.canvas_width) == tuple(theirs)


@settings(max_examples=150, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), pool_h=st.integers(1, 4), pool_w=st.integers(1, 4),
       seed=st.integers(0, 10**6))
def test_pooling_windows_match_reference(height, width, pool_h, pool_w, seed):
    grid = np.random.default_rng(seed).integers(-1, 5000, (height, width)).astype(np.int64)
    ours, rows, cols = pooling_windows(grid, pool_h, pool_w)
    theirs, ref_rows, ref_cols = ref_image.arange_for_pooling(torch.from_numpy(grid), pool_h, pool_w)
    assert (rows, cols) == (ref_rows, ref_cols)
    np.testing.assert_array_equal(ours, theirs.numpy())


@pytest.mark.parametrize("n,size,patch", [(1, 14, 14), (3, 56, 14), (2, 378, 14), (1, 32, 16)])
def test_patchify_matches_reference(n, size, patch):
    crops = torch.randn(n, size, size, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(patchify(crops, patch), ref_image.batch_pixels_to_patches(crops, patch))


def test_patch_vector_is_row_col_channel_with_channel_fastest():
    crop = torch.arange(28 * 28 * 3, dtype=torch.float32).reshape(1, 28, 28, 3)
    patches = patchify(crop, 14)
    # patch (row 1, col 0) is patch index 2; its float k is pixel (14 + k // 42, (k // 3) % 14), channel k % 3
    k = 100
    assert patches[0, 2, k] == crop[0, 14 + k // 42, (k // 3) % 14, k % 3]


def _bilinear_reference_numpy(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Textbook bilinear resampling with half-pixel centres and edge clamping (no antialias)."""
    in_h, in_w = image.shape[:2]

    def axis(out_n, in_n):
        src = np.maximum((np.arange(out_n) + 0.5) * (in_n / out_n) - 0.5, 0.0)
        low = np.minimum(np.floor(src).astype(int), in_n - 1)
        high = np.minimum(low + 1, in_n - 1)
        return low, high, src - low

    y0, y1, fy = axis(out_h, in_h)
    x0, x1, fx = axis(out_w, in_w)
    img = image.astype(np.float64)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bottom = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


@pytest.mark.parametrize("in_size,out_size", [((7, 5), (21, 13)), ((40, 30), (11, 17)), ((9, 9), (9, 9)),
                                              ((1, 1), (4, 6))])
def test_resize_is_plain_bilinear_without_antialias(in_size, out_size):
    image = _random_image(*in_size, seed=3)
    ours = resize_bilinear(to_nchw_float(image), *out_size)[0].permute(1, 2, 0).numpy()
    expected = np.clip(np.round(_bilinear_reference_numpy(image, *out_size)), 0, 255)
    # float32 vs float64 arithmetic may flip a value sitting on .5 before rounding
    assert np.abs(ours - expected).max() <= 1
    assert (ours != expected).mean() < 0.01


@pytest.mark.parametrize("in_size,out_size", [((100, 150), (378, 378)), ((480, 640), (644, 910)),
                                              ((378, 378), (378, 378)), ((3, 2000), (378, 378))])
def test_resize_and_normalise_match_reference(in_size, out_size):
    image = _random_image(*in_size, seed=1)
    ours = normalise(resize_bilinear(to_nchw_float(image), *out_size), (0.5,) * 3, (0.5,) * 3)
    kwargs = reference_kwargs(ProcessorConfig())
    theirs = ref_image.resize_and_normalize_image(
        ReferenceImageProcessor(ProcessorConfig()), torch.from_numpy(image).permute(2, 0, 1).contiguous()[None],
        list(out_size), **kwargs)
    assert torch.equal(ours, theirs)


def _reference_single(image: np.ndarray, cfg: ProcessorConfig):
    x = torch.from_numpy(image).permute(2, 0, 1).contiguous()[None]
    grid, patches, pooling = ReferenceImageProcessor(cfg)._image_batch_to_patches_and_grids(
        x, max_crops=cfg.max_crops, overlap_margins=list(cfg.overlap_margins), crop_size=cfg.crop_size,
        image_patch_size=cfg.patch_size, image_pooling_h=cfg.image_pooling[0], image_pooling_w=cfg.image_pooling[1],
        **reference_kwargs(cfg))
    return grid[0], patches[0], pooling[0]


@pytest.mark.parametrize("height,width,max_crops", IMAGE_SIZES[:-1])
def test_full_image_pipeline_matches_reference(height, width, max_crops):
    cfg = ProcessorConfig(max_crops=max_crops)
    image = _random_image(height, width, seed=height + width)
    ours = preprocess_image(image, cfg)
    grid, patches, pooling = _reference_single(image, cfg)
    assert ours.grid == tuple(grid.tolist())
    assert ours.token_pooling.dtype == torch.int64 and ours.pixel_values.dtype == torch.float32
    assert torch.equal(ours.token_pooling, pooling.long())
    assert torch.equal(ours.pixel_values, patches)
    assert image_grid(height, width, cfg) == ours.grid


@pytest.mark.parametrize("cfg", [SMALL, ProcessorConfig(crop_size=56, overlap_margins=(0, 0), image_pooling=(3, 3)),
                                 ProcessorConfig(overlap_margins=(2, 5), image_pooling=(3, 2), max_crops=4)],
                         ids=["small", "no-margin-3x3", "asymmetric"])
@pytest.mark.parametrize("height,width", [(1, 1), (60, 200), (333, 47), (500, 500)])
def test_image_pipeline_matches_reference_for_other_settings(cfg, height, width):
    image = _random_image(height, width, seed=7)
    ours = preprocess_image(image, cfg)
    grid, patches, pooling = _reference_single(image, cfg)
    assert ours.grid == tuple(grid.tolist())
    assert torch.equal(ours.token_pooling, pooling.long())
    assert torch.equal(ours.pixel_values, patches)


def test_every_high_res_canvas_patch_is_pooled_exactly_once():
    cfg = ProcessorConfig(max_crops=6)
    ours = preprocess_image(_random_image(500, 900), cfg)
    high = ours.token_pooling[ours.grid[0] * ours.grid[1]:]
    used = high[high >= 0]
    assert len(used) == len(set(used.tolist()))
    # the global crop's patches are 0..P-1 and never appear in the high-res windows
    assert used.min() >= cfg.patches_per_crop and used.max() < ours.n_crops * cfg.patches_per_crop


def test_multi_image_concatenation_matches_reference():
    cfg = ProcessorConfig(max_crops=4)
    images = [_random_image(120, 200, 1), _random_image(400, 300, 2), _random_image(120, 200, 3)]
    batch = concat_images([preprocess_image(image, cfg) for image in images])
    theirs = ReferenceImageProcessor(cfg)(images)
    assert torch.equal(batch.pixel_values, theirs["pixel_values"])
    assert torch.equal(batch.token_pooling, theirs["image_token_pooling"].long())
    assert torch.equal(batch.grids, theirs["image_grids"])


def test_grayscale_image_is_repeated_to_rgb():
    gray = _random_image(40, 60)[:, :, 0]
    ours = preprocess_image(gray, SMALL)
    rgb = preprocess_image(np.repeat(gray[:, :, None], 3, axis=2), SMALL)
    assert torch.equal(ours.pixel_values, rgb.pixel_values)


@pytest.mark.parametrize("bad,message", [
    (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
    (np.zeros((10, 10, 4), dtype=np.uint8), "alpha"),
    (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
    ([[1, 2], [3, 4]], "numpy array"),
])
def test_bad_images_get_a_clear_error(bad, message):
    with pytest.raises(InputError, match=message):
        preprocess_image(bad, SMALL)
