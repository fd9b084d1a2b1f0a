"""Pointing-attention supervision (training/pointing_attention.py): which queries it supervises,
which visual tokens it points them at, and that its loss really moves a layer's attention."""
from __future__ import annotations

import json

import pytest
import torch

from molmo_edge.errors import ConfigError
from molmo_edge.grounding import GroundedPoint, format_points, format_tracks
from molmo_edge.model.config import Molmo2Config
from molmo_edge.training.build import build_model_and_processor
from molmo_edge.training.pointing_attention import AttentionSupervision, PointingAttentionLoss
from molmo_edge.training.recipes import load_recipe
from molmo_edge.training.scenes import SceneSimulator
from molmo_edge.training.tasks import visible_point
from molmo_edge.training.tokenizer_builder import build_tokenizer
from molmo_edge.training.trainer import Trainer, train
from tests.training.train_helpers import tiny_recipe

ONE_CROP = "model.processor={overlap_margins: [1, 1], max_crops: 1}"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def config(tokenizer):
    return Molmo2Config.preset("tiny-test").with_tokenizer(tokenizer)


def _loss(tokenizer, config, **settings) -> PointingAttentionLoss:
    return PointingAttentionLoss(AttentionSupervision(weight=1.0, **settings), tokenizer, config)


def test_coordinates_are_found_in_point_and_track_answers(tokenizer, config):
    loss = _loss(tokenizer, config)
    image = format_points([GroundedPoint(1, 0.25, 0.5, image_index=1), GroundedPoint(2, 0.75, 0.125, image_index=1)],
                          "red circles")
    ids = tokenizer.encode("Counting the " + image.replace("<points", "<points", 1) + " shows a total of 2.")
    found = loss._label_points(ids)
    # x and y of both points, each at the token that writes it, keyed by the image index "1".
    assert [(round(x, 3), round(y, 3), key) for _, x, y, key in found] == [
        (0.25, 0.5, "1"), (0.25, 0.5, "1"), (0.75, 0.125, "1"), (0.75, 0.125, "1")]
    assert [tokenizer.decode([ids[i]]).strip() for i, *_ in found] == ["250", "500", "750", "125"]

    tracks = format_tracks([GroundedPoint(1, 0.1, 0.2, t_s=0.0), GroundedPoint(1, 0.3, 0.4, t_s=0.5),
                            GroundedPoint(2, 0.9, 0.8, t_s=0.5)], "stars")
    ids = tokenizer.encode(tracks)
    found = loss._label_points(ids)
    assert [(round(x, 3), round(y, 3), key) for _, x, y, key in found][::2] == [
        (0.1, 0.2, "0.0"), (0.3, 0.4, "0.5"), (0.9, 0.8, "0.5")]
    assert [tokenizer.decode([ids[i]]).strip() for i, *_ in found] == ["100", "200", "300", "400", "900", "800"]
    # No points (a negative answer) or a cut-off element: nothing to supervise, no error.
    assert loss._label_points(tokenizer.encode("There are none.")) == []
    assert loss._label_points(tokenizer.encode('<points coords="1 1 250')) == []


def test_target_tokens_cover_the_object_in_a_rendered_scene(tokenizer, config):
    """For each object's answer point, the tokens chosen (no margin) are the ones over the object,
    in the global crop and the high-res crop alike."""
    shipped = load_recipe("tiny-synthetic").model  # 224 px crops, 2x2 pooling, one high-res tile
    model, processor = build_model_and_processor(shipped)
    loss = PointingAttentionLoss(AttentionSupervision(weight=1.0, margin_patches=0.0), processor.tokenizer,
                                 model.config)
    covered = total = 0
    for seed in range(12):
        frame = SceneSimulator(seed, 256, 256).frame_at(0.0)
        inputs = processor("Point to it", images=[frame.rgb])
        pooling = inputs["image_token_pooling"].reshape(-1, inputs["image_token_pooling"].shape[-1])
        crop, box = loss._token_windows(pooling)
        for obj in frame.objects:
            point = visible_point(frame.label_map, obj.object_id)
            if point is None:
                continue
            x, y = point
            hit = (box[:, 0] <= x) & (x <= box[:, 2]) & (box[:, 1] <= y) & (y <= box[:, 3])
            assert set(crop[hit].tolist()) == {0, 1}  # one token (or a few on a border) in each crop
            for t in hit.nonzero().flatten().tolist():
                x0, y0, x1, y1 = (box[t] * 256).round().int().tolist()
                total += 1
                covered += int((frame.label_map[y0:y1, x0:x1] == obj.object_id).any())
    assert total > 50 and covered == total


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    recipe = tiny_recipe(ONE_CROP, "attention.weight=1.0", "attention.layer=-1", "attention.heads=[0]")
    return Trainer(recipe, tmp_path_factory.mktemp("attn"), resume=False, progress=False)


