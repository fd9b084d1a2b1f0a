"""Draw what the model said on the frames it saw: points, track ids, annotated videos, contact sheets.

    by_time = objects_by_frame(events)                          # frame time -> objects (newest opinion)
    rgb = draw_objects(frame.rgb, by_time[frame.t_s], caption="t=1.5 s")
    write_annotated_video("annotated.mp4", video_path, by_time, fps_model=2.0)
    write_image("sheet.png", contact_sheet(tiles, captions))

Each track id gets its own colour (the same in every frame, video and sheet) and its number next
to the dot, so a viewer can check at a glance that an object keeps its id. Frames are RGB uint8
[H, W, 3] everywhere; the conversion to OpenCV's BGR happens only when writing files.
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from molmo_edge.errors import InputError
from molmo_edge.stream.events import Event

# Video containers and the codec OpenCV's pip wheels can write for each (checked: both read back).
_FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class DrawableObject(Protocol):
    track_id: int
    u_px: float
    v_px: float


def _cv2():
    import cv2

    return cv2


def track_colour_rgb(track_id: int) -> tuple[int, int, int]:
    """A bright colour per track id; consecutive ids get far-apart hues (golden-angle steps)."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_objects(rgb: np.ndarray, objects: Iterable[DrawableObject], caption: str | None = None) -> np.ndarray:
    """A copy of `rgb` with a ringed dot and `#id` at every object, and an optional caption."""
    cv2 = _cv2()
    canvas = np.ascontiguousarray(rgb).copy()  # RGB uint8 [H, W, 3]; OpenCV draws in any channel order
    height, width = canvas.shape[:2]
    radius = max(3, round(min(height, width) / 60))
    font_scale = max(0.35, min(height, width) / 600)
    thickness = 1 if min(height, width) < 400 else 2
    for obj in objects:
        if not (math.isfinite(obj.u_px) and math.isfinite(obj.v_px)):
            continue
        colour = track_colour_rgb(obj.track_id)
        centre = (int(round(obj.u_px)), int(round(obj.v_px)))
        cv2.circle(canvas, centre, radius + 2, (0, 0, 0), -1, cv2.LINE_AA)  # dark ring: visible on light
        cv2.circle(canvas, centre, radius, colour, -1, cv2.LINE_AA)
        label = f"#{obj.track_id}"
        origin = (centre[0] + radius + 3, centre[1] - radius - 2)
        cv2.putText(canvas, label, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(canvas, label, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, thickness, cv2.LINE_AA)
    if caption:
        _caption(canvas, caption, font_scale, thickness)
    return canvas


def _caption(canvas: np.ndarray, text: str, font_scale: float, thickness: int) -> None:
    cv2 = _cv2()
    (w_px, h_px), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    cv2.rectangle(canvas, (0, 0), (min(canvas.shape[1], w_px + 8), h_px + baseline + 8), (0, 0, 0), -1)
    cv2.putText(canvas, text, (4, h_px + 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness,
                cv2.LINE_AA)


def objects_by_frame(events: Iterable[Event], time_decimals: int = 3) -> dict[float, list]:
    """Frame time -> the objects to draw there, from every query.

    Overlapping windows report a frame several times; the newest event's points for that frame and
    query replace older ones. Times are rounded to `time_decimals` for lookups (`lookup_time`).
    """
    newest: dict[tuple[int, float], list] = {}  # (query_index, t) -> objects
    for event in events:
        by_t: dict[float, list] = {}
        for obj in event.objects:
            by_t.setdefault(round(obj.t_s, time_decimals), []).append(obj)
        for t, objs in by_t.items():
            newest[(event.query_index, t)] = objs
        # a frame of this window with no points now has none (the newer opinion wins)
        for (query_index, t) in list(newest):
            if query_index == event.query_index and event.window_t0_s - 1e-9 <= t <= event.window_t1_s + 1e-9 \
                    and t not in by_t:
                newest[(query_index, t)] = []
    merged: dict[float, list] = {}
    for (_, t), objs in sorted(newest.items(), key=lambda item: (item[0][1], item[0][0])):
        merged.setdefault(t, []).extend(objs)
    return merged


def pick_evenly(items: Sequence, count: int = 12) -> list:
    """At most `count` items spread evenly from the first to the last (contact-sheet tiles)."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)] if count > 1 else [items[0]]


def lookup_time(t_s: float, time_decimals: int = 3) -> float:
    return round(t_s, time_decimals)


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str] | None = None, columns: int = 4,
                  tile_width_px: int = 320, gap_px: int = 4) -> np.ndarray:
    """Tiles in a grid (row by row), each scaled to `tile_width_px` wide. -> RGB uint8 [H, W, 3]"""
    cv2 = _cv2()
    if not images:
        raise InputError("a contact sheet needs at least one image")
    columns = max(1, min(columns, len(images)))
    tiles = []
    for i, image in enumerate(images):
        scale = tile_width_px / image.shape[1]
        tile = cv2.resize(image, (tile_width_px, max(1, round(image.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if captions is not None and i < len(captions) and captions[i]:
            _caption(tile, captions[i], max(0.4, tile_width_px / 700), 1)
        tiles.append(tile)
    tile_h = max(t.shape[0] for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * tile_h + (rows + 1) * gap_px, columns * tile_width_px + (columns + 1) * gap_px, 3),
                    32, np.uint8)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        y = gap_px + row * (tile_h + gap_px)
        x = gap_px + col * (tile_width_px + gap_px)
        sheet[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return sheet


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB image (PNG / JPEG by the file name); InputError when it cannot be written."""
    cv2 = _cv2()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok = cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    except cv2.error:
        ok = False
    if not ok:
        raise InputError(f"cannot write {path}; use a .png or .jpg name in a writable folder")
    return path


class VideoWriter:
    """RGB frames -> a video file (.mp4 with mp4v, .avi / .mkv with MJPG); a context manager."""

    def __init__(self, path: str | Path, fps: float, width_px: int, height_px: int) -> None:
        cv2 = _cv2()
        self.path = Path(path)
        fourcc = _FOURCC_BY_SUFFIX.get(self.path.suffix.lower())
        if fourcc is None:
            raise InputError(f"cannot write video {self.path}: use a name ending in "
                             f"{', '.join(sorted(_FOURCC_BY_SUFFIX))}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (int(width_px), int(height_px))
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), float(fps), self.size)
        if not self._writer.isOpened():
            raise InputError(f"OpenCV cannot write {self.path} with the {fourcc} codec here; try an .avi name")
        self.frames_written = 0

    def write(self, rgb: np.ndarray) -> None:
        cv2 = _cv2()
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def write_annotated_video(out_path: str | Path, video_path: str | Path, by_time: dict[float, list],
                          sample_fps: float = 2.0, caption: str | None = None
                          ) -> tuple[Path, list[tuple[float, np.ndarray]]]:
    """Every frame of `video_path`, with the model's points of the newest frame the model saw.

    The model sees frames at `sample_fps`; the same sampler as the pipeline's picks them here (it
    selects by timestamp, so it picks the same frames), and their points stay drawn on the frames in
    between until the next sampled frame. Returns the path and the annotated sampled frames,
    (t_s, RGB), for a contact sheet.
    """
    from molmo_edge.stream.sampler import FrameSampler, SamplerConfig
    from molmo_edge.stream.sources import open_source

    sampler = FrameSampler(SamplerConfig(target_fps=sample_fps))
    seen: list[tuple[float, np.ndarray]] = []
    current: list = []
    writer: VideoWriter | None = None
    with open_source(str(video_path)) as source:
        fps = getattr(source.reader, "fps", None) or 30.0
        try:
            for frame in source:
                sampled = sampler.select(frame)
                if sampled:
                    current = by_time.get(lookup_time(frame.t_s), [])
                text = f"t={frame.t_s:.2f} s" + (f"  {caption}" if caption else "")
                annotated = draw_objects(frame.rgb, current, caption=text)
                if writer is None:
                    writer = VideoWriter(out_path, fps, frame.width_px, frame.height_px)
                writer.write(annotated)
                if sampled:
                    seen.append((frame.t_s, annotated))
        finally:
            if writer is not None:
                writer.close()
    if writer is None:
        raise InputError(f"{video_path} has no frames to annotate")
    return Path(out_path), seen


__all__ = ["VideoWriter", "contact_sheet", "draw_objects", "lookup_time", "objects_by_frame", "pick_evenly",
           "track_colour_rgb", "write_annotated_video", "write_image"]
