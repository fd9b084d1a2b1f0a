"""Rotary position embeddings: the plain table and the YaRN-scaled table.

OLMo-based Molmo2 applies YaRN only on `rope_scaling_layers` and plain RoPE (same theta) on the
others, so the decoder keeps two tables. All frequency and angle math is fp32; the rotation is
applied in fp32 and cast back, so bf16/fp16 models keep accurate positions.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from molmo_edge.model.config import RopeConfig


def default_inverse_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """inv_freq[i] = theta^(-2i/hd), i = 0 .. hd/2-1  -> [hd/2] float32."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").to(torch.float32) / head_dim
    return 1.0 / (theta ** exponents)


def yarn_inverse_frequencies(head_dim: int, rope: RopeConfig) -> tuple[torch.Tensor, float]:
    """YaRN (Peng et al. 2023): high-frequency dims keep their frequency (extrapolate), low-frequency
    dims are divided by `factor` (interpolate), with a linear ramp between; cos/sin are scaled by
    an attention factor that compensates the flatter softmax at long range.

    Returns (inv_freq [hd/2] float32, attention_scaling).
    """
    theta = rope.rope_theta
    factor = float(rope.factor)
    original_max = rope.original_max_position_embeddings

    def mscale(scale: float, coefficient: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * coefficient * math.log(scale) + 1.0

    if rope.attention_factor is not None:
        attention_scaling = rope.attention_factor
    elif rope.mscale and rope.mscale_all_dim:
        attention_scaling = mscale(factor, rope.mscale) / mscale(factor, rope.mscale_all_dim)
    else:
        attention_scaling = mscale(factor)
    beta_fast = rope.beta_fast or 32.0
    beta_slow = rope.beta_slow or 1.0

    def dim_for_rotations(n_rotations: float) -> float:
        # The rotary dim whose wavelength fits `n_rotations` times in the original context.
        return head_dim * math.log(original_max / (n_rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_for_rotations(beta_fast), dim_for_rotations(beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp

    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").to(torch.float32) / head_dim
    base_frequencies = theta ** exponents
    extrapolated = 1.0 / base_frequencies
    interpolated = 1.0 / (factor * base_frequencies)
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
    keep_original = 1.0 - ramp  # 1 for fast (high-frequency) dims, 0 for slow dims
    inv_freq = interpolated * (1.0 - keep_original) + extrapolated * keep_original
    return inv_freq, float(attention_scaling)


class RotaryEmbedding(nn.Module):
    """position ids [B, S] -> (cos, sin) [B, S, head_dim] in float32."""

    def __init__(self, head_dim: int, rope: RopeConfig, scaled: bool = True) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.rope = rope
        self.scaled = scaled and rope.rope_type == "yarn"
        self.attention_scaling = 1.0
        self.register_buffer("inv_freq", torch.empty(head_dim // 2), persistent=False)
        self.reset_inv_freq()

    @torch.no_grad()
    def reset_inv_freq(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the frequency table (on the CPU, then moved); the checkpoint loader calls this
        after building the model on the meta device, where buffers hold no data."""
        if self.scaled:
            inv_freq, self.attention_scaling = yarn_inverse_frequencies(self.head_dim, self.rope)
        else:
            inv_freq, self.attention_scaling = default_inverse_frequencies(self.head_dim, self.rope.rope_theta), 1.0
        self.inv_freq = inv_freq.to(device if device is not None else self.inv_freq.device)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # [B, S, 1] * [hd/2] -> [B, S, hd/2]; both halves of the head share the angles.
        angles = position_ids[..., None].to(torch.float32) * self.inv_freq.to(torch.float32)
        angles = torch.cat((angles, angles), dim=-1)  # [B, S, hd]
        return angles.cos() * self.attention_scaling, angles.sin() * self.attention_scaling


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rotate x [B, H, S, hd] by the angles of cos/sin [B, S, hd] (fp32 math, x's dtype out).

    Pairs are (i, i + hd/2) ("rotate half" layout), as in Qwen3 / OLMo / transformers. head_dim is
    the config's int, not x.shape[-1]: a size read from the tensor exports as Shape/Gather/Div nodes
    run at every decode step.
    """
    x32 = x.to(torch.float32)
    cos, sin = cos[:, None], sin[:, None]  # [B, 1, S, hd]
    if torch.onnx.is_in_onnx_export():
        # One MatMul by a constant signed permutation instead of Split -> Neg -> Concat: three nodes
        # fewer per q and k of every layer in the graph that runs once per generated token. Exact:
        # each output is one input times ±1 plus zeros.
        rotated = torch.matmul(x32, rotate_half_matrix(head_dim, x.device))
    else:
        half = head_dim // 2
        rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


def rotate_half_matrix(head_dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """R [hd, hd] float32 with x @ R == cat(-x[hd/2:], x[:hd/2]) for x [..., hd].

    Built in numpy, so that under export it is one constant, not traced index assignments."""
    half = head_dim // 2
    matrix = np.zeros((head_dim, head_dim), np.float32)
    index = np.arange(half)
    matrix[index + half, index] = -1.0  # output i < hd/2 takes -x[i + hd/2]
    matrix[index, index + half] = 1.0  # output i >= hd/2 takes x[i - hd/2]
    return torch.from_numpy(matrix).to(device)
