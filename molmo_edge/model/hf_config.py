"""config.json <-> Molmo2Config, for both layouts a Molmo2 checkpoint can have.

- Native transformers 5.x layout: `vision_config` / `adapter_config` / `text_config`,
  `rope_parameters`, `image_size`, `patch_size`, `vision_feature_layer`.
- Original Ai2 hub layout (remote code): `vit_config` with `image_default_input_size`,
  `image_patch_size`, `image_num_pos`; adapter `vit_layers`; text `rope_theta` + `rope_scaling`,
  `qkv_bias`, `layer_norm_eps`, `use_qk_norm`; top-level `image_col_id`.

Both are read; only the native layout is written (transformers reads it without remote code).
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from molmo_edge.errors import ConfigError
from molmo_edge.model.config import AdapterConfig, Molmo2Config, TextConfig, VisionConfig, build_config

MODEL_TYPE = "molmo2"

# config.json files carry many keys that do not change the computation (dropouts, kernel choices,
# init ranges, generic PretrainedConfig fields): only the fields our config has are read. A few
# options that WOULD change the computation and are not implemented are refused instead.


def _refuse_unsupported(section: str, raw: dict[str, Any]) -> None:
    if raw.get("partial_rotary_factor") not in (None, 1, 1.0):
        raise ConfigError(f"{section}.partial_rotary_factor={raw['partial_rotary_factor']} is not supported "
                          "(Molmo2 rotates the full head)")
    if raw.get("use_sliding_window") or raw.get("sliding_window") or raw.get("layer_types"):
        raise ConfigError(f"{section} asks for sliding-window / per-layer attention types, which Molmo2 "
                          "checkpoints do not use and molmo-edge does not implement")


def _known_fields(raw: dict[str, Any], model: type[BaseModel], renames: dict[str, str]) -> dict[str, Any]:
    """The entries of `raw` that are fields of `model` (after legacy renames); native names win."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        field = renames.get(key, key)
        if field in model.model_fields and not (field != key and field in raw):
            out[field] = value
    return out


def config_from_hf_dict(config_dict: dict[str, Any]) -> Molmo2Config:
    """Parse a config.json dict (native or legacy hub layout) into a validated Molmo2Config."""
    if not isinstance(config_dict, dict):
        raise ConfigError(f"a config must be a JSON object, got {type(config_dict).__name__}")
    model_type = config_dict.get("model_type")
    if model_type != MODEL_TYPE:
        raise ConfigError(
            f"config.json has model_type {model_type!r}; molmo-edge loads Molmo2 checkpoints only "
            f"(model_type {MODEL_TYPE!r}). Point --model at a Molmo2 folder (e.g. allenai/Molmo2-8B)."
        )
    vision_raw = config_dict.get("vision_config") or config_dict.get("vit_config") or {}
    adapter_raw = config_dict.get("adapter_config") or {}
    text_raw = config_dict.get("text_config") or {}
    if config_dict.get("tie_word_embeddings") or text_raw.get("tie_word_embeddings"):
        raise ConfigError("tied input/output embeddings are not supported by Molmo2 (lm_head has fewer rows "
                          "than the embedding); set tie_word_embeddings to false")
    if text_raw.get("use_qk_norm") is False:
        raise ConfigError("text_config.use_qk_norm=false is not a Molmo2 layout (every Molmo2 decoder normalises "
                          "q and k); this checkpoint cannot be loaded")

    vision = _vision_fields(vision_raw)
    adapter = _adapter_fields(adapter_raw)
    text = _text_fields(text_raw)

    # Blocks after the deepest feature tap never reach the output (the hub config declares 27 ViT
    # blocks, the weights stop at 25). Resolve negative taps against the declared depth, then keep
    # only the blocks that run, so the config matches the weights we build and save.
    declared_layers = vision.get("num_hidden_layers", 25)
    taps = adapter.get("vision_feature_layer", [24, 18])
    if any(not -declared_layers <= tap < declared_layers for tap in taps):
        raise ConfigError(f"adapter vision_feature_layer {taps} must index the {declared_layers} ViT layers")
    taps = [tap % declared_layers for tap in taps]
    adapter["vision_feature_layer"] = taps
    vision["num_hidden_layers"] = max(taps) + 1

    top: dict[str, Any] = {"vision": vision, "adapter": adapter, "text": text}
    defaults = Molmo2Config.model_fields
    for field in ("image_start_token_id", "image_end_token_id", "image_patch_id", "low_res_image_start_token_id",
                  "frame_start_token_id", "frame_end_token_id"):
        top[field] = config_dict.get(field, defaults[field].default)
    # The native layout has no <im_col> id; it is the fourth token of the Molmo2 block.
    top["image_col_id"] = config_dict.get("image_col_id", top["image_start_token_id"] + 3)
    for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = config_dict.get(field, text_raw.get(field))
        top[field] = value
    return build_config(top)


