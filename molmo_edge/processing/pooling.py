"""Pooling windows: which patches the connector averages and attends over for each visual token.

A grid of patch indices [h, w] (−1 marks a patch that is not there) is cut into windows of
pool_h × pool_w patches. When the grid does not divide evenly it is padded with −1: floor(pad/2)
rows/columns before, ceil(pad/2) after. Windows are listed row-major, and the patches inside a
window row-major too, giving pooling indices [rows · cols, pool_h · pool_w].
"""
from __future__ import annotations

import numpy as np


def pooling_windows(index_grid: np.ndarray, pool_h: int, pool_w: int) -> tuple[np.ndarray, int, int]:
    """index_grid int [h, w] -> (indices int64 [rows · cols, pool_h · pool_w], rows, cols)."""
    height, width = index_grid.shape
    rows, cols = -(-height // pool_h), -(-width // pool_w)
    pad_h, pad_w = rows * pool_h - height, cols * pool_w - width
    padded = np.full((rows * pool_h, cols * pool_w), -1, dtype=np.int64)
    padded[pad_h // 2: pad_h // 2 + height, pad_w // 2: pad_w // 2 + width] = index_grid
    # [rows, pool_h, cols, pool_w] -> [rows, cols, pool_h, pool_w] -> one row per window
    windows = padded.reshape(rows, pool_h, cols, pool_w).transpose(0, 2, 1, 3)
    return windows.reshape(rows * cols, pool_h * pool_w), rows, cols


def offset_indices(indices: np.ndarray, offset: int) -> np.ndarray:
    """Shift valid indices by `offset` (into a longer flattened patch list); −1 padding stays −1."""
    return np.where(indices >= 0, indices + offset, -1)
