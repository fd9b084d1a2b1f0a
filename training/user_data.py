"""Your own training data: a JSONL file, one line per image or video (format in docs/training.md).

    {"image": "img/0001.png", "annotations": [
        {"task": "point", "label": "red mug", "points": [[120, 45], [300, 210]], "units": "px"},
        {"task": "count", "label": "red mugs", "points": [[120, 45], [300, 210]], "units": "px"},
        {"task": "qa", "question": "What is on the table?", "answer": "Two red mugs."}]}
    {"video": "clips/a.mp4", "fps": 2, "annotations": [
        {"task": "track", "label": "blue car", "units": "norm",
         "tracks": [{"id": 1, "points": [[0.0, 0.51, 0.40], [0.5, 0.55, 0.41]]}]},
        {"task": "video_point", "label": "people", "units": "norm", "points": [[1.5, 0.2, 0.8]]}]}

Paths are relative to the JSONL file's folder. Every line is checked when the file is loaded:
malformed JSON, unknown fields or tasks, a missing or unreadable media file, points outside the
image (or outside the video's duration) are reported with their line number, and then either
skipped (`on_error="skip"`, the default; a warning per line) or refused (`on_error="raise"`).
A file with no valid line is always refused: training never silently trains on nothing.

Loaded items have the shape of training/tasks.py's examples (one `Media` shared by several
annotations with `kind`, `prompt`, `answer`, `label`), so they go through the same encoder,
message trees and packer as the synthetic data. Structured points become answers in the Molmo2
grammar via molmo_edge.grounding; prompts come from molmo_edge.processing.prompt.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from molmo_edge.errors import ConfigError

log = logging.getLogger(__name__)

UserTask = Literal["point", "count", "video_point", "video_count", "track", "qa"]
Units = Literal["px", "norm"]


class UserTrack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1, description="object id, 1-based, the same object in every frame")
    points: list[tuple[float, float, float]] = Field(min_length=1, description="[t_s, x, y] per frame")


class UserAnnotation(BaseModel):
    """One question about the visual input and its answer (one branch of the message tree)."""

    model_config = ConfigDict(extra="forbid")

    task: UserTask
    label: str | None = Field(None, description="what to point at / count / track, e.g. 'red mug'")
    question: str | None = Field(None, description="the prompt; default: the Molmo2 template of the task")
    answer: str | None = Field(None, description="the answer text verbatim (instead of points / tracks)")
    points: list[list[float]] | None = Field(None, description="image: [x, y]; video: [t_s, x, y]")
    tracks: list[UserTrack] | None = None
    units: Units | None = Field(None, description="coordinate units; default: the line's `units`")

    @model_validator(mode="after")
    def _check(self) -> "UserAnnotation":
        if self.task == "qa":
            if not (self.question and self.answer):
                raise ValueError("a 'qa' annotation needs both 'question' and 'answer'")
            if self.points is not None or self.tracks is not None:
                raise ValueError("a 'qa' annotation has a text answer; remove 'points' / 'tracks'")
            return self
        if self.answer is None:
            if self.label is None:
                raise ValueError(f"a '{self.task}' annotation needs a 'label' (or 'question' and 'answer')")
            if self.task == "track" and self.tracks is None:
                raise ValueError("a 'track' annotation needs 'tracks' (or a text 'answer')")
            if self.task != "track" and self.points is None:
                raise ValueError(f"a '{self.task}' annotation needs 'points' ([] for 'There are none.')")
        elif self.question is None and self.label is None:
            raise ValueError("give a 'label' or a 'question' so the prompt can be written")
        if self.task == "track" and self.points is not None:
            raise ValueError("a 'track' annotation uses 'tracks', not 'points'")
        if self.task != "track" and self.tracks is not None:
            raise ValueError(f"'tracks' belong to 'track' annotations, not '{self.task}'")
        return self


class UserLine(BaseModel):
    """One JSONL line: one image or one video and its annotations."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = None
    video: str | None = None
    fps: float | None = Field(None, gt=0, description="frames sampled per second of video (default: the processor's)")
    units: Units | None = Field(None, description="default units of the annotations' coordinates")
    annotations: list[UserAnnotation] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "UserLine":
        if (self.image is None) == (self.video is None):
            raise ValueError("give exactly one of 'image' or 'video'")
        if self.image is not None and self.fps is not None:
            raise ValueError("'fps' only applies to a 'video'")
        for a in self.annotations:
            if self.image is not None and a.task in ("video_point", "video_count", "track"):
                raise ValueError(f"task '{a.task}' needs a 'video', this line has an 'image'")
            if self.video is not None and a.task == "point":
                raise ValueError("on a video, use task 'video_point' (points are [t_s, x, y])")
            has_coords = a.points or a.tracks
            if has_coords and (a.units or self.units) is None:
                raise ValueError(f"'{a.task}' coordinates need 'units': 'px' or 'norm' (on the annotation or the line)")
        return self


