"""Checkpoints and bundles shared by the export / backend tests, each built once per test session.

- `wide_checkpoint(folder)`: a second model with non-trivial shapes: OLMo flavour (post-norm, q/k
  norm over the projection, YaRN on two of four layers), GQA (8 query heads, 2 kv heads), a
  3-block ViT with taps [-1, 0], a connector with GQA pooling, and 70 px crops (5×5 patches: the
  2×2 and 3×3 pooling windows need padding). Weights are larger than the 0.02 init, so logits are
  peaked and greedy decoding is not decided by near-ties.
- `cached_bundle(key, factory)`: build once per session. Fixtures are module-scoped (conftest's
  `wide_dir` / `bundles` and the modules' own), so the session-wide cache lives in this module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from tests.weights import randomize_unit_scale_

_BUNDLES: dict[str, Path] = {}


def cached_bundle(key: str, factory: Callable[[], Path]) -> Path:
    if key not in _BUNDLES:
        _BUNDLES[key] = factory()
    return _BUNDLES[key]


def wide_config(tokenizer):
    from molmo_edge.model.config import AdapterConfig, Molmo2Config, RopeConfig, TextConfig, VisionConfig

    vision = VisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=3,
                          num_key_value_heads=3, head_dim=16, image_size=(70, 70), patch_size=14)
    adapter = AdapterConfig(vision_feature_layer=[-1, 0], hidden_size=48, num_attention_heads=3,
                            num_key_value_heads=1, head_dim=16, intermediate_size=160, text_hidden_size=128)
    text = TextConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, head_dim=16, vocab_size=128, additional_vocab_size=16,
                      qk_norm_type="olmo", norm_after=True, max_position_embeddings=1024,
                      rope=RopeConfig(rope_type="yarn", rope_theta=10_000.0, factor=4.0,
                                      original_max_position_embeddings=256),
                      rope_scaling_layers=[1, 3])
    config = Molmo2Config(vision=vision, adapter=adapter, text=text, image_start_token_id=128, image_end_token_id=129,
                          image_patch_id=130, image_col_id=131, low_res_image_start_token_id=132,
                          frame_start_token_id=135, frame_end_token_id=136)
    return config.with_tokenizer(tokenizer)


def wide_checkpoint(folder: Path) -> Path:
    from molmo_edge.model import Molmo2ForConditionalGeneration, save_checkpoint
    from molmo_edge.training.tokenizer_builder import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = Molmo2ForConditionalGeneration(wide_config(tokenizer)).eval()
    # LayerNorm biases drawn around 1 too: the variant this checkpoint has always been built with.
    randomize_unit_scale_(model, seed=1, norm_biases_near_one=True)
    save_checkpoint(model, folder, tokenizer=tokenizer)
    return folder


def export(checkpoint: Path, out: Path, **options) -> Path:
    from molmo_edge.export.exporter import ExportOptions, export_bundle

    export_bundle(checkpoint, out, ExportOptions(**options))
    return out


def sample_image(height: int, width: int, seed: int = 0):
    """A smooth RGB uint8 image (gradients + a few blobs): natural-ish statistics for the ViT."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 7 + y / 11)], -1) * 200
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, min(height, width) / 3)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return image.clip(0, 255).astype(np.uint8)
