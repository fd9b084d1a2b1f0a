"""generate(): greedy, seeded sampling, top-k / top-p, EOS stopping, left-padded batches."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from .model_test_inputs import image_inputs, randomize_
from molmo_edge.model import GenerationConfig
from molmo_edge.model.generation import select_next_token


@pytest.fixture
def peaked_model(tiny_model):
    randomize_(tiny_model, seed=11)
    return tiny_model


def test_seeded_sampling_is_reproducible_and_seed_dependent(peaked_model):
    inputs = image_inputs(peaked_model.config, seed=0)
    runs = [peaked_model.generate(**inputs, max_new_tokens=16, do_sample=True, temperature=1.5, seed=s)
            for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    greedy = peaked_model.generate(**inputs, max_new_tokens=16)
    assert not torch.equal(runs[0], greedy)
    gen = torch.Generator().manual_seed(7)
    with_generator = peaked_model.generate(**inputs, max_new_tokens=16, do_sample=True, temperature=1.5, generator=gen)
    assert torch.equal(with_generator, runs[0])


def test_top_k_one_and_zero_temperature_are_greedy(peaked_model):
    inputs = image_inputs(peaked_model.config, seed=1)
    greedy = peaked_model.generate(**inputs, max_new_tokens=12)
    assert torch.equal(peaked_model.generate(**inputs, max_new_tokens=12, do_sample=True, top_k=1, seed=3), greedy)
    assert torch.equal(peaked_model.generate(**inputs, max_new_tokens=12, do_sample=True, temperature=0.0), greedy)


def test_generation_stops_at_eos_and_pads_finished_rows(peaked_model):
    inputs = image_inputs(peaked_model.config, seed=2)
    free = peaked_model.generate(**inputs, max_new_tokens=10)
    prompt_length = inputs["input_ids"].shape[1]
    third = int(free[0, prompt_length + 2])
    first_hit = (free[0, prompt_length:] == third).nonzero()[0].item()
    stopped = peaked_model.generate(**inputs, max_new_tokens=10, eos_token_ids=[third])
    assert stopped.shape[1] == prompt_length + first_hit + 1
    assert torch.equal(stopped, free[:, : stopped.shape[1]])


def test_left_padded_batch_matches_single_prompts(peaked_model):
    long = image_inputs(peaked_model.config, seed=3, question_tokens=9)
    short = image_inputs(peaked_model.config, seed=4, question_tokens=3)
    solo = [peaked_model.generate(**x, max_new_tokens=8) for x in (long, short)]
    n_long, n_short = long["input_ids"].shape[1], short["input_ids"].shape[1]
    pad = n_long - n_short

    def left_pad(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros(1, pad, dtype=t.dtype), t], dim=1)

    batch = {
        "input_ids": torch.cat([long["input_ids"], left_pad(short["input_ids"])]),
        "mm_token_type_ids": torch.cat([long["mm_token_type_ids"], left_pad(short["mm_token_type_ids"])]),
        "attention_mask": torch.cat([torch.ones(1, n_long, dtype=torch.long),
                                     left_pad(torch.ones(1, n_short, dtype=torch.long))]),
        # visual tokens of a batch are laid out row by row, as the processor does
        "pixel_values": torch.cat([long["pixel_values"], short["pixel_values"]]),
        "image_token_pooling": torch.cat([long["image_token_pooling"], torch.where(
            short["image_token_pooling"] >= 0, short["image_token_pooling"] + long["pixel_values"].shape[0] * 16, -1)]),
    }
    out = peaked_model.generate(**batch, max_new_tokens=8, eos_token_ids=[])
    assert torch.equal(out[0, n_long:], solo[0][0, n_long:])
    assert torch.equal(out[1, n_long:], solo[1][0, n_short:])


@settings(max_examples=50, deadline=None)
@given(top_p=st.floats(0.05, 1.0), seed=st.integers(0, 1000))
def test_top_p_samples_only_from_the_nucleus(top_p, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 50, generator=g) * 3
    config = GenerationConfig(do_sample=True, top_p=top_p)
    tokens = select_next_token(logits, config, torch.Generator().manual_seed(seed))
    probs = logits.softmax(-1)
    for row, token in enumerate(tokens.tolist()):
        sorted_probs, order = probs[row].sort(descending=True)
        rank = (order == token).nonzero().item()
        # every token ranked above the chosen one leaves less than top_p of the mass before it
        assert rank == 0 or sorted_probs[:rank].sum().item() < top_p + 1e-6


def test_unknown_generation_option_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="max_new_tokenz"):
        tiny_model.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokenz=3)
