"""AdamW with Molmo2's per-module learning rates and schedules.

Three parameter groups, each with its own peak LR and warm-up:
- `vit`: the vision tower;
- `connector`: the attention pooling + projector, AND the extra embedding rows of the image
  special tokens (`<im_patch>`, `<im_col>`, ...): those rows are new to the LLM, like the
  connector, and learn at its rate;
- `llm`: the decoder, its ordinary embedding rows and the lm_head.
Schedule: linear warm-up to the peak, then cosine decay to `final_lr_fraction` (10 %) of the peak
at the last step. AdamW betas (0.9, 0.95), eps 1e-6, no weight decay, gradient clipping at 1.0.

One tensor cannot sit in two optimizer groups, so the embedding table [vocab + extra, D] is split
into two parameters for training (SplitEmbedding) and merged back into one tensor when a
checkpoint is written (merge_split_state_dict), so saved checkpoints keep the standard layout.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from molmo_edge.errors import ConfigError

GroupName = Literal["vit", "connector", "llm"]
GROUP_NAMES: tuple[GroupName, ...] = ("vit", "connector", "llm")

# First matching component of a parameter's dotted name decides its group. Both our module names
# and the transformers names are listed so that either model trains with the same recipe.
_VIT_PARTS = {"vision", "vision_tower", "image_vit"}
_CONNECTOR_PARTS = {"connector", "multi_modal_projector", "image_pooling_2d", "image_projector"}


class GroupLR(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(ge=0, description="peak learning rate")
    warmup_steps: int = Field(0, ge=0)
    trainable: bool = Field(True, description="False freezes the group (requires_grad off)")


class OptimConfig(BaseModel):
    """Optimizer and schedule; the defaults are Molmo2's SFT values."""

    model_config = ConfigDict(extra="forbid")

    vit: GroupLR = GroupLR(lr=5e-6, warmup_steps=200)
    connector: GroupLR = GroupLR(lr=5e-6, warmup_steps=200)
    llm: GroupLR = GroupLR(lr=1e-5, warmup_steps=200)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-6
    weight_decay: float = 0.0
    grad_clip_norm: float | None = Field(1.0, description="None = no clipping")
    final_lr_fraction: float = Field(0.1, ge=0, le=1, description="cosine decays to this fraction of the peak")

    def group(self, name: GroupName) -> GroupLR:
        return getattr(self, name)


def group_of(param_name: str) -> GroupName:
    """Which LR group a parameter (by its dotted name in model.named_parameters()) belongs to."""
    parts = param_name.split(".")
    if parts[-1] == "extra_rows":  # SplitEmbedding's image special-token rows
        return "connector"
    for part in parts:
        if part in _VIT_PARTS:
            return "vit"
        if part in _CONNECTOR_PARTS:
            return "connector"
    return "llm"


class SplitEmbedding(nn.Module):
    """An embedding table held as two parameters: ordinary rows [n_base, D] and extra rows [n_extra, D].

    Looks up `ids` [B, S] -> [B, S, D] exactly like the single table it replaces, without ever
    concatenating the table (that would copy a 150k x 4k matrix every step).
    """

    def __init__(self, base_rows: torch.Tensor, extra_rows: torch.Tensor):
        super().__init__()
        self.base_rows = nn.Parameter(base_rows)
        self.extra_rows = nn.Parameter(extra_rows)

    @property
    def n_base(self) -> int:
        return int(self.base_rows.shape[0])

    @property
    def num_embeddings(self) -> int:
        return self.n_base + int(self.extra_rows.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.base_rows.shape[1])

    @property
    def weight(self) -> torch.Tensor:
        """The merged table, for code that reads `.weight` directly (slow: a full copy)."""
        return torch.cat([self.base_rows, self.extra_rows])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_extra = ids >= self.n_base
        base = F.embedding(ids.clamp(max=self.n_base - 1), self.base_rows)       # [B, S, D]
        extra = F.embedding((ids - self.n_base).clamp(min=0), self.extra_rows)   # [B, S, D]
        return torch.where(is_extra[..., None], extra, base)


def split_extra_embedding_rows(model: nn.Module, n_base_rows: int) -> list[str]:
    """Replace every nn.Embedding with more than `n_base_rows` rows by a SplitEmbedding.

    Returns the dotted names of the replaced modules. Call before building the optimizer (and
    before FSDP sharding). Safe to call twice.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Embedding) and module.num_embeddings > n_base_rows:
            weight = module.weight.detach()
            split = SplitEmbedding(weight[:n_base_rows].clone(), weight[n_base_rows:].clone())
            split.base_rows.requires_grad_(module.weight.requires_grad)
            split.extra_rows.requires_grad_(module.weight.requires_grad)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, split)
            replaced.append(name)
    return replaced


def merge_split_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`X.base_rows` + `X.extra_rows` -> `X.weight` (the layout every loader expects)."""
    merged = {}
    for key, value in state_dict.items():
        if key.endswith(".extra_rows"):
            continue
        if key.endswith(".base_rows"):
            prefix = key[: -len("base_rows")]
            merged[prefix + "weight"] = torch.cat([value, state_dict[prefix + "extra_rows"]])
        else:
            merged[key] = value
    return merged


def build_param_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    """AdamW parameter groups, one per non-empty LR group; frozen groups get requires_grad off."""
    by_group: dict[str, list[nn.Parameter]] = {g: [] for g in GROUP_NAMES}
    for name, param in model.named_parameters():
        group = group_of(name)
        if not config.group(group).trainable:
            param.requires_grad_(False)
        if param.requires_grad:
            by_group[group].append(param)
    groups = [{"name": g, "params": params, "lr": config.group(g).lr, "weight_decay": config.weight_decay}
              for g, params in by_group.items() if params]
    if not groups:
        raise ConfigError("no trainable parameters: every group is frozen; unfreeze one in the recipe's optim")
    return groups


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(build_param_groups(model, config), lr=config.llm.lr, betas=config.betas,
                             eps=config.eps, weight_decay=config.weight_decay)


class WarmupCosine:
    """LR multiplier at a step: linear warm-up 1/w .. 1, then cosine from 1 to `final` at total_steps.

    A class (not a lambda) so that LambdaLR can save it in its state_dict.
    """

    def __init__(self, warmup_steps: int, total_steps: int, final: float):
        self.warmup_steps, self.total_steps, self.final = warmup_steps, total_steps, final

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-group warm-up + shared cosine decay; call `.step()` after every optimizer step."""
    multipliers = [WarmupCosine(config.group(g["name"]).warmup_steps, total_steps, config.final_lr_fraction)
                   for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multipliers)


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {g["name"]: float(g["lr"]) for g in optimizer.param_groups}
