"""Turn a recipe's model and data sections into objects: model + processor, example source.

Kept apart from the training loop so that tests, the CLI and notebooks can build exactly what a
recipe trains (e.g. to inspect packed batches) without running it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from molmo_edge.errors import ConfigError
from molmo_edge.training.coordinate_prior import (CoordinatePrior, CoordinateVocab, init_coordinate_rows,
                                                   init_vit_positions)
from molmo_edge.training.packing import EpochShuffledSource
from molmo_edge.training.recipes import JsonlData, ModelSpec, SyntheticData


def _deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@torch.no_grad()
def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """From-scratch init: N(0, std) for Linear / Embedding weights and the ViT positional
    embedding, zero biases, norms left at one. (PyTorch's default N(0, 1) embedding rows are
    far too large next to 0.02-scale projections.)"""
    for name, param in model.named_parameters():
        if param.dim() == 1:
            if not ("norm" in name and name.endswith("weight")):
                param.zero_()
        else:
            param.normal_(0.0, std)


def build_processor_config(model_config: Any, changes: dict[str, Any], base: Any = None):
    """ProcessorConfig with crop/patch size from the model config (or `base`), then `changes`."""
    from molmo_edge.processing.config import ProcessorConfig

    if base is not None:
        values = base.model_dump()
    else:
        values = {"crop_size": int(model_config.vision.image_size[0]), "patch_size": int(model_config.vision.patch_size)}
    return ProcessorConfig(**{**values, **changes})


def build_model_and_processor(spec: ModelSpec, seed: int = 0,
                              coordinates: CoordinatePrior | None = None) -> tuple[nn.Module, Any]:
    """A recipe's starting model (fp32, CPU) and the processor that feeds it.

    `coordinates.init_rows` gives a from-scratch model smooth coordinate-token rows
    (training/coordinate_prior.py); a checkpoint's rows are never touched.
    """
    from molmo_edge.model.checkpoint import load_checkpoint
    from molmo_edge.model.config import Molmo2Config, build_config
    from molmo_edge.model.molmo2 import Molmo2ForConditionalGeneration
    from molmo_edge.processing.processor import Processor

    if spec.init_from:
        folder = Path(spec.init_from)
        if not (folder / "config.json").is_file():
            raise ConfigError(f"--init-from {folder}: not a checkpoint folder (no config.json)")
        model = load_checkpoint(folder, dtype=torch.float32)
        base = Processor.from_pretrained(folder)
        processor = Processor(base.tokenizer, build_processor_config(model.config, spec.processor, base=base.cfg))
        return model, processor

    from molmo_edge.training.tokenizer_builder import build_tokenizer

    tokenizer = build_tokenizer()
    config = Molmo2Config.preset(spec.preset)
    if spec.overrides:
        config = build_config(_deep_merge(config.model_dump(), spec.overrides))
    config = config.with_tokenizer(tokenizer)
    torch.manual_seed(seed)
    model = Molmo2ForConditionalGeneration(config)
    init_weights(model, spec.init_std)
    if spec.qk_norm_gain != 1.0:
        with torch.no_grad():
            for layer in model.decoder.layers:
                layer.self_attn.q_norm.weight.fill_(spec.qk_norm_gain)
                layer.self_attn.k_norm.weight.fill_(spec.qk_norm_gain)
    if coordinates is not None and coordinates.init_rows:
        init_coordinate_rows(model, CoordinateVocab.from_tokenizer(tokenizer), coordinates, seed=seed)
    if coordinates is not None and coordinates.init_positions:
        init_vit_positions(model, seed=seed, rms=coordinates.position_rms)
    processor = Processor(tokenizer, build_processor_config(config, spec.processor))
    return model, processor


def build_source(data: SyntheticData | JsonlData, processor: Any = None):
    """The index-addressable example source of a recipe's data section."""
    if isinstance(data, SyntheticData):
        from molmo_edge.training.synthetic_source import SyntheticSource

        return SyntheticSource(seed=data.seed, video_fraction=data.video_fraction, width=data.width,
                               height=data.height, task=data.task, scene=data.scene)
    from molmo_edge.training.user_data import UserDataset

    cfg = getattr(processor, "cfg", None)
    dataset = UserDataset(data.path, on_error=data.on_error,
                          video_fps=cfg.fps if cfg is not None else 2.0,
                          max_frames=cfg.max_frames if cfg is not None else 128)
    return EpochShuffledSource(dataset, seed=data.seed, n_epochs=data.epochs)
