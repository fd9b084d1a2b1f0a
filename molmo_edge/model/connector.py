"""The connector: attention pooling of ViT patch windows, then a SwiGLU projector into the LLM.

Each visual token has a pooling window of K patch indices (2×2 for image crops, 3×3 for video
frames) into the flattened patch list of the call; -1 marks a padding slot (grids that do not
divide by the window are padded). The query is the mean of the window's valid patches; it
cross-attends to the window with padded slots blocked by a finite large negative. No LayerNorm,
no residual.
"""
from __future__ import annotations

import torch
from torch import nn

from molmo_edge.model.attention import ProjectedAttention
from molmo_edge.model.config import Molmo2Config
from molmo_edge.model.layers import SwiGLU


class Connector(nn.Module):
    """(features [N, P, F], pooling [T, K]) -> visual tokens [T, D_text]; every one of the T rows."""

    def __init__(self, config: Molmo2Config) -> None:
        super().__init__()
        adapter = config.adapter
        feature_size = adapter.hidden_size * len(adapter.vision_feature_layer)
        self.pooling = ProjectedAttention(feature_size, adapter.hidden_size, adapter.num_attention_heads,
                                          adapter.num_key_value_heads, adapter.head_dim, bias=adapter.attention_bias)
        self.projector = SwiGLU(adapter.hidden_size, adapter.intermediate_size, adapter.text_hidden_size,
                                act=adapter.hidden_act, bias=adapter.mlp_bias)

    def forward(self, features: torch.Tensor, pooling: torch.Tensor) -> torch.Tensor:
        dtype = self.projector.down_proj.weight.dtype
        n_tokens, window = pooling.shape
        flat = features.reshape(-1, features.shape[-1]).to(dtype)  # [N·P, F]
        valid = pooling >= 0  # [T, K]
        # A gather by flattened index (ONNX Gather), padded slots read row 0 and are zeroed.
        gathered = flat.index_select(0, pooling.clamp(min=0).reshape(-1)).reshape(n_tokens, window, -1)
        gathered = gathered * valid[..., None].to(dtype)  # [T, K, F]
        n_valid = valid.sum(-1).clamp(min=1).to(dtype)  # [T]
        query = gathered.sum(1, keepdim=True) / n_valid[:, None, None]  # [T, 1, F]
        # Block padded slots; a window with no valid slot at all (never produced by the processor)
        # attends uniformly over zeros instead, so its row stays finite.
        blocked = ~valid & valid.any(-1, keepdim=True)
        mask = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device)
        mask = mask.masked_fill(blocked, torch.finfo(dtype).min)[:, None, None, :]  # [T, 1, 1, K]
        pooled = self.pooling(query, gathered, mask)  # [T, 1, Da]
        return self.projector(pooled[:, 0])  # [T, D_text]
