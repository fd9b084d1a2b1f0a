"""The three names a Molmo2 weight can have, and the conversions between them.

- ours:   the attribute paths of `Molmo2ForConditionalGeneration` here (`vision.layers.0...`).
- native: transformers 5.x `Molmo2ForConditionalGeneration` (`model.vision_tower.layers.0...`).
- hub:    the original Ai2 checkpoint names that `allenai/Molmo2-*` ship (`model.vision_backbone.
          image_vit.transformer.resblocks.0.attention.wq...`), with fused tensors: `att_proj` =
          [q; k; v] on dim 0, `ff_proj` = [up; gate] on dim 0, and the embedding split into
          `wte.embedding` (base vocab) + `wte.new_embedding` (additional rows).

The hub <-> native table mirrors transformers' `conversion_mapping.py` entries "molmo2" and
"Molmo2TextModel" (checked against transformers 5.23.0).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from molmo_edge.model.config import Molmo2Config

# ours <-> native: pure prefix renames.
_OURS_TO_NATIVE_PREFIX = (
    ("vision.", "model.vision_tower."),
    ("connector.pooling.", "model.multi_modal_projector.image_pooling_2d."),
    ("connector.projector.", "model.multi_modal_projector.image_projector."),
    ("decoder.", "model.language_model."),
    ("lm_head.", "lm_head."),
)


def ours_to_native(name: str) -> str:
    for ours, native in _OURS_TO_NATIVE_PREFIX:
        if name.startswith(ours):
            return native + name[len(ours):]
    raise KeyError(f"no native name for {name!r}")


def native_to_ours(name: str) -> str | None:
    """None for names that have no counterpart here (e.g. rotary caches some exporters store)."""
    for ours, native in _OURS_TO_NATIVE_PREFIX:
        if name.startswith(native):
            return ours + name[len(native):]
    return None


# hub <-> native one-to-one renames, as name-prefix templates without the leading "model.":
# {n} is a layer index, {x} one of q/k/v/o. The first matching template wins, so the ViT block
# rules come before the generic `image_vit.` one.
_RENAME_TEMPLATES = (
    ("transformer.blocks.{n}.self_attn.attn_out.", "language_model.layers.{n}.self_attn.o_proj."),
    ("transformer.blocks.{n}.self_attn.q_norm.", "language_model.layers.{n}.self_attn.q_norm."),
    ("transformer.blocks.{n}.self_attn.k_norm.", "language_model.layers.{n}.self_attn.k_norm."),
    ("transformer.blocks.{n}.mlp.ff_out.", "language_model.layers.{n}.mlp.down_proj."),
    ("transformer.blocks.{n}.attn_norm.", "language_model.layers.{n}.input_layernorm."),
    ("transformer.blocks.{n}.ff_norm.", "language_model.layers.{n}.post_attention_layernorm."),
    ("transformer.ln_f.", "language_model.norm."),
    ("vision_backbone.image_vit.transformer.resblocks.{n}.attention.w{x}.",
     "vision_tower.layers.{n}.self_attn.{x}_proj."),
    ("vision_backbone.image_vit.transformer.resblocks.{n}.feed_forward.w1.", "vision_tower.layers.{n}.mlp.fc1."),
    ("vision_backbone.image_vit.transformer.resblocks.{n}.feed_forward.w2.", "vision_tower.layers.{n}.mlp.fc2."),
    ("vision_backbone.image_vit.transformer.resblocks.{n}.attention_norm.", "vision_tower.layers.{n}.layer_norm1."),
    ("vision_backbone.image_vit.transformer.resblocks.{n}.ffn_norm.", "vision_tower.layers.{n}.layer_norm2."),
    ("vision_backbone.image_vit.", "vision_tower."),  # positional_embedding, patch_embedding
    ("vision_backbone.image_pooling_2d.w{x}.", "multi_modal_projector.image_pooling_2d.{x}_proj."),
    ("vision_backbone.image_projector.w1.", "multi_modal_projector.image_projector.gate_proj."),
    ("vision_backbone.image_projector.w2.", "multi_modal_projector.image_projector.down_proj."),
    ("vision_backbone.image_projector.w3.", "multi_modal_projector.image_projector.up_proj."),
)


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = re.escape(template).replace(r"\{n\}", r"(?P<n>\d+)").replace(r"\{x\}", r"(?P<x>[qkvo])")
    return re.compile("^" + pattern)


_HUB_TO_NATIVE = tuple((_template_regex(hub), native) for hub, native in _RENAME_TEMPLATES)
_NATIVE_TO_HUB = tuple((_template_regex(native), hub) for hub, native in _RENAME_TEMPLATES)


def _rename(name: str, table: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, target in table:
        if m := pattern.match(name):
            return target.format(**m.groupdict()) + name[m.end():]
    return None


_HUB_FUSED_QKV = re.compile(r"^transformer\.blocks\.(\d+)\.self_attn\.att_proj\.(weight|bias)$")
_HUB_FUSED_FF = re.compile(r"^transformer\.blocks\.(\d+)\.mlp\.ff_proj\.(weight|bias)$")
_HUB_EMBEDDING = ("transformer.wte.embedding", "transformer.wte.new_embedding")
_NATIVE_QKV = re.compile(r"^model\.language_model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
_NATIVE_UP_GATE = re.compile(r"^model\.language_model\.layers\.(\d+)\.mlp\.(up|gate)_proj\.(weight|bias)$")
# Any of these in a checkpoint means the hub layout.
HUB_MARKERS = ("transformer.blocks.", "vision_backbone.", "transformer.wte.")


def is_hub_layout(names: list[str]) -> bool:
    return any(marker in name for name in names for marker in HUB_MARKERS)


@dataclass
class NativeSource:
    """How to produce one native tensor from hub tensors: read `sources`, then `combine` them."""

    sources: tuple[str, ...]
    combine: Callable[[list[torch.Tensor]], torch.Tensor]


def _take_rows(start: int, stop: int) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    return lambda tensors: tensors[0][start:stop]


def hub_plan(hub_names: list[str], config: Molmo2Config) -> tuple[dict[str, NativeSource], list[str]]:
    """Plan the native tensors a hub checkpoint provides.

    Returns (native name -> how to build it, hub names that map to nothing).
    """
    t = config.text
    q_rows, kv_rows = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    plan: dict[str, NativeSource] = {}
    unmapped: list[str] = []
    embedding_parts: dict[str, str] = {}
    for full_name in hub_names:
        name = full_name.removeprefix("model.")
        if name == "lm_head.weight":
            plan["lm_head.weight"] = NativeSource((full_name,), lambda ts: ts[0])
            continue
        if name in _HUB_EMBEDDING:
            embedding_parts[name] = full_name
            continue
        if m := _HUB_FUSED_QKV.match(name):
            layer, kind = m.groups()
            prefix = f"model.language_model.layers.{layer}.self_attn."
            for proj, (start, stop) in (("q_proj", (0, q_rows)), ("k_proj", (q_rows, q_rows + kv_rows)),
                                        ("v_proj", (q_rows + kv_rows, q_rows + 2 * kv_rows))):
                plan[f"{prefix}{proj}.{kind}"] = NativeSource((full_name,), _take_rows(start, stop))
            continue
        if m := _HUB_FUSED_FF.match(name):
            layer, kind = m.groups()
            prefix = f"model.language_model.layers.{layer}.mlp."
            # [up; gate], equal halves (transformers: Chunk(dim=0) into up_proj, gate_proj).
            plan[f"{prefix}up_proj.{kind}"] = NativeSource((full_name,), lambda ts: ts[0][: ts[0].shape[0] // 2])
            plan[f"{prefix}gate_proj.{kind}"] = NativeSource((full_name,), lambda ts: ts[0][ts[0].shape[0] // 2:])
            continue
        native = _rename(name, _HUB_TO_NATIVE)
        if native is None:
            unmapped.append(full_name)
        else:
            plan["model." + native] = NativeSource((full_name,), lambda ts: ts[0])
    if embedding_parts:
        # Concatenated in this order whatever the split point: transformers itself saves the two
        # halves with an equal split, the Ai2 checkpoints split at vocab_size.
        parts = tuple(embedding_parts[n] for n in _HUB_EMBEDDING if n in embedding_parts)
        plan["model.language_model.embed_tokens.weight"] = NativeSource(parts, lambda ts: torch.cat(ts, dim=0))
    return plan, unmapped


def native_to_hub(state: Mapping[str, torch.Tensor], config: Molmo2Config) -> dict[str, torch.Tensor]:
    """A native state dict in the original Ai2 hub names (fused tensors re-fused)."""
    vocab = config.text.vocab_size
    out: dict[str, torch.Tensor] = {}
    pending_qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    pending_ff: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        if name == "model.language_model.embed_tokens.weight":
            out["model.transformer.wte.embedding"] = tensor[:vocab]
            out["model.transformer.wte.new_embedding"] = tensor[vocab:]
        elif m := _NATIVE_QKV.match(name):
            layer, proj, kind = m.groups()
            pending_qkv.setdefault((layer, kind), {})[proj] = tensor
        elif m := _NATIVE_UP_GATE.match(name):
            layer, proj, kind = m.groups()
            pending_ff.setdefault((layer, kind), {})[proj] = tensor
        elif name.startswith("model.") and (hub := _rename(name[len("model."):], _NATIVE_TO_HUB)) is not None:
            out["model." + hub] = tensor
        else:
            out[name] = tensor  # lm_head.weight keeps its name
    for (layer, kind), parts in pending_qkv.items():
        out[f"model.transformer.blocks.{layer}.self_attn.att_proj.{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0)
    for (layer, kind), parts in pending_ff.items():
        out[f"model.transformer.blocks.{layer}.mlp.ff_proj.{kind}"] = torch.cat([parts["up"], parts["gate"]], dim=0)
    return out
