"""LoRA on the real tiny Molmo2: starts as a no-op, trains only adapters, merges exactly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from molmo_edge.errors import ConfigError
from molmo_edge.training.lora import (
    LoraConfig, LoraLinear, apply_lora, merge_lora, merge_lora_state_dict, parse_lora_arg)
from molmo_edge.training.trainer import train

from tests.training.train_helpers import tiny_recipe


def logits_of(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.text.vocab_size, (2, 12), generator=g)
    with torch.no_grad():
        return model(ids).logits


def test_lora_starts_as_the_base_model_and_merges_exactly(tiny_model):
    before = logits_of(tiny_model)
    targets = apply_lora(tiny_model, LoraConfig(r=4, alpha=8))
    assert targets and all(t.startswith("decoder.layers.") for t in targets)
    assert {t.rpartition(".")[2] for t in targets} == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                        "gate_proj", "up_proj", "down_proj"}
    trainable = [n for n, p in tiny_model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith((".lora_a", ".lora_b")) for n in trainable)
    assert torch.equal(logits_of(tiny_model), before)  # B = 0: exactly the base model

    with torch.no_grad():
        for module in tiny_model.modules():
            if isinstance(module, LoraLinear):
                module.lora_b.normal_(0, 0.1)
    adapted = logits_of(tiny_model)
    assert not torch.allclose(adapted, before)
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    assert merge_lora(tiny_model) == len(targets)
    assert not any(isinstance(m, LoraLinear) for m in tiny_model.modules())
    assert torch.allclose(logits_of(tiny_model), adapted, atol=1e-5)
    from_state = merge_lora_state_dict(state, scaling=8 / 4)
    plain = tiny_model.state_dict()
    assert from_state.keys() == plain.keys()
    assert all(torch.allclose(from_state[k], plain[k], atol=1e-6) for k in plain)


def test_lora_argument_parsing():
    cfg = parse_lora_arg("r=8,alpha=16,dropout=0.05,target_modules=q_proj+v_proj")
    assert (cfg.r, cfg.alpha, cfg.dropout, cfg.target_modules) == (8, 16.0, 0.05, ("q_proj", "v_proj"))
    assert parse_lora_arg("r=16").scaling == 2.0
    with pytest.raises(ConfigError, match="unknown --lora setting"):
        parse_lora_arg("rank=4")
    with pytest.raises(ConfigError, match="key=value"):
        parse_lora_arg("16")


def test_lora_finetune_changes_only_adapted_weights_and_saves_a_plain_checkpoint(tmp_path: Path):
    from molmo_edge.model.checkpoint import load_checkpoint

    base_dir = train(tiny_recipe("steps=1"), tmp_path / "base", progress=False).final_dir
    recipe = tiny_recipe("steps=4", "save_every=2", f"model.init_from={base_dir}", "lora={r: 4, alpha: 8}",
                         "optim.vit={lr: 0.0, trainable: false}", "optim.connector={lr: 0.0, trainable: false}",
                         "optim.llm={lr: 0.01, warmup_steps: 1}")
    result = train(recipe, tmp_path / "lora", progress=False)
    assert result.losses[-1] < result.losses[0]
    base = load_checkpoint(base_dir).state_dict()
    tuned = load_checkpoint(result.final_dir).state_dict()
    assert base.keys() == tuned.keys()
    adapted = {k for k in base if k.startswith("decoder.layers.") and
               k.rpartition(".")[0].rpartition(".")[2] in LoraConfig().target_modules}
    assert adapted
    for key in base:
        if key in adapted:
            assert not torch.equal(base[key], tuned[key]), key
        else:
            assert torch.equal(base[key], tuned[key]), key
    assert (tmp_path / "lora" / "checkpoints" / "step-000002" / "resume" / "adapter.safetensors").is_file()

    # Resuming a LoRA run rebuilds base + adapter and follows the same trajectory.
    resumed_dir = tmp_path / "lora-resumed"
    first = train(recipe.model_copy(update={"max_minutes": 1e-9}), resumed_dir, progress=False)
    second = train(recipe, resumed_dir, progress=False)
    assert first.losses + second.losses == pytest.approx(result.losses, abs=1e-6)
