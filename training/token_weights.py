"""Molmo2 token weighting and the weighted next-token loss.

Why weights at all: one training batch mixes one-token answers ("3") with dense outputs (a track
of 60 points, a 4000-token caption). Plain token-averaged cross-entropy would let the long outputs
dominate the gradient. Molmo2 therefore gives every loss token of an annotation the weight

    w = 2 / sqrt(n_loss_tokens of that annotation) / sqrt(n_annotations of its visual input)

so that an annotation's total weight grows like sqrt(n) instead of n, and an image with many
annotations (a message tree) does not outweigh one with a single question. Pointing, counting
and tracking answers use a flat per-token weight of 0.2 and video captions 0.1 instead (both can
be very long and dense).

The loss over a batch is

    loss = sum(w * CE) / (global_sum(w) / world_size)  +  z_loss_weight * (same weighted mean of z^2)

where global_sum(w) is summed over every micro-batch of the optimizer step and every rank. Each
rank divides by the *average* weight per rank rather than its own, so that after the usual
gradient averaging across ranks the result equals one big batch's weighted mean: short answers
are not up-weighted on ranks that happen to hold few loss tokens. z = logsumexp(logits) keeps the
softmax normaliser near zero (the z-loss of PaLM / OLMo), weight 1e-4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.errors import ConfigError

# The task kinds training examples carry (training/tasks.py and training/user_data.py).
TASK_KINDS = ("point", "count", "track", "video_point", "video_count", "qa", "caption", "video_caption")


class TokenWeighting(BaseModel):
    """How much each loss token counts; the defaults are Molmo2's SFT settings."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="False: every loss token weighs 1 (plain token mean)")
    default_scale: float = Field(2.0, gt=0, description="the 2 in 2/sqrt(n)")
    flat_weight_by_task: dict[str, float] = Field(
        default_factory=lambda: {
            "point": 0.2, "count": 0.2, "track": 0.2, "video_point": 0.2, "video_count": 0.2,
            "video_caption": 0.1,
        },
        description="tasks whose loss tokens all get this fixed weight",
    )
    z_loss_weight: float = Field(1e-4, ge=0, description="weight of the logsumexp^2 penalty")


def annotation_token_weight(task: str, n_loss_tokens: int, n_annotations: int,
                            weighting: TokenWeighting | None = None) -> float:
    """Weight of every loss token of one annotation (one branch of a message tree).

    `n_loss_tokens` counts the answer tokens including the closing EOS; `n_annotations` is the
    number of annotations (branches) that share the visual input.
    """
    weighting = weighting or TokenWeighting()
    if n_loss_tokens <= 0:
        raise ConfigError(f"an annotation of task {task!r} has no answer tokens; it cannot be trained on")
    if n_annotations <= 0:
        raise ConfigError(f"n_annotations must be >= 1, got {n_annotations}")
    if not weighting.enabled:
        return 1.0
    flat = weighting.flat_weight_by_task.get(task)
    if flat is not None:
        return float(flat)
    return weighting.default_scale / math.sqrt(n_loss_tokens) / math.sqrt(n_annotations)


@dataclass
class LossParts:
    """The pieces of a weighted loss; `total` is what backward() is called on."""

    total: torch.Tensor            # scalar, differentiable
    weighted_ce_sum: torch.Tensor  # scalar, sum(w * CE), detached
    weighted_z_sum: torch.Tensor   # scalar, sum(w * z^2), detached
    weight_sum: torch.Tensor       # scalar, sum(w) of this call's tokens, detached
    n_loss_tokens: int
    attention_loss: torch.Tensor | None = None  # pointing-attention loss of this call, detached (if any)


def weighted_token_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                        normalizer: float | torch.Tensor, z_loss_weight: float = 1e-4,
                        soft_targets=None) -> LossParts:
    """Weighted cross-entropy + z-loss over the loss tokens only.

    logits: [N, V] at the loss positions (any float dtype; computed in fp32 here),
    labels: [N] int64 target ids, weights: [N] float per-token weights (> 0),
    normalizer: global_sum(w) / world_size for the whole optimizer step (see module doc).
    soft_targets: optional `coordinate_prior.SoftCoordinateTargets`: coordinate labels then use a
    Gaussian target over neighbouring values (cross-entropy against a distribution), plus its
    expected-coordinate L1 term when `soft_targets.regression_weight` > 0 (counted in `ce`).
    """
    if logits.shape[0] != labels.shape[0] or labels.shape != weights.shape:
        raise ValueError(f"shape mismatch: logits {tuple(logits.shape)}, labels {tuple(labels.shape)}, "
                         f"weights {tuple(weights.shape)}")
    logits_f32 = logits.float()
    ce = F.cross_entropy(logits_f32, labels, reduction="none")  # [N]
    if soft_targets is not None:
        rows, ids, probs = soft_targets.for_labels(labels)       # [M], [M, W], [M, W]
        if rows.numel():
            log_probs = F.log_softmax(logits_f32.index_select(0, rows), dim=-1)   # [M, V]
            soft_ce = -(probs * log_probs.gather(1, ids)).sum(dim=1)              # [M]
            if soft_targets.regression_weight > 0:
                error = soft_targets.expected_value_error(logits_f32.index_select(0, rows), labels[rows])
                soft_ce = soft_ce + soft_targets.regression_weight * error
            ce = ce.index_copy(0, rows, soft_ce)
    z = torch.logsumexp(logits_f32, dim=-1)                      # [N]
    w = weights.to(ce.dtype)
    weighted_ce = (w * ce).sum()
    weighted_z = (w * z.square()).sum()
    total = (weighted_ce + z_loss_weight * weighted_z) / normalizer
    return LossParts(total=total, weighted_ce_sum=weighted_ce.detach(), weighted_z_sum=weighted_z.detach(),
                     weight_sum=w.sum().detach(), n_loss_tokens=int(labels.numel()))
