"""Fixtures for the processing tests (the reference stand-ins live in processing_reference.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_tokenizer():
    from molmo_edge.training.tokenizer_builder import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def small_tokenizer_json(small_tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("small_tokenizer") / "tokenizer.json"
    small_tokenizer.save(path)
    return path

