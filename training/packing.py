"""On-the-fly packing of message trees into long sequences (Molmo2's packer).

Examples range from a few dozen tokens (one image, one short question) to thousands (a video with
many tracks). Padding each to the longest would waste most of the compute, so several examples
are packed into one sequence of at most `max_tokens` LLM tokens and `max_crops` ViT crops; the
attention mask (message_tree.tree_attention_mask) keeps them from seeing each other and the
position ids restart at 0 for every example.

Which examples go together is a 2-D knapsack: from a pool of ~48 encoded examples pick the subset
that maximises  tokens + crop_weight * crops  subject to both budgets, yield it, refill the pool,
repeat. The solver works on token counts rounded *up* to multiples of 32 (a smaller table; the
paper rounds to the nearest multiple, rounding up guarantees the budget is never exceeded).

The packer runs inside a torch IterableDataset, independently in every DataLoader worker of every
rank. The source is index-addressable: shard s of n (n = world_size * num_workers,
s = rank * num_workers + worker_id) handles the source indices s, s + n, s + 2n, ... That makes
the stream a pure function of (source, seed, shard), and its resumable state tiny: how many
indices the shard has consumed plus the indices sitting in its pool. Every packed sequence carries
that state, so the trainer can checkpoint exactly where each shard was.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import IterableDataset, get_worker_info

from molmo_edge.errors import ConfigError
from molmo_edge.training.message_tree import MessageTree

log = logging.getLogger(__name__)


class PackingConfig(BaseModel):
    """Budgets of one packed sequence and the knobs of the solver."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(2048, gt=0, description="LLM tokens per packed sequence (a multiple of token_quantum)")
    max_crops: int = Field(16, ge=0, description="ViT crops / video frames per packed sequence")
    pool_size: int = Field(48, ge=1, description="encoded examples kept in memory for the solver")
    crop_weight: float = Field(30.0, ge=0, description="value of one crop in tokens (favours filling the ViT)")
    token_quantum: int = Field(32, ge=1, description="token counts are rounded up to this for the solver")
    max_wait: int = Field(64, ge=1, description="an example passed over this many times is packed next, "
                                                "so a hard-to-pack example cannot sit in the pool forever")

    @model_validator(mode="after")
    def _check(self) -> "PackingConfig":
        if self.max_tokens % self.token_quantum:
            raise ConfigError(f"packing.max_tokens={self.max_tokens} must be a multiple of "
                              f"token_quantum={self.token_quantum}")
        return self


def solve_knapsack(tokens: Sequence[int], crops: Sequence[int], max_tokens: int, max_crops: int,
                   crop_weight: float = 30.0, token_quantum: int = 32) -> list[int]:
    """Indices (ascending) of the subset maximising sum(tokens) + crop_weight * sum(crops) with
    sum(ceil(tokens/quantum)) <= max_tokens // quantum and sum(crops) <= max_crops.

    Exact 0/1 dynamic programme over a (token units, crops) table, one numpy pass per item.
    Ties keep the earlier items (deterministic).
    """
    cap_units = max_tokens // token_quantum
    n = len(tokens)
    best = np.zeros((cap_units + 1, max_crops + 1), dtype=np.float64)  # best value within (units, crops)
    took = np.zeros((n, cap_units + 1, max_crops + 1), dtype=bool)
    units = [math.ceil(t / token_quantum) for t in tokens]
    for i in range(n):
        u, c = units[i], int(crops[i])
        if u > cap_units or c > max_crops:
            continue
        value = float(tokens[i]) + crop_weight * c
        candidate = np.full_like(best, -np.inf)
        candidate[u:, c:] = best[: cap_units + 1 - u, : max_crops + 1 - c] + value
        better = candidate > best + 1e-9
        took[i] = better
        best = np.where(better, candidate, best)
    chosen, u_left, c_left = [], cap_units, max_crops
    for i in range(n - 1, -1, -1):
        if took[i, u_left, c_left]:
            chosen.append(i)
            u_left -= units[i]
            c_left -= int(crops[i])
    return sorted(chosen)


class ExampleSource(Protocol):
    """What the packer reads from: `source[i]` for i = 0, 1, 2, ...; `len()` when finite.

    Synthetic sources generate example i from (seed, i); user data shuffles per epoch
    (EpochShuffledSource). Raising IndexError also ends a source.
    """

    def __getitem__(self, index: int) -> Any: ...


class EpochShuffledSource:
    """A finite list of examples repeated for `n_epochs` (None = forever), reshuffled every epoch.

    The permutation of epoch e depends only on (seed, e), so index i always maps to the same item.
    """

    def __init__(self, items: Sequence[Any], seed: int = 0, n_epochs: int | None = 1, shuffle: bool = True):
        if len(items) == 0:
            raise ConfigError("the data source has no examples; training never silently trains on nothing")
        self.items, self.seed, self.n_epochs, self.shuffle = items, seed, n_epochs, shuffle
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        if self.n_epochs is None:
            raise TypeError("an endless source has no length")
        return len(self.items) * self.n_epochs

    def is_finite(self) -> bool:
        return self.n_epochs is not None

    def __getitem__(self, index: int) -> Any:
        n = len(self.items)
        epoch, offset = divmod(index, n)
        if self.n_epochs is not None and epoch >= self.n_epochs:
            raise IndexError(index)
        if not self.shuffle:
            return self.items[offset]
        if epoch not in self._perms:
            self._perms = {epoch: np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(n)}
        return self.items[int(self._perms[epoch][offset])]


def source_length(source: ExampleSource) -> int | None:
    """len(source), or None for an endless one."""
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


