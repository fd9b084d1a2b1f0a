"""The generation loop over the real torch backend: greedy == the model's own generate, sampling
reproducible with a seed, stop on EOS / stop strings / max tokens, never an id outside the base vocab."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molmo_edge.engine.backend import Backend, BackendState
from molmo_edge.engine.generation import GenerationOptions, generate
from molmo_edge.errors import ConfigError, InputError

from .conftest import random_image


def image_prompt(backend, seed: int = 0, text: str = "Point to the red circle"):
    """(input_ids, mm_token_type_ids, visual_tokens, processor inputs) for one random image."""
    inputs = backend.processor(text, images=random_image(seed))
    tokens = backend.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
    return inputs["input_ids"], inputs["mm_token_type_ids"], tokens, inputs


def no_eos(**fields) -> GenerationOptions:
    """Options with EOS switched off, so the random model always runs to max_new_tokens."""
    return GenerationOptions(eos_token_ids=[], **fields)


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_equals_model_generate(torch_backend, seed):
    ids, mm, tokens, inputs = image_prompt(torch_backend, seed)
    result = generate(torch_backend, ids, mm, tokens, GenerationOptions(max_new_tokens=24))
    expected = torch_backend.model.generate(**inputs, max_new_tokens=24)[0, ids.shape[1]:].tolist()
    assert result.token_ids == expected
    assert result.prompt_tokens == ids.shape[1]
    if result.stop_reason == "eos":
        assert result.token_ids[-1] in torch_backend.config.stop_token_ids
    else:
        assert result.stop_reason == "max_tokens" and len(result.token_ids) == 24
    assert len(set(result.token_ids)) > 1  # not a degenerate constant stream


def test_greedy_equals_transformers_generate(torch_backend, engine_checkpoint_dir):
    """The whole engine path (processor -> backend -> loop) against the transformers reference."""
    transformers = pytest.importorskip("transformers")
    hf_model = transformers.Molmo2ForConditionalGeneration.from_pretrained(engine_checkpoint_dir).eval()
    ids, mm, tokens, inputs = image_prompt(torch_backend, seed=3)
    result = generate(torch_backend, ids, mm, tokens, no_eos(max_new_tokens=16))
    with torch.no_grad():
        expected = hf_model.generate(**inputs, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert result.token_ids == expected[0, ids.shape[1]:].tolist()


def test_decoded_text_and_timings(torch_backend):
    ids, mm, tokens, _ = image_prompt(torch_backend)
    result = generate(torch_backend, ids, mm, tokens, no_eos(max_new_tokens=8), vision_ms=5.0)
    assert result.text == torch_backend.processor.tokenizer.decode(result.token_ids, skip_special_tokens=True)
    timings = result.timings_ms
    assert set(timings) == {"vision", "prefill", "decode", "total"}
    assert timings["vision"] == 5.0 and timings["prefill"] > 0 and timings["decode"] > 0
    assert timings["total"] >= timings["vision"] + timings["prefill"] + timings["decode"]
    assert result.tokens_per_s > 0
    assert result.time_to_first_token_ms == pytest.approx(5.0 + timings["prefill"])


def test_max_new_tokens_is_exact(torch_backend):
    ids, mm, tokens, _ = image_prompt(torch_backend)
    for n in (1, 2, 7):
        result = generate(torch_backend, ids, mm, tokens, no_eos(max_new_tokens=n))
        assert len(result.token_ids) == n and result.stop_reason == "max_tokens"
    single = generate(torch_backend, ids, mm, tokens, no_eos(max_new_tokens=1))
    assert single.tokens_per_s == 0.0  # the only token came from prefill


def test_stops_at_first_eos_id(torch_backend):
    ids, mm, tokens, _ = image_prompt(torch_backend)
    free = generate(torch_backend, ids, mm, tokens, no_eos(max_new_tokens=20)).token_ids
    eos = free[5]  # pretend this token is EOS: the loop must stop at its FIRST occurrence
    first = free.index(eos)
    result = generate(torch_backend, ids, mm, tokens, GenerationOptions(max_new_tokens=20, eos_token_ids=[eos]))
    assert result.stop_reason == "eos"
    assert result.token_ids == free[:first + 1]
    tokenizer = torch_backend.processor.tokenizer
    assert result.text == tokenizer.decode(free[:first], skip_special_tokens=True)  # EOS not in the text


def test_stop_string(torch_backend):
    ids, mm, tokens, _ = image_prompt(torch_backend, seed=2)
    tokenizer = torch_backend.processor.tokenizer
    free = generate(torch_backend, ids, mm, tokens, no_eos(max_new_tokens=24)).token_ids
    # a stop string that one later token spells: printable ASCII, so decoding is prefix-stable
    j, stop = next((j, piece) for j, piece in ((j, tokenizer.decode([t])) for j, t in enumerate(free))
                   if j >= 3 and piece.strip() and piece.isascii() and piece.isprintable())
    result = generate(torch_backend, ids, mm, tokens, no_eos(max_new_tokens=24, stop_strings=[stop]))
    assert result.stop_reason == "stop_string"
    assert len(result.token_ids) <= j + 1
    assert result.token_ids == free[:len(result.token_ids)]
    assert result.text.endswith(stop)
    # it stopped at the first token that completed the string, not later
    assert stop not in tokenizer.decode(result.token_ids[:-1], skip_special_tokens=True)


def test_sampling_is_reproducible_with_a_seed(torch_backend):
    ids, mm, tokens, _ = image_prompt(torch_backend)
    options = no_eos(max_new_tokens=12, temperature=1.5, top_p=0.95, seed=7)
    first = generate(torch_backend, ids, mm, tokens, options).token_ids
    again = generate(torch_backend, ids, mm, tokens, options).token_ids
    assert first == again
    others = {tuple(generate(torch_backend, ids, mm, tokens, options.model_copy(update={"seed": s})).token_ids)
              for s in range(3)}
    assert len(others | {tuple(first)}) > 1  # the seed matters: sampling is not greedy in disguise


def test_top_k_1_sampling_equals_greedy(torch_backend):
    ids, mm, tokens, _ = image_prompt(torch_backend)
    greedy = generate(torch_backend, ids, mm, tokens, no_eos(max_new_tokens=10)).token_ids
    top1 = generate(torch_backend, ids, mm, tokens, no_eos(max_new_tokens=10, temperature=2.0, top_k=1, seed=0))
    assert top1.token_ids == greedy


def test_bad_options_are_config_errors(torch_backend):
    ids, mm, tokens, _ = image_prompt(torch_backend)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generate(torch_backend, ids, mm, tokens, max_new_tokens=0)
    with pytest.raises(ConfigError, match="no_such_option"):
        generate(torch_backend, ids, mm, tokens, no_such_option=1)


# ----- a backend with a wider logits vector / a short context --------------------------------------
class WideLogitsBackend(Backend):
    """A real backend (the torch one) whose logits carry extra entries for the image special tokens,
    as a backend with a padded output layer would; the extra entries get the highest scores."""

    name = "wide"

    def __init__(self, inner, max_context: int | None = None):
        self.inner, self.config, self.processor, self.device = inner, inner.config, inner.processor, inner.device
        self._max_context = max_context

    @property
    def max_context_tokens(self) -> int:
        return self._max_context or self.inner.max_context_tokens

    def _widen(self, logits: torch.Tensor) -> torch.Tensor:
        extra = torch.full((self.config.text.additional_vocab_size,), float(logits.max()) + 100.0)
        return torch.cat([logits, extra])

    def encode_visual(self, pixel_values, pooling):
        return self.inner.encode_visual(pixel_values, pooling)

    def prefill(self, input_ids, visual_tokens, mm_token_type_ids):
        logits, state = self.inner.prefill(input_ids, visual_tokens, mm_token_type_ids)
        return self._widen(logits), state

    def decode(self, token_id: int, state: BackendState):
        logits, state = self.inner.decode(token_id, state)
        return self._widen(logits), state


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(temperature=st.sampled_from([0.0, 0.7, 3.0]), top_k=st.sampled_from([0, 5, 50]),
       top_p=st.sampled_from([1.0, 0.9]), seed=st.integers(0, 2**16))
def test_never_generates_image_tokens(torch_backend, temperature, top_k, top_p, seed):
    wide = WideLogitsBackend(torch_backend)
    ids, mm, tokens, _ = image_prompt(torch_backend)
    result = generate(wide, ids, mm, tokens, no_eos(max_new_tokens=6, temperature=temperature, top_k=top_k,
                                                    top_p=top_p, seed=seed))
    assert result.token_ids and all(0 <= t < torch_backend.config.text.vocab_size for t in result.token_ids)
    if temperature == 0.0:  # greedy over the base vocabulary = the unwidened backend's greedy answer
        plain = generate(torch_backend, ids, mm, tokens, no_eos(max_new_tokens=6))
        assert result.token_ids == plain.token_ids


def test_generation_stops_at_the_context_limit(torch_backend):
    ids, mm, tokens, _ = image_prompt(torch_backend)
    short = WideLogitsBackend(torch_backend, max_context=ids.shape[1] + 3)
    result = generate(short, ids, mm, tokens, no_eos(max_new_tokens=50))
    assert len(result.token_ids) == 3 and result.stop_reason == "max_tokens"
    full = WideLogitsBackend(torch_backend, max_context=ids.shape[1])
    with pytest.raises(InputError, match="fills this backend's context"):
        generate(full, ids, mm, tokens)


class NanAfterPrefillBackend(WideLogitsBackend):
    """The torch backend, but its decode steps return a NaN logit (an fp16 overflow in an export)."""

    def _widen(self, logits):
        return logits

    def decode(self, token_id, state):
        logits, state = self.inner.decode(token_id, state)
        logits[7] = float("nan")
        return logits, state


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.7, "seed": 3}], ids=["greedy", "sampled"])
def test_nan_logits_are_reported_not_decoded(torch_backend, sampling):
    """One NaN among finite logits (not the largest of them) is caught on both paths: greedy checks
    only the chosen logit, which is enough because argmax picks a NaN whenever there is one."""
    from molmo_edge.errors import MolmoEdgeError

    ids, mm, tokens, _ = image_prompt(torch_backend)
    with pytest.raises(MolmoEdgeError, match="NaN logits at generation step 1"):
        generate(NanAfterPrefillBackend(torch_backend), ids, mm, tokens, no_eos(max_new_tokens=4, **sampling))
