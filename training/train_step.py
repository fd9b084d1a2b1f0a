"""One micro-batch through the model: packed batch -> logits at the loss positions -> weighted loss.

`PackedLossModel` wraps Molmo2 so that the whole computation is one module's forward. That matters
for FSDP2: the root module's forward is where its own parameters (embeddings, connector, lm_head)
are gathered, so the stages must be called from inside it.

It calls the model's stages directly instead of `model.forward` for two reasons:
- all crops of all packed examples go through the ViT + connector in one call
  (`encode_images`), and the visual tokens are added at the `<im_patch>` positions row by row;
- the lm_head runs only on the positions that carry a loss ([N, D] -> [N, V]) instead of all
  B*S positions: with a 150k vocabulary the full logits of a 16k-token sequence are ~10 GB.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from molmo_edge.training.collate import TrainingBatch
from molmo_edge.training.message_tree import IGNORE_INDEX
from molmo_edge.training.token_weights import LossParts, TokenWeighting, weighted_token_loss


class PackedLossModel(nn.Module):
    """forward(input_ids [B,S], position_ids [B,S], attention_mask [B,1,S,S], loss_index [N],
    pixel_values [n,P,F] | None, token_pooling [T,K] | None) -> logits [N, vocab] (model dtype)."""

    def __init__(self, model: nn.Module, always_run_vision: bool = False):
        super().__init__()
        self.model = model
        # Under FSDP every rank must run the same sharded units, or the collectives of the ViT
        # blocks deadlock: a batch without pixels then runs the ViT on one blank crop, times zero.
        self.always_run_vision = always_run_vision

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                loss_index: torch.Tensor, pixel_values: torch.Tensor | None = None,
                token_pooling: torch.Tensor | None = None) -> torch.Tensor:
        model = self.model
        visual = None
        idle_vision = None
        if pixel_values is not None:
            visual = model.encode_images(pixel_values, token_pooling)          # [T, D]
        elif self.always_run_vision:
            vision_cfg = model.config.vision
            blank = torch.zeros(1, vision_cfg.num_patches, vision_cfg.patch_dim, device=input_ids.device)
            idle_vision = model.encode_images(blank, torch.zeros(1, 1, dtype=torch.long, device=input_ids.device))
        embeds = model.embed_inputs(input_ids, visual)                          # [B, S, D]
        hidden, _ = model.decoder(embeds, attention_mask, position_ids)          # [B, S, D]
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, loss_index)  # [N, D]
        logits = model.lm_head(hidden)                                          # [N, V]
        if idle_vision is not None:
            logits = logits + 0.0 * idle_vision.sum()
        return logits


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """bf16/fp16 autocast on `device`, or a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def micro_batch_loss(wrapper: nn.Module, batch: TrainingBatch, normalizer: float, weighting: TokenWeighting,
                     device: torch.device, autocast_dtype: torch.dtype | None = None,
                     mask_dtype: torch.dtype = torch.float32, soft_targets=None, pointing=None,
                     attention_scale: float = 1.0) -> LossParts:
    """Forward one micro-batch and return its weighted loss (call .total.backward()).

    pointing: an optional `pointing_attention.PointingAttentionLoss`; its loss (mean over the
    batch's coordinate queries, times its weight and `attention_scale`) is added to the total.
    """
    batch = batch.to(device)
    labels = batch.labels.reshape(-1)
    loss_index = (labels != IGNORE_INDEX).nonzero().flatten()  # [N] flat positions with a target
    queries = pointing.queries(batch) if pointing is not None else None
    mask = batch.attention_mask(mask_dtype)
    model = getattr(wrapper, "model", wrapper)
    with contextlib.ExitStack() as stack:
        stack.enter_context(autocast_context(device, autocast_dtype))
        hook = stack.enter_context(pointing.capture(model)) if queries is not None else None
        logits = wrapper(batch.input_ids, batch.position_ids, mask, loss_index,
                         batch.pixel_values, batch.token_pooling)
        attention_loss = pointing.loss(model, hook, queries, mask) if queries is not None else None
    parts = weighted_token_loss(logits, labels[loss_index], batch.loss_weights.reshape(-1)[loss_index],
                                normalizer=normalizer, z_loss_weight=weighting.z_loss_weight,
                                soft_targets=soft_targets)
    if attention_loss is not None:
        # Mean over this micro-batch's queries; scaled like the LM loss's share of the step.
        parts.total = parts.total + pointing.settings.weight * attention_scale * attention_loss
        parts.attention_loss = attention_loss.detach()
    return parts


@torch.no_grad()
def per_example_losses(wrapper: nn.Module, batch: TrainingBatch, device: torch.device,
                       by_branch: bool = False) -> dict:
    """Token-mean cross-entropy of every example in the batch, keyed by example number (or by
    (example, branch) with by_branch=True).

    Used to check that packing and message trees change nothing: each example (each branch) must
    get the loss it gets when run alone.
    """
    batch = batch.to(device)
    labels = batch.labels.reshape(-1)
    loss_index = (labels != IGNORE_INDEX).nonzero().flatten()
    logits = wrapper(batch.input_ids, batch.position_ids, batch.attention_mask(torch.float32), loss_index,
                     batch.pixel_values, batch.token_pooling).float()
    ce = torch.nn.functional.cross_entropy(logits, labels[loss_index], reduction="none")
    example = batch.example_index.reshape(-1)[loss_index]
    if not by_branch:
        return {int(e): float(ce[example == e].mean()) for e in example.unique()}
    branch = batch.branch_index.reshape(-1)[loss_index]
    keys = sorted({(int(e), int(b)) for e, b in zip(example.tolist(), branch.tolist())})
    return {(e, b): float(ce[(example == e) & (branch == b)].mean()) for e, b in keys}
