"""Pixel-level steps shared by images and video frames: checking input, bilinear resize, normalise, patchify.

The resize reproduces the reference processor byte for byte: it converts the uint8 image to
float32, resizes with `torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
antialias=False)` (what torchvision's `resize` runs for float tensors), rounds and clamps back to
0..255, and only then normalises. Normalisation uses the reference's fused form
`(x - 255·mean) / (255·std)` so the float32 results are identical, not just close.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from molmo_edge.processing.errors import InputError


def as_rgb_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an RGB uint8 image [H, W, 3]; a grayscale [H, W] or [H, W, 1] image is repeated to 3 channels
    (as the reference's convert-to-RGB does)."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what} must be a numpy array of uint8 RGB pixels [H, W, 3], got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"{what} must have dtype uint8 (0..255), got {image.dtype}; convert with "
                         "np.clip(x, 0, 255).astype(np.uint8)")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise InputError(f"{what} must have shape [H, W, 3] (RGB) or [H, W] (gray), got {list(image.shape)}; "
                         "drop an alpha channel with image[..., :3]")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{what} is empty: shape {list(image.shape)}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def to_nchw_float(images_hwc: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, 3] (or a stack [N, H, W, 3]) -> float32 [N, 3, H, W], contiguous.

    Contiguous NCHW matters: interpolate picks a different (channels-last) kernel for permuted
    views, whose float results can differ in the last bit."""
    array = np.stack(images_hwc) if isinstance(images_hwc, list) else images_hwc
    if array.ndim == 3:
        array = array[None]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous().float()


def resize_bilinear(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize without antialiasing of float pixel values 0..255, rounded back to whole values.

    images: float32 [N, 3, H, W] -> float32 [N, 3, height, width] holding integers 0..255."""
    if images.shape[-2:] != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return images.round().clamp(0, 255)


def normalise(images: torch.Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]) -> torch.Tensor:
    """0..255 values -> (x/255 - mean) / std, computed in the reference's fused float32 form."""
    scale = 1.0 / (1 / 255)  # the reference folds rescale_factor = 1/255 into mean and std this way
    mean_255 = (torch.tensor(mean, dtype=torch.float32) * scale).view(-1, 1, 1)
    std_255 = (torch.tensor(std, dtype=torch.float32) * scale).view(-1, 1, 1)
    return (images.to(torch.float32) - mean_255) / std_255


def patchify(crops: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Crops [N, S, S, C] (channels last) -> patches [N, (S/ps)², ps·ps·C].

    Patches are in row-major order over the crop; inside a patch the floats run (row, col, channel)
    with channel fastest."""
    n, height, width, channels = crops.shape
    rows, cols = height // patch_size, width // patch_size
    patches = crops.reshape(n, rows, patch_size, cols, patch_size, channels)
    patches = patches.permute(0, 1, 3, 2, 4, 5)  # [N, rows, cols, ps, ps, C]
    return patches.reshape(n, rows * cols, patch_size * patch_size * channels)
