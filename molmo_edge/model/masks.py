"""Additive 4-D attention masks for the decoder, built on the host side.

Shape [B, 1, S_q, S_past + S_q]; 0 = attend, `torch.finfo(dtype).min` = blocked (finite on
purpose: ONNX Runtime / TensorRT friendly, and no NaN from an all -inf row).

At prefill, text is causal and every image/frame special token (mm_token_type_ids == 1) of a
sample sees every other one: one bidirectional block. Decode steps are plain causal.
"""
from __future__ import annotations

import torch


def mask_to_dtype(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast an additive mask, keeping it finite (fp32's min overflows to -inf in bf16/fp16)."""
    if mask.dtype == dtype:
        return mask
    return mask.to(dtype).clamp(min=torch.finfo(dtype).min)


def build_attention_mask(batch_size: int, query_length: int, past_length: int = 0,
                         padding_mask: torch.Tensor | None = None, mm_token_type_ids: torch.Tensor | None = None,
                         dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The decoder mask for `query_length` new tokens after `past_length` cached ones.

    padding_mask: [B, past_length + query_length], 1 = real token, 0 = padding (keys at padding
        positions are blocked).
    mm_token_type_ids: [B, query_length] (or [B, past+query]); 1 marks image/frame tokens, which
        attend to each other bidirectionally. Pass it at prefill only.
    Returns [B, 1, query_length, past_length + query_length] in `dtype`.
    """
    if padding_mask is not None:
        device = padding_mask.device
    elif mm_token_type_ids is not None:
        device = mm_token_type_ids.device
    kv_length = past_length + query_length
    q_pos = torch.arange(past_length, kv_length, device=device)[:, None]  # [Sq, 1] absolute positions
    k_pos = torch.arange(kv_length, device=device)[None, :]  # [1, Skv]
    allowed = (k_pos <= q_pos)[None].expand(batch_size, query_length, kv_length)  # [B, Sq, Skv]
    if mm_token_type_ids is not None:
        image = mm_token_type_ids.to(device) == 1
        if image.shape[1] == query_length and past_length:
            image = torch.cat((torch.zeros(batch_size, past_length, dtype=torch.bool, device=device), image), 1)
        image_q = image[:, past_length:]  # [B, Sq]
        allowed = allowed | (image_q[:, :, None] & image[:, None, :])
    if padding_mask is not None:
        allowed = allowed & (padding_mask.to(device) != 0)[:, None, :]
        # A padding query would see nothing at all; let it see itself so no row is fully blocked
        # (its output is never used, but an all-blocked row is NaN-prone in fp16).
        allowed = allowed | (k_pos == q_pos)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[:, None]  # [B, 1, Sq, Skv]


def build_prefill_mask(mm_token_type_ids: torch.Tensor, padding_mask: torch.Tensor | None = None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Prefill mask for a whole prompt: causal text + one bidirectional block of image tokens.

    mm_token_type_ids [B, S] -> [B, 1, S, S].
    """
    batch_size, seq_length = mm_token_type_ids.shape
    return build_attention_mask(batch_size, seq_length, 0, padding_mask=padding_mask,
                                mm_token_type_ids=mm_token_type_ids, dtype=dtype,
                                device=mm_token_type_ids.device)


def position_ids_from_padding(padding_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: [B, S] mask -> [B, S] int64 (padding positions get 0)."""
    positions = padding_mask.long().cumsum(-1) - 1
    return positions.masked_fill(padding_mask == 0, 0)
