"""Named Molmo2 configurations: the three released sizes and two tiny CPU test models.

Real shapes come from the Molmo2 paper (appendix, hyper-parameter table) and the transformers
config defaults. A real checkpoint's config.json always wins over a preset; presets are for
building random-init models, sizing memory, and tests. Numbers we could not confirm from a
released config.json are marked UNCERTAIN.
"""
from __future__ import annotations

from typing import Callable

from molmo_edge.errors import ConfigError
from molmo_edge.model.config import AdapterConfig, Molmo2Config, RopeConfig, TextConfig, VisionConfig

# SigLIP 2 so400m/14 at 378 px; 27 blocks declared, blocks 25-26 never run (taps 24 and 18 =
# "third-to-last and ninth-from-last" of 27), so 25 are built.
_SIGLIP2 = VisionConfig(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=25, num_attention_heads=16,
    num_key_value_heads=16, head_dim=72, image_size=(378, 378), patch_size=14,
)

# Qwen3 chat tokens: BOS = EOS = <|im_end|>, pad = <|endoftext|>.
_QWEN3_TEXT_TOKENS = {"bos_token_id": 151645, "eos_token_id": 151645, "pad_token_id": 151643}


def _adapter_for(text: TextConfig) -> AdapterConfig:
    # The connector's SwiGLU uses the LLM's intermediate size (paper, appendix).
    return AdapterConfig(vision_feature_layer=[24, 18], hidden_size=1152, num_attention_heads=16,
                         num_key_value_heads=16, head_dim=72, intermediate_size=text.intermediate_size,
                         text_hidden_size=text.hidden_size)


def _molmo2_4b() -> Molmo2Config:
    # Qwen3-4B. UNCERTAIN: rope_theta. The paper's table says 1M; the 4B release is built on the
    # Qwen3-4B-2507 LLM whose config uses 5M (molmo2-architecture.md: "4B uses 5e6"). We use 5M.
    text = TextConfig(hidden_size=2560, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                      vocab_size=151936, additional_vocab_size=128, num_hidden_layers=36,
                      intermediate_size=9728, rope=RopeConfig(rope_theta=5_000_000.0), qk_norm_type="qwen3")
    return Molmo2Config(vision=_SIGLIP2, adapter=_adapter_for(text), text=text, **_QWEN3_TEXT_TOKENS)


def _molmo2_8b() -> Molmo2Config:
    # Qwen3-8B.
    text = TextConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                      vocab_size=151936, additional_vocab_size=128, num_hidden_layers=36,
                      intermediate_size=12288, rope=RopeConfig(rope_theta=1_000_000.0), qk_norm_type="qwen3")
    return Molmo2Config(vision=_SIGLIP2, adapter=_adapter_for(text), text=text, **_QWEN3_TEXT_TOKENS)


def _molmo2_o_7b() -> Molmo2Config:
    # OLMo 3 7B: MHA (32 kv heads), post-norm, q/k norm over the full projection, theta 500k,
    # 100352 embedding rows (paper table).
    # UNCERTAIN: the YaRN settings (factor 8 from 8192 positions) and which layers use them
    # (OLMo 3's full-attention layers, every fourth: 3, 7, ..., 31); the image token ids (placed
    # right after the 100352 base rows, in the Qwen3 block's order); the OLMo text token ids
    # (<|endoftext|> 100257 as BOS/EOS, <|pad|> 100277).
    base = 100352
    text = TextConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, head_dim=128,
                      vocab_size=base, additional_vocab_size=128, num_hidden_layers=32,
                      intermediate_size=11008, qk_norm_type="olmo", norm_after=True,
                      max_position_embeddings=65536,
                      rope=RopeConfig(rope_type="yarn", rope_theta=500_000.0, factor=8.0,
                                      original_max_position_embeddings=8192),
                      rope_scaling_layers=list(range(3, 32, 4)))
    return Molmo2Config(vision=_SIGLIP2, adapter=_adapter_for(text), text=text,
                        image_start_token_id=base, image_end_token_id=base + 1, image_patch_id=base + 2,
                        image_col_id=base + 3, low_res_image_start_token_id=base + 4,
                        frame_start_token_id=base + 7, frame_end_token_id=base + 8,
                        bos_token_id=100257, eos_token_id=100257, pad_token_id=100277)


def _tiny_test() -> Molmo2Config:
    # The reference's smallest CPU model (molmo2-architecture.md): 56 px crops = 4x4 patches.
    vision = VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=2, head_dim=16, image_size=(56, 56), patch_size=14)
    adapter = AdapterConfig(vision_feature_layer=[1, 0], hidden_size=32, num_attention_heads=2,
                            num_key_value_heads=2, head_dim=16, intermediate_size=64, text_hidden_size=64)
    text = TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=128, additional_vocab_size=16,
                      rope=RopeConfig(rope_theta=10_000.0), qk_norm_type="qwen3")
    return Molmo2Config(vision=vision, adapter=adapter, text=text,
                        image_start_token_id=128, image_end_token_id=129, image_patch_id=130, image_col_id=131,
                        low_res_image_start_token_id=132, frame_start_token_id=135, frame_end_token_id=136)


def _tiny_test_olmo() -> Molmo2Config:
    # OLMo flavour: full q/k norm, post-norm, YaRN on layer 1 only (two rotary tables), MHA, and
    # feature taps [2, 0] of a 3-block ViT (not the default "last, first" pair).
    vision = VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                          num_key_value_heads=2, head_dim=16, image_size=(56, 56), patch_size=14)
    adapter = AdapterConfig(vision_feature_layer=[2, 0], hidden_size=32, num_attention_heads=2,
                            num_key_value_heads=1, head_dim=16, intermediate_size=96, text_hidden_size=64)
    text = TextConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=4, head_dim=16, vocab_size=128, additional_vocab_size=16,
                      qk_norm_type="olmo", norm_after=True, max_position_embeddings=256,
                      rope=RopeConfig(rope_type="yarn", rope_theta=10_000.0, factor=4.0,
                                      original_max_position_embeddings=64),
                      rope_scaling_layers=[1])
    return Molmo2Config(vision=vision, adapter=adapter, text=text,
                        image_start_token_id=128, image_end_token_id=129, image_patch_id=130, image_col_id=131,
                        low_res_image_start_token_id=132, frame_start_token_id=135, frame_end_token_id=136)


PRESETS: dict[str, Callable[[], Molmo2Config]] = {
    "molmo2-4b": _molmo2_4b,
    "molmo2-8b": _molmo2_8b,
    "molmo2-o-7b": _molmo2_o_7b,
    "tiny-test": _tiny_test,
    "tiny-test-olmo": _tiny_test_olmo,
}


def preset_config(name: str) -> Molmo2Config:
    key = name.strip().lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown Molmo2 preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[key]()
