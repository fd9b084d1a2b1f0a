"""Text generation for the PyTorch model: prefill once, then decode one token at a time with the
KV cache. Greedy, or temperature / top-k / top-p sampling from a seeded torch.Generator.

(The runtime's backend-independent loop lives in `molmo_edge.engine.generation`; this one is the
model's own `generate`, the counterpart of transformers' `generate` for tests and training.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.model.masks import position_ids_from_padding

if TYPE_CHECKING:  # pragma: no cover
    from molmo_edge.model.molmo2 import Molmo2ForConditionalGeneration

# Keyword arguments of `generate` that are model inputs (the rest configure generation).
MODEL_INPUT_NAMES = (
    "pixel_values", "image_token_pooling", "image_grids", "pixel_values_videos", "video_token_pooling",
    "video_grids", "mm_token_type_ids", "attention_mask", "visual_tokens",
)


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(64, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, ge=0.0)  # 0 means greedy
    top_k: int = Field(0, ge=0)  # 0 = off
    top_p: float = Field(1.0, gt=0.0, le=1.0)  # 1 = off
    seed: int | None = None  # seeds the sampling generator when none is passed
    eos_token_ids: list[int] | None = None  # None: the model config's EOS ids
    pad_token_id: int | None = None  # written after a row has finished; None: config pad, else EOS


def select_next_token(logits: torch.Tensor, config: GenerationConfig,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    logits = logits.to(torch.float32)
    if not config.do_sample or config.temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / config.temperature
    if config.top_k > 0:
        k = min(config.top_k, logits.shape[-1])
        kth_best = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if config.top_p < 1.0:
        # Keep the smallest set of most likely tokens whose probability reaches top_p.
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= config.top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: "Molmo2ForConditionalGeneration", input_ids: torch.Tensor,
             generation: GenerationConfig | None = None, generator: torch.Generator | None = None,
             **kwargs: Any) -> torch.Tensor:
    """Generate after the prompt `input_ids` [B, S]; returns [B, S + n] (n <= max_new_tokens).

    kwargs: model inputs (pixel_values, image_token_pooling, ..., mm_token_type_ids,
    attention_mask as a 2-D padding mask, visual_tokens) and/or GenerationConfig fields
    (max_new_tokens=..., do_sample=..., temperature=..., top_k=..., top_p=..., seed=...).
    Stops when every row has produced an EOS id; finished rows are filled with the pad id.
    """
    model_inputs = {name: kwargs.pop(name) for name in MODEL_INPUT_NAMES if name in kwargs}
    config = GenerationConfig.model_validate({**(generation or GenerationConfig()).model_dump(), **kwargs})
    device = model.device
    input_ids = input_ids.to(device)
    eos_ids = config.eos_token_ids if config.eos_token_ids is not None else model.config.stop_token_ids
    pad_id = config.pad_token_id
    if pad_id is None:
        pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
    if generator is None and config.do_sample and config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)

    padding_mask = model_inputs.get("attention_mask")
    if padding_mask is not None:
        if padding_mask.dim() != 2:
            raise ValueError("generate takes a 2-D padding attention_mask [B, S]")
        padding_mask = padding_mask.to(device)
        last_position = position_ids_from_padding(padding_mask)[:, -1]
    else:
        last_position = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long, device=device)

    out = model(input_ids, logits_to_keep=1, **model_inputs)  # prefill
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=device)
    new_tokens: list[torch.Tensor] = []
    for step in range(config.max_new_tokens):
        token = select_next_token(out.logits[:, -1], config, generator)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        new_tokens.append(token)
        if eos.numel():
            finished = finished | torch.isin(token, eos)
        if bool(finished.all()) or step == config.max_new_tokens - 1:
            break
        if padding_mask is not None:
            padding_mask = torch.cat((padding_mask, padding_mask.new_ones(padding_mask.shape[0], 1)), dim=1)
        last_position = last_position + 1
        out = model(token[:, None], attention_mask=padding_mask, position_ids=last_position[:, None],
                    past_key_values=out.past_key_values, logits_to_keep=1)
    return torch.cat((input_ids, torch.stack(new_tokens, dim=1)), dim=1)
