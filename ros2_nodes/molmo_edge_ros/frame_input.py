"""The node's camera input: subscription callbacks on one side, the inference thread on the other.

Callbacks only store messages (cheap checks, no decoding, never the model):
- colour images (`Image` or `CompressedImage`) go into a one-message slot, `deque(maxlen=1)`
  behind a lock: a new image replaces one the inference thread has not taken yet (counted as a
  dropped frame). The model therefore always sees the newest picture, however slow it is.
- depth images go into a short ring buffer with their stamps.

The inference thread calls `take()`: it decodes the newest image to RGB, checks its size, and
pairs it with the depth image nearest in stamp (within `max_depth_offset_ns`), converted to
metres. Decoding there, not in the callback, means the frames that are overwritten unseen cost
nothing.

Every bad input raises an `ImageConversionError` subclass after being counted, so the node can log
it (throttled) and keep serving: an unsupported encoding, a data size that does not match the
header, an undecodable JPEG/PNG, a frame whose size differs from the stream's
(`FrameSizeChangeError`). A new frame size that persists for `adopt_size_after` images in a row is
adopted (a camera that was reconfigured); `take()` reports it in `CameraFrame.size_changed` so the
node can restart the model's window.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from molmo_edge.calibration.depth import DEPTH_M_PER_UNIT, depth_image_to_m

from .headers import copy_header, stamp_to_ns
from .image_conversion import (
    ENCODINGS,
    ImageConversionError,
    ImageDataSizeError,
    UnsupportedEncodingError,
    compressed_to_rgb,
    encoding_info,
    image_to_numpy,
    image_to_rgb,
)

T = TypeVar("T")

COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = tuple(e for e in DEPTH_M_PER_UNIT if e in ENCODINGS)  # 16UC1, mono16, 32FC1


class FrameSizeChangeError(ImageConversionError):
    """A frame whose size differs from the stream's (refused until the new size persists)."""


class LatestSlot(Generic[T]):
    """Holds at most one item, the newest. `put` from any thread, `take` from one consumer."""

    def __init__(self) -> None:
        self._items: deque[T] = deque(maxlen=1)
        self._ready = threading.Condition(threading.Lock())

    def put(self, item: T) -> bool:
        """Store `item`; True when it replaced one nobody took (a dropped frame)."""
        with self._ready:
            replaced = bool(self._items)
            self._items.append(item)
            self._ready.notify()
            return replaced

    def take(self, timeout_s: float | None = None) -> T | None:
        """The newest item, removing it; None when nothing arrives within `timeout_s`."""
        with self._ready:
            if not self._items:
                self._ready.wait(timeout_s)
            return self._items.popleft() if self._items else None

    def clear(self) -> None:
        with self._ready:
            self._items.clear()

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)


class FrameSizeGuard:
    """Pins the stream's frame size; a different size is refused until it has been seen on
    `adopt_after` frames in a row (one odd frame is an error, a steady new size is a new camera mode)."""

    def __init__(self, adopt_after: int = 5) -> None:
        if adopt_after < 1:
            raise ValueError(f"adopt_after must be >= 1, got {adopt_after}")
        self.adopt_after = adopt_after
        self.size: tuple[int, int] | None = None  # (width_px, height_px)
        self._candidate: tuple[int, int] | None = None
        self._candidate_count = 0

    def check(self, width_px: int, height_px: int) -> bool:
        """True when a frame of this size may go on; True with a changed `self.size` when a new size
        was just adopted; raises FrameSizeChangeError when it is refused."""
        size = (int(width_px), int(height_px))
        if self.size is None or size == self.size:
            self.size = size
            self._candidate, self._candidate_count = None, 0
            return True
        if size == self._candidate:
            self._candidate_count += 1
        else:
            self._candidate, self._candidate_count = size, 1
        if self._candidate_count >= self.adopt_after:
            self.size = size
            self._candidate, self._candidate_count = None, 0
            return True
        raise FrameSizeChangeError(
            f"frame is {size[0]}x{size[1]} but the stream is {self.size[0]}x{self.size[1]}; frame dropped "
            f"(a new size is adopted after {self.adopt_after} frames in a row)"
        )

    def reset(self) -> None:
        self.size, self._candidate, self._candidate_count = None, None, 0


