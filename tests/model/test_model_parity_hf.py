"""Numerical parity with transformers 5.23's Molmo2ForConditionalGeneration (fp32, CPU).

The same weights go into both models (HF random init -> save_pretrained -> our load_checkpoint,
and our save_checkpoint -> HF from_pretrained); identical inputs; logits within 1e-4, greedy
tokens identical, KV-cache decoding identical to a full re-prefill.
"""
from __future__ import annotations

import pytest
import torch

from .model_test_inputs import image_inputs, text_inputs, video_inputs
from molmo_edge.model import load_checkpoint, save_checkpoint

ATOL = 1e-4

INPUT_KINDS = {
    "one-image-multicrop": lambda cfg: image_inputs(cfg, seed=1, highres_crops=[(2, 2)]),
    "two-images": lambda cfg: image_inputs(cfg, seed=2, highres_crops=[(2, 2), (1, 2)]),
    "video-3-frames": lambda cfg: video_inputs(cfg, seed=3, n_frames=3),
    "text-only": lambda cfg: text_inputs(cfg, seed=4),
}


@pytest.fixture(scope="module")
def ours(hf_reference):
    _, _, folder = hf_reference
    return load_checkpoint(folder)


@pytest.mark.parametrize("kind", list(INPUT_KINDS))
@torch.no_grad()
def test_logits_match_reference(hf_reference, ours, kind):
    _, hf_model, _ = hf_reference
    inputs = INPUT_KINDS[kind](ours.config)
    expected = hf_model(**inputs).logits
    got = ours(**inputs).logits
    assert got.shape == expected.shape
    diff = (got - expected).abs().max().item()
    assert diff <= ATOL, f"max |logits - reference| = {diff:.2e}"
    # A real check, not a vacuous one: the image part changes the logits.
    if kind != "text-only":
        text_only = ours(input_ids=inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"]).logits
        assert (text_only - got).abs().max().item() > 1e-3


@torch.no_grad()
def test_greedy_generation_matches_reference(hf_reference, ours):
    _, hf_model, _ = hf_reference
    inputs = image_inputs(ours.config, seed=5, highres_crops=[(2, 2)])
    expected = hf_model.generate(**inputs, max_new_tokens=32, do_sample=False)
    got = ours.generate(**inputs, max_new_tokens=32)
    assert got.shape == expected.shape == (1, inputs["input_ids"].shape[1] + 32)
    assert torch.equal(got, expected)
    assert len(set(got[0, -32:].tolist())) > 1  # not a degenerate constant stream


@pytest.mark.parametrize("kind", ["one-image-multicrop", "video-3-frames"])
@torch.no_grad()
def test_kv_cache_decode_equals_full_prefill(ours, kind):
    inputs = INPUT_KINDS[kind](ours.config)
    prompt_length = inputs["input_ids"].shape[1]
    out = ours(**inputs)
    past, logits_steps = out.past_key_values, [out.logits[:, -1]]
    tokens = []
    for _ in range(6):
        token = logits_steps[-1].argmax(-1, keepdim=True)
        tokens.append(token)
        step = ours(token, past_key_values=past)
        past = step.past_key_values
        logits_steps.append(step.logits[:, -1])
    full_ids = torch.cat([inputs["input_ids"], *tokens], dim=1)
    full_mm = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, len(tokens), dtype=torch.long)], dim=1)
    full = ours(**{**inputs, "input_ids": full_ids, "mm_token_type_ids": full_mm}).logits
    for i, step_logits in enumerate(logits_steps):
        diff = (full[:, prompt_length - 1 + i] - step_logits).abs().max().item()
        assert diff <= ATOL, f"decode step {i}: {diff:.2e}"
    assert past[0][0].shape[2] == prompt_length + len(tokens)


@torch.no_grad()
def test_reference_loads_our_checkpoint(hf_reference, hf_molmo2, ours, tmp_path):
    _, hf_model, _ = hf_reference
    _, hf_model_cls = hf_molmo2
    save_checkpoint(ours, tmp_path)
    reloaded = hf_model_cls.from_pretrained(tmp_path).eval()
    inputs = image_inputs(ours.config, seed=6, highres_crops=[(1, 2)])
    diff = (reloaded(**inputs).logits - hf_model(**inputs).logits).abs().max().item()
    assert diff <= 1e-6


@torch.no_grad()
def test_native_and_hub_layouts_load_the_same_weights(hf_reference, ours, tmp_path):
    """HF's save_pretrained writes the hub layout; its in-memory state_dict has the native names."""
    from safetensors.torch import save_file

    _, hf_model, hf_folder = hf_reference
    native_dir = tmp_path / "native"
    native_dir.mkdir()
    (native_dir / "config.json").write_bytes((hf_folder / "config.json").read_bytes())
    save_file({k: v.contiguous() for k, v in hf_model.state_dict().items()}, str(native_dir / "model.safetensors"))
    from_native = load_checkpoint(native_dir)
    ours_state, native_state = ours.state_dict(), from_native.state_dict()
    assert ours_state.keys() == native_state.keys()
    for name in ours_state:
        assert torch.equal(ours_state[name], native_state[name]), name
