"""Typed configuration of a Molmo2 model: vision tower, connector (adapter), text decoder, token ids.

The field names follow the Hugging Face `transformers` Molmo2 config (native layout) so that a
newcomer who knows one knows the other. Reading and writing config.json (both the native layout
and the original Ai2 hub layout) lives in `hf_config.py`; the named presets live in `presets.py`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from molmo_edge.errors import ConfigError

# Activations the model code knows. "gelu_pytorch_tanh" / "gelu_new" are the tanh approximation.
SUPPORTED_ACTIVATIONS = ("silu", "gelu", "gelu_pytorch_tanh", "gelu_new", "relu")


class VisionConfig(BaseModel):
    """The SigLIP2-style ViT. Defaults are SigLIP 2 so400m/14 at 378 px, trimmed to 25 blocks."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 25
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int = 72
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    image_size: tuple[int, int] = (378, 378)  # (height_px, width_px) of one crop
    patch_size: int = 14
    num_channels: int = 3
    attention_bias: bool = True

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches per crop as (rows, cols)."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        """P: patches per crop, also the number of learned positional embeddings."""
        rows, cols = self.grid_size
        return rows * cols

    @property
    def patch_dim(self) -> int:
        """Floats in one flattened patch: patch_size² × channels (588 for 14 px RGB)."""
        return self.patch_size * self.patch_size * self.num_channels


class AdapterConfig(BaseModel):
    """The connector: attention pooling over ViT feature taps, then a SwiGLU projector."""

    model_config = ConfigDict(extra="forbid")

    # Indices into the ViT's per-block outputs (0 = output of block 0); negative counts from the
    # last block. The taps are concatenated in this order.
    vision_feature_layer: list[int] = [24, 18]
    hidden_size: int = 1152
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int = 72
    attention_bias: bool = True
    hidden_act: str = "silu"
    intermediate_size: int = 12288
    text_hidden_size: int = 4096
    mlp_bias: bool = False


class RopeConfig(BaseModel):
    """Rotary position embedding: plain ("default") or YaRN-scaled."""

    model_config = ConfigDict(extra="forbid")

    rope_type: Literal["default", "yarn"] = "default"
    rope_theta: float = 1_000_000.0
    # YaRN only; names as in transformers' rope_parameters.
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    attention_factor: float | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True

    @model_validator(mode="after")
    def _yarn_needs_factor(self) -> "RopeConfig":
        if self.rope_type == "yarn" and (self.factor is None or self.factor < 1.0):
            raise ValueError(f"YaRN RoPE needs a scaling factor >= 1, got factor={self.factor}")
        return self


class TextConfig(BaseModel):
    """The decoder-only LLM (Qwen3 or OLMo flavour)."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = 4096
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    vocab_size: int = 151936  # rows the lm_head can emit
    additional_vocab_size: int = 128  # extra embedding rows for the image special tokens
    attention_bias: bool = False
    # "qwen3": RMSNorm over each head's q/k; "olmo": RMSNorm over the full projected q/k.
    qk_norm_type: Literal["qwen3", "olmo"] = "qwen3"
    num_hidden_layers: int = 36
    intermediate_size: int = 12288
    hidden_act: str = "silu"
    max_position_embeddings: int = 36864
    rope: RopeConfig = RopeConfig()
    # Layers that use the scaled rope; the others use plain rope with the same theta. None = all.
    rope_scaling_layers: list[int] | None = None
    rms_norm_eps: float = 1e-6
    norm_after: bool = False  # OLMo post-norm: h = x + norm(f(x))

    @property
    def embedding_rows(self) -> int:
        return self.vocab_size + self.additional_vocab_size

    def layer_uses_scaled_rope(self, layer_idx: int) -> bool:
        return self.rope_scaling_layers is None or layer_idx in self.rope_scaling_layers


