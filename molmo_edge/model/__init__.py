"""Molmo2 in plain PyTorch, numerically faithful to transformers' `Molmo2ForConditionalGeneration`.

    from molmo_edge.model import load_checkpoint
    model = load_checkpoint("path/to/Molmo2-8B", dtype="bfloat16", device="cuda")
    out = model(**inputs)            # inputs from molmo_edge.processing.Processor
    ids = model.generate(**inputs, max_new_tokens=64)

Stages for export: `model.vision` (VisionTower), `model.connector` (Connector),
`model.decoder` (TextDecoder), `model.lm_head`.
"""
from molmo_edge.model.checkpoint import load_checkpoint, save_checkpoint
from molmo_edge.model.config import AdapterConfig, Molmo2Config, RopeConfig, TextConfig, VisionConfig
from molmo_edge.model.connector import Connector
from molmo_edge.model.decoder import KVCache, TextDecoder
from molmo_edge.model.generation import GenerationConfig, generate
from molmo_edge.model.inputs import ModelInputError, add_visual_tokens, visual_token_index
from molmo_edge.model.masks import build_attention_mask, build_prefill_mask, position_ids_from_padding
from molmo_edge.model.molmo2 import Molmo2ForConditionalGeneration, Molmo2Output
from molmo_edge.model.presets import PRESETS
from molmo_edge.model.vision import VisionTower

__all__ = [
    "AdapterConfig", "Connector", "GenerationConfig", "KVCache", "ModelInputError", "Molmo2Config",
    "Molmo2ForConditionalGeneration", "Molmo2Output", "PRESETS", "RopeConfig", "TextConfig", "TextDecoder",
    "VisionConfig", "VisionTower", "add_visual_tokens", "build_attention_mask", "build_prefill_mask", "generate",
    "load_checkpoint", "position_ids_from_padding", "save_checkpoint", "visual_token_index",
]
