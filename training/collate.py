"""Packed sequences -> one training batch of tensors.

Each row of the batch is one PackedSequence: its message trees laid out one after another
(message_tree.linearize), padded to a common length. All crops of all trees of all rows go into
one ViT call, so their pooling indices are offset into the batch-wide patch list and the visual
tokens come out in the same order as the `<im_patch>` tokens of `input_ids` read row by row.

The 4-D attention mask is not built here: [B, 1, S, S] floats are large, and their dtype and
device are the trainer's business. The batch carries the three per-token descriptors the mask is
a function of (example_index, branch_index, mm_token_type_ids) and builds it on request.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from molmo_edge.training.message_tree import IGNORE_INDEX, linearize, tree_attention_mask
from molmo_edge.training.packing import PackedSequence


@dataclass
class TrainingBatch:
    """Tensors of one micro-batch. S = padded sequence length, N = crops, T = visual tokens."""

    input_ids: torch.Tensor          # int64 [B, S]
    position_ids: torch.Tensor       # int64 [B, S], restart per example and per branch
    mm_token_type_ids: torch.Tensor  # int64 [B, S]
    example_index: torch.Tensor      # int64 [B, S], example number within the batch, -1 = padding
    branch_index: torch.Tensor       # int64 [B, S], 0 = prefix, b = branch b
    labels: torch.Tensor             # int64 [B, S], shifted targets, IGNORE_INDEX = no loss
    loss_weights: torch.Tensor       # float32 [B, S]
    pixel_values: torch.Tensor | None  # float32 [N, P, patch_dim]
    token_pooling: torch.Tensor | None  # int64 [T, K], into the flattened [N * P] patches, -1 = pad
    origins: list[str] = field(default_factory=list)  # one per example
    data_states: dict[int, dict] = field(default_factory=dict)  # shard -> packer state after this batch

    @property
    def n_examples(self) -> int:
        return len(self.origins)

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int((self.example_index >= 0).sum())

    @property
    def n_loss_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    @property
    def n_crops(self) -> int:
        return 0 if self.pixel_values is None else int(self.pixel_values.shape[0])

    def attention_mask(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Additive mask [B, 1, S, S] (0 = attend, finfo(dtype).min = blocked) on this batch's device."""
        return tree_attention_mask(self.example_index, self.branch_index, self.mm_token_type_ids, dtype)

    def to(self, device: torch.device | str) -> "TrainingBatch":
        moved = {name: (value.to(device) if isinstance(value, torch.Tensor) else value)
                 for name, value in self.__dict__.items()}
        return TrainingBatch(**moved)


class PackedCollator:
    """DataLoader collate_fn: list of PackedSequence -> TrainingBatch.

    pad_token_id: id written into padding positions (they carry no loss and see only themselves);
    pad_to_multiple: round S up to this (steadier shapes, fewer allocator surprises);
    pad_to_length: pad every batch to exactly this S (static shapes for torch.compile).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple: int = 32, pad_to_length: int | None = None):
        self.pad_token_id, self.pad_to_multiple, self.pad_to_length = pad_token_id, pad_to_multiple, pad_to_length

    def __call__(self, sequences: list[PackedSequence]) -> TrainingBatch:
        rows = []
        origins: list[str] = []
        pixels: list[torch.Tensor] = []
        poolings: list[torch.Tensor] = []
        patches_before = 0
        states: dict[int, dict] = {}
        for seq in sequences:
            parts = []
            for tree in seq.trees:
                tokens = linearize(tree)
                tokens.extra["example"] = len(origins)
                origins.append(tree.origin)
                parts.append(tokens)
                if tree.visual is not None:
                    pv, pool = tree.visual.pixel_values, tree.visual.token_pooling
                    # Offset into the batch-wide flattened patch list; keep -1 padding as it is.
                    pixels.append(pv)
                    poolings.append(torch.where(pool >= 0, pool + patches_before, pool))
                    patches_before += pv.shape[0] * pv.shape[1]
            rows.append(parts)
            states[seq.shard] = seq.state
        length = max(sum(int(p.input_ids.numel()) for p in parts) for parts in rows)
        if self.pad_to_length is not None:
            if length > self.pad_to_length:
                raise ValueError(f"a packed sequence has {length} tokens, more than pad_to_length={self.pad_to_length}")
            length = self.pad_to_length
        elif self.pad_to_multiple > 1:
            length = -(-length // self.pad_to_multiple) * self.pad_to_multiple

        b = len(rows)
        input_ids = torch.full((b, length), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((b, length), dtype=torch.long)
        mm = torch.zeros((b, length), dtype=torch.long)
        example_index = torch.full((b, length), -1, dtype=torch.long)
        branch_index = torch.zeros((b, length), dtype=torch.long)
        labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
        weights = torch.zeros((b, length), dtype=torch.float32)
        for r, parts in enumerate(rows):
            start = 0
            for tokens in parts:
                end = start + int(tokens.input_ids.numel())
                input_ids[r, start:end] = tokens.input_ids
                position_ids[r, start:end] = tokens.position_ids
                mm[r, start:end] = tokens.mm_token_type_ids
                example_index[r, start:end] = tokens.extra["example"]
                branch_index[r, start:end] = tokens.branch_index
                labels[r, start:end] = tokens.labels
                weights[r, start:end] = tokens.weights
                start = end

        pixel_values = token_pooling = None
        if pixels:
            pixel_values = torch.cat(pixels)
            k_max = max(p.shape[1] for p in poolings)  # images pool 2x2 (K=4), video 3x3 (K=9)
            token_pooling = torch.cat([
                torch.nn.functional.pad(p, (0, k_max - p.shape[1]), value=-1) for p in poolings])
        return TrainingBatch(
            input_ids=input_ids, position_ids=position_ids, mm_token_type_ids=mm, example_index=example_index,
            branch_index=branch_index, labels=labels, loss_weights=weights, pixel_values=pixel_values,
            token_pooling=token_pooling, origins=origins, data_states=states,
        )
