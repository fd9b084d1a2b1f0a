"""Training / evaluation examples of the synthetic grounding task, made from simulated scenes.

An image example shows one frame; a video example shows `n_frames` frames sampled at `fps` (2 by
default, as Molmo2) from `start_s`, with timestamps relative to the clip start. Each example is
one (prompt, answer) pair in the Molmo2 templates and grammar:

    point        Point to the red circle / Point to all circles            (image)
    count        How many red circles are there?                           (image)
    video_point  Point to the red circle / Point to all circles            (video: each object once,
                                                                             at the first frame it is seen)
    video_count  How many red circles are there?                           (video)
    track        Track the red circle. / Track all circles.                (video: every frame)

Several examples share one `Media` (the trainer builds a message tree per visual input from
them). Answers come from `molmo_edge.grounding` and prompts from `molmo_edge.processing.prompt`,
so training targets and the runtime parser speak exactly the same grammar.

Which objects an answer names: those matching the query whose visible fraction is at least
`min_visible_fraction` (an object mostly hidden behind another, or mostly out of frame, is not
asked for). Matching objects that are visible but below that threshold are "ignored": a point on
them is neither right nor wrong when scoring. A point for an object is the pixel of its visible
mask farthest from the mask's boundary (distance transform), so it is inside the mask with the
largest margin and stays inside after the grammar rounds it to 1/1000.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from molmo_edge.grounding import GroundedPoint, format_coordinate, format_count, format_points, format_tracks
from molmo_edge.processing.prompt import count_prompt, point_prompt, track_prompt
from molmo_edge.training.scenes import Frame, SceneConfig, SceneSimulator
from molmo_edge.training.vocabulary import plural

TaskKind = Literal["point", "count", "video_point", "video_count", "track"]
IMAGE_TASKS: tuple[TaskKind, ...] = ("point", "count")
VIDEO_TASKS: tuple[TaskKind, ...] = ("video_point", "video_count", "track")


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    negative_rate: float = Field(0.2, ge=0.0, le=1.0)  # queries whose answer is "There are none."
    # False (the shipped model's data): a question that repeats an earlier one about the same input
    # is redrawn freely, and absent combinations (there are many) fill the slots repeated positives
    # leave: with 6 questions per input about half the counting questions are negatives. True: each
    # slot's polarity is drawn once at negative_rate and its redraws keep it.
    keep_negative_rate: bool = False
    all_of_shape_rate: float = Field(0.35, ge=0.0, le=1.0)  # "all circles" instead of "the red circle"
    min_visible_fraction: float = Field(0.3, gt=0.0, le=1.0)
    fps: float = Field(2.0, gt=0.0)
    n_frames: int = Field(8, ge=1)
    # None: every clip has n_frames frames. Set: each clip's length is drawn from
    # [min_frames, n_frames], so the model also answers on the short windows a stream starts with
    # or a user picks for latency (a model trained on 8-frame clips only says "none" on 2).
    min_frames: int | None = Field(None, ge=1)
    examples_per_input: int = Field(3, ge=1)  # annotations sharing one image / clip
    image_tasks: tuple[TaskKind, ...] = IMAGE_TASKS
    video_tasks: tuple[TaskKind, ...] = VIDEO_TASKS

    @model_validator(mode="after")
    def _frames_range(self) -> "TaskConfig":
        if self.min_frames is not None and self.min_frames > self.n_frames:
            raise ValueError(f"min_frames ({self.min_frames}) is more than n_frames ({self.n_frames})")
        return self


@dataclass(frozen=True)
class Media:
    """What the model sees: one image, or video frames with their timestamps."""

    frames: tuple[np.ndarray, ...]  # each uint8 [H, W, 3] RGB
    timestamps_s: tuple[float, ...] | None = None  # None: a single image

    @property
    def is_video(self) -> bool:
        return self.timestamps_s is not None

    @property
    def image(self) -> np.ndarray:
        return self.frames[0]


@dataclass(frozen=True)
class Truth:
    """What scoring an answer needs. Ids are the scene's object ids (label-map values)."""

    label_maps: np.ndarray  # uint8 [F, H, W] visible-object label maps (F = 1 for an image)
    timestamps_s: tuple[float, ...] | None  # as in Media
    target_ids: tuple[int, ...]  # objects the answer must name (visible enough in some frame)
    ignore_ids: tuple[int, ...]  # match the query but never visible enough: points on them don't count
    frame_target_ids: tuple[tuple[int, ...], ...]  # per frame: targets visible enough there
    frame_ignore_ids: tuple[tuple[int, ...], ...]  # per frame: matching objects visible, but not enough

    @property
    def count(self) -> int:
        return len(self.target_ids)


