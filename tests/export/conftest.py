"""Fixtures for the export tests: small real ONNX graphs (exported from tiny torch modules or built
with onnx.helper), and the tiny / wide model checkpoints and fp32 bundles (`wide_dir`, `bundles`).

The model fixtures are module-scoped but go through `export_helpers.cached_bundle`, so each
checkpoint and bundle is built once per session, whichever module asks first."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from .export_helpers import cached_bundle, export, wide_checkpoint


class TinyMLP(nn.Module):
    """[batch, 16] -> [batch, 8]: enough weight (about 80 KB) that precision changes show in file sizes."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(16, 256)
        self.mid = nn.Linear(256, 64)
        self.down = nn.Linear(64, 8)

    def forward(self, x):
        return self.down(torch.relu(self.mid(torch.relu(self.up(x)))))


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class AttentionBlock(nn.Module):
    """A pre-norm decoder block (RMSNorm, 4-head attention with an additive mask, GELU MLP), as in Molmo2's decoder."""

    def __init__(self, dim: int = 64, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)

    def forward(self, x, mask):
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))  # [B, H, S, hd]
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + mask  # [B, H, S, S]
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.out(attended)
        return x + self.down(nn.functional.gelu(self.up(self.norm2(x))))


def export_module(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                  dynamic_axes: dict | None = None, opset: int = 17) -> Path:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes or {}, opset_version=opset)
    return path


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("mlp")
    return export_module(TinyMLP(), (torch.randn(2, 16),), folder / "mlp.onnx", ["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}})


@pytest.fixture(scope="session")
def block_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("block")
    x, mask = torch.randn(1, 8, 64), torch.zeros(1, 1, 8, 8)
    return export_module(AttentionBlock(), (x, mask), folder / "block.onnx", ["x", "mask"], ["y"],
                         {"x": {1: "seq"}, "mask": {2: "seq", 3: "seq"}, "y": {1: "seq"}})


def block_sample(rng: np.random.Generator, seq: int = 8) -> dict[str, np.ndarray]:
    """One input of the attention block: activations ~ N(0, 1) and a causal additive mask."""
    causal = np.triu(np.full((seq, seq), np.finfo(np.float32).min, np.float32), k=1)
    return {"x": rng.standard_normal((1, seq, 64)).astype(np.float32), "mask": causal[None, None]}


@pytest.fixture(scope="session")
def make_block_sample():
    """The function making attention-block inputs (a fixture, since test modules cannot import conftest)."""
    return block_sample


@pytest.fixture
def bundle_dir(tmp_path, mlp_onnx) -> Path:
    """A folder with the files of a bundle (graph, tokenizer, configs) but no manifest yet."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "vit.onnx").write_bytes(mlp_onnx.read_bytes())
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    (folder / "config.json").write_text(json.dumps({"model_type": "molmo2"}))
    (folder / "processor_config.json").write_text(json.dumps({"crop_size": 378}))
    return folder


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory):
    return cached_bundle("wide-checkpoint", lambda: wide_checkpoint(tmp_path_factory.mktemp("wide_ckpt")))


@pytest.fixture(scope="module")
def bundles(tiny_checkpoint_dir, wide_dir, tmp_path_factory):
    return {
        "tiny": cached_bundle("tiny-fp32", lambda: export(tiny_checkpoint_dir, tmp_path_factory.mktemp("t") / "b")),
        "wide": cached_bundle("wide-fp32", lambda: export(wide_dir, tmp_path_factory.mktemp("w") / "b")),
    }
