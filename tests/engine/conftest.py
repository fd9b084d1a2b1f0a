"""Fixtures for the engine tests: a tiny checkpoint whose images matter, its torch backend, media.

`engine_checkpoint_dir` is the shared tiny checkpoint (tests/conftest.py: tiny-test config, the
project's real tokenizer) with its weights redrawn at unit scale. With the training init (std
0.02) the visual tokens are ~1e-4 against embeddings of ~1e-2 and move the logits by ~1e-7, so
"same answer with cached frames" would hold even if the frames were wrong. At unit scale a
different image changes the logits by O(1) and greedy decoding is not decided by rounding ties.
Its answers are still nonsense text, but every number can be checked against the model's own
forward / generate and against transformers.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.weights import randomize_unit_scale_


@pytest.fixture(scope="session")
def engine_checkpoint_dir(tiny_checkpoint_dir, tmp_path_factory):
    from molmo_edge.model import load_checkpoint, save_checkpoint

    folder = tmp_path_factory.mktemp("engine_checkpoint")
    model = load_checkpoint(tiny_checkpoint_dir)
    # Spread 0.1, positional embeddings at unit scale, no extra lm_head gain: the engine tests' variant.
    randomize_unit_scale_(model, seed=1, spread=0.1, norm_biases_near_one=True,
                          unit_names=("embed_tokens", "positional_embedding"), lm_head_gain=1.0)
    save_checkpoint(model, folder, tokenizer_file=tiny_checkpoint_dir / "tokenizer.json")
    return folder


@pytest.fixture(scope="session")
def torch_backend(engine_checkpoint_dir):
    from molmo_edge.engine.torch_backend import TorchBackend

    backend = TorchBackend.from_checkpoint(engine_checkpoint_dir, device="cpu", dtype="float32")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def engine(torch_backend):
    from molmo_edge.engine.engine import Engine

    return Engine(torch_backend)


def random_image(seed: int, height: int = 80, width: int = 100) -> np.ndarray:
    """RGB uint8 [H, W, 3] with a few flat rectangles on noise (some structure for the ViT)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for _ in range(3):
        y0, x0 = int(rng.integers(0, height - 10)), int(rng.integers(0, width - 10))
        image[y0:y0 + 10, x0:x0 + 10] = rng.integers(0, 256, 3, dtype=np.uint8)
    return image


@pytest.fixture
def rgb_image() -> np.ndarray:
    return random_image(0)


@pytest.fixture
def clip() -> tuple[list[np.ndarray], list[float]]:
    """Four frames of one size and their capture times in seconds (not starting at 0)."""
    frames = [random_image(10 + i, 60, 72) for i in range(4)]
    return frames, [3.0, 3.5, 4.0, 4.5]
