"""Read a video file with OpenCV, sampled on the file's own clock (official uniform_last_frame rule).

Two passes keep memory low on long files: the first grabs every frame without converting it, to
learn each frame's presentation time (CAP_PROP_POS_MSEC, or index / CAP_PROP_FPS when the backend
reports no usable times); the second decodes only the frames the sampled times fall on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from molmo_edge.errors import SourceError
from molmo_edge.processing.config import ProcessorConfig
from molmo_edge.processing.frame_sampling import frames_at_times, sample_frame_times


def _open(path: Path):
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"cannot open video file {path}: check that it exists and that OpenCV's FFmpeg "
                          "backend can decode its format")
    return capture


def _frame_start_times(path: Path) -> tuple[np.ndarray, float]:
    """(start time of every frame in seconds, duration of the last frame in seconds)."""
    import cv2

    capture = _open(path)
    try:
        native_fps = capture.get(cv2.CAP_PROP_FPS)
        starts_ms = []
        while capture.grab():
            starts_ms.append(capture.get(cv2.CAP_PROP_POS_MSEC))
    finally:
        capture.release()
    if not starts_ms:
        raise SourceError(f"video file {path} holds no decodable frames")
    # Round to microseconds: backends report e.g. 300.00000000000006 ms, which would move a
    # sample that falls exactly on a frame boundary to the previous frame.
    starts_s = np.round(np.asarray(starts_ms, dtype=np.float64) * 1000.0) / 1e6
    usable_fps = native_fps if native_fps and np.isfinite(native_fps) and native_fps > 0 else None
    if len(starts_s) > 1 and np.any(np.diff(starts_s) <= 0):
        if usable_fps is None:
            raise SourceError(f"video file {path} reports neither frame times nor a frame rate")
        starts_s = np.arange(len(starts_s), dtype=np.float64) / usable_fps
    if usable_fps is not None:
        last_frame_s = 1.0 / usable_fps
    elif len(starts_s) > 1:
        last_frame_s = float(np.median(np.diff(starts_s)))
    else:
        last_frame_s = 0.0
    return starts_s, last_frame_s


def read_video(path: str | Path, cfg: ProcessorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sample a video file: (frames uint8 RGB [n, H, W, 3], timestamps_s float64 [n]).

    Timestamps are the sampled times from the first frame (the last one equals the duration), as the
    official loader gives them to the prompt. SourceError when the file cannot be opened or decoded."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"video file {path} does not exist")
    starts_s, last_frame_s = _frame_start_times(path)
    duration_s = float(starts_s[-1] - starts_s[0] + last_frame_s)
    times_s = sample_frame_times(duration_s, cfg)
    wanted = frames_at_times(times_s, starts_s, duration_s)

    picked: dict[int, np.ndarray] = {}
    needed = set(int(i) for i in wanted)
    capture = _open(path)
    try:
        index = 0
        while needed - picked.keys() and capture.grab():
            if index in needed:
                ok, frame_bgr = capture.retrieve()
                if not ok:
                    raise SourceError(f"cannot decode frame {index} of {path}")
                picked[index] = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    missing = needed - picked.keys()
    if missing:
        raise SourceError(f"video file {path} ended before frames {sorted(missing)[:5]} could be decoded again")
    return np.stack([picked[int(i)] for i in wanted]), times_s
