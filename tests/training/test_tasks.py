"""Training examples: prompts in the Molmo2 templates, answers that parse back onto the right masks."""
from __future__ import annotations

import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molmo_edge.grounding import NONE_ANSWER, parse, to_pixel_index
from molmo_edge.training.scenes import ObjectSpec, SceneConfig, SceneSimulator
from molmo_edge.training.tasks import (Media, Query, TaskConfig, build_example, examples_from_seed, image_examples,
                                       video_examples, visible_point)

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32)

# the Molmo2 templates, spelled out with the task's own words
_COLOR = "(red|green|blue|yellow|purple|orange)"
_ONE = "(circle|square|triangle|star)"
_MANY = "(circles|squares|triangles|stars)"
_POINT = rf"^Point to (the {_COLOR} {_ONE}|all {_MANY})\n"
_COUNT = rf"^How many {_COLOR} {_MANY} are there\?$"
PROMPT_FORMS = {
    "point": _POINT,
    "video_point": _POINT,
    "count": _COUNT,
    "video_count": _COUNT,
    "track": rf"^Track (the {_COLOR} {_ONE}|all {_MANY})\.$",
}


def _object_under(labels: np.ndarray, point) -> int:
    row, col = to_pixel_index(point.x, point.y, labels.shape[1], labels.shape[0])
    return int(labels[row, col])


@SETTINGS
@given(seed=seeds)
def test_image_answers_parse_back_onto_their_target_masks(seed):
    for ex in examples_from_seed(seed, video=False, width=160, height=120):
        assert re.match(PROMPT_FORMS[ex.kind], ex.prompt), ex.prompt
        result = parse(ex.answer)
        assert result.ok, result.errors
        if ex.is_negative:
            assert ex.answer == NONE_ANSWER and result.none and result.count == 0
            continue
        hit = [_object_under(ex.truth.label_maps[0], p) for p in result.points]
        # one point per target, each inside its own target's visible mask
        assert sorted(hit) == sorted(ex.truth.target_ids)
        assert result.count == ex.truth.count
        ids = [p.object_id for p in result.points]
        assert sorted(ids) == list(range(1, ex.truth.count + 1))


@SETTINGS
@given(seed=seeds)
def test_video_answers_parse_back(seed):
    cfg = TaskConfig(n_frames=8, examples_per_input=4)
    for ex in examples_from_seed(seed, video=True, width=128, height=96, task_config=cfg):
        assert re.match(PROMPT_FORMS[ex.kind], ex.prompt), ex.prompt
        assert ex.media.timestamps_s == (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5)
        result = parse(ex.answer)
        assert result.ok, result.errors
        truth = ex.truth
        if ex.is_negative:
            assert result.none
            continue
        answer_to_scene: dict[int, int] = {}
        for p in result.points:
            k = truth.timestamps_s.index(p.t_s)  # one decimal, relative to the clip start
            scene_id = _object_under(truth.label_maps[k], p)
            assert scene_id in truth.frame_target_ids[k]
            # an answer id names one scene object throughout
            assert answer_to_scene.setdefault(p.object_id, scene_id) == scene_id
        assert sorted(answer_to_scene.values()) == list(truth.target_ids)
        if ex.kind == "track":
            # every frame lists exactly the targets visible enough there
            for k, t_s in enumerate(truth.timestamps_s):
                at_k = sorted(answer_to_scene[p.object_id] for p in result.points if p.t_s == t_s)
                assert at_k == list(truth.frame_target_ids[k])
        else:
            # pointing / counting mark each object once, at the first frame it is seen well enough
            assert len(result.points) == truth.count
            for p in result.points:
                first = next(k for k, ids in enumerate(truth.frame_target_ids) if answer_to_scene[p.object_id] in ids)
                assert p.t_s == truth.timestamps_s[first]
        if ex.kind == "video_count":
            assert result.count == truth.count


def test_negatives_at_a_sensible_rate_and_every_task_appears():
    kinds, negatives, total = set(), 0, 0
    for seed in range(60):
        for ex in examples_from_seed(seed, video=seed % 2 == 1, width=96, height=96):
            kinds.add(ex.kind)
            negatives += ex.is_negative
            total += 1
    assert kinds == {"point", "count", "video_point", "video_count", "track"}
    # negative_rate 0.2, plus scenes with nothing visible enough (always negative)
    assert 0.12 <= negatives / total <= 0.45


def test_examples_are_deterministic_and_share_their_media():
    a = examples_from_seed(123, video=True, width=64, height=64)
    b = examples_from_seed(123, video=True, width=64, height=64)
    assert [(e.kind, e.prompt, e.answer) for e in a] == [(e.kind, e.prompt, e.answer) for e in b]
    assert all(np.array_equal(x, y) for x, y in zip(a[0].media.frames, b[0].media.frames))
    assert all(e.media is a[0].media for e in a)  # one visual input, several annotations


