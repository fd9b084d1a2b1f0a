"""The contract of a bundle's graphs: their names, inputs and outputs, and how the host builds them.

`molmo-edge export` writes three graphs and the ONNX Runtime and TensorRT backends run them; both
sides import this module, so the names cannot drift apart.

    vit        pixel_values [n_crops, P, ps²·3] f32            -> features [n_crops, P, F]
    connector  features [n_crops, P, F], pooling [n_tokens, window] i64
                                                                -> visual_tokens [n_tokens, D]
    decoder    input_ids [1, seq] i64, visual_tokens [n_visual, D] f32,
               visual_index [1, seq] i64, attention_mask [1, 1, seq, total_seq] f32,
               position_ids [1, seq] i64, past_key_<i> / past_value_<i> [1, Hkv, past_seq, hd] f32
                                                                -> logits [1, V] (LAST position only),
                                                                   present_key_<i> / present_value_<i>
                                                                   [1, Hkv, total_seq, hd]

One decoder graph serves prefill (past_seq = 0, seq = the prompt) and decode steps (seq = 1), so
the bundle and the runtime hold the decoder weights once (two graphs would double both).
Everything data-dependent is computed here, on the host: which visual token each position gets
(`visual_index`: 0 = none, i+1 = visual token i, a gather in the graph, no scatter), the
4-D additive mask (causal + the bidirectional image block at prefill) and the positions.
"""
from __future__ import annotations

import numpy as np
import torch

from molmo_edge.model.config import Molmo2Config
from molmo_edge.model.inputs import visual_token_index
from molmo_edge.model.masks import build_attention_mask

# Graph names: keys of `BundleManifest.graphs`, and `<name>.onnx` in the bundle folder.
VIT, CONNECTOR, DECODER = "vit", "connector", "decoder"
GRAPH_NAMES = (VIT, CONNECTOR, DECODER)

VIT_INPUTS, VIT_OUTPUTS = ("pixel_values",), ("features",)
CONNECTOR_INPUTS, CONNECTOR_OUTPUTS = ("features", "pooling"), ("visual_tokens",)
DECODER_FIXED_INPUTS = ("input_ids", "visual_tokens", "visual_index", "attention_mask", "position_ids")

# Symbolic dimension names (the same name in two tensors of one graph is the same size).
DIM_CROPS, DIM_TOKENS, DIM_WINDOW = "n_crops", "n_tokens", "window"
DIM_SEQ, DIM_VISUAL, DIM_PAST, DIM_TOTAL = "seq", "n_visual", "past_seq", "total_seq"

# One mask value for every precision: finite in fp16 (float32's minimum becomes -inf there, and
# a row of -inf is NaN), and still exactly zero weight after softmax in fp32 (exp(-65504) == 0).
MASK_VALUE = float(np.finfo(np.float16).min)


def past_names(n_layers: int) -> list[str]:
    """past_key_0, past_value_0, past_key_1, ... (the order of the decoder's inputs after the fixed ones)."""
    return [f"past_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    return [f"present_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


def decoder_input_names(n_layers: int) -> list[str]:
    return [*DECODER_FIXED_INPUTS, *past_names(n_layers)]


def decoder_output_names(n_layers: int) -> list[str]:
    return ["logits", *present_names(n_layers)]


def kv_shape(config: Molmo2Config, length: int) -> tuple[int, int, int, int]:
    """[1, Hkv, length, hd]: one key or value tensor of the cache."""
    return (1, config.text.num_key_value_heads, length, config.text.head_dim)


def _mask_array(mask: torch.Tensor) -> np.ndarray:
    # build_attention_mask fills with float32's minimum; the graphs take MASK_VALUE (see above)
    return np.where(mask.numpy() < 0, np.float32(MASK_VALUE), np.float32(0.0)).astype(np.float32)


def prefill_feeds(input_ids: torch.Tensor, visual_tokens: torch.Tensor | None, mm_token_type_ids: torch.Tensor,
                  config: Molmo2Config) -> dict[str, np.ndarray]:
    """The decoder's fixed inputs for a whole prompt (past_seq = 0) as float32 / int64 numpy arrays.

    input_ids, mm_token_type_ids [1, S]; visual_tokens [T', D] (one per <im_patch>) or None.
    A text-only prompt gets one zero visual row that no position picks: graphs and TensorRT
    profiles never see a zero-length visual axis.
    """
    ids = input_ids.detach().to("cpu", torch.int64)
    seq = ids.shape[1]
    if visual_tokens is None or visual_tokens.shape[0] == 0:
        visual = np.zeros((1, config.text.hidden_size), np.float32)
        index = np.zeros((1, seq), np.int64)
    else:
        visual = visual_tokens.detach().to("cpu", torch.float32).numpy()
        index = visual_token_index(ids, config.image_patch_id).numpy()  # [1, S]: 0 or 1 + row
    mask = build_attention_mask(1, seq, 0, mm_token_type_ids=mm_token_type_ids.detach().to("cpu"))  # [1,1,S,S]
    return {
        "input_ids": ids.numpy(),
        "visual_tokens": np.ascontiguousarray(visual),
        "visual_index": np.ascontiguousarray(index),
        "attention_mask": _mask_array(mask),
        "position_ids": np.arange(seq, dtype=np.int64)[None],
    }


def extend_feeds(token_ids: list[int] | torch.Tensor, past_length: int, config: Molmo2Config) -> dict[str, np.ndarray]:
    """The fixed inputs for new text tokens after `past_length` cached ones (decode: one token).

    Causal over the new tokens, all of the cache visible; positions continue at past_length.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.int64).reshape(1, -1)
    seq = ids.shape[1]
    mask = build_attention_mask(1, seq, past_length)  # [1, 1, seq, past + seq]
    return {
        "input_ids": ids.numpy(),
        "visual_tokens": np.zeros((1, config.text.hidden_size), np.float32),
        "visual_index": np.zeros((1, seq), np.int64),
        "attention_mask": _mask_array(mask),
        "position_ids": np.arange(past_length, past_length + seq, dtype=np.int64)[None],
    }


def empty_past(config: Molmo2Config) -> dict[str, np.ndarray]:
    """Zero-length past key/value arrays [1, Hkv, 0, hd]: the cache before a prefill."""
    shape = kv_shape(config, 0)
    return {name: np.zeros(shape, np.float32) for name in past_names(config.text.num_hidden_layers)}


__all__ = [
    "CONNECTOR", "CONNECTOR_INPUTS", "CONNECTOR_OUTPUTS", "DECODER", "DECODER_FIXED_INPUTS", "DIM_CROPS",
    "DIM_PAST", "DIM_SEQ", "DIM_TOKENS", "DIM_TOTAL", "DIM_VISUAL", "DIM_WINDOW", "GRAPH_NAMES", "MASK_VALUE", "VIT",
    "VIT_INPUTS", "VIT_OUTPUTS", "decoder_input_names", "decoder_output_names", "empty_past", "extend_feeds",
    "kv_shape", "past_names", "prefill_feeds", "present_names",
]
