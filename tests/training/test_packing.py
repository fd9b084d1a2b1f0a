"""The knapsack packer, the sharded packing dataset and the collator."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from molmo_edge.errors import ConfigError
from molmo_edge.training.collate import PackedCollator
from molmo_edge.training.message_tree import AnnotatedSequence, VisualInputs, build_message_tree
from molmo_edge.training.packing import (
    EpochShuffledSource, PackingConfig, PackingDataset, solve_knapsack)

PATCH = 50
P = 4  # patches per crop in these tests


def brute_force_best(tokens, crops, max_tokens, max_crops, crop_weight, quantum):
    best = 0.0
    for r in range(len(tokens) + 1):
        for subset in itertools.combinations(range(len(tokens)), r):
            units = sum(math.ceil(tokens[i] / quantum) for i in subset)
            if units <= max_tokens // quantum and sum(crops[i] for i in subset) <= max_crops:
                best = max(best, sum(tokens[i] + crop_weight * crops[i] for i in subset))
    return best


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 200), st.integers(0, 6)), min_size=0, max_size=9),
       st.sampled_from([64, 128, 256]), st.integers(0, 10), st.sampled_from([1, 8, 32]))
def test_knapsack_is_optimal_and_within_budget(items, max_tokens, max_crops, quantum):
    tokens = [t for t, _ in items]
    crops = [c for _, c in items]
    chosen = solve_knapsack(tokens, crops, max_tokens, max_crops, crop_weight=30.0, token_quantum=quantum)
    assert chosen == sorted(set(chosen))
    assert sum(math.ceil(tokens[i] / quantum) * quantum for i in chosen) <= max_tokens
    assert sum(tokens[i] for i in chosen) <= max_tokens
    assert sum(crops[i] for i in chosen) <= max_crops
    value = sum(tokens[i] + 30.0 * crops[i] for i in chosen)
    assert value == pytest.approx(brute_force_best(tokens, crops, max_tokens, max_crops, 30.0, quantum))


class ToyExamples:
    """Source item i -> an example with a deterministic, index-dependent size (a real encoder's
    output shape: prefix with visual tokens, 1-3 branches)."""

    def __init__(self, n: int | None):
        self.n = n

    def __len__(self):
        if self.n is None:
            raise TypeError
        return self.n

    def __getitem__(self, i: int):
        if self.n is not None and i >= self.n:
            raise IndexError(i)
        return i


def toy_encode(i: int):
    rng = np.random.default_rng(i)
    n_crops = int(rng.integers(0, 3))
    n_visual = n_crops * 2  # two pooled tokens per crop
    visual = None
    vis_ids = []
    if n_crops:
        visual = VisualInputs(torch.full((n_crops, P, 6), float(i)),
                              torch.arange(n_crops * P).reshape(n_visual, 2))
        vis_ids = [PATCH] * n_visual
    annotations = []
    for b in range(int(rng.integers(1, 4))):
        q = rng.integers(3, 40, size=int(rng.integers(1, 20))).tolist()
        a = rng.integers(3, 40, size=int(rng.integers(1, 30))).tolist()
        ids = [1] + vis_ids + [100 + b] + q + a + [2]
        mm = [0] + [1] * len(vis_ids) + [0] * (len(q) + len(a) + 2)
        loss = [False] * (len(ids) - len(a) - 1) + [True] * (len(a) + 1)
        annotations.append(AnnotatedSequence(ids, mm, loss, "qa"))
    return build_message_tree(annotations, visual, origin=f"toy:{i}")


CFG = PackingConfig(max_tokens=256, max_crops=4, pool_size=8)


def drain(dataset):
    return [[t.origin for t in seq.trees] for seq in dataset]


def test_packs_are_deterministic_within_budget_and_cover_every_example_once():
    dataset = PackingDataset(ToyExamples(60), toy_encode, CFG, rank=0, world_size=1)
    first = list(dataset)
    assert drain(dataset) == [[t.origin for t in s.trees] for s in first]
    for seq in first:
        assert seq.n_tokens <= CFG.max_tokens and seq.n_crops <= CFG.max_crops
    origins = [o for s in first for o in (t.origin for t in s.trees)]
    assert sorted(origins) == sorted(f"toy:{i}" for i in range(60))
    # Packing must actually pack: far fewer sequences than examples.
    assert len(first) < 60 / 2


def test_ranks_and_workers_shard_the_source_without_overlap():
    seen = []
    for rank in range(2):
        dataset = PackingDataset(ToyExamples(50), toy_encode, CFG, rank=rank, world_size=2)
        loader = DataLoader(dataset, batch_size=None, num_workers=2, collate_fn=lambda s: s)
        packs = list(loader)
        shards = {p.shard for p in packs}
        assert shards == {rank * 2, rank * 2 + 1}
        for p in packs:
            for t in p.trees:
                index = int(t.origin.split(":")[1])
                assert index % 4 == p.shard  # shard s of 4 handles s, s+4, ...
                seen.append(index)
    assert sorted(seen) == list(range(50))


def test_resuming_from_a_packed_sequence_state_continues_identically():
    endless = ToyExamples(None)
    dataset = PackingDataset(endless, toy_encode, CFG, rank=0, world_size=1)
    stream = iter(dataset)
    head = [next(stream) for _ in range(7)]
    tail = [[t.origin for t in next(stream).trees] for _ in range(6)]
    resumed = PackingDataset(endless, toy_encode, CFG, rank=0, world_size=1)
    resumed.load_state({0: head[-1].state}, n_shards=1)
    again = iter(resumed)
    assert [[t.origin for t in next(again).trees] for _ in range(6)] == tail
    with pytest.raises(ConfigError, match="shards"):
        wrong = PackingDataset(endless, toy_encode, CFG, rank=0, world_size=1)
        wrong.load_state({0: head[-1].state}, n_shards=2)
        next(iter(wrong))


def test_an_example_passed_over_too_often_is_forced_in():
    cfg = PackingConfig(max_tokens=256, max_crops=4, pool_size=8, max_wait=2)
    longest = 0
    for seq in PackingDataset(ToyExamples(300), toy_encode, cfg, 0, 1):
        longest = max([longest] + [waited for _, waited in seq.state["pool"]])
    assert longest <= cfg.max_wait + cfg.pool_size


def test_oversized_examples_are_skipped_not_fatal():
    cfg = PackingConfig(max_tokens=64, max_crops=1, pool_size=4)
    dataset = PackingDataset(ToyExamples(30), toy_encode, cfg, 0, 1)
    packs = list(dataset)
    assert dataset.n_skipped > 0 and packs
    assert all(s.n_tokens <= 64 and s.n_crops <= 1 for s in packs)


def test_config_and_source_errors_are_clear():
    with pytest.raises(ValueError, match="multiple of token_quantum"):  # pydantic's ValidationError
        PackingConfig(max_tokens=100)
    with pytest.raises(ConfigError, match="no examples"):
        EpochShuffledSource([])


def test_epoch_source_reshuffles_each_epoch_and_is_reproducible():
    source = EpochShuffledSource(list(range(10)), seed=3, n_epochs=2)
    epoch0 = [source[i] for i in range(10)]
    epoch1 = [source[i] for i in range(10, 20)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10)) and epoch0 != epoch1
    assert [EpochShuffledSource(list(range(10)), seed=3)[i] for i in range(10)] == epoch0
    with pytest.raises(IndexError):
        source[20]


def test_collator_offsets_pooling_and_keeps_examples_apart():
    dataset = PackingDataset(ToyExamples(40), toy_encode, CFG, 0, 1)
    seqs = list(itertools.islice(iter(dataset), 3))
    batch = PackedCollator(pad_token_id=0, pad_to_multiple=32)(seqs)
    b, s = batch.input_ids.shape
    assert b == 3 and s % 32 == 0
    assert batch.n_examples == sum(len(x.trees) for x in seqs)
    # One visual token per <im_patch>, and token t's patches are the crop of its own example.
    assert int((batch.input_ids == PATCH).sum()) == batch.token_pooling.shape[0]
    flat = batch.pixel_values.reshape(-1, batch.pixel_values.shape[-1])
    patch_rows = (batch.input_ids == PATCH).nonzero()
    for t, (r, c) in enumerate(patch_rows.tolist()):
        example_value = float(batch.origins[int(batch.example_index[r, c])].split(":")[1])
        for k in batch.token_pooling[t].tolist():
            if k >= 0:
                assert float(flat[k, 0]) == example_value
    mask = batch.attention_mask()
    ex = batch.example_index
    allowed = mask[:, 0] == 0
    cross = (ex[:, :, None] != ex[:, None, :]) & (ex[:, :, None] >= 0)
    assert not (allowed & cross).any()
    assert batch.data_states == {0: seqs[-1].state}
