"""The stages on their own, the host-side helpers, custom masks in training, reduced precision."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from .model_test_inputs import image_inputs, pooling_windows, video_inputs
from molmo_edge.model import (ModelInputError, build_attention_mask, build_prefill_mask, position_ids_from_padding,
                              visual_token_index)

BLOCKED = torch.finfo(torch.float32).min


@torch.no_grad()
def test_stages_compose_to_the_full_forward(tiny_model):
    inputs = image_inputs(tiny_model.config, seed=0)
    features = tiny_model.vision(inputs["pixel_values"])
    n_crops, n_patches = inputs["pixel_values"].shape[:2]
    assert features.shape == (n_crops, n_patches, 32 * 2)  # Dv · n_taps
    visual = tiny_model.connector(features, inputs["image_token_pooling"])
    assert visual.shape == (inputs["image_token_pooling"].shape[0], 64)
    embeds = tiny_model.embed_inputs(inputs["input_ids"], visual)
    mask = tiny_model.build_prefill_mask(inputs["mm_token_type_ids"])
    positions = torch.arange(embeds.shape[1])[None]
    hidden, present = tiny_model.decoder(embeds, mask, positions)
    logits = tiny_model.lm_head(hidden)
    assert torch.allclose(logits, tiny_model(**inputs).logits, atol=1e-6)
    assert len(present) == 2 and present[0][0].shape == (1, 2, embeds.shape[1], 16)  # [B, Hkv, S, hd]
    assert torch.equal(tiny_model(**inputs, visual_tokens=visual).logits, tiny_model(**inputs).logits)


@torch.no_grad()
def test_visual_tokens_are_added_not_written_over(tiny_model):
    inputs = image_inputs(tiny_model.config, seed=1)
    visual = torch.randn(inputs["image_token_pooling"].shape[0], 64)
    embeds = tiny_model.embed_inputs(inputs["input_ids"], visual)
    plain = tiny_model.decoder.embed(inputs["input_ids"])
    patch = inputs["input_ids"][0] == tiny_model.config.image_patch_id
    assert torch.allclose(embeds[0, patch], plain[0, patch] + visual)
    assert torch.equal(embeds[0, ~patch], plain[0, ~patch])


@torch.no_grad()
def test_connector_returns_every_row_and_keeps_fully_padded_rows_finite(tiny_model):
    features = torch.randn(2, 16, 64)
    pooling = torch.tensor([[0, 1, 2, 3], [4, -1, -1, 5], [-1, -1, -1, -1], [31, 30, -1, 16]])
    out = tiny_model.connector(features, pooling)
    assert out.shape == (4, 64) and torch.isfinite(out).all()
    # A padded slot's content does not matter: same row when the padding reads other features.
    shuffled = features.clone()
    shuffled[0, 0] = 100.0  # patch 0 is read only by row 0 and by the clamped -1 slots
    again = tiny_model.connector(shuffled, pooling)
    assert torch.allclose(again[1], out[1], atol=1e-6) and torch.allclose(again[3], out[3], atol=1e-6)
    assert not torch.allclose(again[0], out[0])
    # encode_images drops the all-padding row, as the reference does.
    pixels = torch.randn(2, 16, 588)
    assert tiny_model.encode_images(pixels, pooling).shape == (3, 64)


def test_visual_token_count_mismatch_is_a_clear_error(tiny_model):
    inputs = image_inputs(tiny_model.config, seed=2)
    n = int((inputs["input_ids"] == tiny_model.config.image_patch_id).sum())
    with pytest.raises(ModelInputError, match=f"{n} <im_patch> tokens.*{n - 1} visual tokens"):
        tiny_model(input_ids=inputs["input_ids"], visual_tokens=torch.zeros(n - 1, 64))
    with pytest.raises(ModelInputError, match="image_grids describe"):
        tiny_model(**{**inputs, "image_grids": inputs["image_grids"] + 1})
    with pytest.raises(ModelInputError, match="both"):
        tiny_model(**inputs, pixel_values_videos=inputs["pixel_values"],
                   video_token_pooling=inputs["image_token_pooling"])


@settings(max_examples=60, deadline=None)
@given(mm=st.lists(st.integers(0, 1), min_size=1, max_size=24), n_pad=st.integers(0, 4))
def test_prefill_mask_is_causal_text_plus_one_image_block(mm, n_pad):
    seq = [0] * n_pad + mm
    mm_ids = torch.tensor([seq])
    padding = torch.tensor([[0] * n_pad + [1] * len(mm)])
    mask = build_prefill_mask(mm_ids, padding)[0, 0]
    s = len(seq)
    for q in range(s):
        for k in range(s):
            if q < n_pad:  # a padding query sees only itself
                expected = q == k
            else:
                expected = k >= n_pad and (k <= q or (seq[q] == 1 and seq[k] == 1))
            assert (mask[q, k] == 0).item() == expected, (q, k)
    assert torch.isin(mask, torch.tensor([0.0, BLOCKED])).all()


def test_decode_mask_and_positions_skip_left_padding():
    padding = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_padding(padding).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    step = build_attention_mask(2, 1, past_length=4, padding_mask=padding)
    assert step.shape == (2, 1, 1, 5)
    assert (step[0, 0, 0] == 0).tolist() == [False, False, True, True, True]
    assert (step[1, 0, 0] == 0).all()


def test_visual_token_index_numbers_patches_row_major():
    ids = torch.tensor([[5, 9, 9, 1], [9, 2, 9, 9]])
    assert visual_token_index(ids, 9).tolist() == [[0, 1, 2, 0], [3, 0, 4, 5]]
    with pytest.raises(ModelInputError):
        visual_token_index(ids, 9, n_visual_tokens=4)


def test_pooling_windows_pad_like_the_reference():
    windows, rows, cols = pooling_windows(torch.arange(16).reshape(4, 4), 3, 3)
    assert (rows, cols) == (2, 2)
    assert windows[0].tolist() == [-1, -1, -1, -1, 0, 1, -1, 4, 5]  # floor(2/2)=1 padding row/col before


def test_message_tree_mask_with_custom_positions_trains(tiny_model):
    """Two answers sharing one image prefix, in one row: branch B sees the prefix and itself only,
    positions restart after the prefix. Its logits equal running prefix + B alone, and gradients
    reach the ViT, the connector and the decoder."""
    inputs = image_inputs(tiny_model.config, seed=3, question_tokens=4)
    prefix_ids, prefix_mm = inputs["input_ids"], inputs["mm_token_type_ids"]
    p = prefix_ids.shape[1]
    g = torch.Generator().manual_seed(0)
    branch_a, branch_b = torch.randint(0, 128, (1, 5), generator=g), torch.randint(0, 128, (1, 4), generator=g)
    ids = torch.cat([prefix_ids, branch_a, branch_b], dim=1)
    mm = torch.cat([prefix_mm, torch.zeros(1, 9, dtype=torch.long)], dim=1)
    mask = build_prefill_mask(mm)  # causal + image block
    mask[0, 0, p + 5:, p:p + 5] = BLOCKED  # branch B must not see branch A
    positions = torch.cat([torch.arange(p), torch.arange(p, p + 5), torch.arange(p, p + 4)])[None]

    tiny_model.train()
    out = tiny_model(**{**inputs, "input_ids": ids, "mm_token_type_ids": mm}, attention_mask=mask,
                     position_ids=positions)
    out.logits[0, -4:].logsumexp(-1).sum().backward()
    for module in (tiny_model.vision, tiny_model.connector, tiny_model.decoder):
        grads = [prm.grad for prm in module.parameters() if prm.grad is not None]
        assert grads and any(gr.abs().sum() > 0 for gr in grads)
    tiny_model.eval()
    with torch.no_grad():
        alone = tiny_model(**{**inputs, "input_ids": torch.cat([prefix_ids, branch_b], 1),
                              "mm_token_type_ids": torch.cat([prefix_mm, torch.zeros(1, 4, dtype=torch.long)], 1)})
    assert torch.allclose(out.logits[0, -4:].detach(), alone.logits[0, -4:], atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model):
    inputs = image_inputs(tiny_model.config, seed=6)
    tiny_model.train()
    grads = []
    for enabled in (False, True):
        tiny_model.zero_grad()
        tiny_model.gradient_checkpointing_enable(enabled)
        tiny_model(**inputs).logits.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 50
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


@pytest.mark.parametrize("dtype, rel_tol", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
@torch.no_grad()
def test_reduced_precision_forward_is_close_to_fp32(tiny_model, dtype, rel_tol):
    inputs = video_inputs(tiny_model.config, seed=4)
    for p in tiny_model.parameters():  # larger weights than the 0.02 init so the check has teeth
        if p.dim() > 1:
            p.mul_(4.0)
    reference = tiny_model(**inputs).logits
    low = tiny_model.to(dtype)(**inputs).logits
    assert low.dtype == dtype and torch.isfinite(low).all()
    scale = reference.abs().max().item()
    assert scale > 1.0
    assert (low.float() - reference).abs().max().item() <= rel_tol * scale