# Token-id fields of Molmo2Config, in the order of the Molmo2 special-token block.
IMAGE_TOKEN_FIELDS = (
    "image_start_token_id",
    "image_end_token_id",
    "image_patch_id",
    "image_col_id",
    "low_res_image_start_token_id",
    "frame_start_token_id",
    "frame_end_token_id",
)
# Token strings of those fields (the processing package's tokenizer uses the same strings).
IMAGE_TOKEN_STRINGS = {
    "image_start_token_id": "<im_start>",
    "image_end_token_id": "<im_end>",
    "image_patch_id": "<im_patch>",
    "image_col_id": "<im_col>",
    "low_res_image_start_token_id": "<low_res_im_start>",
    "frame_start_token_id": "<frame_start>",
    "frame_end_token_id": "<frame_end>",
}


class Molmo2Config(BaseModel):
    """Everything needed to build `Molmo2ForConditionalGeneration`.

    `Molmo2Config.preset("molmo2-8b")`, `Molmo2Config.from_pretrained(folder)` and
    `Molmo2Config.from_hf_dict(json_dict)` are the usual ways in; `to_hf_dict()` writes the
    native transformers layout.
    """

    model_config = ConfigDict(extra="forbid")

    vision: VisionConfig = VisionConfig()
    adapter: AdapterConfig = AdapterConfig()
    text: TextConfig = TextConfig()

    # Image special tokens (Qwen3 ids by default; they live in the additional vocabulary).
    image_start_token_id: int = 151936
    image_end_token_id: int = 151937
    image_patch_id: int = 151938
    image_col_id: int = 151939
    low_res_image_start_token_id: int = 151940
    frame_start_token_id: int = 151943
    frame_end_token_id: int = 151944
    # Text special tokens. transformers keeps these in config.json or generation_config.json,
    # and a random-init test config may have none: None means "not defined".
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> "Molmo2Config":
        v, a, t = self.vision, self.adapter, self.text
        problems = []
        if a.hidden_size != v.hidden_size:
            problems.append(f"adapter.hidden_size ({a.hidden_size}) must equal vision.hidden_size ({v.hidden_size})")
        if a.text_hidden_size != t.hidden_size:
            problems.append(f"adapter.text_hidden_size ({a.text_hidden_size}) must equal text.hidden_size "
                            f"({t.hidden_size})")
        if not a.vision_feature_layer:
            problems.append("adapter.vision_feature_layer must name at least one ViT layer")
        for layer in a.vision_feature_layer:
            if not -v.num_hidden_layers <= layer < v.num_hidden_layers:
                problems.append(f"adapter.vision_feature_layer {a.vision_feature_layer} must index the "
                                f"{v.num_hidden_layers} ViT layers")
                break
        for name, cfg in (("vision", v), ("adapter", a), ("text", t)):
            if cfg.num_attention_heads % cfg.num_key_value_heads:
                problems.append(f"{name}.num_attention_heads ({cfg.num_attention_heads}) must be a multiple of "
                                f"num_key_value_heads ({cfg.num_key_value_heads})")
        for name, cfg in (("vision", v), ("adapter", a), ("text", t)):
            if cfg.hidden_act not in SUPPORTED_ACTIVATIONS:
                problems.append(f"{name}.hidden_act {cfg.hidden_act!r} is not one of {SUPPORTED_ACTIVATIONS}")
        if t.head_dim % 2:
            problems.append(f"text.head_dim ({t.head_dim}) must be even for rotary embeddings")
        if t.rope_scaling_layers is not None and any(not 0 <= i < t.num_hidden_layers for i in t.rope_scaling_layers):
            problems.append(f"text.rope_scaling_layers {t.rope_scaling_layers} must index the "
                            f"{t.num_hidden_layers} decoder layers")
        for field in IMAGE_TOKEN_FIELDS:
            token_id = getattr(self, field)
            if not 0 <= token_id < t.embedding_rows:
                problems.append(f"{field}={token_id} is outside the embedding table "
                                f"(vocab_size + additional_vocab_size = {t.embedding_rows})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ----- derived values -------------------------------------------------------------------
    @property
    def vision_taps(self) -> list[int]:
        """`adapter.vision_feature_layer` with negative indices resolved (0-based block indices)."""
        n = self.vision.num_hidden_layers
        return [layer % n for layer in self.adapter.vision_feature_layer]

    @property
    def vision_blocks_to_run(self) -> int:
        """ViT blocks after the deepest tap never influence the output, so they are not built."""
        return max(self.vision_taps) + 1

    @property
    def stop_token_ids(self) -> list[int]:
        """EOS ids as a list (config.json may hold one id or several)."""
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)

    # ----- constructors ---------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "Molmo2Config":
        """A named configuration: molmo2-4b, molmo2-8b, molmo2-o-7b, tiny-test, tiny-test-olmo."""
        from molmo_edge.model.presets import preset_config

        return preset_config(name)

    @classmethod
    def from_hf_dict(cls, config_dict: dict[str, Any]) -> "Molmo2Config":
        """Read a config.json dict in the native transformers layout or the original Ai2 hub layout."""
        from molmo_edge.model.hf_config import config_from_hf_dict

        return config_from_hf_dict(config_dict)

    def to_hf_dict(self) -> dict[str, Any]:
        """The native transformers 5.x config.json layout (loads with `transformers.Molmo2Config(**d)`)."""
        from molmo_edge.model.hf_config import config_to_hf_dict

        return config_to_hf_dict(self)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Molmo2Config":
        """Read `folder/config.json` (and the token ids of `generation_config.json` when present)."""
        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise ConfigError(f"{folder} has no config.json; pass a Molmo2 checkpoint folder")
        config_dict = _read_json(config_path)
        generation_path = folder / "generation_config.json"
        if generation_path.is_file():
            generation = _read_json(generation_path)
            for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                if config_dict.get(key) is None and generation.get(key) is not None:
                    config_dict[key] = generation[key]
        return cls.from_hf_dict(config_dict)

    def with_tokenizer(self, tokenizer: Any) -> "Molmo2Config":
        """A copy whose vocabulary sizes and token ids come from `tokenizer`.

        Duck-typed: needs `base_vocab_size`, `additional_vocab_size`, `token_to_id(str)`, `bos_id`,
        `eos_id`, `pad_id` (the `molmo_edge.processing.tokenizer.Tokenizer` interface).
        """
        text = self.text.model_copy(update={
            "vocab_size": int(tokenizer.base_vocab_size),
            "additional_vocab_size": int(tokenizer.additional_vocab_size),
        })
        update: dict[str, Any] = {"text": text}
        for field, token in IMAGE_TOKEN_STRINGS.items():
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise ConfigError(f"the tokenizer has no {token} token; a Molmo2 tokenizer needs every image "
                                  f"special token ({', '.join(IMAGE_TOKEN_STRINGS.values())})")
            update[field] = int(token_id)
        update["bos_token_id"] = _optional_int(tokenizer.bos_id)
        update["eos_token_id"] = _optional_int(tokenizer.eos_id)
        update["pad_token_id"] = _optional_int(tokenizer.pad_id)
        return self.validated_copy(**update)

    def validated_copy(self, **update: Any) -> "Molmo2Config":
        """`model_copy(update=...)` that re-runs validation and raises ConfigError on a bad result."""
        data = self.model_dump()
        for key, value in update.items():
            data[key] = value.model_dump() if isinstance(value, BaseModel) else value
        return build_config(data)


def build_config(data: dict[str, Any]) -> Molmo2Config:
    """Molmo2Config(**data), turning pydantic's ValidationError into one ConfigError line."""
    try:
        return Molmo2Config.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid Molmo2 config: {details}") from None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); re-download or re-save the checkpoint") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data