def test_hidden_objects_are_not_asked_for_but_ignored():
    # a green circle fully in view, a second green circle almost entirely behind a nearer square
    cfg = SceneConfig(shapes=("circle", "square"), colors=("green", "blue"))
    def spec(i, shape, color, rgb, size, depth, center):
        return ObjectSpec(object_id=i, shape=shape, color=color, color_rgb=rgb, size_px=size, rotation_rad=0.0,
                          depth_m=depth, start_center_px=center, velocity_px_s=(0.0, 0.0), bounds_px=(0, 0, 96, 96))

    objects = [spec(1, "circle", "green", (30, 175, 50), 20, 1.0, (20.0, 20.0)),
               spec(2, "circle", "green", (30, 175, 50), 20, 2.0, (55.0, 60.0)),
               spec(3, "square", "blue", (35, 75, 215), 24, 1.0, (62.0, 60.0))]
    sim = SceneSimulator(0, 96, 96, config=cfg, objects=objects)
    frame = sim.frame_at(0.0)
    assert 0 < frame.object(2).visible_fraction < 0.3 < frame.object(1).visible_fraction
    media = Media(frames=(frame.rgb,))
    ex = build_example("point", media, [frame], Query("circle", "green"), TaskConfig())
    assert ex.truth.target_ids == (1,) and ex.truth.ignore_ids == (2,)
    assert len(parse(ex.answer).points) == 1


def test_visible_point_is_deep_inside_the_mask():
    labels = np.zeros((40, 60), np.uint8)
    labels[10:30, 5:45] = 4  # a 20 x 40 rectangle
    x, y = visible_point(labels, 4)
    assert 5 + 9 <= x * 60 <= 45 - 9 and 19 <= y * 40 <= 21
    labels[:, :] = 0
    labels[0:10, 0:10] = 2  # cut by the frame corner: the point keeps away from the frame edge too
    x, y = visible_point(labels, 2)
    assert 3 <= x * 60 <= 7 and 3 <= y * 40 <= 7
    assert visible_point(labels, 9) is None


def test_image_and_video_helpers_use_the_requested_counts():
    sim = SceneSimulator(8, 96, 96)
    rng = np.random.Generator(np.random.PCG64(0))
    cfg = TaskConfig(examples_per_input=5, n_frames=10, fps=2.0)
    images = image_examples(sim, 1.0, rng, cfg)
    clip = video_examples(sim, 3.0, rng, cfg)
    for group in (images, clip):
        # up to 5 annotations per input, never the same question twice
        assert 1 <= len(group) <= 5
        assert len({(e.kind, e.prompt) for e in group}) == len(group)
    assert len(clip[0].media.frames) == 10 and clip[0].media.timestamps_s[-1] == 4.5
    assert clip[0].truth.label_maps.shape == (10, 96, 96)


def test_clip_lengths_vary_only_when_min_frames_is_set():
    fixed = [examples_from_seed(s, video=True, width=64, height=64) for s in range(12)]
    again = [examples_from_seed(s, video=True, width=64, height=64, task_config=TaskConfig(min_frames=None))
             for s in range(12)]
    assert [[e.answer for e in x] for x in fixed] == [[e.answer for e in x] for x in again]
    assert {len(x[0].media.frames) for x in fixed} == {8}

    cfg = TaskConfig(min_frames=2, n_frames=6, examples_per_input=2)
    lengths = set()
    for seed in range(40):
        examples = examples_from_seed(seed, video=True, width=64, height=64, task_config=cfg)
        n = len(examples[0].media.frames)
        lengths.add(n)
        for ex in examples:
            assert ex.media.timestamps_s == tuple(round(k * 0.5, 1) for k in range(n))
            assert ex.truth.label_maps.shape[0] == n == len(ex.truth.frame_target_ids)
            assert parse(ex.answer).ok
    assert lengths == {2, 3, 4, 5, 6}


def test_min_frames_above_n_frames_is_refused():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="min_frames"):
        TaskConfig(min_frames=9, n_frames=8)


def test_keep_negative_rate_asks_fewer_negatives_than_the_free_redraw():
    """With 6 questions per input, free redraws let absent combinations fill the slots of repeated
    positives (about half the counting questions become negatives); keeping each slot's polarity
    brings the share down (empty scenes and scenes out of positives still add negatives)."""
    def shares(keep: bool) -> tuple[float, int]:
        negatives = total = 0
        for seed in range(80):
            examples = examples_from_seed(seed, width=96, height=96,
                                          task_config=TaskConfig(examples_per_input=6, keep_negative_rate=keep))
            questions = [(e.kind, e.prompt) for e in examples]
            assert len(set(questions)) == len(questions)  # still all different
            negatives += sum(e.is_negative for e in examples)
            total += len(examples)
        return negatives / total, total

    free, _ = shares(False)
    kept, _ = shares(True)
    assert kept < free - 0.05, (kept, free)
    assert TaskConfig().keep_negative_rate is False  # the shipped model's recipes keep their data
