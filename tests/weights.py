"""Deterministic unit-scale weights for test models (model, export and engine tests share this).

The training init (std 0.02) leaves activations tiny: visual tokens barely move the logits and
greedy decoding is decided by rounding-level near-ties, so "same answer" checks could pass with
wrong numbers. Redrawn here, activations keep unit scale, logits are peaked and a different
input changes them by O(1).

torch is imported inside the function so conftest files importing this stay torch-free.
"""
from __future__ import annotations

import math


def randomize_unit_scale_(model, seed: int, *, spread: float = 0.2, norm_biases_near_one: bool = False,
                          unit_names: tuple[str, ...] = ("embed_tokens",), lm_head_gain: float = 3.0) -> None:
    """Redraw every parameter of `model` in place from one seeded generator (named_parameters order).

    - 1-D norm scales ~ 1 ± `spread`; other 1-D parameters (biases) ~ 0 ± `spread`.
      `norm_biases_near_one`: every 1-D parameter with "norm" in its name counts as a scale, the
      ViT LayerNorm biases (`layer_norm1.bias`, ...) included; otherwise only `...norm...weight`.
    - parameters whose name contains one of `unit_names` ~ N(0, 1) (token / position embeddings);
    - `lm_head` ~ N(0, lm_head_gain² / fan_in): a gain above 1 makes logits more peaked;
    - other matrices ~ N(0, 1 / fan_in), fan_in = the last dimension, so activations keep unit scale.
    The callers' variants differ only in these knobs; each keeps its own so existing tests see the
    same weights as before.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() == 1:
                is_scale = "norm" in name and (norm_biases_near_one or name.endswith("weight"))
                param.copy_(1.0 + spread * noise if is_scale else spread * noise)
            elif any(part in name for part in unit_names):
                param.copy_(noise)
            elif "lm_head" in name:
                param.copy_(lm_head_gain * noise / math.sqrt(param.shape[-1]))
            else:
                param.copy_(noise / math.sqrt(param.shape[-1]))