def config_to_hf_dict(config: Molmo2Config) -> dict[str, Any]:
    """The native transformers layout. Round-trips through `config_from_hf_dict` unchanged."""
    v, a, t = config.vision, config.adapter, config.text
    rope: dict[str, Any] = {"rope_type": t.rope.rope_type, "rope_theta": t.rope.rope_theta}
    if t.rope.rope_type == "yarn":
        for key in ("factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
                    "mscale", "mscale_all_dim"):
            value = getattr(t.rope, key)
            if value is not None:
                rope[key] = value
        if not t.rope.truncate:
            rope["truncate"] = False
    out: dict[str, Any] = {
        "model_type": MODEL_TYPE,
        "architectures": ["Molmo2ForConditionalGeneration"],
        "vision_config": {
            "model_type": "molmo2_vision",
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "num_key_value_heads": v.num_key_value_heads,
            "head_dim": v.head_dim,
            "hidden_act": v.hidden_act,
            "layer_norm_eps": v.layer_norm_eps,
            "image_size": list(v.image_size),
            "patch_size": v.patch_size,
            "num_position_embeddings": v.num_patches,
            "num_channels": v.num_channels,
            "attention_bias": v.attention_bias,
        },
        "adapter_config": {
            "model_type": "molmo2_adapter",
            "vision_feature_layer": list(config.vision_taps),
            "hidden_size": a.hidden_size,
            "num_attention_heads": a.num_attention_heads,
            "num_key_value_heads": a.num_key_value_heads,
            "head_dim": a.head_dim,
            "attention_bias": a.attention_bias,
            "hidden_act": a.hidden_act,
            "intermediate_size": a.intermediate_size,
            "text_hidden_size": a.text_hidden_size,
            "mlp_bias": a.mlp_bias,
        },
        "text_config": {
            "model_type": "molmo2_text",
            "hidden_size": t.hidden_size,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "head_dim": t.head_dim,
            "vocab_size": t.vocab_size,
            "additional_vocab_size": t.additional_vocab_size,
            "attention_bias": t.attention_bias,
            "qk_norm_type": t.qk_norm_type,
            "num_hidden_layers": t.num_hidden_layers,
            "intermediate_size": t.intermediate_size,
            "hidden_act": t.hidden_act,
            "max_position_embeddings": t.max_position_embeddings,
            "rope_parameters": rope,
            "rope_scaling_layers": (list(t.rope_scaling_layers) if t.rope_scaling_layers is not None
                                    else list(range(t.num_hidden_layers))),
            "rms_norm_eps": t.rms_norm_eps,
            "norm_after": t.norm_after,
            "tie_word_embeddings": False,
        },
        "image_start_token_id": config.image_start_token_id,
        "image_end_token_id": config.image_end_token_id,
        "image_patch_id": config.image_patch_id,
        "image_col_id": config.image_col_id,
        "low_res_image_start_token_id": config.low_res_image_start_token_id,
        "frame_start_token_id": config.frame_start_token_id,
        "frame_end_token_id": config.frame_end_token_id,
        "tie_word_embeddings": False,
    }
    for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, field)
        if value is not None:
            out[field] = value
    return out


def _vision_fields(raw: dict[str, Any]) -> dict[str, Any]:
    renames = {"image_default_input_size": "image_size", "image_patch_size": "patch_size"}
    out = _known_fields(raw, VisionConfig, renames)
    if isinstance(out.get("image_size"), int):
        out["image_size"] = (out["image_size"], out["image_size"])
    num_positions = raw.get("num_position_embeddings", raw.get("image_num_pos"))
    image_size = tuple(out.get("image_size", (378, 378)))
    patch = out.get("patch_size", 14)
    grid_patches = (image_size[0] // patch) * (image_size[1] // patch)
    if num_positions is not None and num_positions != grid_patches:
        raise ConfigError(f"vision config has {num_positions} positional embeddings but a {image_size[0]}x"
                          f"{image_size[1]} crop with {patch} px patches has {grid_patches} patches; "
                          "interpolated position embeddings are not supported")
    return out


def _adapter_fields(raw: dict[str, Any]) -> dict[str, Any]:
    out = _known_fields(raw, AdapterConfig, {"vit_layers": "vision_feature_layer"})
    if "vision_feature_layer" in out:
        out["vision_feature_layer"] = list(out["vision_feature_layer"])
    return out


def _text_fields(raw: dict[str, Any]) -> dict[str, Any]:
    _refuse_unsupported("text_config", raw)
    # Legacy names (transformers keeps them as attribute aliases too).
    out = _known_fields(raw, TextConfig, {"qkv_bias": "attention_bias", "layer_norm_eps": "rms_norm_eps"})
    out["rope"] = _rope_fields(raw)
    if out.get("rope_scaling_layers") is not None:
        out["rope_scaling_layers"] = sorted(set(out["rope_scaling_layers"]))
        if out["rope_scaling_layers"] == list(range(raw.get("num_hidden_layers", 36))):
            out["rope_scaling_layers"] = None  # every layer scaled: the same as "not given"
    return out


def _rope_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """`rope_parameters` (native), or `rope_scaling` + `rope_theta` (legacy); `type` or `rope_type`."""
    params = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"text_config rope parameters must be an object, got {params!r}")
    params = dict(params)
    rope_type = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    theta = params.pop("rope_theta", None)
    if theta is None:
        theta = raw.get("rope_theta", 10_000.0)
    if rope_type not in ("default", "yarn"):
        raise ConfigError(f"rope type {rope_type!r} is not supported (supported: 'default', 'yarn')")
    out: dict[str, Any] = {"rope_type": rope_type, "rope_theta": float(theta)}
    if rope_type == "yarn":
        known = {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
                 "mscale", "mscale_all_dim", "truncate"}
        for key, value in params.items():
            if key in known:
                out[key] = value
        # transformers falls back to max_position_embeddings when the original length is absent.
        out.setdefault("original_max_position_embeddings", raw.get("max_position_embeddings", 36864))
    return out
