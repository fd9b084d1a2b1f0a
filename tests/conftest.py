"""Shared fixtures for the whole test suite (keep this file small and stable).

- `tiny_config`: `Molmo2Config.preset("tiny-test")` (random-init CPU test size).
- `tiny_model`: that config, random init (seed 0), eval mode; a fresh model per test.
- `tiny_checkpoint_dir` / `tiny_checkpoint`: a session-wide folder with a random-init tiny model
  saved by `save_checkpoint` together with the project's small tokenizer (tokenizer.json), so
  text can go in and out. Its config's vocabulary and token ids come from that tokenizer.

molmo_edge.model is imported inside the fixtures, so tests that do not use them stay torch-free.
"""
from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # CI and the dev machines have 2 cores shared by several jobs; more threads only thrash.
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return
    torch.set_num_threads(2)


@pytest.fixture
def tiny_config():
    from molmo_edge.model import Molmo2Config

    return Molmo2Config.preset("tiny-test")


@pytest.fixture
def tiny_model(tiny_config):
    import torch

    from molmo_edge.model import Molmo2ForConditionalGeneration

    torch.manual_seed(0)
    return Molmo2ForConditionalGeneration(tiny_config).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory) -> Path:
    try:
        from molmo_edge.training.tokenizer_builder import build_tokenizer
    except ImportError as exc:
        pytest.skip(f"the small tokenizer is not available yet (molmo_edge.training.tokenizer_builder: {exc})")
    import torch

    from molmo_edge.model import Molmo2Config, Molmo2ForConditionalGeneration, save_checkpoint

    tokenizer = build_tokenizer()
    config = Molmo2Config.preset("tiny-test").with_tokenizer(tokenizer)
    torch.manual_seed(0)
    model = Molmo2ForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    save_checkpoint(model, folder, tokenizer=tokenizer)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoint_dir) -> Path:
    """Alias of `tiny_checkpoint_dir` (the name docs/internals.md uses)."""
    return tiny_checkpoint_dir
