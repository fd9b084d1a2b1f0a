"""The coordinate prior: smooth coordinate-token rows and Gaussian soft targets."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from molmo_edge.model.config import Molmo2Config, build_config
from molmo_edge.model.molmo2 import Molmo2ForConditionalGeneration
from molmo_edge.training.coordinate_prior import (
    CoordinatePrior, CoordinateVocab, SoftCoordinateTargets, build_soft_targets, init_coordinate_rows,
    init_vit_positions,
)
from molmo_edge.training.token_weights import weighted_token_loss
from molmo_edge.training.tokenizer_builder import build_tokenizer

TOKENIZER = build_tokenizer()


def test_vocab_finds_every_coordinate_in_both_variants():
    vocab = CoordinateVocab.from_tokenizer(TOKENIZER)
    assert vocab.ids.shape == (2, 1001)
    assert vocab.n_tokens == 2002
    spaced = vocab.ids[[i for i in range(2) if TOKENIZER.decode([int(vocab.ids[i, 456])]) == " 456"][0]]
    assert TOKENIZER.encode(" 456") == [int(spaced[456])]
    assert TOKENIZER.decode([int(spaced[1000])]) == " 1000"
    # object ids ("Ġ1") and timestamps are not coordinates
    assert TOKENIZER.encode(" 1")[0] not in set(vocab.ids.flatten().tolist())


def test_soft_targets_are_gaussians_over_the_same_variant():
    vocab = CoordinateVocab.from_tokenizer(TOKENIZER)
    targets = SoftCoordinateTargets(vocab, TOKENIZER.base_vocab_size, sigma=5.0)
    for variant in vocab.ids:
        for value in (0, 3, 500, 998, 1000):
            token = int(variant[value])
            ids, probs = targets.window_ids[token], targets.window_probs[token]
            assert abs(float(probs.sum()) - 1.0) < 1e-6
            best = int(ids[probs.argmax()])
            assert best == token                                    # the mode is the true value
            kept = ids[probs > 0]
            assert set(kept.tolist()) <= set(variant.tolist())     # never the other variant
            values = [int((variant == i).nonzero()) for i in kept]
            assert max(abs(v - value) for v in values) <= 15
    text_token = TOKENIZER.encode("circle")[0]
    assert not bool(targets.is_coordinate[text_token])


def test_soft_loss_trains_the_neighbourhood_and_leaves_text_alone():
    vocab = CoordinateVocab.from_tokenizer(TOKENIZER)
    V = TOKENIZER.base_vocab_size
    targets = SoftCoordinateTargets(vocab, V, sigma=4.0)
    spaced = vocab.ids[1] if TOKENIZER.decode([int(vocab.ids[1, 0])]).startswith(" ") else vocab.ids[0]
    labels = torch.tensor([TOKENIZER.encode("circle")[0], int(spaced[500])])
    weights = torch.ones(2)

    def grads(soft: bool) -> torch.Tensor:
        logits = torch.zeros(2, V, requires_grad=True)           # an untrained model: uniform
        parts = weighted_token_loss(logits, labels, weights, 1.0, z_loss_weight=0.0,
                                    soft_targets=targets if soft else None)
        parts.total.backward()
        return logits.grad

    soft, plain = grads(True), grads(False)
    near, far = int(spaced[503]), int(spaced[900])
    assert plain[1, near] > 0                  # one-hot: a neighbour is pushed down like any wrong token
    assert soft[1, near] < 0 < soft[1, far]    # soft: the neighbourhood is pulled up, far values down
    assert soft[1, int(spaced[500])] < soft[1, near]   # the true value most of all
    assert torch.allclose(soft[0], plain[0])  # text tokens keep the plain cross-entropy


def test_smooth_rows_make_neighbouring_values_similar():
    config = Molmo2Config.preset("tiny-test").with_tokenizer(TOKENIZER)
    model = Molmo2ForConditionalGeneration(config)
    vocab = CoordinateVocab.from_tokenizer(TOKENIZER)
    rms_before = float(model.lm_head.weight.detach().pow(2).mean().sqrt())
    assert init_coordinate_rows(model, vocab, CoordinatePrior(init_rows=True), seed=0) == 2002
    for matrix in (model.decoder.embed_tokens.weight, model.lm_head.weight):
        rows = F.normalize(matrix[vocab.ids[0]].float(), dim=-1)
        near = float((rows[100:900] * rows[101:901]).sum(-1).mean())
        far = float((rows[100:500] * rows[600:1000]).sum(-1).abs().mean())
        assert near > 0.8 and far < 0.5, (near, far)
    # the smooth rows sit at the scale of the rest of the matrix
    assert abs(float(model.lm_head.weight.detach()[vocab.ids[0]].pow(2).mean().sqrt()) / rms_before - 1) < 0.3


def test_disabled_prior_builds_nothing():
    assert build_soft_targets(CoordinatePrior(), TOKENIZER, TOKENIZER.base_vocab_size) is None
    assert build_soft_targets(CoordinatePrior(label_sigma=6), TOKENIZER, TOKENIZER.base_vocab_size) is not None


def test_smooth_positions_make_neighbouring_patches_similar():
    # the shipped model's crop: 224 px of 14 px patches, a 16 x 16 grid
    settings = Molmo2Config.preset("tiny-test").model_dump()
    settings["vision"]["image_size"] = [224, 224]
    config = build_config(settings).with_tokenizer(TOKENIZER)
    model = Molmo2ForConditionalGeneration(config)
    model.init_weights(0.05)
    table = model.vision.positional_embedding
    rms_before = float(table.detach().pow(2).mean().sqrt())
    init_vit_positions(model, seed=0)
    n_rows, n_cols = config.vision.grid_size
    rows = F.normalize(table.detach().float(), dim=-1).reshape(n_rows, n_cols, -1)
    right = float((rows[:, :-1] * rows[:, 1:]).sum(-1).mean())          # one patch to the right
    below = float((rows[:-1] * rows[1:]).sum(-1).mean())               # one patch down
    corner = float((rows[0, 0] * rows[-1, -1]).sum().abs())            # opposite corners
    assert right > 0.5 and below > 0.5 and corner < right, (right, below, corner)
    # every patch keeps its own row: no two positions collapse onto one
    flat = rows.reshape(n_rows * n_cols, -1)
    similarity = flat @ flat.T - 2 * torch.eye(flat.shape[0])
    assert float(similarity.max()) < 0.999
    assert abs(float(table.detach().pow(2).mean().sqrt()) / rms_before - 1) < 0.05


def test_smooth_positions_take_the_requested_scale():
    config = Molmo2Config.preset("tiny-test").with_tokenizer(TOKENIZER)
    model = Molmo2ForConditionalGeneration(config)
    init_vit_positions(model, seed=0, rms=1.0)
    assert abs(float(model.vision.positional_embedding.detach().pow(2).mean().sqrt()) - 1.0) < 1e-3
    # the recipe default is the patch embedding's scale, not the init std
    assert CoordinatePrior().position_rms == 1.0


def test_expected_coordinate_regression_pulls_mass_toward_the_target_from_afar():
    """The soft-target CE gives (almost) nothing for a guess 300 units off; the regression term does:
    it measures the distance of the expected value and its gradient moves mass toward the target."""
    vocab = CoordinateVocab.from_tokenizer(TOKENIZER)
    V = TOKENIZER.base_vocab_size
    spaced = vocab.ids[1] if TOKENIZER.decode([int(vocab.ids[1, 0])]).startswith(" ") else vocab.ids[0]
    targets = SoftCoordinateTargets(vocab, V, sigma=10.0, regression_weight=10.0)
    label = torch.tensor([int(spaced[800])])

    peaked = torch.full((1, V), -20.0)
    peaked[0, int(spaced[500])] = 20.0
    assert abs(float(targets.expected_value_error(peaked, label)) - 0.3) < 1e-3

    logits = torch.zeros(1, V, requires_grad=True)
    targets.expected_value_error(logits, label).sum().backward()
    step = -logits.grad[0, spaced]                                  # gradient descent direction, [1001]
    assert float(step[900]) > 0 > float(step[100])                  # raise values beyond E toward 800

    # It is part of the coordinate rows' loss (and only theirs), weighted like the CE.
    with_reg = weighted_token_loss(peaked, label, torch.ones(1), 1.0, z_loss_weight=0.0, soft_targets=targets)
    plain = SoftCoordinateTargets(vocab, V, sigma=10.0)
    without = weighted_token_loss(peaked, label, torch.ones(1), 1.0, z_loss_weight=0.0, soft_targets=plain)
    assert abs(float(with_reg.total - without.total) - 10.0 * 0.3) < 1e-2
    text = torch.tensor([TOKENIZER.encode("circle")[0]])
    assert float(weighted_token_loss(peaked, text, torch.ones(1), 1.0, soft_targets=targets).total) == \
        float(weighted_token_loss(peaked, text, torch.ones(1), 1.0, soft_targets=plain).total)


def test_regression_without_soft_targets_is_refused():
    import pytest
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="label_sigma"):
        CoordinatePrior(regression_weight=1.0)
    assert build_soft_targets(CoordinatePrior(label_sigma=5, regression_weight=2.0), TOKENIZER,
                              TOKENIZER.base_vocab_size).regression_weight == 2.0
