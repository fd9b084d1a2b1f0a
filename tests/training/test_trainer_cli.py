"""`molmo-edge train`: recipes, flags, and fine-tuning on a user's JSONL end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from molmo_edge.cli import main
from molmo_edge.errors import ConfigError
from molmo_edge.training.recipes import RECIPES, apply_overrides, load_recipe, recipe_json
from molmo_edge.training.trainer import train
from tests.training.test_user_data import write_image, write_jsonl, write_video
from tests.training.train_helpers import tiny_recipe


def test_named_recipes_are_valid_and_overrides_are_checked(tmp_path: Path):
    for name in RECIPES:
        recipe = load_recipe(name)
        assert recipe.name == name
    assert load_recipe("lora").lora.r == 16 and not load_recipe("lora").optim.vit.trainable
    assert load_recipe("finetune").optim.llm.lr == 1e-5  # Molmo2 SFT
    changed = apply_overrides(load_recipe("tiny-synthetic"), ["optim.llm.lr=3e-4", "steps=7", "lora={r: 4}"])
    assert (changed.optim.llm.lr, changed.steps, changed.lora.r) == (3e-4, 7, 4)
    with pytest.raises(ConfigError, match="stepz"):
        apply_overrides(load_recipe("tiny-synthetic"), ["stepz=3"])
    with pytest.raises(ConfigError, match="steps"):
        apply_overrides(load_recipe("tiny-synthetic"), ["steps=-1"])
    path = tmp_path / "r.yaml"
    path.write_text(recipe_json(changed))
    assert load_recipe(str(path)) == changed
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_recipe("no-such-recipe")


def test_print_recipe_applies_the_flags(tmp_path: Path, capsys):
    code = main(["train", "--recipe", "lora", "--init-from", "ckpt", "--data", "d.jsonl", "--lora", "r=8",
                 "--steps", "12", "--on-error", "raise", "--set", "optim.llm.lr=5e-5", "--out", str(tmp_path),
                 "--print-recipe"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["init_from"] == "ckpt" and printed["data"] == {
        "kind": "jsonl", "path": "d.jsonl", "epochs": None, "on_error": "raise", "seed": 0, "eval_path": None}
    assert printed["lora"]["r"] == 8 and printed["steps"] == 12 and printed["optim"]["llm"]["lr"] == 5e-5


def test_finetune_without_a_checkpoint_or_data_is_refused(tmp_path: Path, capsys):
    assert main(["train", "--recipe", "finetune", "--data", "d.jsonl", "--out", str(tmp_path)]) == 2
    assert "--init-from" in capsys.readouterr().err
    assert main(["train", "--recipe", "finetune", "--init-from", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err


def test_finetune_on_user_jsonl_through_the_cli(tmp_path: Path, capsys):
    base = train(tiny_recipe("steps=1"), tmp_path / "base", progress=False).final_dir
    write_image(tmp_path / "data" / "a.png", 64, 48)
    write_video(tmp_path / "data" / "clip.avi")
    data = write_jsonl(tmp_path / "data" / "train.jsonl", [
        {"image": "a.png", "units": "px", "annotations": [
            {"task": "point", "label": "red square", "points": [[16, 24]]},
            {"task": "qa", "question": "What colour is the left half?", "answer": "Red."}]},
        {"image": "missing.png", "annotations": [{"task": "qa", "question": "q", "answer": "a"}]},
        {"video": "clip.avi", "units": "norm", "annotations": [
            {"task": "track", "label": "square", "tracks": [{"id": 1, "points": [[0.0, 0.5, 0.5], [0.5, 0.5, 0.6]]}]}]},
    ])
    recipe_file = tmp_path / "ft.yaml"
    recipe_file.write_text(recipe_json(tiny_recipe("name=ft", "require_init_from=true")))
    out = tmp_path / "ft"
    code = main(["train", "--recipe", str(recipe_file), "--init-from", str(base), "--data", str(data),
                 "--steps", "3", "--out", str(out), "--no-progress"])
    assert code == 0
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "tokenizer.json").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3] and all(x["loss_tokens"] > 0 for x in lines)
    # --on-error raise refuses the file because of line 2.
    code = main(["train", "--recipe", str(recipe_file), "--init-from", str(base), "--data", str(data),
                 "--on-error", "raise", "--steps", "1", "--out", str(tmp_path / "strict"), "--no-progress"])
    assert code == 2
    assert "line 2:" in capsys.readouterr().err
    # One pass over two lines cannot feed 50 steps: a clear stop, not a hang or a silent end.
    code = main(["train", "--recipe", str(recipe_file), "--init-from", str(base), "--data", str(data),
                 "--epochs", "1", "--steps", "50", "--out", str(tmp_path / "short"), "--no-progress"])
    assert code == 2
    assert "data ran out at step" in capsys.readouterr().err
