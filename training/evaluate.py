"""Evaluate a model on held-out synthetic scenes: the numbers `molmo-edge eval` reports.

    from molmo_edge.training.evaluate import EvalConfig, evaluate
    report = evaluate("runs/tiny/final", EvalConfig(n_image=200, n_video=60))
    report["pointing_f1"], report["tracking_hota"]

What is asked. `n_image` held-out images and `n_video` held-out clips, each with up to
`questions_per_input` different questions (training/tasks.py draws them: "Point to the red
circle", "Point to all circles", "How many red circles are there?" on images; the same pointing and
counting questions plus "Track the red circle." / "Track all circles." on clips), so
`n_examples` (scored answers) is a few times the number of inputs. Clips have `n_frames` frames at
`fps` (8 at 2 fps: the streaming window) and at most `video_max_objects` objects (4: the tracking
target of the shipped model); images use the training scene distribution (0-8 objects).

Held-out split. Item k of a split gets the scene seed SeedSequence([seed, split, k]) (split 0 =
images, 1 = clips); the default `seed` (EVAL_SEED) differs from every training data seed in the
recipes (training items use SeedSequence([data_seed, index]): two integers, never three, so the
two streams are different hash inputs and can only collide by a 32-bit accident; with 10^5
training items and 10^3 held-out items that chance is ~2 %, for one scene).

How answers are scored: training/metrics.py (point in the right object's mask, one-to-one;
exact count; HOTA with point-in-mask similarity). The model runs through `molmo_edge.engine`
(greedy decoding), so checkpoint folders and exported bundles are evaluated the same way. A clip's
frames are encoded once and every question about it reuses the features (`Engine.ask_frames`,
the stream's path, which builds exactly the prompt of `ask_video`).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.report_paths import portable_path
from molmo_edge.training.metrics import ExampleScore, score_answer, summarize

EVAL_SEED = 424_242  # default held-out seed; training recipes use small data seeds (0, 1, ...)
IMAGE_SPLIT, VIDEO_SPLIT = 0, 1


class EvalConfig(BaseModel):
    """What to evaluate on. The defaults are the held-out set the shipped model is judged on."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(EVAL_SEED, description="held-out seed (see the module docstring for the split)")
    n_image: int = Field(200, ge=0, description="held-out images")
    n_video: int = Field(60, ge=0, description="held-out clips")
    questions_per_input: int = Field(3, ge=1, description="different questions asked about each image / clip")
    n_frames: int = Field(8, ge=1, description="frames per clip")
    fps: float = Field(2.0, gt=0, description="frames per second of a clip")
    video_max_objects: int = Field(4, ge=0, description="most objects in a clip's scene")
    width: int = Field(256, ge=16)
    height: int = Field(256, ge=16)
    max_new_tokens: int = Field(512, ge=1, description="answer length limit")
    keep_predictions: bool = Field(False, description="put every prompt / answer / score in the report")


def heldout_seed(seed: int, split: int, index: int) -> int:
    """Scene seed of held-out item `index` of `split` (IMAGE_SPLIT / VIDEO_SPLIT)."""
    return int(np.random.SeedSequence([int(seed), int(split), int(index)]).generate_state(1)[0])


def heldout_items(config: EvalConfig) -> list[tuple[str, int, list]]:
    """[(split name, scene seed, examples sharing one Media)], images first, then clips."""
    from molmo_edge.training.scenes import SceneConfig
    from molmo_edge.training.tasks import TaskConfig, examples_from_seed

    task = TaskConfig(examples_per_input=config.questions_per_input, n_frames=config.n_frames, fps=config.fps)
    video_scene = SceneConfig(max_objects=config.video_max_objects,
                              min_objects=min(SceneConfig().min_objects, config.video_max_objects))
    items = []
    for k in range(config.n_image):
        seed = heldout_seed(config.seed, IMAGE_SPLIT, k)
        items.append(("image", seed, examples_from_seed(seed, video=False, width=config.width,
                                                        height=config.height, task_config=task)))
    for k in range(config.n_video):
        seed = heldout_seed(config.seed, VIDEO_SPLIT, k)
        items.append(("video", seed, examples_from_seed(seed, video=True, width=config.width, height=config.height,
                                                        scene_config=video_scene, task_config=task)))
    return items


def _answers(engine: Any, examples: list, max_new_tokens: int) -> list[str]:
    """The engine's answer text to every example of one visual input."""
    media = examples[0].media
    if media.is_video:
        features = [engine.encode_frame(frame) for frame in media.frames]  # ViT once per frame
        return [engine.ask_frames(features, list(media.timestamps_s), ex.prompt,
                                  max_new_tokens=max_new_tokens).text for ex in examples]
    return [engine.ask_image(media.image, ex.prompt, max_new_tokens=max_new_tokens).text for ex in examples]


def _query_kind(example: Any) -> str:
    """"one" for a query naming a colour ("the red circle"), "all" for "all circles"."""
    from molmo_edge.training.vocabulary import NAMED_COLORS_RGB

    return "one" if example.label.split(" ")[0] in NAMED_COLORS_RGB else "all"


