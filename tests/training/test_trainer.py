"""The training loop on the real tiny Molmo2, processor and synthetic data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from molmo_edge.errors import ConfigError
from molmo_edge.training.build import build_model_and_processor, build_source
from molmo_edge.training.collate import PackedCollator
from molmo_edge.training.example_encoder import ExampleEncoder
from molmo_edge.training.packing import PackedSequence
from molmo_edge.training.train_step import PackedLossModel, per_example_losses
from molmo_edge.training.trainer import Trainer, train

from tests.training.train_helpers import tiny_recipe


def standalone_answer_loss(model, processor, example) -> float:
    """Reference: the model's own forward (its own causal + image-block mask, default positions,
    pixels through model.forward) on prompt + answer + EOS alone; mean CE over the answer."""
    media = example.media
    if media.is_video:
        inputs = processor(example.prompt, video=(list(media.frames), list(media.timestamps_s)))
    else:
        inputs = processor(example.prompt, images=[media.image])
    answer = torch.tensor([processor.tokenizer.encode(example.answer) + [processor.tokenizer.eos_id]])
    n_prompt = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], answer], dim=1)
    inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(answer)], dim=1)
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    predict = logits[n_prompt - 1: -1]  # positions that predict the answer tokens
    return float(torch.nn.functional.cross_entropy(predict, answer[0]))


def test_packed_message_trees_give_every_annotation_its_standalone_loss():
    """Images (2x2 pooling) and videos (3x3) with two annotations each, as message trees packed
    into one row, must give every annotation the loss the plain model gives it alone."""
    recipe = tiny_recipe("data.video_fraction=0.5")
    model, processor = build_model_and_processor(recipe.model, seed=3)
    model.eval()
    source = build_source(recipe.data, processor)
    encoder = ExampleEncoder(processor, recipe.weighting)
    items = [source[i] for i in range(5)]
    trees = [encoder(item) for item in items]
    assert {t.visual.token_pooling.shape[1] for t in trees} == {4, 9}  # both images and videos
    assert all(t.n_branches == 2 for t in trees)
    collate = PackedCollator(pad_token_id=model.config.pad_token_id)
    packed = per_example_losses(PackedLossModel(model), collate([PackedSequence(trees, shard=0)]),
                                torch.device("cpu"), by_branch=True)
    assert sorted(packed) == [(e, b) for e in range(5) for b in (1, 2)]
    for e, item in enumerate(items):
        for b, example in enumerate(item, start=1):
            assert packed[(e, b)] == pytest.approx(standalone_answer_loss(model, processor, example), abs=2e-5)


def test_a_few_steps_reduce_the_loss_and_write_logs(tmp_path: Path):
    recipe = tiny_recipe("steps=16")
    result = train(recipe, tmp_path, progress=False)
    assert result.steps_done == 16 and len(result.losses) == 16
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first - 0.5, result.losses
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 17))
    assert set(lines[0]["lr"]) == {"vit", "connector", "llm"}
    assert all(x["tokens_per_s"] > 0 and x["examples_per_s"] > 0 and x["grad_norm"] > 0 for x in lines)
    assert all(0.0 <= x["data_wait_fraction"] <= 1.0 for x in lines)
    assert json.loads((tmp_path / "recipe.json").read_text())["steps"] == 16


def test_checkpoint_reloads_bit_exactly_and_loads_in_transformers(tmp_path: Path):
    from molmo_edge.model.checkpoint import load_checkpoint
    from molmo_edge.model.molmo2 import Molmo2ForConditionalGeneration
    from molmo_edge.processing.processor import Processor

    recipe = tiny_recipe("steps=3", "save_every=3")
    trainer = Trainer(recipe, tmp_path, progress=False)
    trainer.run()
    trained = {k[len("model."):]: v for k, v in trainer.wrapper.state_dict().items()}
    final = tmp_path / "final"
    step = tmp_path / "checkpoints" / "step-000003"
    assert not any(p.suffix in (".pt", ".bin", ".pth") for p in final.iterdir())
    assert (step / "resume" / "optimizer.pt").is_file()

    ours = load_checkpoint(final)
    reloaded = ours.state_dict()
    # The training-time split embedding merges back into one table, bit for bit.
    table = torch.cat([trained["decoder.embed_tokens.base_rows"], trained["decoder.embed_tokens.extra_rows"]])
    assert torch.equal(reloaded["decoder.embed_tokens.weight"], table)
    for name, value in reloaded.items():
        if name != "decoder.embed_tokens.weight":
            assert torch.equal(value, trained[name]), name
    assert load_file(str(step / "model.safetensors")).keys() == load_file(str(final / "model.safetensors")).keys()

    transformers = pytest.importorskip("transformers")
    hf = transformers.Molmo2ForConditionalGeneration.from_pretrained(final).eval()
    processor = Processor.from_pretrained(final)
    source = build_source(recipe.data, processor)
    media = source[0][0].media
    inputs = (processor("Point to the red circle", video=(list(media.frames), list(media.timestamps_s)))
              if media.is_video else processor("Point to the red circle", images=[media.image]))
    ours.eval()
    with torch.no_grad():
        expected = ours(**inputs).logits
        got = hf(**inputs).logits
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert isinstance(ours, Molmo2ForConditionalGeneration)


def test_resume_continues_the_same_trajectory(tmp_path: Path):
    straight = train(tiny_recipe("steps=6"), tmp_path / "straight", progress=False).losses
    interrupted = tmp_path / "resumed"
    first = train(tiny_recipe("steps=6", "save_every=3", "max_minutes=1e-9"), interrupted, progress=False)
    assert first.stopped_by_budget and first.steps_done == 1  # the budget stop saves a checkpoint
    second = train(tiny_recipe("steps=6", "save_every=3"), interrupted, progress=False)
    assert second.start_step == 1
    assert first.losses + second.losses == pytest.approx(straight, abs=1e-6)
    with pytest.raises(ConfigError, match="already holds the checkpoints"):
        train(tiny_recipe("steps=6"), interrupted, resume="never", progress=False)


def test_eval_hook_gets_a_plain_model(tmp_path: Path):
    calls = []

    def hook(model, step):
        assert not model.training and hasattr(model, "generate")
        assert "decoder.embed_tokens.weight" in model.state_dict()
        calls.append(step)
        return {"ok": 1.0}

    train(tiny_recipe("steps=4", "eval_every=2"), tmp_path, eval_hook=hook, progress=False)
    assert calls == [2, 4]
    evals = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["step"] for e in evals] == [2, 4]


def test_default_evaluation_is_the_heldout_loss(tmp_path: Path):
    train(tiny_recipe("steps=4", "eval_every=2", "eval_items=3"), tmp_path, progress=False)
    evals = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(e["eval"]["heldout_loss"] > e["eval"]["heldout_ce"] > 0 for e in evals)
    assert evals[1]["eval"]["heldout_loss"] < evals[0]["eval"]["heldout_loss"]


def test_training_refuses_to_run_on_nothing(tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"image": "missing.png", "annotations": []}\n')
    recipe = tiny_recipe("steps=2", f"data={{kind: jsonl, path: '{data}'}}")
    with pytest.raises(ConfigError, match="no valid training example"):
        train(recipe, tmp_path / "out", progress=False)


def test_loader_workers_run_opencv_on_one_thread(tmp_path: Path):
    """Each DataLoader worker renders scenes with OpenCV; a pool of all cores per worker would
    oversubscribe the machine num_workers times over (seen as a data-starved GPU)."""
    import cv2

    from molmo_edge.training.trainer import _single_threaded_worker

    trainer = Trainer(tiny_recipe("steps=1", "num_workers=1"), tmp_path, progress=False)
    assert trainer.loader.worker_init_fn is _single_threaded_worker
    before = cv2.getNumThreads()
    try:
        _single_threaded_worker(0)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