@dataclass(frozen=True)
class CameraFrame:
    """One colour frame ready for the pipeline, with what the outputs need to be stamped."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    header: Header  # the source image's header (stamp, frame_id), a copy
    stamp_ns: int  # header stamp; the receive time when the image came unstamped
    received_monotonic_ns: int  # when the callback stored it (its age is measured from here)
    depth_m: np.ndarray | None = None  # float32 [H, W] metres (NaN = no measurement), registered
    depth_offset_ms: float | None = None  # |depth stamp - image stamp|
    depth_problem: str | None = None  # why a depth image near in time was not used
    size_changed: bool = False  # the stream's frame size was just changed to this frame's

    @property
    def width_px(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height_px(self) -> int:
        return int(self.rgb.shape[0])

    def age_ms(self, now_monotonic_ns: int | None = None) -> float:
        now = time.monotonic_ns() if now_monotonic_ns is None else now_monotonic_ns
        return (now - self.received_monotonic_ns) / 1e6


@dataclass(frozen=True)
class _Stored:
    msg: Image | CompressedImage
    stamp_ns: int
    received_monotonic_ns: int


INPUT_COUNTERS = ("frames_received", "frames_taken", "dropped_frames", "stale_frames", "bad_images",
                  "bad_encoding", "bad_data_size", "undecodable", "frame_size_changes", "frame_size_adopted",
                  "depth_received", "bad_depth", "depth_unmatched", "depth_size_mismatch", "unstamped_images",
                  "compressed_ignored")

# A camera behind image_transport publishes every frame twice (raw and /compressed). While raw
# images keep coming, compressed ones are ignored: same pictures, and raw costs no decoding.
PREFER_RAW_FOR_NS = 1_000_000_000


DEPTH_LIVE_NS = 1_000_000_000  # a depth stream with nothing for 1 s is not waited for


class FrameInput:
    """The slot, the depth buffer and their counters (see the module docstring). Thread-safe."""

    def __init__(self, max_depth_offset_ms: float = 100.0, depth_buffer_size: int = 16,
                 adopt_size_after: int = 5, depth_wait_ms: float = 30.0) -> None:
        self.max_depth_offset_ns = int(max_depth_offset_ms * 1e6)
        # A camera publishes colour and depth together, but their callbacks run on different
        # executor threads in either order: an image taken the moment it arrives may have its
        # depth image still in flight. take() then waits up to this long (from the image's
        # arrival) for a depth image stamped at or after it; 0 turns the wait off.
        self.depth_wait_ns = int(depth_wait_ms * 1e6)
        self._slot: LatestSlot[_Stored] = LatestSlot()
        self._depth: deque[_Stored] = deque(maxlen=depth_buffer_size)
        self._guard = FrameSizeGuard(adopt_size_after)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(INPUT_COUNTERS, 0)
        self._last_raw_monotonic_ns: int | None = None

    # -- callbacks ----------------------------------------------------------------------------------
    def offer_image(self, msg: Image, received_monotonic_ns: int | None = None) -> None:
        """A raw colour image: checked (encoding, data size) and stored; raises after counting."""
        self._count("frames_received")
        try:
            if msg.encoding not in COLOUR_ENCODINGS:
                raise UnsupportedEncodingError(
                    f"image encoding {msg.encoding!r} cannot be a camera frame; publish one of "
                    f"{', '.join(COLOUR_ENCODINGS)} (or a CompressedImage)")
            _check_data_size(msg)
        except ImageConversionError as exc:
            self._count_bad(exc)
            raise
        self._last_raw_monotonic_ns = time.monotonic_ns()
        self._store(msg, received_monotonic_ns)

    def offer_compressed(self, msg: CompressedImage, received_monotonic_ns: int | None = None) -> None:
        """A JPEG/PNG image: stored as it is (decoded only if the inference thread takes it)."""
        last_raw = self._last_raw_monotonic_ns
        if last_raw is not None and time.monotonic_ns() - last_raw < PREFER_RAW_FOR_NS:
            self._count("compressed_ignored")
            return
        self._count("frames_received")
        if not msg.data:
            exc = ImageDataSizeError("compressed image has no data")
            self._count_bad(exc)
            raise exc
        self._store(msg, received_monotonic_ns)

    def offer_depth(self, msg: Image) -> None:
        """A depth image registered to the colour image (16UC1 mm, 32FC1 m)."""
        self._count("depth_received")
        try:
            if msg.encoding not in DEPTH_ENCODINGS:
                raise UnsupportedEncodingError(
                    f"depth encoding {msg.encoding!r} is not supported; publish 16UC1 (mm) or 32FC1 (m)")
            _check_data_size(msg)
        except ImageConversionError:
            self._count("bad_depth")
            raise
        with self._lock:
            self._depth.append(_Stored(msg, stamp_to_ns(msg.header.stamp), time.monotonic_ns()))

    # -- the inference thread ----------------------------------------------------------------------
    def take(self, timeout_s: float | None = None, max_age_ms: float | None = None) -> CameraFrame | None:
        """The newest image as RGB with its depth; None when none arrived in `timeout_s` or it was
        older than `max_age_ms`. Raises (after counting) for an image that cannot be used."""
        stored = self._slot.take(timeout_s)
        if stored is None:
            return None
        if max_age_ms is not None and (time.monotonic_ns() - stored.received_monotonic_ns) / 1e6 > max_age_ms:
            self._count("stale_frames")
            return None
        try:
            msg = stored.msg
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ImageConversionError as exc:
            self._count_bad(exc)
            raise
        height, width = rgb.shape[:2]
        with self._lock:
            previous = self._guard.size
            try:
                self._guard.check(width, height)
            except FrameSizeChangeError:
                self._counts["frame_size_changes"] += 1
                self._counts["bad_images"] += 1
                raise
            size_changed = previous is not None and previous != self._guard.size
            if size_changed:
                self._counts["frame_size_adopted"] += 1
            self._counts["frames_taken"] += 1
        header = copy_header(stored.msg.header)
        self._wait_for_depth_at(stored)
        depth_m, offset_ms, problem = self._paired_depth(stored.stamp_ns, (height, width))
        return CameraFrame(rgb=rgb, header=header, stamp_ns=stored.stamp_ns,
                           received_monotonic_ns=stored.received_monotonic_ns, depth_m=depth_m,
                           depth_offset_ms=offset_ms, depth_problem=problem, size_changed=size_changed)

    def clear(self) -> None:
        """Forget stored images and the pinned frame size (deactivation); counters stay."""
        self._slot.clear()
        self._last_raw_monotonic_ns = None
        with self._lock:
            self._depth.clear()
            self._guard.reset()

    @property
    def pending(self) -> bool:
        """Whether an image waits in the slot (not yet taken by the inference thread)."""
        return len(self._slot) > 0

    @property
    def has_depth(self) -> bool:
        with self._lock:
            return bool(self._depth)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    # -- internals -----------------------------------------------------------------------------------
    def _store(self, msg: Image | CompressedImage, received_monotonic_ns: int | None) -> None:
        received = time.monotonic_ns() if received_monotonic_ns is None else received_monotonic_ns
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if stamp_ns == 0:
            # An unstamped image (some drivers): its arrival on the wall clock stands in for capture.
            self._count("unstamped_images")
            stamp_ns = time.time_ns()
        if self._slot.put(_Stored(msg, stamp_ns, received)):
            self._count("dropped_frames")

    def _wait_for_depth_at(self, stored: _Stored) -> None:
        """Wait (polling, ≤ depth_wait_ns after the image arrived) while the depth stream is live
        but its newest image is older than this colour image. A depth stream that has gone quiet
        (nothing received for DEPTH_LIVE_NS) or never started costs no wait."""
        deadline = stored.received_monotonic_ns + self.depth_wait_ns
        while time.monotonic_ns() < deadline:
            with self._lock:
                newest = self._depth[-1] if self._depth else None
            if (newest is None or newest.stamp_ns >= stored.stamp_ns
                    or stored.received_monotonic_ns - newest.received_monotonic_ns > DEPTH_LIVE_NS):
                return
            time.sleep(0.001)

    def _paired_depth(self, stamp_ns: int, size_hw: tuple[int, int]
                      ) -> tuple[np.ndarray | None, float | None, str | None]:
        """(depth in metres [H, W], offset ms, None) or (None, None, why not / None without depth)."""
        with self._lock:
            candidates = list(self._depth)
        if not candidates:
            return None, None, None
        nearest = min(candidates, key=lambda d: abs(d.stamp_ns - stamp_ns))
        offset_ns = abs(nearest.stamp_ns - stamp_ns)
        if offset_ns > self.max_depth_offset_ns:
            self._count("depth_unmatched")
            return None, None, (f"the nearest depth image is {offset_ns / 1e6:.0f} ms from the frame "
                                f"(max_depth_offset_ms {self.max_depth_offset_ns / 1e6:.0f})")
        msg = nearest.msg
        if (int(msg.height), int(msg.width)) != size_hw:
            self._count("depth_size_mismatch")
            return None, None, (f"depth image is {msg.width}x{msg.height} but the colour image is "
                                f"{size_hw[1]}x{size_hw[0]}; publish a depth image registered to the colour "
                                "image (e.g. aligned_depth_to_color)")
        depth_m = depth_image_to_m(image_to_numpy(msg), msg.encoding)  # float32 [H, W], NaN = invalid
        return depth_m, offset_ns / 1e6, None

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def _count_bad(self, exc: ImageConversionError) -> None:
        kind = {UnsupportedEncodingError: "bad_encoding", ImageDataSizeError: "bad_data_size"}.get(
            type(exc), "undecodable")
        with self._lock:
            self._counts["bad_images"] += 1
            self._counts[kind] += 1


def _check_data_size(msg: Image) -> None:
    """The header's height x step must be the data length and a row must fit in `step` (no copy)."""
    info = encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDataSizeError(f"image is {width}x{height}: nothing to read")
    row_bytes = width * info.channels * info.dtype.itemsize
    if step < row_bytes:
        raise ImageDataSizeError(f"step {step} is shorter than one row of {width} {msg.encoding} pixels "
                                 f"({row_bytes} bytes)")
    if len(msg.data) != step * height:
        raise ImageDataSizeError(f"{msg.encoding} image {width}x{height} with step {step} needs {step * height} "
                                 f"bytes, the message has {len(msg.data)}")


class MediaClock:
    """Image stamps → the pipeline's media time `t_s` (seconds since the first frame).

    A stamp more than `backwards_tolerance_s` before the previous one (a bag that looped, a
    camera restart, sim time reset) restarts the clock at 0: the pipeline sees time go back and
    starts a fresh window, as it must."""

    def __init__(self, backwards_tolerance_s: float = 1.0) -> None:
        self.backwards_tolerance_ns = int(backwards_tolerance_s * 1e9)
        self._origin_ns: int | None = None
        self._last_ns: int | None = None
        self.restarts = 0

    def t_s(self, stamp_ns: int) -> float:
        if self._origin_ns is None or (self._last_ns is not None
                                       and stamp_ns < self._last_ns - self.backwards_tolerance_ns):
            if self._origin_ns is not None:
                self.restarts += 1
            self._origin_ns = stamp_ns
        self._last_ns = stamp_ns
        return (stamp_ns - self._origin_ns) / 1e9

    def reset(self) -> None:
        self._origin_ns = self._last_ns = None