@dataclass
class PackedSequence:
    """Some message trees that share one sequence, and where the shard stood after them."""

    trees: list[MessageTree]
    shard: int
    state: dict = field(default_factory=dict)  # {"consumed": int, "pool": [[index, waited], ...]}

    @property
    def n_tokens(self) -> int:
        return sum(t.n_tokens for t in self.trees)

    @property
    def n_crops(self) -> int:
        return sum(t.n_crops for t in self.trees)


@dataclass
class _PoolItem:
    index: int
    tree: MessageTree
    waited: int = 0


class PackingDataset(IterableDataset):
    """Yields PackedSequence objects; use with a DataLoader and training.collate.PackedCollator.

    encode: turns one source item into a MessageTree (tokenise, preprocess pixels, build the tree);
    it runs in the DataLoader workers. ValueError from it skips the item with a warning (e.g. an
    example whose first annotation alone is longer than max_tokens).
    rank / world_size: this process's place among the distributed ranks (default: from
    torch.distributed when initialised, else 0 / 1).
    """

    def __init__(self, source: ExampleSource, encode: Callable[[Any], MessageTree], config: PackingConfig,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.source, self.encode, self.config = source, encode, config
        if rank is None or world_size is None:
            dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if dist_on else 0
            world_size = torch.distributed.get_world_size() if dist_on else 1
        self.rank, self.world_size = rank, world_size
        self.resume_states: dict[int, dict] = {}
        self.resume_n_shards: int | None = None
        self.n_skipped = 0  # items refused by the encoder or over budget (counted per process)

    def load_state(self, states: dict[int, dict], n_shards: int) -> None:
        """Continue every shard from a checkpointed state (see PackedSequence.state).

        The shard layout (world_size * num_workers) must be the one the states were saved with.
        """
        self.resume_states = {int(k): v for k, v in states.items()}
        self.resume_n_shards = n_shards

    def _shard(self) -> tuple[int, int]:
        info = get_worker_info()
        n_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        n_shards = self.world_size * n_workers
        expected = self.resume_n_shards
        if self.resume_states and expected is not None and expected != n_shards:
            raise ConfigError(f"cannot resume data state saved with {expected} shards (ranks x workers) "
                              f"in a run with {n_shards}; use the same --nproc-per-node and num_workers")
        return self.rank * n_workers + worker, n_shards

    def _encode(self, index: int) -> MessageTree | None:
        try:
            tree = self.encode(self.source[index])
        except ValueError as exc:  # too long for the budget, or an item the encoder refuses
            self.n_skipped += 1
            log.warning("packing: skipping source item %d: %s", index, exc)
            return None
        if not tree.origin:
            tree.origin = f"item:{index}"
        if tree.n_tokens > self.config.max_tokens or tree.n_crops > self.config.max_crops:
            self.n_skipped += 1
            log.warning("packing: skipping source item %d: %d tokens / %d crops exceed the budget %d / %d",
                        index, tree.n_tokens, tree.n_crops, self.config.max_tokens, self.config.max_crops)
            return None
        return tree

    def __iter__(self) -> Iterator[PackedSequence]:
        cfg = self.config
        shard, n_shards = self._shard()
        length = source_length(self.source)
        state = self.resume_states.get(shard, {"consumed": 0, "pool": []})
        consumed = int(state["consumed"])
        pool: list[_PoolItem] = []
        for index, waited in state["pool"]:
            tree = self._encode(int(index))
            if tree is not None:
                pool.append(_PoolItem(int(index), tree, int(waited)))
        exhausted = False
        while True:
            while len(pool) < cfg.pool_size and not exhausted:
                index = shard + consumed * n_shards
                if length is not None and index >= length:
                    exhausted = True
                    break
                consumed += 1
                try:
                    tree = self._encode(index)
                except IndexError:
                    exhausted = True
                    break
                if tree is not None:
                    pool.append(_PoolItem(index, tree))
            if not pool:
                return
            chosen = set(self._choose(pool))
            picked = [item for i, item in enumerate(pool) if i in chosen]
            pool = [item for i, item in enumerate(pool) if i not in chosen]
            for item in pool:
                item.waited += 1
            yield PackedSequence(
                trees=[item.tree for item in picked], shard=shard,
                state={"consumed": consumed, "pool": [[item.index, item.waited] for item in pool]},
            )

    def _choose(self, pool: list[_PoolItem]) -> list[int]:
        """Pool positions of the next packed sequence.

        Items passed over `max_wait` times go in first, oldest first, as many as fit together;
        the knapsack fills the rest of the budget. The oldest overdue item always fits (every pool
        item fits an empty sequence), so no item waits much longer than max_wait + pool_size.
        """
        cfg = self.config
        quantum = cfg.token_quantum
        tokens_left, crops_left = cfg.max_tokens, cfg.max_crops
        forced: list[int] = []
        overdue = sorted((i for i, item in enumerate(pool) if item.waited >= cfg.max_wait),
                         key=lambda i: -pool[i].waited)
        for i in overdue:
            need = math.ceil(pool[i].tree.n_tokens / quantum) * quantum
            if need <= tokens_left and pool[i].tree.n_crops <= crops_left:
                forced.append(i)
                tokens_left -= need
                crops_left -= pool[i].tree.n_crops
        rest = [i for i in range(len(pool)) if i not in forced]
        picked = solve_knapsack([pool[i].tree.n_tokens for i in rest], [pool[i].tree.n_crops for i in rest],
                                tokens_left, crops_left, cfg.crop_weight, quantum)
        return sorted(forced + [rest[i] for i in picked])
