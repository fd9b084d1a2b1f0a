"""Token layout of images and video frames against transformers' Molmo2Processor, and the prompt strings."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.processing import ProcessorConfig, count_prompt, point_prompt, prompt_for_query, track_prompt
from molmo_edge.processing.layout import image_layout, mm_token_type_ids, video_layout
from molmo_edge.processing.prompt import chat_prompt

from .processing_reference import ref_processing

Molmo2Processor = ref_processing.Molmo2Processor
FLAG_NAMES = ("image_use_col_tokens", "use_single_crop_col_tokens", "use_single_crop_start_token",
              "video_use_col_tokens", "use_frame_special_tokens")
FLAG_SETS = [
    dict(),  # the defaults
    dict(use_single_crop_col_tokens=False),  # what the hub's processor_config.json sets
    dict(image_use_col_tokens=False),
    dict(image_use_col_tokens=False, use_single_crop_col_tokens=True, use_single_crop_start_token=False),
    dict(video_use_col_tokens=True, use_frame_special_tokens=False),
]
GRIDS = [(14, 14, 14, 14), (14, 14, 23, 23), (14, 14, 33, 42), (2, 2, 4, 6), (1, 1, 1, 1), (5, 3, 0, 0)]


def _hf_self(cfg: ProcessorConfig) -> SimpleNamespace:
    """Minimal stand-in `self` for the reference methods: only the layout flags they read."""
    return SimpleNamespace(**{name: getattr(cfg, name) for name in FLAG_NAMES})


@pytest.mark.parametrize("flags", FLAG_SETS)
@pytest.mark.parametrize("grid", GRIDS)
def test_image_layout_matches_reference(flags, grid):
    cfg = ProcessorConfig(**flags)
    expected = Molmo2Processor.replace_image_token(_hf_self(cfg), {"image_grids": [list(grid)]}, 0)
    assert image_layout([grid], cfg).to_string() == expected


@pytest.mark.parametrize("flags", FLAG_SETS)
@pytest.mark.parametrize("grid,times", [((3, 9, 9), [0.0, 0.5, 1.0]), ((1, 2, 2), [12.34]),
                                        ((4, 3, 5), [0.0, 0.5, 1.0, 1.27]), ((2, 1, 1), [99.95, 100.0])])
def test_video_layout_matches_reference(flags, grid, times):
    cfg = ProcessorConfig(**flags)
    expected = Molmo2Processor.get_video_string(_hf_self(cfg), torch.tensor(grid), times)
    assert video_layout(grid[1], grid[2], times, cfg).to_string() == expected


@settings(max_examples=60, deadline=None)
@given(grid=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(0, 8), st.integers(0, 8)),
       flags=st.fixed_dictionaries({name: st.booleans() for name in FLAG_NAMES}),
       times=st.lists(st.floats(0, 500, allow_nan=False), min_size=1, max_size=5))
def test_layouts_match_reference_for_any_flags(grid, flags, times):
    cfg = ProcessorConfig(**flags)
    hf_self = _hf_self(cfg)
    assert image_layout([grid], cfg).to_string() == Molmo2Processor.replace_image_token(
        hf_self, {"image_grids": [list(grid)]}, 0)
    video_grid = (len(times), grid[0], grid[1])
    assert video_layout(grid[0], grid[1], times, cfg).to_string() == Molmo2Processor.get_video_string(
        hf_self, torch.tensor(video_grid), times)


def test_ids_equal_tokenizing_the_whole_prompt_string(small_tokenizer):
    cfg = ProcessorConfig(use_single_crop_col_tokens=False)
    for visual in (image_layout([(2, 2, 3, 4), (1, 1, 2, 2)], cfg), video_layout(2, 3, [0.0, 0.5, 1.0, 1.5], cfg)):
        sequence = chat_prompt(small_tokenizer.bos_token, visual, "How many red circles are there?")
        assert sequence.to_ids(small_tokenizer) == small_tokenizer.encode(sequence.to_string())


def test_mm_token_type_ids_mark_exactly_the_visual_special_tokens(small_tokenizer):
    cfg = ProcessorConfig()
    token_ids = small_tokenizer.image_token_ids
    sequence = chat_prompt(small_tokenizer.bos_token, video_layout(2, 2, [0.0, 0.5], cfg), "Track the star.")
    ids = sequence.to_ids(small_tokenizer)
    mm = mm_token_type_ids(ids, token_ids)
    names = [small_tokenizer.id_to_token(i) for i in ids]
    visual_names = {"<im_patch>", "<im_col>", "<im_start>", "<im_end>", "<low_res_im_start>", "<frame_start>",
                    "<frame_end>", "<im_low>"}
    assert mm == [int(name in visual_names) for name in names]
    assert sum(mm) == 2 * (1 + 4 + 1)                        # two frames: start + 2×2 patches + end
    assert mm[names.index("<|im_start|>")] == 0 and mm[0] == 0  # chat tokens and BOS are text


def test_multi_image_labels_follow_the_chat_template():
    cfg = ProcessorConfig()
    text = image_layout([(1, 1, 1, 1)] * 2, cfg).to_string()
    assert text.startswith("Image 1<low_res_im_start>") and "<im_end>Image 2<low_res_im_start>" in text
    assert not image_layout([(1, 1, 1, 1)], cfg).to_string().startswith("Image")


def test_chat_prompt_places_bos_visual_tokens_then_the_user_turn():
    visual = video_layout(1, 1, [0.0], ProcessorConfig())
    text = chat_prompt("<|im_end|>", visual, "Track the star.").to_string()
    assert text == ("<|im_end|>0.0 <frame_start><im_patch><frame_end>"
                    "<|im_start|>user\nTrack the star.<|im_end|>\n<|im_start|>assistant\n")


def test_task_prompt_strings():
    assert point_prompt("the red circle") == (
        "Point to the red circle\nPlease say 'There are none.' if it is not in the image.")
    assert point_prompt("boats", none_hint=False) == "Point to boats"
    assert count_prompt("blue stars") == "How many blue stars are there?"
    assert track_prompt("the green square") == "Track the green square."
    assert track_prompt("cars", fps=2.0) == "Track cars in 2 FPS."


@pytest.mark.parametrize("query,task,expected", [
    ("red circle", "point", point_prompt("red circle")),
    ("  blue stars ", "count", "How many blue stars are there?"),
    ("the yellow triangle", "track", "Track the yellow triangle."),
    ("Point to the red circle", "point", "Point to the red circle"),
    ("how many dogs are there?", "point", "how many dogs are there?"),
    ("Track all stars.", "count", "Track all stars."),
    ("Where is the cup?", "point", "Where is the cup?"),
])
def test_free_queries_become_prompts(query, task, expected):
    assert prompt_for_query(query, task) == expected


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task"):
        prompt_for_query("red circle", "segment")
