"""LoRA on the decoder's Linear layers, and merging it back into plain weights.

Fine-tuning a 4B/8B model fully needs the optimizer state of every weight; LoRA trains a low-rank
update W + (alpha / r) * B @ A per chosen Linear (A [r, in], B [out, r], B starts at zero so the
model starts exactly where the checkpoint was) and freezes everything else. When training ends
the update is merged into W, so the saved checkpoint is an ordinary Molmo2 checkpoint: the
runtime, the exporter and transformers load it with no adapter code.

A small implementation of our own rather than peft: it needs to be FSDP2-shardable, to keep the
parameter names predictable for the LR groups, and to merge from a gathered state dict.
"""
from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from molmo_edge.errors import ConfigError

DECODER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="rank of the update")
    alpha: float = Field(32.0, gt=0, description="the update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA branch's input")
    target_modules: tuple[str, ...] = Field(DECODER_LINEARS, description="Linear names to adapt")
    scope: str = Field("decoder", description="only modules under this dotted prefix are adapted")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def parse_lora_arg(text: str) -> LoraConfig:
    """`r=16,alpha=32,dropout=0.05` (the CLI's --lora value) -> LoraConfig."""
    values: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"--lora expects key=value pairs such as r=16,alpha=32; got {part!r}")
        key = key.strip()
        if key == "r":
            values["r"] = int(value)
        elif key in ("alpha", "dropout"):
            values[key] = float(value)
        elif key == "target_modules":
            values[key] = tuple(v for v in value.split("+") if v)
        else:
            raise ConfigError(f"unknown --lora setting {key!r}; use r, alpha, dropout, target_modules")
    return LoraConfig(**values)


class LoraLinear(nn.Module):
    """y = base(x) + scaling * dropout(x) @ A^T @ B^T, with base frozen. x [..., in] -> [..., out]."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.scaling = alpha / r
        dtype, device = base.weight.dtype, base.weight.device
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype, device=device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype, device=device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear; B = 0 keeps the output unchanged
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (self.dropout(x) @ self.lora_a.t()) @ self.lora_b.t()  # [..., r] -> [..., out]
        return self.base(x) + self.scaling * update

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.scaling * (self.lora_b @ self.lora_a)


def apply_lora(model: nn.Module, config: LoraConfig) -> list[str]:
    """Wrap the target Linears under `config.scope` with LoraLinear and freeze every other weight.

    Returns the dotted names of the adapted modules; ConfigError when nothing matched.
    """
    targets = []
    for name, module in model.named_modules():
        in_scope = name.startswith(config.scope + ".") or not config.scope
        if in_scope and isinstance(module, nn.Linear) and name.rpartition(".")[2] in config.target_modules:
            targets.append(name)
    if not targets:
        raise ConfigError(f"LoRA found no Linear named {list(config.target_modules)} under '{config.scope}'")
    for param in model.parameters():
        param.requires_grad_(False)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoraLinear(getattr(parent, child), config.r, config.alpha, config.dropout))
    return targets


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Replace every LoraLinear by a plain Linear holding W + scaling * B @ A. Returns how many."""
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLinear):
            plain = module.base
            plain.weight.copy_(module.merged_weight())
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, plain)
            merged += 1
    return merged


def merge_lora_state_dict(state_dict: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """The same merge on a (gathered) state dict: `X.base.weight`, `X.lora_a`, `X.lora_b` -> `X.weight`."""
    merged = {}
    for key, value in state_dict.items():
        if key.endswith((".lora_a", ".lora_b")):
            continue
        if ".base." in key and key.rpartition(".base.")[0] + ".lora_a" in state_dict:
            prefix, _, leaf = key.rpartition(".base.")
            if leaf == "weight":
                a, b = state_dict[prefix + ".lora_a"], state_dict[prefix + ".lora_b"]
                value = value + scaling * (b.to(value.dtype) @ a.to(value.dtype))
            merged[f"{prefix}.{leaf}"] = value
        else:
            merged[key] = value
    return merged


def lora_adapter_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors (A and B), e.g. to keep the adapter next to the merged checkpoint."""
    return {k: v for k, v in state_dict.items() if k.endswith((".lora_a", ".lora_b"))}