@dataclass(frozen=True)
class MediaInfo:
    """What load-time checks know about a media file without decoding all of it."""

    width: int
    height: int
    duration_s: float | None = None  # videos only


@dataclass(frozen=True)
class LineProblem:
    line: int  # 1-based line number in the JSONL file
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class UserRecord:
    """A validated line: the parsed line, its resolved media path and the media's size."""

    line: int
    spec: UserLine
    media_path: Path
    info: MediaInfo

    @property
    def is_video(self) -> bool:
        return self.spec.video is not None


def probe_media(path: Path, is_video: bool) -> MediaInfo:
    """Size (and duration) of an image or video file; ValueError saying what is wrong."""
    if not path.is_file():
        raise ValueError(f"media file not found: {path}")
    if not is_video:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image {path} (not an image OpenCV can decode)")
        return MediaInfo(width=int(image.shape[1]), height=int(image.shape[0]))
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ValueError(f"cannot open video {path}")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        n_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        native_fps = float(capture.get(cv2.CAP_PROP_FPS))
        if width <= 0 or height <= 0 or n_frames <= 0 or native_fps <= 0:
            raise ValueError(f"video {path} reports no frames / size / fps")
        return MediaInfo(width=width, height=height, duration_s=n_frames / native_fps)
    finally:
        capture.release()


def _check_coordinates(spec: UserLine, info: MediaInfo) -> None:
    """Every point inside the image (and the video's duration); ValueError naming the first bad one."""
    slack_s = 0.5  # frame-count metadata is often a frame short; do not refuse the last frame
    for k, a in enumerate(spec.annotations, start=1):
        units = a.units or spec.units
        width, height = (info.width, info.height) if units == "px" else (1.0, 1.0)
        rows: list[list[float]] = list(a.points or [])
        for track in a.tracks or []:
            rows += [list(p) for p in track.points]
        want = 3 if spec.video is not None else 2
        for p in rows:
            if len(p) != want:
                what = "[t_s, x, y]" if want == 3 else "[x, y]"
                raise ValueError(f"annotation {k} ({a.task}): point {p} must be {what}")
            x, y = p[-2], p[-1]
            if not (0 <= x <= width and 0 <= y <= height):
                raise ValueError(f"annotation {k} ({a.task}): point {p} is outside the "
                                 f"{'%dx%d px image' % (info.width, info.height) if units == 'px' else '0..1 range'}")
            if want == 3 and not (0 <= p[0] <= (info.duration_s or 0.0) + slack_s):
                raise ValueError(f"annotation {k} ({a.task}): time {p[0]} s is outside the video "
                                 f"(0 .. {info.duration_s:.2f} s)")
        for track in a.tracks or []:
            times = [p[0] for p in track.points]
            if len(set(times)) != len(times):
                raise ValueError(f"annotation {k}: track {track.id} has two points at the same time")


