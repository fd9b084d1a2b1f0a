"""The text decoder (Qwen3 or OLMo flavour) with an explicit KV cache.

`TextDecoder.forward` takes ready embeddings, a ready 4-D additive mask and position ids, and
returns the final-normed hidden states plus the updated cache as plain tensors, so prefill and
decode step trace to ONNX with the cache as graph inputs/outputs.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from molmo_edge.model.attention import DecoderAttention, KVPair
from molmo_edge.model.config import TextConfig
from molmo_edge.model.layers import RMSNorm, SwiGLU
from molmo_edge.model.masks import mask_to_dtype
from molmo_edge.model.rope import RotaryEmbedding

# One (key, value) pair per layer, each [B, n_kv_heads, S, head_dim].
KVCache = tuple[KVPair, ...]


class DecoderLayer(nn.Module):
    """Pre-norm (Qwen3): h = x + attn(norm(x)). Post-norm (OLMo, norm_after): h = x + norm(attn(x))."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.norm_after = config.norm_after
        self.self_attn = DecoderAttention(config)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size, config.hidden_size, act=config.hidden_act)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past: KVPair | None = None) -> tuple[torch.Tensor, KVPair]:
        if self.norm_after:
            attn_out, present = self.self_attn(x, cos, sin, mask, past)
            x = x + self.input_layernorm(attn_out)
            return x + self.post_attention_layernorm(self.mlp(x)), present
        attn_out, present = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + attn_out
        return x + self.mlp(self.post_attention_layernorm(x)), present


class TextDecoder(nn.Module):
    """embed(ids) and forward(embeds, mask, positions, past) -> (hidden [B, S, D], present)."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        # vocab_size + additional_vocab_size rows: the extra rows embed the image special tokens.
        self.embed_tokens = nn.Embedding(config.embedding_rows, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_scaled = RotaryEmbedding(config.head_dim, config.rope, scaled=True)
        self.rotary_plain = RotaryEmbedding(config.head_dim, config.rope, scaled=False)
        self.layer_uses_scaled_rope = [config.layer_uses_scaled_rope(i) for i in range(config.num_hidden_layers)]
        # Recompute each layer in the backward pass instead of storing its activations (training only).
        self.gradient_checkpointing = False

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, S] int64 -> [B, S, D]."""
        return self.embed_tokens(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                past_key_values: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """inputs_embeds [B, S, D], attention_mask [B, 1, S, S_past+S] additive, position_ids [B, S].

        Returns (hidden [B, S, D] after the final norm, present: per layer (k, v) [B, Hkv, S_past+S, hd]).
        """
        x = inputs_embeds
        mask = mask_to_dtype(attention_mask, x.dtype)
        tables = {True: self.rotary_scaled(position_ids), False: self.rotary_plain(position_ids)}
        present: list[KVPair] = []
        for i, layer in enumerate(self.layers):
            cos, sin = tables[self.layer_uses_scaled_rope[i]]
            past = past_key_values[i] if past_key_values is not None else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, kv = checkpoint(layer, x, cos, sin, mask, past, use_reentrant=False)
            else:
                x, kv = layer(x, cos, sin, mask, past)
            present.append(kv)
        return self.norm(x), tuple(present)
