"""Frame readers: the device-specific half of a source (open, decode one picture, close).

A reader is synchronous and has no threads, no retry logic and no clocks of its own beyond the
media time of files; `molmo_edge.stream.sources` wraps a reader with the parts every input shares
(capture thread, latest-frame slot, reconnect with back-off, corrupt-frame counting).

The reader contract, which the wrappers rely on:
- `open()` raises `SourceError` when the input cannot be opened. Calling it again after `close()`
  reopens the input and, for files and folders, resumes at the next unread frame (this is how a
  reconnect continues where it stopped).
- `read()` returns a `RawFrame`, or None at a normal end of stream; it raises `CorruptFrameError`
  for one picture that cannot be decoded (the stream goes on), and `SourceError` when the input
  itself has failed (camera unplugged, connection dropped), which triggers a reconnect.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molmo_edge.errors import SourceError
from molmo_edge.stream.frame import rgb_problem

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


class CorruptFrameError(SourceError):
    """One picture could not be decoded; the source counts it, skips it and goes on."""


@dataclass(frozen=True)
class RawFrame:
    rgb: np.ndarray  # uint8 [H, W, 3]
    index: int
    t_s: float | None  # media time from the input's own clock; None for live inputs


class FrameReader(ABC):
    # True when the input produces frames at its own pace (camera, network stream); False when it
    # can be read as fast as we like (file, folder, synthetic renderer).
    live: bool = False
    description: str = "source"

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> RawFrame | None: ...

    @abstractmethod
    def close(self) -> None: ...


def _cv2():
    import cv2  # imported here so that importing molmo_edge.stream stays cheap

    return cv2


def _to_rgb(image: np.ndarray | None, what: str) -> np.ndarray:
    """OpenCV BGR / grey / BGRA picture -> contiguous RGB uint8 [H, W, 3]; corrupt otherwise."""
    cv2 = _cv2()
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.size:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        elif image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    problem = rgb_problem(image)
    if problem is not None:
        raise CorruptFrameError(f"{what}: {problem}")
    return image


class _OpenCvLiveReader(FrameReader):
    """A `cv2.VideoCapture` of something that streams at its own pace (camera, URL, GStreamer)."""

    live = True

    def __init__(self) -> None:
        self._capture = None
        self._index = 0

    @abstractmethod
    def _make_capture(self): ...

    def open(self) -> None:
        capture = self._make_capture()
        if capture is None or not capture.isOpened():
            if capture is not None:
                capture.release()
            raise SourceError(f"cannot open {self.description}: {self._open_hint()}")
        self._capture = capture

    def _open_hint(self) -> str:
        return "check that it exists and that no other program holds it"

    def read(self) -> RawFrame | None:
        if self._capture is None:
            raise SourceError(f"{self.description} is not open")
        ok, image = self._capture.read()
        if not ok:
            # A live input that stops giving pictures has gone away (unplugged, stream dropped);
            # the source reconnects. A single undecodable picture comes back as ok with bad data.
            raise SourceError(f"{self.description} stopped delivering frames")
        index = self._index
        self._index += 1
        return RawFrame(_to_rgb(image, f"{self.description} frame {index}"), index, None)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class CameraReader(_OpenCvLiveReader):
    def __init__(self, device: int | str, width_px: int | None = None, height_px: int | None = None,
                 fps: float | None = None) -> None:
        super().__init__()
        self.device = device
        self.width_px, self.height_px, self.fps = width_px, height_px, fps
        self.description = f"camera {device}"

    def _make_capture(self):
        cv2 = _cv2()
        capture = cv2.VideoCapture(self.device)
        if capture.isOpened():
            # Requests only: the driver picks the nearest mode it supports.
            if self.width_px:
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width_px)
            if self.height_px:
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height_px)
            if self.fps:
                capture.set(cv2.CAP_PROP_FPS, self.fps)
            # Keep the driver's own queue short so that "latest" really is the latest.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture

    def _open_hint(self) -> str:
        return "is it plugged in, and readable by this user (e.g. in the 'video' group)?"


class UrlReader(_OpenCvLiveReader):
    """RTSP / HTTP(S) / RTMP / UDP streams through OpenCV's FFmpeg backend."""

    def __init__(self, url: str, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0) -> None:
        super().__init__()
        self.url = url
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.description = f"stream {redact_url(url)}"

    def _make_capture(self):
        cv2 = _cv2()
        # Timeouts so that a dead server makes read() fail (and the source reconnect) instead of
        # hanging the capture thread forever.
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)

    def _open_hint(self) -> str:
        return "is the server up and the address right?"


class GStreamerReader(_OpenCvLiveReader):
    def __init__(self, pipeline: str) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.description = f"GStreamer pipeline '{pipeline}'"

    def _make_capture(self):
        cv2 = _cv2()
        if not opencv_has_gstreamer():
            raise SourceError(
                "this OpenCV build has no GStreamer support, so GStreamer pipelines cannot be opened; "
                "install an OpenCV built with GStreamer (e.g. the system python3-opencv) or pass a "
                "camera index, file or URL instead"
            )
        return cv2.VideoCapture(self.pipeline, cv2.CAP_GSTREAMER)

    def _open_hint(self) -> str:
        return "check the pipeline with gst-launch-1.0; it must end in 'appsink'"