def parse_line(text: str, line: int, root: Path) -> UserRecord:
    """One JSONL line -> a validated record; ValueError with a readable reason otherwise."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise ValueError("a line must be a JSON object")
    try:
        spec = UserLine.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}") from None
    path = (root / (spec.image or spec.video)).resolve()
    info = probe_media(path, is_video=spec.video is not None)
    _check_coordinates(spec, info)
    return UserRecord(line=line, spec=spec, media_path=path, info=info)


def read_user_jsonl(path: str | Path, on_error: Literal["skip", "raise"] = "skip"
                    ) -> tuple[list[UserRecord], list[LineProblem]]:
    """Read and check every line. Returns (valid records, problems).

    on_error="raise": any bad line -> ConfigError listing them all with line numbers.
    Zero valid lines -> ConfigError in both modes.
    """
    if on_error not in ("skip", "raise"):
        raise ConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training data file not found: {path}")
    records: list[UserRecord] = []
    problems: list[LineProblem] = []
    # Undecodable bytes become U+FFFD, so such a line is reported as malformed JSON with its number.
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue  # blank lines are allowed (e.g. a trailing newline)
            try:
                records.append(parse_line(text, number, path.parent))
            except ValueError as exc:
                problems.append(LineProblem(number, str(exc)))
    if problems and on_error == "raise":
        listed = "; ".join(str(p) for p in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ConfigError(f"{path}: {len(problems)} bad line(s): {listed}{more}. "
                          "Fix them, or load with on_error='skip' to train on the valid lines only")
    for problem in problems:
        log.warning("%s: skipping %s", path, problem)
    if not records:
        detail = f": {problems[0]}" if problems else " (the file is empty)"
        raise ConfigError(f"{path} has no valid training example{detail}; "
                          "training never silently trains on nothing")
    return records, problems


# ----- loading pixels and writing answers -------------------------------------------------------

@dataclass(frozen=True)
class UserExample:
    """One annotation of a user's visual input; duck-compatible with training.tasks.Example
    (kind, media, prompt, answer, label) minus the synthetic scoring truth."""

    kind: str
    media: Any  # training.tasks.Media
    prompt: str
    answer: str
    label: str
    origin: str  # "file.jsonl:LINE"


def _to_norm(x: float, y: float, units: str, info: MediaInfo) -> tuple[float, float]:
    if units == "px":
        return x / info.width, y / info.height
    return x, y


def _snap_time(t_s: float, timestamps_s: tuple[float, ...]) -> float | None:
    """The sampled frame time nearest to t_s, or None if no sampled frame is within half a gap."""
    times = np.asarray(timestamps_s)
    k = int(np.argmin(np.abs(times - t_s)))
    gap = float(np.min(np.diff(times))) if len(times) > 1 else float("inf")
    return float(times[k]) if abs(times[k] - t_s) <= gap / 2 + 1e-6 else None


def _answer(a: UserAnnotation, units: str, info: MediaInfo, timestamps_s: tuple[float, ...] | None) -> str:
    """The Molmo2-grammar answer for structured points (ids 1.. in the order the grammar writes them)."""
    from molmo_edge.grounding import GroundedPoint, format_count, format_points, format_tracks

    label = a.label or ""
    if a.task == "track":
        # (distance to the frame it snaps to, point); several annotations of one object can snap to
        # the same sampled frame: the nearest in time wins, one point per object per frame.
        candidates = []
        for track in a.tracks or []:
            for t_s, x, y in track.points:
                snapped = _snap_time(t_s, timestamps_s) if timestamps_s else t_s
                if snapped is not None:
                    point = GroundedPoint(track.id, *_to_norm(x, y, units, info), t_s=snapped)
                    candidates.append((abs(t_s - snapped), point))
        chosen: dict[tuple[int, float], GroundedPoint] = {}
        for _, point in sorted(candidates, key=lambda c: c[0]):
            chosen.setdefault((point.object_id, point.t_s), point)
        return format_tracks(list(chosen.values()), label)
    located = []
    for row in a.points or []:
        if len(row) == 3:
            snapped = _snap_time(row[0], timestamps_s) if timestamps_s else row[0]
            if snapped is None:
                continue
            located.append((snapped, *_to_norm(row[1], row[2], units, info)))
        else:
            located.append((None, *_to_norm(row[0], row[1], units, info)))
    # Ids ascend in written order (time, then x, then y), so the last id is the count.
    located.sort(key=lambda p: (p[0] or 0.0, round(p[1] * 1000), round(p[2] * 1000)))
    points = [GroundedPoint(i + 1, x, y, t_s=t, image_index=None if t is not None else 1)
              for i, (t, x, y) in enumerate(located)]
    if a.task in ("count", "video_count"):
        return format_count(len(points), points, label)
    return format_points(points, label)


def _prompt(a: UserAnnotation) -> str:
    if a.question:
        return a.question
    from molmo_edge.processing.prompt import count_prompt, point_prompt, track_prompt

    if a.task in ("count", "video_count"):
        return count_prompt(a.label)
    if a.task == "track":
        return track_prompt(a.label)
    return point_prompt(a.label)


class UserDataset:
    """The valid lines of a JSONL file; `dataset[i]` decodes line i's media and returns its
    annotations as a list of UserExample (one visual input, several annotations).

    video_fps / max_frames: how videos are sampled when a line gives no `fps` (Molmo2: 2 fps,
    uniform with the last frame). Structured video points are snapped to the nearest sampled
    frame; points farther than half a frame gap from every sampled frame are dropped.
    """

    def __init__(self, path: str | Path, on_error: Literal["skip", "raise"] = "skip",
                 video_fps: float = 2.0, max_frames: int = 128):
        self.path = Path(path)
        self.records, self.problems = read_user_jsonl(self.path, on_error)
        self.video_fps, self.max_frames = video_fps, max_frames

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> list[UserExample]:
        from molmo_edge.training.tasks import Media

        record = self.records[index]
        spec = record.spec
        origin = f"{self.path.name}:{record.line}"
        if record.is_video:
            frames, timestamps = self._read_video(record)
            media = Media(frames=tuple(frames), timestamps_s=tuple(timestamps))
        else:
            bgr = cv2.imread(str(record.media_path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{origin}: cannot read {record.media_path} any more")
            media = Media(frames=(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),))
            timestamps = None
        examples = []
        for a in spec.annotations:
            kind = "video_count" if (a.task == "count" and record.is_video) else a.task
            answer = a.answer if a.answer is not None else _answer(a, a.units or spec.units or "norm",
                                                                   record.info, timestamps)
            examples.append(UserExample(kind=kind, media=media, prompt=_prompt(a), answer=answer,
                                        label=a.label or "", origin=origin))
        return examples

    def _read_video(self, record: UserRecord) -> tuple[list[np.ndarray], list[float]]:
        from molmo_edge.processing.config import ProcessorConfig
        from molmo_edge.processing.video_file import read_video

        cfg = ProcessorConfig(fps=record.spec.fps or self.video_fps, max_frames=self.max_frames)
        frames, timestamps = read_video(record.media_path, cfg)
        return list(frames), [float(t) for t in timestamps]
