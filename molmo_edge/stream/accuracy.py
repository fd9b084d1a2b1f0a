"""How accurate the published stream is, next to the offline evaluation of the same model.

    from molmo_edge.stream.accuracy import StreamAccuracyConfig, stream_accuracy
    report = stream_accuracy(engine, StreamAccuracyConfig(n_scenes=10))
    report["stream"]["hota"], report["offline"]["hota"]

For each held-out synthetic scene (seeds from `training.evaluate.heldout_seed`, split
STREAM_SPLIT, so neither training data nor `molmo-edge eval`'s images and clips), one query
"Track all <shape>s." about the scene's most frequent shape, and two runs of the same engine:

- stream: the real `Pipeline` on the source `synthetic:SEED:WxH` (read in order, not in real
  time), windows of `window` sampled frames every `stride` new ones, the tracker turning
  window-local ids into persistent track ids. What a subscriber has at the end is scored: for
  each sampled frame, the points of the newest event that covers it (later windows replace what
  earlier ones said), with their track ids, against the scene's truth over the whole duration
  (every sampled frame counts, so a frame nothing was published for costs detections).
- offline: the same sampled frames cut into consecutive clips of `window` frames, each asked the
  same question as one 8-frame clip, the way `molmo-edge eval` asks its clips (timestamps relative
  to the clip, ids local to the clip), and scored clip by clip.

Both use training/metrics.py (HOTA with point-in-mask similarity). The stream's ids must hold over
the whole scene, the offline ones only within a clip, so association is harder for the stream;
detection is the same model on the same frames. With stride == window the stream's windows are
exactly the offline clips, and `same_answers` says whether every window's answer text equals the
offline one (it must: both go through `Engine.ask_frames` with the same features and prompt).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.grounding import GroundedPoint
from molmo_edge.stream.events import Event
from molmo_edge.stream.pipeline import Pipeline
from molmo_edge.stream.sampler import FrameSampler, SamplerConfig

STREAM_SPLIT = 2  # training.evaluate uses 0 (images) and 1 (clips)


class StreamAccuracyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(424_242, description="held-out seed (training.evaluate.EVAL_SEED by default)")
    n_scenes: int = Field(10, ge=1, description="held-out scenes, one stream each")
    duration_s: float = Field(20.0, gt=0, description="scene time streamed per scene")
    source_fps: float = Field(10.0, gt=0, description="frame rate of the synthetic camera")
    fps: float = Field(2.0, gt=0, description="sampling rate into the model")
    window: int = Field(8, ge=1, description="sampled frames per window (and per offline clip)")
    stride: int = Field(2, ge=1, description="a window every this many new sampled frames")
    width: int = Field(256, ge=16)
    height: int = Field(256, ge=16)
    max_new_tokens: int = Field(512, ge=1, description="answer length limit, both runs")


@dataclass
class SceneAccuracy:
    seed: int
    query: str
    stream: Any  # training.metrics.HotaStats over the whole scene
    offline: Any  # HotaStats summed over the scene's clips
    windows: int
    clips: int
    same_answers: bool | None  # stride == window only: every window answered as its offline clip

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "query": self.query, "windows": self.windows, "clips": self.clips,
                "same_answers": self.same_answers, "stream": _hota_dict(self.stream),
                "offline": _hota_dict(self.offline)}


def _hota_dict(stats: Any) -> dict[str, float | int]:
    return {"hota": stats.hota, "deta": stats.deta, "assa": stats.assa, "id_switches": stats.id_switches}


def scene_query(scene: Any) -> tuple[str, str] | None:
    """(shape, "Track all <shape>s.") for the scene's most frequent shape (ties: the lowest object
    id's); None for an empty scene."""
    from molmo_edge.training.vocabulary import plural

    if not scene.objects:
        return None
    counts = Counter(o.shape for o in scene.objects)
    shape = max(scene.objects, key=lambda o: (counts[o.shape], -o.object_id)).shape
    return shape, f"Track all {plural(shape)}."


def sampled_times(config: StreamAccuracyConfig, until_s: float) -> list[float]:
    """The media times the stream's sampler takes from the synthetic camera, up to until_s."""
    sampler = FrameSampler(SamplerConfig(target_fps=config.fps))
    times = [k / config.source_fps for k in range(int(config.duration_s * config.source_fps) + 1)]
    return [t for t in times if sampler.offer(t) and t <= until_s + 1e-9]


