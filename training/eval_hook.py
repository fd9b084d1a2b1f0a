"""The default periodic evaluation: weighted loss on a fixed set of held-out examples.

Task metrics (pointing F1, counting accuracy, HOTA) need generation and parsing and are the job of
`molmo-edge eval`; any callable `hook(model, step) -> dict` can be passed to the trainer instead.
This one is cheap enough to run every few hundred steps and catches over-fitting and divergence:
the same held-out items, packed the same way, every time.

Held-out data: synthetic recipes draw scenes from a different seed than training; JSONL recipes
use `data.eval_path` (no hook when it is not given: evaluating on training lines says little).
"""
from __future__ import annotations

import itertools
import logging
from typing import Any

import torch

from molmo_edge.training.collate import PackedCollator
from molmo_edge.training.example_encoder import ExampleEncoder
from molmo_edge.training.packing import EpochShuffledSource, PackingDataset
from molmo_edge.training.recipes import JsonlData, Recipe, SyntheticData
from molmo_edge.training.train_step import PackedLossModel, micro_batch_loss

log = logging.getLogger(__name__)

HELDOUT_SEED_OFFSET = 1_000_003  # synthetic held-out scenes never coincide with training scenes


def heldout_source(recipe: Recipe, processor: Any):
    """A finite held-out source of `recipe.eval_items` items, or None when there is none."""
    data = recipe.data
    if isinstance(data, SyntheticData):
        from molmo_edge.training.synthetic_source import SyntheticSource

        endless = SyntheticSource(seed=data.seed + HELDOUT_SEED_OFFSET, video_fraction=data.video_fraction,
                                  width=data.width, height=data.height, task=data.task, scene=data.scene)
        return [endless[i] for i in range(recipe.eval_items)]
    if isinstance(data, JsonlData) and data.eval_path:
        from molmo_edge.training.user_data import UserDataset

        dataset = UserDataset(data.eval_path, on_error=data.on_error)
        return EpochShuffledSource(dataset, shuffle=False, n_epochs=1)
    return None


def make_heldout_loss_hook(recipe: Recipe, processor: Any):
    """hook(model, step) -> {"heldout_loss": ..., "heldout_ce": ...}, or None without held-out data."""
    source = heldout_source(recipe, processor)
    if source is None:
        log.info("no held-out data (set data.eval_path for JSONL recipes): periodic evaluation is off")
        return None
    encoder = ExampleEncoder(processor, recipe.weighting, max_tokens=recipe.packing.max_tokens)
    packed = list(itertools.islice(iter(PackingDataset(source, encoder, recipe.packing, rank=0, world_size=1)),
                                   recipe.eval_items))
    pad_id = getattr(processor.tokenizer, "pad_id", 0)
    batches = [PackedCollator(pad_id)([seq]) for seq in packed]
    total_weight = sum(float(b.loss_weights.sum()) for b in batches)

    def hook(model: torch.nn.Module, step: int) -> dict[str, float]:
        wrapper = PackedLossModel(model)
        device = next(model.parameters()).device
        ce = z = 0.0
        for batch in batches:
            parts = micro_batch_loss(wrapper, batch, total_weight, recipe.weighting, device)
            ce += float(parts.weighted_ce_sum)
            z += float(parts.weighted_z_sum)
        return {"heldout_loss": (ce + recipe.weighting.z_loss_weight * z) / total_weight,
                "heldout_ce": ce / total_weight, "heldout_sequences": float(len(batches))}

    return hook
