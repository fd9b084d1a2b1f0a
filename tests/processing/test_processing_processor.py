"""Processor end to end: generated images and a generated video file, against transformers' Molmo2Processor."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from molmo_edge.errors import CheckpointError
from molmo_edge.processing import InputError, Processor, ProcessorConfig, read_video

from .processing_reference import reference_molmo2_processor

IMAGE_KEYS = {"input_ids", "mm_token_type_ids", "pixel_values", "image_token_pooling", "image_grids"}
VIDEO_KEYS = {"input_ids", "mm_token_type_ids", "pixel_values_videos", "video_token_pooling", "video_grids"}
SMALL = ProcessorConfig(crop_size=56, overlap_margins=(1, 1), max_crops=4)


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A generated picture: noisy background with a filled circle and a square."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    cv2.circle(image, (width // 3, height // 2), max(2, min(height, width) // 6), (255, 0, 0), -1)
    cv2.rectangle(image, (2 * width // 3, height // 4), (2 * width // 3 + width // 8, height // 4 + height // 8),
                  (0, 0, 255), -1)
    return image


def _user(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def _assert_same(ours, theirs, keys):
    assert set(ours) == keys
    for key in keys:
        assert ours[key].dtype == (torch.float32 if key.startswith("pixel") else torch.int64), key
        assert torch.equal(ours[key], theirs[key].to(ours[key].dtype)), key


@pytest.mark.parametrize("cfg", [ProcessorConfig(), SMALL, ProcessorConfig(use_single_crop_col_tokens=False)],
                         ids=["default", "small", "hub-flags"])
def test_single_image_matches_transformers(small_tokenizer, small_tokenizer_json, cfg):
    image = _scene(240, 320)
    ours = Processor(small_tokenizer, cfg)("Point to the red circle", images=image)
    theirs = reference_molmo2_processor(small_tokenizer_json, cfg)(
        images=[image], text="<|image|>" + _user("Point to the red circle"), return_tensors="pt")
    _assert_same(ours, theirs, IMAGE_KEYS)
    n_patch_tokens = int((ours["input_ids"] == small_tokenizer.image_token_ids.image_patch).sum())
    assert n_patch_tokens == ours["image_token_pooling"].shape[0]


def test_several_images_match_transformers(small_tokenizer, small_tokenizer_json):
    images = [_scene(120, 90, 1), _scene(300, 500, 2)]
    ours = Processor(small_tokenizer, ProcessorConfig())("How many squares are there?", images=images)
    theirs = reference_molmo2_processor(small_tokenizer_json, ProcessorConfig())(
        images=images, text="Image 1<|image|>Image 2<|image|>" + _user("How many squares are there?"),
        return_tensors="pt")
    _assert_same(ours, theirs, IMAGE_KEYS)


def _write_scene_video(path, n_frames=16, fps=8.0, size=(96, 64)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(n_frames):
        frame = np.full((size[1], size[0], 3), 30, dtype=np.uint8)
        cv2.circle(frame, (8 + 4 * i, size[1] // 2), 6, (0, 200, 255), -1)  # a moving object (BGR)
        writer.write(frame)
    writer.release()


def test_video_file_matches_transformers(small_tokenizer, small_tokenizer_json, tmp_path):
    _write_scene_video(tmp_path / "clip.avi")  # 2 s at 8 fps
    cfg = ProcessorConfig(crop_size=56, overlap_margins=(1, 1))
    frames, times = read_video(tmp_path / "clip.avi", cfg)
    assert times.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    ours = Processor(small_tokenizer, cfg)("Track the orange circle.", video=(frames, times))
    theirs = reference_molmo2_processor(small_tokenizer_json, cfg, timestamps_s=times)(
        videos=[frames], text="<|video|>" + _user("Track the orange circle."), return_tensors="pt")
    _assert_same(ours, theirs, VIDEO_KEYS)
    assert small_tokenizer.decode(ours["input_ids"][0]).startswith("0.0  0.5  1.0  1.5  2.0 user\n")


def test_window_prompt_equals_the_full_call_with_relative_times(small_tokenizer):
    processor = Processor(small_tokenizer, SMALL)
    frames = [_scene(64, 96, seed) for seed in range(3)]
    full = processor("Track all stars.", video=(frames, [0.0, 0.5, 1.0]))
    ids, mm = processor.video_prompt_from_frames(3, [10.0, 10.5, 11.0], "Track all stars.")
    assert torch.equal(ids, full["input_ids"]) and torch.equal(mm, full["mm_token_type_ids"])
    per_frame = [processor.preprocess_frame(frame) for frame in frames]
    assert torch.equal(torch.cat([f.pixel_values for f in per_frame]), full["pixel_values_videos"])


def test_image_prompt_equals_the_full_call(small_tokenizer):
    processor = Processor(small_tokenizer, SMALL)
    images = [_scene(100, 80), _scene(30, 200)]
    full = processor("Point to the circle", images=images)
    ids, mm = processor.image_prompt(full["image_grids"].tolist(), "Point to the circle")
    assert torch.equal(ids, full["input_ids"]) and torch.equal(mm, full["mm_token_type_ids"])


def test_text_only_prompt(small_tokenizer):
    processor = Processor(small_tokenizer, SMALL)
    out = processor("hello")
    assert set(out) == {"input_ids", "mm_token_type_ids"} and int(out["mm_token_type_ids"].sum()) == 0
    assert processor.decode(out["input_ids"], skip_special_tokens=False) == (
        "<|im_end|><|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")


def test_save_and_load_a_processor_folder(small_tokenizer, tmp_path):
    Processor(small_tokenizer, SMALL).save_pretrained(tmp_path)
    loaded = Processor.from_pretrained(tmp_path)
    assert loaded.cfg == SMALL and loaded.tokenizer.base_vocab_size == small_tokenizer.base_vocab_size
    image = _scene(50, 70)
    assert torch.equal(loaded("Point to the circle", images=image)["input_ids"],
                       Processor(small_tokenizer, SMALL)("Point to the circle", images=image)["input_ids"])
    (tmp_path / "config.json").write_text(json.dumps({"image_patch_id": 5}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="image_patch_id"):
        Processor.from_pretrained(tmp_path)


def test_processor_feeds_the_tiny_model(tiny_checkpoint):
    from molmo_edge.model import load_checkpoint

    processor = Processor.from_pretrained(tiny_checkpoint)
    model = load_checkpoint(tiny_checkpoint)
    inputs = processor("Point to the red circle", images=_scene(80, 120))
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    assert logits.shape[-1] == processor.tokenizer.base_vocab_size


@pytest.mark.parametrize("call,message", [
    (lambda p, img: p("x", video=([img, img], [0.0])), "2 frames"),
    (lambda p, img: p("x", video=([img, img], [1.0, 0.5])), "decrease"),
    (lambda p, img: p("x", video=[img]), "pair"),
    (lambda p, img: p("x", images=[]), "empty"),
    (lambda p, img: p(None, images=img), "string"),
    (lambda p, img: p.video_prompt_from_frames(2, [0.0, float("nan")], "x"), "finite"),
])
def test_bad_calls_get_clear_errors(small_tokenizer, call, message):
    with pytest.raises(InputError, match=message):
        call(Processor(small_tokenizer, SMALL), _scene(20, 20))


def test_model_inputs_move_and_cast(small_tokenizer):
    inputs = Processor(small_tokenizer, SMALL)("Point to the circle", images=_scene(40, 40))
    half = inputs.to("cpu", dtype=torch.float16)
    assert half["pixel_values"].dtype == torch.float16 and half["input_ids"].dtype == torch.int64