def _newest_points(events: list[Event]) -> dict[float, list[GroundedPoint]]:
    """Per frame time: the points of the newest event covering it, ids = persistent track ids."""
    newest: dict[float, list[GroundedPoint]] = {}
    for event in events:  # in publish order: later windows replace earlier opinions
        covered = [t for t in newest if event.window_t0_s - 1e-6 <= t <= event.window_t1_s + 1e-6]
        for t in covered:
            newest[t] = []
        for obj in event.objects:
            t = round(obj.t_s, 6)  # frame times, as the sampler took them (keys match sampled_times)
            newest.setdefault(t, []).append(GroundedPoint(obj.track_id, obj.x, obj.y, t_s=obj.t_s))
    return newest


def _stream_run(engine: Any, seed: int, query: str, config: StreamAccuracyConfig) -> list[Event]:
    pipeline = Pipeline(engine, source=f"synthetic:{seed}:{config.width}x{config.height}", queries=[query],
                        source_options={"realtime": False, "fps": config.source_fps,
                                        "duration_s": config.duration_s},
                        window=config.window, stride=config.stride, fps=config.fps,
                        max_new_tokens=config.max_new_tokens)
    with pipeline:
        return list(pipeline)


def scene_accuracy(engine: Any, seed: int, config: StreamAccuracyConfig) -> SceneAccuracy | None:
    """Stream and offline scores of one scene (None for a scene without objects)."""
    from molmo_edge.training.metrics import HotaStats, score_answer, score_tracks
    from molmo_edge.training.scenes import SceneSimulator
    from molmo_edge.training.tasks import Media, Query, TaskConfig, build_example

    scene = SceneSimulator(seed, config.width, config.height)
    asked = scene_query(scene)
    if asked is None:
        return None
    shape, query = asked
    task = TaskConfig(n_frames=config.window, fps=config.fps)

    events = _stream_run(engine, seed, query, config)
    times = sampled_times(config, until_s=events[-1].window_t1_s if events else config.duration_s)
    frames = [scene.frame_at(t) for t in times]
    truth = build_example("track", Media(frames=tuple(f.rgb for f in frames), timestamps_s=tuple(times)),
                          frames, Query(shape, None), task).truth
    newest = _newest_points(events)
    stream_points = [p for t in times for p in newest.get(round(t, 6), [])]
    stream = score_tracks(stream_points, truth)

    offline, answers = HotaStats(), []
    n_clips = len(times) // config.window
    for c in range(n_clips):
        clip_times = times[c * config.window:(c + 1) * config.window]
        clip_frames = frames[c * config.window:(c + 1) * config.window]
        relative = tuple(round(t - clip_times[0], 6) for t in clip_times)
        example = build_example("track", Media(frames=tuple(f.rgb for f in clip_frames), timestamps_s=relative),
                                clip_frames, Query(shape, None), task)
        features = [engine.encode_frame(f.rgb) for f in clip_frames]
        text = engine.ask_frames(features, list(relative), example.prompt, max_new_tokens=config.max_new_tokens).text
        answers.append(text)
        offline = offline + score_answer(example, text).tracking
    same = None
    if config.stride == config.window:
        same = [e.raw_text for e in events[:n_clips]] == answers
    return SceneAccuracy(seed, query, stream, offline, len(events), n_clips, same)


def stream_accuracy(engine: Any, config: StreamAccuracyConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Stream vs offline tracking scores over `config.n_scenes` held-out scenes (empty scenes are
    skipped and replaced by the next seed). HOTA/DetA/AssA are pooled over scenes (the sums of
    training.metrics.HotaStats), as `molmo-edge eval` pools its clips."""
    from molmo_edge.training.evaluate import heldout_seed
    from molmo_edge.training.metrics import HotaStats

    config = config or StreamAccuracyConfig()
    started = time.perf_counter()
    scenes: list[SceneAccuracy] = []
    k = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.n_scenes, desc="stream accuracy", unit="scene")
    while len(scenes) < config.n_scenes:
        result = scene_accuracy(engine, heldout_seed(config.seed, STREAM_SPLIT, k), config)
        k += 1
        if result is None:
            continue
        scenes.append(result)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    stream = sum((s.stream for s in scenes), HotaStats())
    offline = sum((s.offline for s in scenes), HotaStats())
    same = [s.same_answers for s in scenes if s.same_answers is not None]
    return {"stream": _hota_dict(stream), "offline": _hota_dict(offline),
            "hota_difference": stream.hota - offline.hota,
            "same_answers": all(same) if same else None,
            "scenes": [s.to_dict() for s in scenes], "config": config.model_dump(),
            "wall_s": time.perf_counter() - started}
