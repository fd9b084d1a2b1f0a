"""Token weights follow the Molmo2 formulas; the normaliser makes ranks add up to one big batch."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.errors import ConfigError
from molmo_edge.training.token_weights import TokenWeighting, annotation_token_weight, weighted_token_loss


@given(st.integers(1, 5000), st.integers(1, 20))
def test_default_weight_is_two_over_root_tokens_over_root_annotations(n_tokens, n_annotations):
    w = annotation_token_weight("qa", n_tokens, n_annotations)
    assert w == pytest.approx(2.0 / math.sqrt(n_tokens) / math.sqrt(n_annotations))
    # An annotation's total weight grows like sqrt(n): long answers no longer dominate.
    assert n_tokens * w == pytest.approx(2.0 * math.sqrt(n_tokens) / math.sqrt(n_annotations))


@pytest.mark.parametrize("task,flat", [("point", 0.2), ("count", 0.2), ("track", 0.2),
                                       ("video_point", 0.2), ("video_count", 0.2),
                                       ("video_caption", 0.1)])
def test_grounding_and_captions_use_flat_weights(task, flat):
    for n_tokens, n_annotations in [(1, 1), (57, 1), (900, 4)]:
        assert annotation_token_weight(task, n_tokens, n_annotations) == flat


def test_weighting_can_be_switched_off_and_refuses_empty_answers():
    assert annotation_token_weight("qa", 17, 3, TokenWeighting(enabled=False)) == 1.0
    with pytest.raises(ConfigError, match="no answer tokens"):
        annotation_token_weight("qa", 0, 1)


def test_loss_is_weighted_cross_entropy_plus_z_loss():
    torch.manual_seed(0)
    logits = torch.randn(7, 11)
    labels = torch.randint(0, 11, (7,))
    weights = torch.rand(7) + 0.1
    parts = weighted_token_loss(logits, labels, weights, normalizer=weights.sum(), z_loss_weight=1e-4)
    log_probs = torch.log_softmax(logits, -1)
    ce = -log_probs[torch.arange(7), labels]
    z = torch.logsumexp(logits, -1)
    expected = ((weights * ce).sum() + 1e-4 * (weights * z * z).sum()) / weights.sum()
    assert parts.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts.n_loss_tokens == 7


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 4), st.integers(0, 10_000))
def test_per_rank_losses_average_to_the_single_batch_loss(world_size, seed):
    """Each rank divides by global_sum(w) / world_size; averaging the ranks (what gradient
    all-reduce does) must give the loss of all tokens on one device, even with unequal shares."""
    g = torch.Generator().manual_seed(seed)
    counts = [int(torch.randint(1, 9, (1,), generator=g)) for _ in range(world_size)]
    shards = [(torch.randn(n, 5, generator=g), torch.randint(0, 5, (n,), generator=g),
               torch.rand(n, generator=g) + 0.05) for n in counts]
    global_w = sum(float(w.sum()) for _, _, w in shards)
    per_rank = [weighted_token_loss(lg, lb, w, normalizer=global_w / world_size).total for lg, lb, w in shards]
    everything = weighted_token_loss(torch.cat([s[0] for s in shards]), torch.cat([s[1] for s in shards]),
                                     torch.cat([s[2] for s in shards]), normalizer=global_w).total
    assert (sum(per_rank) / world_size).item() == pytest.approx(everything.item(), rel=1e-5)
