"""The generation loop: the one place that turns a prompt into text, for every backend.

    result = generate(backend, input_ids, mm_token_type_ids, visual_tokens,
                      GenerationOptions(max_new_tokens=64))
    result.text, result.stop_reason, result.timings_ms["decode"], result.tokens_per_s

Prefill once, then one `backend.decode` per new token. Greedy by default (temperature 0);
temperature / top-k / top-p sampling from a seeded generator when temperature > 0. Stops at the
first EOS id, when the text contains a stop string, or after `max_new_tokens`. Only ids of the base
vocabulary can be chosen (the logits vector is cut to `backend.vocab_size`), so an image special
token is never generated.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from molmo_edge.errors import ConfigError, InputError, MolmoEdgeError
from molmo_edge.model.generation import GenerationConfig, select_next_token

if TYPE_CHECKING:  # pragma: no cover
    from molmo_edge.engine.backend import Backend

StopReason = Literal["eos", "max_tokens", "stop_string"]
TIMING_KEYS = ("vision", "prefill", "decode", "total")


class GenerationOptions(BaseModel):
    """How to generate. The defaults are greedy decoding of up to 128 tokens."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy; > 0 samples from softmax(logits / T)")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0 = off")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass; 1 = off")
    seed: int | None = Field(None, description="seed of the sampling generator; same seed, same text")
    stop_strings: list[str] = Field(default_factory=list,
                                    description="stop once the text contains one; the text ends with it")
    eos_token_ids: list[int] | None = Field(None, description="None = the model config's EOS ids")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class GenerationResult:
    """One generated answer.

    `token_ids` are the new tokens only (the EOS that ended it included); `text` is their decoding
    without special tokens, cut right after the stop string when one ended it.
    `timings_ms`: vision (what the caller measured for preprocessing + encode_visual), prefill, decode
    (from the end of prefill to the last token), total. `tokens_per_s` counts decode steps per second
    of decode time (the first token comes from prefill; 0.0 when there was no decode step).
    """

    text: str
    token_ids: list[int]
    stop_reason: StopReason
    timings_ms: dict[str, float] = field(default_factory=dict)
    tokens_per_s: float = 0.0
    prompt_tokens: int = 0

    @property
    def time_to_first_token_ms(self) -> float:
        return self.timings_ms.get("vision", 0.0) + self.timings_ms.get("prefill", 0.0)


def merge_options(options: GenerationOptions | None, overrides: dict[str, Any]) -> GenerationOptions:
    """`options` with some fields replaced; ConfigError (one line) for an unknown field or a bad value."""
    options = options or GenerationOptions()
    if not overrides:
        return options
    try:
        return GenerationOptions.model_validate({**options.model_dump(), **overrides})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid generation options: {problems}") from None


def _first_stop(text: str, stop_strings: list[str]) -> int | None:
    """Index just past the earliest stop string in `text`, or None."""
    ends = [text.find(s) + len(s) for s in stop_strings if s and s in text]
    return min(ends) if ends else None


def generate(backend: "Backend", input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor,
             visual_tokens: torch.Tensor | None = None, options: GenerationOptions | None = None, *,
             vision_ms: float = 0.0, **overrides: Any) -> GenerationResult:
    """Generate after the prompt input_ids [1, S] (with its mm_token_type_ids [1, S] and visual tokens
    [T', D] from `backend.encode_visual`). `overrides` are GenerationOptions fields (max_new_tokens=...)."""
    options = merge_options(options, overrides)
    config = backend.config
    eos_ids = set(options.eos_token_ids if options.eos_token_ids is not None else config.stop_token_ids)
    prompt_tokens = int(input_ids.shape[-1])
    room = backend.max_context_tokens - prompt_tokens
    if room < 1:
        raise InputError(f"the prompt has {prompt_tokens} tokens and fills this backend's context of "
                         f"{backend.max_context_tokens}; nothing can be generated. Use fewer frames or smaller images")
    max_new_tokens = min(options.max_new_tokens, room)
    sampler = GenerationConfig(do_sample=not options.greedy, temperature=options.temperature,
                               top_k=options.top_k, top_p=options.top_p)
    generator = torch.Generator().manual_seed(options.seed) if options.seed is not None else None
    vocab_size = backend.vocab_size
    tokenizer = backend.processor.tokenizer

    def choose(logits: torch.Tensor, step: int) -> int:
        if logits.shape[-1] < vocab_size:
            raise MolmoEdgeError(f"the {backend.name} backend returned {logits.shape[-1]} logits, expected "
                                 f"{vocab_size}; the backend and the model config disagree")
        logits = logits[:vocab_size]  # [V]: base vocabulary only, image tokens never chosen
        if options.greedy:
            # argmax returns the first NaN when there is one, so checking the chosen logit checks them
            # all, without a separate pass over V at every step of the hot loop
            token = int(torch.argmax(logits))
            if math.isnan(float(logits[token])):
                raise nan_error(step)
            return token
        if bool(torch.isnan(logits).any()):
            raise nan_error(step)
        return int(select_next_token(logits[None].float(), sampler, generator)[0])

    def nan_error(step: int) -> MolmoEdgeError:
        return MolmoEdgeError(f"the {backend.name} backend produced NaN logits at generation step {step} "
                              "(often an fp16 overflow); try float32/bfloat16 or re-export the model")

    start = time.perf_counter()
    logits, state = backend.prefill(input_ids, visual_tokens, mm_token_type_ids)
    prefill_end = time.perf_counter()

    new_ids: list[int] = []
    stop_reason: StopReason = "max_tokens"
    text: str | None = None
    n_decode_steps = 0
    for step in range(max_new_tokens):
        token = choose(logits, step)
        new_ids.append(token)
        if token in eos_ids:
            stop_reason = "eos"
            break
        if options.stop_strings:
            so_far = tokenizer.decode(new_ids, skip_special_tokens=True)
            cut = _first_stop(so_far, options.stop_strings)
            if cut is not None:
                text, stop_reason = so_far[:cut], "stop_string"
                break
        if step == max_new_tokens - 1:
            break  # no decode for a token that would never be used
        logits, state = backend.decode(token, state)
        n_decode_steps += 1
    decode_end = time.perf_counter()

    if text is None:
        text_ids = new_ids[:-1] if stop_reason == "eos" else new_ids
        text = tokenizer.decode(text_ids, skip_special_tokens=True)
    end = time.perf_counter()
    prefill_ms = (prefill_end - start) * 1e3
    decode_ms = (decode_end - prefill_end) * 1e3
    timings = {"vision": float(vision_ms), "prefill": prefill_ms, "decode": decode_ms,
               "total": float(vision_ms) + (end - start) * 1e3}
    tokens_per_s = n_decode_steps / (decode_ms / 1e3) if n_decode_steps and decode_ms > 0 else 0.0
    if not math.isfinite(tokens_per_s):
        tokens_per_s = 0.0
    return GenerationResult(text=text, token_ids=new_ids, stop_reason=stop_reason, timings_ms=timings,
                            tokens_per_s=tokens_per_s, prompt_tokens=prompt_tokens)


__all__ = ["GenerationOptions", "GenerationResult", "StopReason", "TIMING_KEYS", "generate", "merge_options"]
