"""Small building blocks shared by the three stages: norms in fp32, activations, GQA expansion.

Norm statistics are computed in float32 whatever the model dtype (bf16/fp16 would lose the
small variances), as the reference and the Molmo2 training code do.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """y = weight * x / sqrt(mean(x²) + eps); statistics in fp32, scale in the model dtype."""

    def __init__(self, size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(input_dtype)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose arithmetic runs in fp32 and whose output has the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(torch.float32) if self.weight is not None else None
        bias = self.bias.to(torch.float32) if self.bias is not None else None
        y = F.layer_norm(x.to(torch.float32), self.normalized_shape, weight, bias, self.eps)
        return y.to(x.dtype)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    if torch.onnx.is_in_onnx_export():
        # The same function spelled out as 0.5x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))), x³ as Pow(x, 3):
        # ONNX Runtime recognises this chain (its FastGelu fusion) and runs one kernel over the
        # [N, P, 4·Dv] activations; F.gelu's own export is eight elementwise passes that ORT leaves
        # as they are (26 of the shipped ViT's 84 ms for 8 frames). TensorRT fuses either form.
        return (0.5 * x) * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * torch.pow(x, 3))))
    return F.gelu(x, approximate="tanh")


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_new": _gelu_tanh,
    "relu": F.relu,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called `name` in config.json (names validated by the config)."""
    return _ACTIVATIONS[name]


class SwiGLU(nn.Module):
    """down(act(gate(x)) * up(x)): the MLP of the decoder and of the connector's projector."""

    def __init__(self, in_size: int, hidden_size: int, out_size: int, act: str = "silu", bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(in_size, hidden_size, bias=bias)
        self.up_proj = nn.Linear(in_size, hidden_size, bias=bias)
        self.down_proj = nn.Linear(hidden_size, out_size, bias=False)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def expand_kv_heads(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, Hkv, S, hd] -> [B, Hkv·n_rep, S, hd]; kv head j serves query heads j·n_rep .. j·n_rep+n_rep-1.

    Done explicitly (not SDPA's enable_gqa) so that the ONNX exporter sees plain Expand/Reshape.
    """
    if n_rep == 1:
        return x
    # -1 sizes and flatten: no sizes read from x.shape, so the ONNX graph has no shape arithmetic here
    return x[:, :, None].expand(-1, -1, n_rep, -1, -1).flatten(1, 2)
