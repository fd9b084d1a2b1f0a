"""Named training recipes: every knob of a run in one typed, validated, printable object.

    molmo-edge train --recipe tiny-synthetic --out runs/tiny
    molmo-edge train --recipe finetune --init-from CKPT --data my.jsonl --out runs/ft
    molmo-edge train --recipe lora --init-from CKPT --data my.jsonl --lora r=16 --out runs/lora
    molmo-edge train --recipe my_recipe.yaml --set optim.llm.lr=2e-5 --set steps=500 --out runs/x

A recipe is a `Recipe` pydantic model. The named ones are Python functions below; a YAML/JSON file
with the same fields (unknown keys are refused) is a recipe too, and `--set a.b=value` edits any
field. The resolved recipe is written to OUT/recipe.json so every run can be reproduced.

- `tiny-synthetic`: the small model shipped in the package, trained from scratch on the synthetic
  grounding task (training/tasks.py). Its size is parametrised (`model.preset` + `model.overrides`);
  LRs are far above Molmo2's because nothing here is pre-trained.
- `finetune`: full fine-tuning of a checkpoint on your JSONL, with Molmo2's SFT hyper-parameters
  (ViT 5e-6, connector 5e-6, LLM 1e-5, 200 warm-up steps each, cosine to 10 %).
- `lora`: LoRA r=16 on the decoder's Linear layers; ViT and connector frozen; merged on save.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from molmo_edge.errors import ConfigError
from molmo_edge.training.coordinate_prior import CoordinatePrior
from molmo_edge.training.lora import LoraConfig
from molmo_edge.training.optim import GroupLR, OptimConfig
from molmo_edge.training.packing import PackingConfig
from molmo_edge.training.pointing_attention import AttentionSupervision
from molmo_edge.training.token_weights import TokenWeighting


class ModelSpec(BaseModel):
    """Where the weights come from: a checkpoint folder (`init_from`) or a random-init preset."""

    model_config = ConfigDict(extra="forbid")

    init_from: str | None = Field(None, description="checkpoint folder (HF Molmo2 layout) to start from")
    preset: str = Field("tiny-test", description="Molmo2Config preset for a from-scratch model")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="nested config changes, e.g. {'text': {'num_hidden_layers': 4}}")
    processor: dict[str, Any] = Field(default_factory=dict, description="ProcessorConfig changes, e.g. max_crops")
    init_std: float = Field(0.02, gt=0, description="std of the normal init of a from-scratch model")
    qk_norm_gain: float = Field(1.0, gt=0, description="initial q/k RMSNorm weight of the decoder's attention "
                                                       "(from-scratch models). With unit weights a head's "
                                                       "logits are at most head_dim**0.5 apart, too flat to "
                                                       "single out one visual token among hundreds")


class SyntheticData(BaseModel):
    """Procedurally generated scenes (training/scenes.py) and their questions (training/tasks.py)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["synthetic"] = "synthetic"
    seed: int = 0
    video_fraction: float = Field(0.5, ge=0, le=1, description="share of visual inputs that are video clips")
    width: int = Field(256, ge=16)
    height: int = Field(256, ge=16)
    task: dict[str, Any] = Field(default_factory=dict, description="TaskConfig changes (n_frames, negative_rate, ...)")
    scene: dict[str, Any] = Field(default_factory=dict, description="SceneConfig changes")