def _per_task(scored: list[tuple[Any, ExampleScore]]) -> dict[str, dict[str, Any]]:
    """The summary of each task kind on its own, and of pointing / tracking per query kind
    ("point:one" = "Point to the red circle", "point:all" = "Point to all circles")."""
    groups: dict[str, list[ExampleScore]] = {}
    for example, score in scored:
        groups.setdefault(score.kind, []).append(score)
        if score.kind in ("point", "video_point", "track"):
            groups.setdefault(f"{score.kind}:{_query_kind(example)}", []).append(score)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(groups):
        summary = {k: v for k, v in summarize(groups[name]).items() if v is not None}
        summary["parse_errors"] = sum(not s.parse_ok for s in groups[name])
        out[name] = summary
    return out


def _count_accuracy_by_truth(scored: list[tuple[Any, ExampleScore]]) -> dict[str, dict[str, float]]:
    """Image and clip counting accuracy per true count: {"3": {"accuracy": 0.9, "n": 20}, ...}."""
    by_count: dict[int, list[bool]] = {}
    for example, score in scored:
        if score.count_correct is not None:
            by_count.setdefault(example.truth.count, []).append(bool(score.count_correct))
    return {str(n): {"accuracy": float(np.mean(v)), "n": len(v)} for n, v in sorted(by_count.items())}


def evaluate_engine(engine: Any, config: EvalConfig | None = None,
                    progress: bool | Callable[[Iterable], Iterable] = True) -> dict[str, Any]:
    """Score an Engine (molmo_edge.engine.engine.Engine) on the held-out set of `config`.

    Returns the metrics.summarize keys (pointing_f1, pointing_precision, pointing_recall,
    count_accuracy, video_pointing_f1, tracking_hota, tracking_deta, tracking_assa, id_switches,
    n_examples; None for a task with no example) plus `per_task` (the same per task kind, and per
    query kind for pointing / tracking: "point:one", "point:all", ...), `task_counts`,
    `count_accuracy_by_true_count`, `n_inputs`, `parse_errors`, `config`, `wall_s`, and with
    keep_predictions a `predictions` list.
    """
    config = config or EvalConfig()
    started = time.monotonic()
    items = heldout_items(config)
    iterator: Iterable = items
    if progress is True:
        from tqdm import tqdm

        iterator = tqdm(items, desc="eval", unit="input")
    elif callable(progress):
        iterator = progress(items)

    scored: list[tuple[Any, ExampleScore]] = []
    predictions: list[dict[str, Any]] = []
    for split, seed, examples in iterator:
        for example, text in zip(examples, _answers(engine, examples, config.max_new_tokens)):
            score = score_answer(example, text)
            scored.append((example, score))
            if config.keep_predictions:
                predictions.append({"split": split, "scene_seed": seed, "kind": example.kind,
                                    "prompt": example.prompt, "target": example.answer, "output": text,
                                    "score": _score_json(score)})

    scores = [score for _, score in scored]
    report: dict[str, Any] = dict(summarize(scores))
    report["per_task"] = _per_task(scored)
    report["count_accuracy_by_true_count"] = _count_accuracy_by_truth(scored)
    report["task_counts"] = dict(sorted(Counter(s.kind for s in scores).items()))
    report["parse_errors"] = sum(not s.parse_ok for s in scores)
    report["n_inputs"] = {"image": config.n_image, "video": config.n_video}
    report["config"] = config.model_dump(mode="json", exclude={"keep_predictions"})
    report["wall_s"] = round(time.monotonic() - started, 3)
    if config.keep_predictions:
        report["predictions"] = predictions
    return report


def evaluate(model: str | Path | None = None, config: EvalConfig | None = None, backend: str = "auto",
             device: str | None = None, dtype: str | None = None,
             progress: bool | Callable[[Iterable], Iterable] = True) -> dict[str, Any]:
    """Load `model` (a checkpoint or bundle folder; None = the shipped model) and evaluate it.

    The report of `evaluate_engine` plus `model` (the resolved folder), `backend` (the backend's
    name) and `device`.
    """
    from molmo_edge.engine.engine import Engine
    from molmo_edge.engine.loading import resolve_model_path

    folder, _ = resolve_model_path(model)
    with Engine.from_pretrained(folder, backend=backend, device=device, dtype=dtype) as engine:
        report = evaluate_engine(engine, config, progress=progress)
        report["backend"] = engine.backend.name
        report["device"] = str(getattr(engine.backend, "device", device or "cpu"))
    report["model"] = portable_path(folder)  # no machine-specific path in a report that may be committed
    return report


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as indented JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _score_json(score: ExampleScore) -> dict[str, Any]:
    out: dict[str, Any] = {"parse_ok": score.parse_ok}
    if score.pointing is not None:
        out.update(tp=score.pointing.tp, fp=score.pointing.fp, fn=score.pointing.fn)
    if score.count_correct is not None:
        out["count_correct"] = score.count_correct
    if score.tracking is not None:
        out.update(hota=round(float(score.tracking.hota), 4), id_switches=int(score.tracking.id_switches))
    return out
