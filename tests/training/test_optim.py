"""Per-module LR groups, warm-up + cosine schedules, and the split embedding."""
from __future__ import annotations


import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from molmo_edge.errors import ConfigError
from molmo_edge.training.optim import (
    GroupLR, OptimConfig, SplitEmbedding, WarmupCosine, build_optimizer, build_scheduler, current_lrs,
    group_of, merge_split_state_dict, split_extra_embedding_rows)


@pytest.mark.parametrize("name,group", [
    ("vision.layers.0.attn.q_proj.weight", "vit"),
    ("model.vision_tower.patch_embedding.weight", "vit"),
    ("connector.pooling.q_proj.weight", "connector"),
    ("model.multi_modal_projector.image_projector.gate_proj.weight", "connector"),
    ("decoder.embed_tokens.extra_rows", "connector"),
    ("decoder.embed_tokens.base_rows", "llm"),
    ("decoder.layers.3.mlp.up_proj.weight", "llm"),
    ("model.language_model.layers.0.self_attn.q_proj.weight", "llm"),
    ("lm_head.weight", "llm"),
])
def test_parameters_land_in_the_right_group(name, group):
    assert group_of(name) == group


@given(st.integers(0, 50), st.integers(51, 2000), st.floats(0.0, 1.0))
def test_warmup_then_cosine_to_the_final_fraction(warmup, total, final):
    f = WarmupCosine(warmup, total, final)
    if warmup:
        assert f(0) == pytest.approx(1 / warmup)
        assert all(f(s) < f(s + 1) + 1e-12 for s in range(warmup - 1))
    assert f(warmup) == pytest.approx(1.0)
    assert f(total) == pytest.approx(final)
    assert f(total + 100) == pytest.approx(final)
    after = [f(s) for s in range(warmup, total + 1)]
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:]))
    mid = warmup + (total - warmup) / 2
    if float(mid).is_integer():
        assert f(int(mid)) == pytest.approx(final + (1 - final) / 2)


class ThreeParts(nn.Module):
    """Module names as in molmo_edge.model: vision / connector / decoder (+ embedding) / lm_head."""

    def __init__(self):
        super().__init__()
        self.vision = nn.Linear(4, 4)
        self.connector = nn.Linear(4, 4)
        self.decoder = nn.Module()
        self.decoder.embed_tokens = nn.Embedding(10 + 3, 4)
        self.lm_head = nn.Linear(4, 10)


def test_groups_have_their_own_peaks_and_warmups():
    torch.manual_seed(0)
    model = ThreeParts()
    split_extra_embedding_rows(model, n_base_rows=10)
    cfg = OptimConfig(vit=GroupLR(lr=1e-3, warmup_steps=4), connector=GroupLR(lr=2e-2, warmup_steps=1),
                      llm=GroupLR(lr=5e-3, warmup_steps=2))
    opt = build_optimizer(model, cfg)
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-6
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)
    names = {g["name"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert id(model.decoder.embed_tokens.extra_rows) in names["connector"]
    assert id(model.decoder.embed_tokens.base_rows) in names["llm"]
    sched = build_scheduler(opt, cfg, total_steps=10)
    seen = []
    for _ in range(11):
        seen.append(current_lrs(opt))
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx({"vit": 1e-3 / 4, "connector": 2e-2, "llm": 5e-3 / 2})
    assert seen[4]["vit"] == pytest.approx(1e-3)
    assert seen[10] == pytest.approx({"vit": 1e-4, "connector": 2e-3, "llm": 5e-4})


def test_frozen_group_gets_no_gradient_and_all_frozen_is_refused():
    model = ThreeParts()
    cfg = OptimConfig(vit=GroupLR(lr=1e-3, trainable=False))
    opt = build_optimizer(model, cfg)
    assert {g["name"] for g in opt.param_groups} == {"connector", "llm"}
    assert not model.vision.weight.requires_grad
    frozen = GroupLR(lr=1.0, trainable=False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        build_optimizer(ThreeParts(), OptimConfig(vit=frozen, connector=frozen, llm=frozen))


def test_split_embedding_is_the_same_lookup_and_merges_back():
    torch.manual_seed(1)
    model = ThreeParts()
    table = model.decoder.embed_tokens.weight.detach().clone()
    ids = torch.tensor([[0, 9, 10, 12, 3]])
    assert split_extra_embedding_rows(model, 10) == ["decoder.embed_tokens"]
    assert split_extra_embedding_rows(model, 10) == []  # already split
    emb = model.decoder.embed_tokens
    assert isinstance(emb, SplitEmbedding) and emb.num_embeddings == 13
    assert torch.equal(emb(ids), table[ids])
    emb(ids).sum().backward()
    assert emb.base_rows.grad[[0, 9, 3]].abs().sum() > 0 and emb.base_rows.grad[1].abs().sum() == 0
    assert emb.extra_rows.grad[[0, 2]].abs().sum() > 0 and emb.extra_rows.grad[1].abs().sum() == 0
    merged = merge_split_state_dict(model.state_dict())
    assert "decoder.embed_tokens.base_rows" not in merged
    assert torch.equal(merged["decoder.embed_tokens.weight"], table)
    assert torch.equal(emb.weight.detach(), table)