@dataclass(frozen=True)
class Example:
    kind: TaskKind
    media: Media
    prompt: str
    answer: str
    label: str  # the label written inside the answer's <points>/<tracks> element
    truth: Truth
    answer_points: tuple[GroundedPoint, ...]  # the points the answer writes (answer ids, 1-based)

    @property
    def is_negative(self) -> bool:
        return not self.truth.target_ids


@dataclass(frozen=True)
class Query:
    shape: str
    color: str | None  # None: every object of that shape

    def matches(self, shape: str, color: str) -> bool:
        return shape == self.shape and (self.color is None or color == self.color)

    def prompt_label(self, kind: TaskKind) -> str:
        # the phrases of the Molmo2 templates: "Point to the red circle", "Point to all circles",
        # "How many red circles are there?", "Track the red circle.", "Track all circles."
        if kind in ("count", "video_count"):
            return f"{self.color} {plural(self.shape)}" if self.color else plural(self.shape)
        return f"the {self.color} {self.shape}" if self.color else f"all {plural(self.shape)}"

    def answer_label(self, kind: TaskKind) -> str:
        if kind in ("count", "video_count") or self.color is None:
            return f"{self.color} {plural(self.shape)}" if self.color else plural(self.shape)
        return f"{self.color} {self.shape}"


