"""`Frame`: one decoded picture from a source, with the clocks needed downstream.

Three clocks travel with every frame, each with a different job:
- `stamp_ns`: wall-clock capture time (`time.time_ns()`), copied into every Event and ROS header.
- `t_s`: media time in seconds. For files it is the file's own clock (so sampling a file gives
  the same frames however fast we decode it); for live sources it is seconds since `open()`.
- `monotonic_ns`: `time.monotonic_ns()` when the frame was captured; only used to tell how old
  a frame is (`age_ms`), because the wall clock can jump.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray  # uint8 [H, W, 3], RGB order (OpenCV's BGR is converted by the readers)
    stamp_ns: int
    t_s: float
    index: int  # position in the source's stream (file frame number; counts corrupt frames too)
    source_id: str
    monotonic_ns: int = field(default_factory=time.monotonic_ns)

    @property
    def width_px(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height_px(self) -> int:
        return int(self.rgb.shape[0])

    def age_ms(self, now_monotonic_ns: int | None = None) -> float:
        """Milliseconds since this frame was captured (monotonic clock)."""
        now = time.monotonic_ns() if now_monotonic_ns is None else now_monotonic_ns
        return (now - self.monotonic_ns) / 1e6


def rgb_problem(image: object) -> str | None:
    """Why `image` cannot be used as a frame, or None when it is a valid uint8 [H, W, 3] array.

    Readers call this on every decoded picture: a decoder that hands back None, a grey or
    4-channel array it should have converted, or an empty array is a corrupt frame, not a crash.
    """
    if image is None:
        return "the decoder returned no image"
    if not isinstance(image, np.ndarray):
        return f"expected a numpy array, got {type(image).__name__}"
    if image.dtype != np.uint8:
        return f"expected dtype uint8, got {image.dtype}"
    if image.ndim != 3 or image.shape[2] != 3:
        return f"expected shape [H, W, 3], got {list(image.shape)}"
    if image.shape[0] == 0 or image.shape[1] == 0:
        return f"empty image of shape {list(image.shape)}"
    return None