def test_queries_of_a_real_batch_point_at_their_own_visual_tokens(trainer):
    batch = next(iter(trainer.loader))
    queries = trainer.pointing.queries(batch)
    assert queries is not None and queries.n > 0
    tokenizer = trainer.processor.tokenizer
    patch_id = trainer.config.image_patch_id
    for row, position, target in zip(queries.rows.tolist(), queries.positions.tolist(), queries.targets):
        label = tokenizer.decode([int(batch.labels[row, position])]).strip()
        assert label.isdigit() and len(label) in (3, 4)            # the query predicts a coordinate
        keys = target.nonzero().flatten()
        assert keys.numel() >= 1
        assert (batch.input_ids[row, keys] == patch_id).all()       # ... and points at visual tokens
        assert (batch.example_index[row, keys] == batch.example_index[row, position]).all()  # of its example
        assert (keys < position).all()


def test_tiled_images_are_skipped(tmp_path):
    recipe = tiny_recipe("model.processor={overlap_margins: [1, 1], max_crops: 4}", "data.video_fraction=0.0",
                         "data.width=128", "data.height=128", "attention.weight=1.0")
    trainer = Trainer(recipe, tmp_path, resume=False, progress=False)
    batch = next(iter(trainer.loader))
    assert batch.n_crops > 2 * batch.n_examples  # the images really are tiled
    assert trainer.pointing.queries(batch) is None


def test_the_loss_moves_attention_onto_the_target(trainer):
    """Training the decoder on the attention loss alone raises the attention mass on the targets."""
    torch.manual_seed(0)
    batch = next(iter(trainer.loader))
    pointing = trainer.pointing
    model = trainer.wrapper.model
    queries = pointing.queries(batch)
    mask = batch.attention_mask()
    params = [p for p in model.decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)

    def attention_loss():
        with pointing.capture(model) as hook:
            trainer.wrapper(batch.input_ids, batch.position_ids, mask,
                            torch.zeros(1, dtype=torch.long), batch.pixel_values, batch.token_pooling)
        return pointing.loss(model, hook, queries, mask)

    first = float(attention_loss().detach())
    for _ in range(25):
        optimizer.zero_grad()
        value = attention_loss()
        value.backward()
        optimizer.step()
    last = float(attention_loss().detach())
    assert first > 1.0 and last < 0.5 * first, (first, last)


def test_training_with_attention_supervision_logs_it(tmp_path):
    recipe = tiny_recipe(ONE_CROP, "attention.weight=0.5", "steps=2")
    result = train(recipe, tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(line["attention_loss"] > 0 for line in lines)
    assert result.final_dir is not None
    off = Trainer(tiny_recipe(ONE_CROP), tmp_path / "off", resume=False, progress=False)
    assert off.pointing is None


def test_bad_heads_are_refused(tokenizer, config):
    with pytest.raises(ConfigError, match="heads"):
        _loss(tokenizer, config, heads=(99,))


def test_qk_norm_gain_sets_the_decoder_attention_scale_of_a_fresh_model():
    spec = tiny_recipe("model.qk_norm_gain=1.5").model
    model, _ = build_model_and_processor(spec, seed=0)
    for layer in model.decoder.layers:
        assert torch.equal(layer.self_attn.q_norm.weight, torch.full_like(layer.self_attn.q_norm.weight, 1.5))
        assert torch.equal(layer.self_attn.k_norm.weight, torch.full_like(layer.self_attn.k_norm.weight, 1.5))
    plain, _ = build_model_and_processor(tiny_recipe("model.qk_norm_gain=1.0").model, seed=0)
    assert torch.equal(plain.decoder.layers[0].self_attn.q_norm.weight,
                       torch.ones_like(plain.decoder.layers[0].self_attn.q_norm.weight))