def opencv_has_gstreamer() -> bool:
    info = _cv2().getBuildInformation()
    match = re.search(r"GStreamer:\s*(\S+)", info)
    return bool(match and match.group(1).upper().startswith("YES"))


def redact_url(url: str) -> str:
    """Hide a password in rtsp://user:password@host URLs before it reaches logs and errors."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", url)


class VideoFileReader(FrameReader):
    """Every frame of a video file, in order, stamped with the file's own clock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = f"video file {self.path}"
        self._capture = None
        self._next_index = 0
        self.frame_count: int | None = None
        self.fps: float | None = None

    def open(self) -> None:
        cv2 = _cv2()
        if not self.path.is_file():
            raise SourceError(f"no such video file: {self.path}")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot decode {self.path}: not a video format this OpenCV build reads")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        self.frame_count = count if count > 0 else None
        self.fps = fps if fps > 0 else None
        if self._next_index > 0:
            # Reopened after a failure: continue with the first frame not yet read.
            capture.set(cv2.CAP_PROP_POS_FRAMES, self._next_index)
        self._capture = capture

    def read(self) -> RawFrame | None:
        cv2 = _cv2()
        if self._capture is None:
            raise SourceError(f"{self.description} is not open")
        if self.frame_count is not None and self._next_index >= self.frame_count:
            return None
        index = self._next_index
        ok, image = self._capture.read()
        self._next_index += 1
        if not ok:
            if self.frame_count is None:
                return None  # no declared length: the first failure is the end
            # The container says more frames follow, so this one failed to decode; OpenCV moves
            # on to the next packet (checked with a damaged MJPG .avi).
            raise CorruptFrameError(f"{self.description}: frame {index} could not be decoded")
        # POS_MSEC after a read is the presentation time of the frame just read; it stays right
        # after a corrupt frame and for variable frame rates. Frame 0 is at 0 ms.
        position_ms = float(self._capture.get(cv2.CAP_PROP_POS_MSEC))
        if position_ms > 0 or index == 0 or self.fps is None:
            t_s = position_ms / 1000.0
        else:
            t_s = index / self.fps
        return RawFrame(_to_rgb(image, f"{self.description} frame {index}"), index, t_s)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _natural_key(path: Path) -> list:
    # frame2.png before frame10.png
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class ImageFolderReader(FrameReader):
    """The images of a folder in natural sort order, `fps` apart in media time."""

    def __init__(self, folder: str | Path, fps: float = 30.0) -> None:
        if fps <= 0:
            raise SourceError(f"image folder fps must be positive, got {fps}")
        self.folder = Path(folder)
        self.fps = fps
        self.description = f"image folder {self.folder}"
        self.files: list[Path] = []
        self._next_index = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"no such folder: {self.folder}")
        self.files = sorted((p for p in self.folder.iterdir()
                             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=_natural_key)
        if not self.files:
            raise SourceError(f"{self.folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")

    def read(self) -> RawFrame | None:
        cv2 = _cv2()
        index = self._next_index
        if index >= len(self.files):
            return None
        self._next_index += 1
        path = self.files[index]
        try:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        except cv2.error as exc:
            raise CorruptFrameError(f"{path}: {exc}") from exc
        if image is None:
            raise CorruptFrameError(f"{path} could not be decoded (truncated or not an image)")
        return RawFrame(_to_rgb(image, str(path)), index, index / self.fps)

    def close(self) -> None:
        pass


class SyntheticReader(FrameReader):
    """Frames rendered by `molmo_edge.training.scenes.SceneSimulator`, `fps` apart in scene time."""

    def __init__(self, seed: int, width_px: int = 320, height_px: int = 240, fps: float = 30.0,
                 duration_s: float | None = None) -> None:
        if fps <= 0:
            raise SourceError(f"synthetic source fps must be positive, got {fps}")
        self.seed, self.width_px, self.height_px = seed, width_px, height_px
        self.fps, self.duration_s = fps, duration_s
        self.description = f"synthetic scene {seed} ({width_px}x{height_px})"
        self._simulator = None
        self._next_index = 0

    def open(self) -> None:
        if self._simulator is not None:
            return
        try:
            # Lazy: the training package is a tool the runtime does not otherwise need.
            from molmo_edge.training.scenes import SceneSimulator
        except ImportError as exc:
            raise SourceError(
                f"synthetic sources need molmo_edge.training.scenes.SceneSimulator, which cannot be "
                f"imported here ({exc}); reinstall molmo-edge or use a camera, file or URL"
            ) from exc
        self._simulator = SceneSimulator(self.seed, self.width_px, self.height_px)

    def read(self) -> RawFrame | None:
        index = self._next_index
        t_s = index / self.fps
        if self.duration_s is not None and t_s > self.duration_s:
            return None
        self._next_index += 1
        rgb = np.ascontiguousarray(self._simulator.frame_at(t_s).rgb)
        problem = rgb_problem(rgb)
        if problem is not None:
            raise CorruptFrameError(f"{self.description} frame {index}: {problem}")
        return RawFrame(rgb, index, t_s)

    def close(self) -> None:
        pass