class JsonlData(BaseModel):
    """Your own data (training/user_data.py documents the format)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["jsonl"] = "jsonl"
    path: str = Field("", description="the JSONL file (the CLI's --data)")
    epochs: int | None = Field(None, ge=1, description="passes over the file; None = as many as `steps` need")
    on_error: Literal["skip", "raise"] = "skip"
    seed: int = 0
    eval_path: str | None = Field(None, description="held-out JSONL for the periodic evaluation")


DataSpec = Annotated[Union[SyntheticData, JsonlData], Field(discriminator="kind")]


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    require_init_from: bool = Field(False, description="a fine-tuning recipe: refuse to start from random weights")
    model: ModelSpec = ModelSpec()
    data: DataSpec = SyntheticData()
    packing: PackingConfig = PackingConfig()
    optim: OptimConfig = OptimConfig()
    weighting: TokenWeighting = TokenWeighting()
    coordinates: CoordinatePrior = CoordinatePrior()
    attention: AttentionSupervision = AttentionSupervision()
    lora: LoraConfig | None = None

    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(1, ge=1, description="packed sequences per micro-batch per process")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA with bf16 support, fp32 on CPU (measured faster)")

    log_every: int = Field(10, ge=1)
    save_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=0, description="newest step checkpoints kept; 0 = keep all")
    eval_every: int = Field(0, ge=0, description="0 = no periodic evaluation")
    eval_items: int = Field(16, ge=1, description="held-out items (visual inputs) of the default evaluation")
    max_minutes: float | None = Field(None, gt=0, description="stop (and save) after this much wall time")
    save_dtype: Literal["float32", "bfloat16"] = "float32"


def _tiny_synthetic() -> Recipe:
    """The shipped model (molmo_edge/assets/tiny-synthetic/MODEL_CARD.md has its training log).

    Sizes from the pilots (MODEL_CARD.md): a 224 px crop of 14 px patches (16 x 16 per crop); a
    256 px scene is one global crop plus one high-res crop (max_crops 1), a video frame is one crop
    pooled 3 x 3 into 6 x 6 tokens. The ViT's cost dominates a step (every crop of every frame), so
    it is narrow (128 wide: the same held-out loss as 192 wide in the pilots, at ~2/3 of the step
    time), and each image / clip carries up to 6 questions (message-tree branches are cheap).
    """
    vit = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 6, "num_attention_heads": 2,
           "num_key_value_heads": 2, "head_dim": 64, "image_size": [224, 224], "patch_size": 14}
    adapter = {"vision_feature_layer": [-1, -3], "hidden_size": 128, "num_attention_heads": 2,
               "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 1024, "text_hidden_size": 256}
    text = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 4096,
            "rope": {"rope_type": "default", "rope_theta": 10_000.0}}
    # ViT and connector learn 5x slower than the LLM: they have no normalisation at their output,
    # and at 1e-3 AdamW's ~2 %-per-step relative weight changes compound through the ViT ->
    # pooling -> SwiGLU chain (the visual tokens grew from 0.06 to ~1000 rms in 250 steps).
    slow = GroupLR(lr=2e-4, warmup_steps=150)
    lr = GroupLR(lr=1e-3, warmup_steps=150)
    return Recipe(
        name="tiny-synthetic",
        # init_std 0.05 (about 1/sqrt(fan_in) at these widths): the ViT -> attention pooling ->
        # SwiGLU chain multiplies scales, and at 0.02 the visual tokens start ~5000x smaller than
        # the text embeddings they are added to (4e-6 vs 0.02 rms), so the decoder sees every image
        # token as the same <im_patch> embedding. The pilot run at 0.02 learnt the answer grammar but
        # no localisation in 600 steps, while AdamW blew the visual tokens up to ~400 rms. At 0.05
        # they start at the embeddings' scale (0.06 vs 0.05 rms).
        model=ModelSpec(preset="tiny-test", overrides={"vision": vit, "adapter": adapter, "text": text},
                        processor={"overlap_margins": [2, 2], "max_crops": 1}, init_std=0.05,
                        qk_norm_gain=1.5),
        data=SyntheticData(seed=0, video_fraction=0.35, task={"examples_per_input": 6}),
        packing=PackingConfig(max_tokens=2048, max_crops=24, pool_size=48),
        optim=OptimConfig(vit=slow, connector=slow, llm=lr),
        # Coordinates are one token each (1001 unrelated classes). Smooth coordinate rows, Gaussian
        # soft targets and smooth ViT positions (training/coordinate_prior.py) alone left every
        # from-scratch run at chance on coordinates (log 1001 nats after 1000-1800 steps): the decoder
        # never learnt where to look, nor to read a position out of what it looked at. Two training
        # aids break that saddle: attention supervision (training/pointing_attention.py) teaches two
        # heads of the last layer to look at the answer's object, and the expected-coordinate L1 term
        # rewards a guess for being closer even when it is hundreds of units off.
        coordinates=CoordinatePrior(label_sigma=10.0, init_rows=True, init_positions=True, regression_weight=10.0),
        attention=AttentionSupervision(weight=1.0),
        steps=2000, batch_size=1, num_workers=1, save_every=200, log_every=10, keep_checkpoints=0,
        eval_every=400, eval_items=16,
    )


def _finetune() -> Recipe:
    return Recipe(
        name="finetune",
        require_init_from=True,
        model=ModelSpec(init_from=None),
        data=JsonlData(),
        packing=PackingConfig(max_tokens=4096, max_crops=32, pool_size=48),
        optim=OptimConfig(),  # Molmo2 SFT values
        steps=1000, batch_size=1, grad_accum=8, num_workers=2, save_every=250,
    )


def _lora() -> Recipe:
    recipe = _finetune()
    frozen = GroupLR(lr=0.0, trainable=False)
    return recipe.model_copy(update={
        "name": "lora",
        "lora": LoraConfig(r=16, alpha=32.0),
        "optim": OptimConfig(vit=frozen, connector=frozen, llm=GroupLR(lr=1e-4, warmup_steps=50)),
    })


RECIPES: dict[str, Callable[[], Recipe]] = {
    "tiny-synthetic": _tiny_synthetic,
    "finetune": _finetune,
    "lora": _lora,
}


def _validate(data: dict[str, Any], where: str) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'recipe'}: "
                            f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()[:5])
        raise ConfigError(f"invalid recipe ({where}): {details}") from None


def load_recipe(name_or_path: str) -> Recipe:
    """A named recipe (`tiny-synthetic`, `finetune`, `lora`) or a YAML/JSON recipe file."""
    if name_or_path in RECIPES:
        return RECIPES[name_or_path]()
    path = Path(name_or_path)
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"recipe file {path} is not valid YAML/JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"recipe file {path} must hold a mapping of recipe fields")
        return _validate(data, str(path))
    raise ConfigError(f"unknown recipe {name_or_path!r}: use one of {', '.join(RECIPES)} or a YAML file path")


def apply_overrides(recipe: Recipe, assignments: list[str]) -> Recipe:
    """`["optim.llm.lr=2e-5", "steps=100", "data.path=x.jsonl"]` -> a new, re-validated recipe.

    Values are parsed as YAML scalars/flow collections (numbers, true/false, null, [1, 2], {a: 1}).
    """
    data = recipe.model_dump(mode="json")
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {assignment!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section of the recipe")
            node = node[part]
        node[parts[-1]] = value
    return _validate(data, "after --set")


def check_runnable(recipe: Recipe) -> None:
    """ConfigError naming the missing piece when a recipe cannot start (before anything is built)."""
    if recipe.require_init_from and not recipe.model.init_from:
        raise ConfigError(f"recipe '{recipe.name}' fine-tunes an existing model: give --init-from CHECKPOINT_FOLDER")
    if isinstance(recipe.data, JsonlData) and not recipe.data.path:
        raise ConfigError(f"recipe '{recipe.name}' trains on your data: give --data FILE.jsonl "
                          "(format: docs/training.md)")


def recipe_json(recipe: Recipe) -> str:
    return json.dumps(recipe.model_dump(mode="json"), indent=2) + "\n"