def visible_point(label_map: np.ndarray, object_id: int) -> tuple[float, float] | None:
    """The visible-mask pixel farthest from the mask boundary, as normalised (x, y) of its centre.

    label_map: uint8 [H, W]. The frame edge counts as boundary (a shape cut by the edge gets a point
    away from the edge). None when the object has no visible pixel.
    """
    mask = (label_map == object_id).astype(np.uint8)
    x0, y0, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return None
    crop = cv2.copyMakeBorder(mask[y0:y0 + h, x0:x0 + w], 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    distance = cv2.distanceTransform(crop, cv2.DIST_L2, 5)  # [h+2, w+2] px to the nearest 0
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    height, width = label_map.shape
    return (x0 + col - 1 + 0.5) / width, (y0 + row - 1 + 0.5) / height


def _grammar_order(x: float, y: float, t_s: float | None) -> tuple[float, int, int]:
    # the order the grammar writes points (time, then x, then y on the 0..1000 grid), so that
    # answer ids come out ascending in the text: the last id written is the count
    return (t_s or 0.0, int(format_coordinate(x)), int(format_coordinate(y)))


def _visibility(frames: Sequence[Frame], query: Query, threshold: float):
    """Per frame, matching objects at/above and below the visibility threshold."""
    enough, some = [], []
    for f in frames:
        matching = [o for o in f.objects if query.matches(o.shape, o.color) and o.visible_fraction > 0]
        enough.append(tuple(sorted(o.object_id for o in matching if o.visible_fraction >= threshold)))
        some.append(tuple(sorted(o.object_id for o in matching if o.visible_fraction < threshold)))
    return enough, some


def _choose_query(rng: np.random.Generator, kind: TaskKind, sim: SceneSimulator, frames: Sequence[Frame],
                  cfg: TaskConfig, negative: bool | None = None) -> Query:
    """A query with an answer (from objects visible enough) or one without: at negative_rate, or as
    `negative` says (a scene with nothing visible enough always gets a negative)."""
    scene_cfg: SceneConfig = sim.config
    seen = [o for f in frames for o in f.objects if o.visible_fraction >= cfg.min_visible_fraction]
    # the counting template always names a colour: "How many red circles are there?"
    all_of_shape = kind not in ("count", "video_count") and rng.random() < cfg.all_of_shape_rate
    if negative is None:  # (no draw for a scene with nothing seen: the stream the shipped data used)
        negative = not seen or rng.random() < cfg.negative_rate
    if seen and not negative:
        o = seen[int(rng.integers(len(seen)))]
        return Query(o.shape, None if all_of_shape else o.color)
    # negatives name a shape / colour combination absent from the whole scene, not merely
    # hidden, so "There are none." is true in every frame
    in_scene = {(s.shape, s.color) for s in sim.objects}
    shapes_in_scene = {s.shape for s in sim.objects}
    if all_of_shape:
        absent_shapes = [s for s in scene_cfg.shapes if s not in shapes_in_scene]
        if absent_shapes:
            return Query(absent_shapes[int(rng.integers(len(absent_shapes)))], None)
    absent = [(s, c) for s in scene_cfg.shapes for c in scene_cfg.colors if (s, c) not in in_scene]
    if not absent:  # every combination is in the scene: ask a positive question instead
        o = seen[int(rng.integers(len(seen)))] if seen else sim.objects[0]
        return Query(o.shape, o.color)
    shape, color = absent[int(rng.integers(len(absent)))]
    return Query(shape, color)


def _distinct_questions(rng: np.random.Generator, kinds: Sequence[TaskKind], sim: SceneSimulator,
                        frames: Sequence[Frame], cfg: TaskConfig) -> list[tuple[TaskKind, Query]]:
    """Up to cfg.examples_per_input different (task, query) pairs: asking the same question twice
    about one input would only repeat a target in its message tree."""
    if cfg.keep_negative_rate:
        return _distinct_questions_at_rate(rng, kinds, sim, frames, cfg)
    chosen: list[tuple[TaskKind, Query]] = []
    for _ in range(4 * cfg.examples_per_input):  # a few redraws; small scenes have few questions
        if len(chosen) == cfg.examples_per_input:
            break
        kind = kinds[int(rng.integers(len(kinds)))]
        question = (kind, _choose_query(rng, kind, sim, frames, cfg))
        if question not in chosen:
            chosen.append(question)
    return chosen


def _distinct_questions_at_rate(rng: np.random.Generator, kinds: Sequence[TaskKind], sim: SceneSimulator,
                                frames: Sequence[Frame], cfg: TaskConfig) -> list[tuple[TaskKind, Query]]:
    """As _distinct_questions, but each slot draws its polarity once and keeps it through 4 redraws;
    a slot whose polarity has no new question left (a small scene's positives) stays empty."""
    chosen: list[tuple[TaskKind, Query]] = []
    for _ in range(cfg.examples_per_input):
        negative = bool(rng.random() < cfg.negative_rate)
        for _ in range(4):
            kind = kinds[int(rng.integers(len(kinds)))]
            question = (kind, _choose_query(rng, kind, sim, frames, cfg, negative=negative))
            if question not in chosen:
                chosen.append(question)
                break
    return chosen


def _prompt(kind: TaskKind, query: Query) -> str:
    label = query.prompt_label(kind)
    if kind in ("point", "video_point"):
        return point_prompt(label)
    if kind in ("count", "video_count"):
        return count_prompt(label)
    return track_prompt(label)


def build_example(kind: TaskKind, media: Media, frames: Sequence[Frame], query: Query,
                  cfg: TaskConfig) -> Example:
    """The example asking `query` about `frames` (one frame for image tasks)."""
    enough, some = _visibility(frames, query, cfg.min_visible_fraction)
    target_ids = tuple(sorted({i for ids in enough for i in ids}))
    ignore_ids = tuple(sorted({i for ids in some for i in ids} - set(target_ids)))
    video = media.is_video
    times = media.timestamps_s if video else (None,)

    # where each target is pointed at: tracks use every frame it is visible enough in; pointing
    # and counting use the first such frame (Molmo2's video points mark each object once)
    placements: list[tuple[int, int]] = []  # (scene object id, frame index)
    for object_id in target_ids:
        frame_indices = [k for k, ids in enumerate(enough) if object_id in ids]
        placements += [(object_id, k) for k in (frame_indices if kind == "track" else frame_indices[:1])]
    located: list[tuple[int, float, float, float | None]] = []  # (scene object id, x, y, t_s)
    for object_id, k in placements:
        x, y = visible_point(frames[k].label_map, object_id)
        located.append((object_id, float(x), float(y), times[k]))
    # answer ids: 1.. in the order the grammar writes each object's first point
    answer_id: dict[int, int] = {}
    for object_id, x, y, t_s in sorted(located, key=lambda item: _grammar_order(*item[1:])):
        answer_id.setdefault(object_id, len(answer_id) + 1)
    points = tuple(sorted((GroundedPoint(answer_id[oid], x, y, t_s=t_s, image_index=None if video else 1)
                           for oid, x, y, t_s in located), key=lambda p: (p.t_s or 0.0, p.object_id)))

    label = query.answer_label(kind)
    if kind in ("count", "video_count"):
        answer = format_count(len(target_ids), points, label)
    elif kind == "track":
        answer = format_tracks(points, label)
    else:
        answer = format_points(points, label)
    truth = Truth(label_maps=np.stack([f.label_map for f in frames]), timestamps_s=media.timestamps_s,
                  target_ids=target_ids, ignore_ids=ignore_ids, frame_target_ids=tuple(enough),
                  frame_ignore_ids=tuple(some))
    return Example(kind=kind, media=media, prompt=_prompt(kind, query), answer=answer, label=label,
                   truth=truth, answer_points=points)


def image_examples(sim: SceneSimulator, t_s: float, rng: np.random.Generator,
                   cfg: TaskConfig | None = None) -> list[Example]:
    """Up to `cfg.examples_per_input` different examples about the frame at t_s, sharing one Media."""
    cfg = cfg or TaskConfig()
    frame = sim.frame_at(t_s)
    media = Media(frames=(frame.rgb,))
    return [build_example(kind, media, [frame], query, cfg)
            for kind, query in _distinct_questions(rng, cfg.image_tasks, sim, [frame], cfg)]


def video_examples(sim: SceneSimulator, start_s: float, rng: np.random.Generator,
                   cfg: TaskConfig | None = None) -> list[Example]:
    """Up to `cfg.examples_per_input` different examples about a clip of cfg.n_frames frames (a
    length drawn from [cfg.min_frames, cfg.n_frames] when min_frames is set) at cfg.fps from
    start_s, sharing one Media.

    Timestamps are relative to the clip start, one decimal (0.0, 0.5, 1.0, ... at 2 fps).
    """
    cfg = cfg or TaskConfig()
    # the length is drawn only when asked for, so clips without min_frames keep their random stream
    n_frames = cfg.n_frames if cfg.min_frames is None else int(rng.integers(cfg.min_frames, cfg.n_frames + 1))
    timestamps = tuple(round(k / cfg.fps, 1) for k in range(n_frames))
    frames = [sim.frame_at(start_s + k / cfg.fps) for k in range(n_frames)]
    media = Media(frames=tuple(f.rgb for f in frames), timestamps_s=timestamps)
    return [build_example(kind, media, frames, query, cfg)
            for kind, query in _distinct_questions(rng, cfg.video_tasks, sim, frames, cfg)]


def examples_from_seed(seed: int, video: bool = False, width: int = 256, height: int = 256,
                       scene_config: SceneConfig | None = None, task_config: TaskConfig | None = None) -> list[Example]:
    """Everything from one integer: the scene, the moment / clip, the queries. Deterministic."""
    sim = SceneSimulator(seed, width, height, config=scene_config)
    # the task draws use their own stream, so they never shift the scene's
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0x7A5C])))
    start_s = float(rng.uniform(0.0, 20.0))
    if video:
        return video_examples(sim, start_s, rng, task_config)
    return image_examples(sim, start_s, rng, task_config)
