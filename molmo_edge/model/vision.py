"""The vision tower: a SigLIP2-style ViT that returns its feature taps, concatenated.

Crops arrive already cut into flattened patches (`pixel_values` [N, P, patch²·3], pixels in
[-1, 1]); a patch embedding Linear, a learned positional table, then pre-LN blocks. No CLS
token, no final LayerNorm. Only blocks up to the deepest tap are built and run, and the taps are
collected in the loop (no hooks), so the module traces to one static ONNX graph.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from molmo_edge.model.attention import ProjectedAttention
from molmo_edge.model.config import Molmo2Config, VisionConfig
from molmo_edge.model.layers import LayerNorm, activation


class VisionMLP(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.layer_norm1 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = ProjectedAttention(config.hidden_size, config.hidden_size, config.num_attention_heads,
                                            config.num_key_value_heads, config.head_dim, bias=config.attention_bias)
        self.layer_norm2 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VisionMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionTower(nn.Module):
    """pixels [N, P, patch²·3] -> features [N, P, Dv · n_taps] (taps in `vision_feature_layer` order)."""

    def __init__(self, config: Molmo2Config) -> None:
        super().__init__()
        vision = config.vision
        self.taps = config.vision_taps  # 0-based block indices, e.g. [24, 18]
        self.positional_embedding = nn.Parameter(torch.zeros(vision.num_patches, vision.hidden_size))
        self.patch_embedding = nn.Linear(vision.patch_dim, vision.hidden_size)
        self.layers = nn.ModuleList(VisionBlock(vision) for _ in range(config.vision_blocks_to_run))
        self.gradient_checkpointing = False  # recompute blocks in backward (training only)

    @property
    def output_size(self) -> int:
        return self.positional_embedding.shape[1] * len(self.taps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_embedding.weight.dtype
        x = self.patch_embedding(pixel_values.to(dtype))  # [N, P, Dv]
        x = x + self.positional_embedding[None].to(dtype)
        block_outputs: list[torch.Tensor] = []
        for block in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            block_outputs.append(x)
        return torch.cat([block_outputs[tap] for tap in self.taps], dim=-1)  # [N, P, Dv·n_taps]
