"""The Engine: images, video, cached frame features; prompts; answers with points and timings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from molmo_edge.engine.engine import Answer, Engine, FrameFeatures
from molmo_edge.engine.generation import GenerationResult
from molmo_edge.errors import InputError
from molmo_edge.grounding import GroundedPoint, parse
from molmo_edge.processing.prompt import count_prompt, point_prompt

from .conftest import random_image

NO_EOS = {"eos_token_ids": [], "max_new_tokens": 12}


def test_ask_frames_equals_ask_video(engine, clip):
    frames, times_s = clip
    whole = engine.ask_video(frames, times_s, "Track the red circle.", **NO_EOS)
    features = [engine.encode_frame(frame) for frame in frames]
    cached = engine.ask_frames(features, times_s, "Track the red circle.", **NO_EOS)
    assert cached.generation.token_ids == whole.generation.token_ids
    assert cached.text == whole.text
    # the visual tokens themselves: per-frame encoding == whole-clip encoding
    inputs = engine.processor("Track the red circle.", video=(frames, times_s))
    clip_tokens = engine.backend.encode_visual(inputs["pixel_values_videos"], inputs["video_token_pooling"])
    torch.testing.assert_close(torch.cat([f.visual_tokens for f in features]), clip_tokens, atol=1e-5, rtol=1e-5)
    assert all(f.n_tokens == clip_tokens.shape[0] // len(frames) for f in features)
    assert (features[0].width_px, features[0].height_px) == (72, 60)


def test_ask_frames_sliding_window_uses_relative_times(engine, clip):
    """A window cut from a longer stream equals the same frames asked as their own clip from t = 0."""
    frames, times_s = clip
    features = [engine.encode_frame(frame) for frame in frames]
    window = engine.ask_frames(features[1:], times_s[1:], "Track all stars.", **NO_EOS)
    shifted = [t - times_s[1] for t in times_s[1:]]
    fresh = engine.ask_video(frames[1:], shifted, "Track all stars.", **NO_EOS)
    assert window.generation.token_ids == fresh.generation.token_ids
    # and the frames really matter: the same prompt over other frames gives other logits
    ids, mm = engine.processor.video_prompt_from_frames(3, times_s[1:], "Track all stars.")
    logits = [engine.backend.prefill(ids, torch.cat([f.visual_tokens for f in window_features]), mm)[0]
              for window_features in (features[1:], features[:3])]
    assert (logits[0] - logits[1]).abs().max() > 1e-2


def test_ask_frames_rejects_bad_windows(engine, clip):
    frames, times_s = clip
    features = [engine.encode_frame(frame) for frame in frames[:2]]
    with pytest.raises(InputError, match="at least one frame"):
        engine.ask_frames([], [], "Track x.")
    with pytest.raises(InputError, match="timestamps"):
        engine.ask_frames(features, [0.0], "Track x.")
    with pytest.raises(InputError, match="must not decrease"):
        engine.ask_frames(features, [1.0, 0.5], "Track x.")
    odd = FrameFeatures(visual_tokens=features[0].visual_tokens[:-1], width_px=72, height_px=60)
    with pytest.raises(InputError, match="different token counts"):
        engine.ask_frames([features[0], odd], [0.0, 0.5], "Track x.")


def test_ask_image_equals_model_generate(engine):
    images = [random_image(20), random_image(21, 50, 90)]
    answer = engine.ask_image(images, "Point to the blue star", max_new_tokens=16)
    inputs = engine.processor("Point to the blue star", images=images)
    expected = engine.backend.model.generate(**inputs, max_new_tokens=16)[0, inputs["input_ids"].shape[1]:]
    assert answer.generation.token_ids == expected.tolist()
    assert isinstance(answer, Answer) and isinstance(answer.generation, GenerationResult)
    assert answer.image_sizes == [(100, 80), (90, 50)]
    assert set(answer.timings_ms) == {"vision", "prefill", "decode", "total"}
    assert answer.timings_ms["vision"] > 0 and answer.timings_ms["total"] >= answer.timings_ms["vision"]
    assert answer.grounding == parse(answer.text, kind_hint="image")


def test_ask_image_reads_files(engine, tmp_path):
    import cv2

    image = random_image(22)
    cv2.imwrite(str(tmp_path / "img.png"), image[:, :, ::-1])
    from_file = engine.ask_image(tmp_path / "img.png", "Point to x", **NO_EOS)
    from_array = engine.ask_image(image, "Point to x", **NO_EOS)
    assert from_file.generation.token_ids == from_array.generation.token_ids
    with pytest.raises(InputError, match="does not exist"):
        engine.ask_image(tmp_path / "missing.png", "Point to x")
    with pytest.raises(InputError, match="RGB uint8 array"):
        engine.ask_image(42, "Point to x")


@pytest.mark.parametrize("query, task, expected", [
    ("red circle", "point", point_prompt("red circle")),
    ("  blue stars ", "count", count_prompt("blue stars")),
    ("Point to the cup.", "point", "Point to the cup."),
    ("How many dogs are there?", "point", "How many dogs are there?"),
])
def test_prompt_builder(query, task, expected):
    assert Engine.prompt(query, task) == expected


def test_empty_query_is_an_input_error(engine):
    with pytest.raises(InputError, match="query is empty"):
        engine.point(random_image(0), "   ")


def test_point_and_count_use_the_task_prompts(engine):
    image = random_image(23)
    assert engine.point(image, "red circle", **NO_EOS) == \
        engine.ask_image(image, point_prompt("red circle"), **NO_EOS).grounding
    assert engine.count(image, "stars", **NO_EOS) == \
        engine.ask_image(image, count_prompt("stars"), **NO_EOS).grounding


def test_points_in_pixels_follow_their_image():
    result = parse('<points coords="1 1 500 250;2 2 100 900">cup</points>', kind_hint="image")
    answer = Answer(text="", grounding=result, timings_ms={}, generation=GenerationResult("", [], "eos"),
                    image_sizes=[(200, 100), (40, 20)])
    assert result.ok and [p.image_index for p in result.points] == [1, 2]
    by_object = {p.object_id: (u, v) for p, u, v in answer.points_px()}
    assert by_object[1] == pytest.approx(GroundedPoint(1, 0.5, 0.25).to_pixels(200, 100))
    assert by_object[2] == pytest.approx(GroundedPoint(2, 0.1, 0.9).to_pixels(40, 20))


def test_encode_frame_checks_its_input(engine):
    with pytest.raises(InputError):
        engine.encode_frame(np.zeros((10, 10), dtype=np.float64))
