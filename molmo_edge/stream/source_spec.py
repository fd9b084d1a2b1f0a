"""Parse what a user types after `--source` into a `SourceSpec` (no device is touched here).

    "0", 0, "/dev/video2"          -> camera
    "clip.mp4", Path("clip.avi")   -> video file
    "frames/"                       -> image folder
    "rtsp://...", "http://..."      -> network stream (also rtsps, rtmp, https, udp, tcp, srt)
    "v4l2src ! videoconvert ! appsink"  -> GStreamer pipeline (any string with a '!')
    "synthetic:7", "synthetic:7:320x240" -> rendered synthetic scene (seed 7)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from molmo_edge.errors import ConfigError, SourceError
from molmo_edge.stream.readers import IMAGE_SUFFIXES, redact_url

SourceKind = Literal["camera", "file", "folder", "url", "gstreamer", "synthetic"]

_URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_URL_RE = re.compile(rf"^({'|'.join(_URL_SCHEMES)})://", re.IGNORECASE)
_SYNTHETIC_RE = re.compile(r"^synthetic:(\d+)(?::(\d+)x(\d+))?$")


class SourceSpec(BaseModel):
    kind: SourceKind
    target: str | int  # camera index or device path, file/folder path, URL, pipeline, or seed
    width_px: int | None = None  # synthetic:SEED:WxH
    height_px: int | None = None
    default_id: str  # a readable stream id when the user gives none

    @property
    def live(self) -> bool:
        """Inputs that produce frames at their own pace and cannot be read in order."""
        return self.kind in ("camera", "url", "gstreamer")


def parse_source_spec(spec: str | int | Path) -> SourceSpec:
    if isinstance(spec, bool):
        raise ConfigError(f"a source must be a camera index, path, URL or pipeline, not {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise ConfigError(f"camera index must be >= 0, got {spec}")
        return SourceSpec(kind="camera", target=spec, default_id=f"camera{spec}")
    if isinstance(spec, Path):
        return _parse_path(spec, str(spec))
    if not isinstance(spec, str):
        raise ConfigError(f"a source must be a string, int or Path, not {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise ConfigError("empty source: pass a camera index (0), a file, a folder, a URL or synthetic:SEED")
    if text.isdigit():
        return SourceSpec(kind="camera", target=int(text), default_id=f"camera{int(text)}")
    if text.startswith("/dev/video"):
        return SourceSpec(kind="camera", target=text, default_id=Path(text).name)
    if text.lower().startswith("synthetic:"):
        match = _SYNTHETIC_RE.match(text)
        if match is None:
            raise ConfigError(f"bad synthetic source '{text}': expected synthetic:SEED or synthetic:SEED:WxH, "
                              "e.g. synthetic:3:320x240")
        seed = int(match.group(1))
        width, height = (int(match.group(2)), int(match.group(3))) if match.group(2) else (None, None)
        if width == 0 or height == 0:
            raise ConfigError(f"bad synthetic source '{text}': width and height must be positive (synthetic:SEED:WxH)")
        return SourceSpec(kind="synthetic", target=seed, width_px=width, height_px=height,
                          default_id=f"synthetic{seed}")
    if _URL_RE.match(text):
        return SourceSpec(kind="url", target=text, default_id=redact_url(text))
    if "!" in text:
        return SourceSpec(kind="gstreamer", target=text, default_id="gstreamer")
    return _parse_path(Path(text).expanduser(), text)


def _parse_path(path: Path, text: str) -> SourceSpec:
    if path.is_dir():
        return SourceSpec(kind="folder", target=str(path), default_id=path.resolve().name or "folder")
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise ConfigError(f"{path} is a single image, not a stream: use `molmo-edge point` for images, "
                              "or pass the folder that holds a sequence of images")
        return SourceSpec(kind="file", target=str(path), default_id=path.stem)
    raise SourceError(
        f"cannot use '{text}' as a source: it is not a camera index, an existing file or folder, a URL "
        f"({', '.join(s + '://' for s in _URL_SCHEMES)}), a GStreamer pipeline or synthetic:SEED"
    )
