"""Fixtures for the model tests: the transformers reference model, built once per case."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .model_test_inputs import PARITY_CASES, hf_config_dict, randomize_


@pytest.fixture(scope="session")
def hf_molmo2():
    """transformers' Molmo2 classes (the numeric reference), imported once per session."""
    transformers = pytest.importorskip("transformers")
    return transformers.Molmo2Config, transformers.Molmo2ForConditionalGeneration


@pytest.fixture(scope="module", params=PARITY_CASES)
def hf_reference(request, hf_molmo2, tmp_path_factory):
    """(case, HF model in eval mode, folder where HF saved it with save_pretrained)."""
    hf_config_cls, hf_model_cls = hf_molmo2
    case = request.param
    torch.manual_seed(0)
    model = hf_model_cls(hf_config_cls(**hf_config_dict(case))).eval()
    randomize_(model, seed=PARITY_CASES.index(case))
    folder: Path = tmp_path_factory.mktemp(f"hf-{case}")
    model.save_pretrained(folder)
    return case, model, folder
