"""A tiny, fast recipe for the trainer / LoRA / distributed tests (real model, processor, data)."""
from __future__ import annotations

from molmo_edge.training.recipes import Recipe, apply_overrides, load_recipe

TINY_OVERRIDES = [
    "model.preset=tiny-test",
    "model.overrides={}",
    "model.processor={overlap_margins: [1, 1], max_crops: 2}",
    "data.width=64", "data.height=64", "data.video_fraction=0.4",
    "data.task={n_frames: 3, examples_per_input: 2}",
    "packing.max_tokens=384", "packing.max_crops=12", "packing.pool_size=6",
    "optim.vit={lr: 0.002, warmup_steps: 2}",
    "optim.connector={lr: 0.004, warmup_steps: 1}",
    "optim.llm={lr: 0.002, warmup_steps: 2}",
    "batch_size=1", "grad_accum=1", "num_workers=0", "device=cpu", "precision=fp32",
    "log_every=1", "save_every=1000", "keep_checkpoints=0",
    # The shipped recipe's attention supervision is tested on its own (test_pointing_attention.py);
    # the other trainer tests (distributed parity, resume, LoRA) keep the plain loss.
    "attention.weight=0.0",
]


def tiny_recipe(*extra: str, base: str = "tiny-synthetic") -> Recipe:
    return apply_overrides(load_recipe(base), TINY_OVERRIDES + list(extra))
