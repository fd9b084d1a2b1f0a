"""Training checkpoints: a loadable model folder plus the trusted-local state needed to resume.

    OUT/checkpoints/step-000200/           the Hugging Face Molmo2 layout: config.json,
        config.json, model.safetensors,    model.safetensors, tokenizer.json, processor_config.json.
        tokenizer.json, ...                molmo-edge, the exporter and transformers load it as is.
        resume/
            trainer_state.json             step, data-stream positions, LR schedule, recipe (JSON)
            optimizer.pt                   AdamW moments: torch.save, loaded with weights_only=True
            rng.pt                         torch RNG state
            adapter.safetensors            LoRA runs only: the unmerged A/B matrices
    OUT/final/                             the last model, same layout, no resume/

Only `resume/` uses torch.save, for our own training state on the machine that wrote it; it is read
back with `weights_only=True`, and a `resume/` folder from elsewhere should be treated as untrusted
(docs/training.md says so). Every file a user loads to *run* a model is safetensors / JSON.

The model folder is written from the gathered full state dict: the split embedding is merged back
into one table and LoRA updates are merged into their weights first, so what is saved is always a
plain Molmo2 checkpoint.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from molmo_edge.errors import CheckpointError
from molmo_edge.training.lora import lora_adapter_state_dict, merge_lora_state_dict
from molmo_edge.training.optim import merge_split_state_dict

log = logging.getLogger(__name__)

RESUME_DIR = "resume"
STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
WRAPPER_PREFIX = "model."  # the training wrapper holds the Molmo2 model as `.model`


def plain_state_dict(training_state: dict[str, torch.Tensor], lora_scaling: float | None) -> dict[str, torch.Tensor]:
    """Training-time parameter names/layout -> the model's own state dict (no wrapper prefix,
    LoRA merged, embedding table whole)."""
    state = {k[len(WRAPPER_PREFIX):] if k.startswith(WRAPPER_PREFIX) else k: v for k, v in training_state.items()}
    if lora_scaling is not None:
        state = merge_lora_state_dict(state, lora_scaling)
    return merge_split_state_dict(state)


def save_model_folder(state: dict[str, torch.Tensor], config: Any, folder: Path, processor: Any = None,
                      dtype: torch.dtype | None = None) -> Path:
    """Write a plain state dict as a checkpoint folder with molmo_edge.model.checkpoint.save_checkpoint.

    The model is built on the meta device and the tensors are assigned into it, so saving does not
    allocate a second copy of the weights. dtype: cast floating tensors (e.g. bf16 for shipping).
    """
    from molmo_edge.model.checkpoint import save_checkpoint
    from molmo_edge.model.molmo2 import Molmo2ForConditionalGeneration

    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    with torch.device("meta"):
        shell = Molmo2ForConditionalGeneration(config)
    missing, unexpected = shell.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(f"training state does not match the model: missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}")
    tokenizer = getattr(processor, "tokenizer", None)
    save_checkpoint(shell, folder, tokenizer=tokenizer)
    save_processor_config(processor, folder)
    return folder


def save_processor_config(processor: Any, folder: Path) -> None:
    """processor_config.json next to the weights, when the processor can write one."""
    if processor is None:
        return
    cfg = getattr(processor, "config", None) or getattr(processor, "cfg", None)
    for obj in (processor, cfg):
        if obj is not None and hasattr(obj, "save_pretrained"):
            obj.save_pretrained(folder)
            return


def write_resume_state(folder: Path, *, step: int, optimizer_state: dict, scheduler_state: dict,
                       data_states: dict[int, dict], n_shards: int, recipe: dict, extra: dict | None = None,
                       adapter: dict[str, torch.Tensor] | None = None) -> Path:
    """Everything beyond the weights that resuming needs (see the module docstring)."""
    resume = folder / RESUME_DIR
    resume.mkdir(parents=True, exist_ok=True)
    torch.save(optimizer_state, resume / "optimizer.pt")
    torch.save({"torch": torch.get_rng_state()}, resume / "rng.pt")
    if adapter:
        save_file({k: v.contiguous() for k, v in adapter.items()}, str(resume / "adapter.safetensors"))
    state = {
        "version": 1,
        "step": step,
        "scheduler": scheduler_state,
        "data": {"n_shards": n_shards, "shards": {str(k): v for k, v in sorted(data_states.items())}},
        "recipe": recipe,
        **(extra or {}),
    }
    (resume / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    return resume


def read_resume_state(folder: Path) -> dict:
    """trainer_state.json + optimizer/rng tensors (weights_only: no arbitrary unpickling)."""
    resume = folder / RESUME_DIR
    state_path = resume / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{folder} has no {RESUME_DIR}/{STATE_FILE}; it is not a resumable training "
                              "checkpoint (only OUT/checkpoints/step-N folders are)")
    state = json.loads(state_path.read_text(encoding="utf-8"))
    state["optimizer"] = torch.load(resume / "optimizer.pt", map_location="cpu", weights_only=True)
    state["rng"] = torch.load(resume / "rng.pt", map_location="cpu", weights_only=True)
    adapter_path = resume / "adapter.safetensors"
    state["adapter"] = load_file(str(adapter_path)) if adapter_path.is_file() else None
    state["data"]["shards"] = {int(k): v for k, v in state["data"]["shards"].items()}
    return state


def step_folder(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step-{step:06d}"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete step folder under OUT/checkpoints, or None."""
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return None
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / RESUME_DIR / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def prune_checkpoints(out_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` step folders (keep <= 0 keeps everything)."""
    if keep <= 0:
        return
    root = out_dir / "checkpoints"
    steps = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
    for _, path in steps[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def adapter_tensors(training_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return lora_adapter_state_dict(training_state)
