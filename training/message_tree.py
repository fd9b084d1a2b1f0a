"""Message trees: one visual input, several annotations, one sequence.

An image with four questions about it would cost four forward passes over the same visual tokens
if each question were its own example. Molmo2 instead encodes the shared part once and makes each
annotation a branch of a tree:

    [ prefix: BOS, visual tokens, shared text ][ branch 1: question 1, answer 1, EOS ][ branch 2 ... ]

and linearises the tree into one sequence with a custom attention mask:

- a token may attend to keys of its own example only (packing puts several examples in a row);
- within an example: causal, AND a branch token sees only the prefix and its own branch;
- all image/frame special tokens of the prefix form one bidirectional block (mm_token_type_ids);
- position ids restart after the prefix for every branch, so each branch sees exactly the
  positions it would see if its annotation were encoded alone.

The result is that every branch computes exactly what a stand-alone example would compute (the
tests check the logits), at the cost of the prefix only once.

Labels are stored already shifted: `labels[i]` is the token position i must predict (-100 = no
loss). Only answer tokens (and the EOS closing each branch) are predicted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from molmo_edge.training.token_weights import TokenWeighting, annotation_token_weight

IGNORE_INDEX = -100


@dataclass
class VisualInputs:
    """The ViT input of one example and how its patches pool into visual tokens.

    pixel_values: float32 [n_crops, P, patch_dim] (image crops or video frames, all the same P);
    token_pooling: int64 [T, K], indices into the flattened [n_crops * P] patches, -1 = padding.
    One visual token per `<im_patch>` token of the prefix, in order.
    """

    pixel_values: torch.Tensor
    token_pooling: torch.Tensor

    @property
    def n_crops(self) -> int:
        return int(self.pixel_values.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.token_pooling.shape[0])


@dataclass
class AnnotatedSequence:
    """One annotation laid out as if it were alone: prompt (with the visual block) + answer + EOS.

    `loss_mask[i]` is True on the answer tokens and the final EOS, the tokens the model learns to
    produce. All annotations of one visual input share the same visual block.
    """

    input_ids: list[int]
    mm_token_type_ids: list[int]
    loss_mask: list[bool]
    task: str = "qa"

    def __post_init__(self) -> None:
        if not (len(self.input_ids) == len(self.mm_token_type_ids) == len(self.loss_mask)):
            raise ValueError("input_ids, mm_token_type_ids and loss_mask must have the same length")
        if not any(self.loss_mask):
            raise ValueError("an annotation needs at least one answer token (loss_mask is all False)")
        if self.loss_mask[0]:
            raise ValueError("the first token cannot be an answer token: nothing precedes it")

    @property
    def first_answer_index(self) -> int:
        return self.loss_mask.index(True)


@dataclass
class MessageTree:
    """A shared prefix and its branches (see the module docstring). 1-D int64/float tensors."""

    prefix_ids: torch.Tensor              # int64 [L0]
    prefix_mm_token_type_ids: torch.Tensor  # int64 [L0]
    branch_ids: list[torch.Tensor]        # int64 [Lb] each
    branch_labels: list[torch.Tensor]     # int64 [Lb], already shifted, IGNORE_INDEX = no loss
    branch_weights: list[torch.Tensor]    # float32 [Lb], 0 where there is no loss
    branch_tasks: list[str]
    visual: VisualInputs | None = None
    # Where the example came from (a source index, a JSONL line), for logs and per-example stats.
    origin: str = ""
    n_dropped_branches: int = 0

    @property
    def n_tokens(self) -> int:
        return int(self.prefix_ids.numel()) + sum(int(b.numel()) for b in self.branch_ids)

    @property
    def n_crops(self) -> int:
        return 0 if self.visual is None else self.visual.n_crops

    @property
    def n_branches(self) -> int:
        return len(self.branch_ids)

    @property
    def n_loss_tokens(self) -> int:
        return sum(int((lab != IGNORE_INDEX).sum()) for lab in self.branch_labels)


@dataclass
class TreeTokens:
    """A linearised tree: every field is 1-D of length n_tokens."""

    input_ids: torch.Tensor          # int64
    position_ids: torch.Tensor       # int64, restart after the prefix for each branch
    branch_index: torch.Tensor       # int64, 0 = prefix, b = branch b (1-based)
    mm_token_type_ids: torch.Tensor  # int64, 1 on image/frame special tokens
    labels: torch.Tensor             # int64, shifted targets, IGNORE_INDEX = no loss
    weights: torch.Tensor            # float32, per-token loss weight
    extra: dict = field(default_factory=dict)


def _common_prefix_length(sequences: list[list[int]]) -> int:
    shortest = min(len(s) for s in sequences)
    for i in range(shortest):
        token = sequences[0][i]
        if any(s[i] != token for s in sequences[1:]):
            return i
    return shortest


def build_message_tree(annotations: list[AnnotatedSequence], visual: VisualInputs | None = None,
                       weighting: TokenWeighting | None = None, max_tokens: int | None = None,
                       origin: str = "") -> MessageTree:
    """Turn the stand-alone sequences of several annotations of one visual input into a tree.

    The prefix is the longest common token prefix of all annotations, cut so that it ends at
    least one token before the earliest answer: the last prefix token is shared by all branches,
    so it must not have to predict different answer tokens. Every image/frame special token has to
    be in the prefix (they are shared and form one bidirectional block).

    `max_tokens`: branches are dropped from the end until the tree fits (Molmo2 truncates the few
    examples that are too long); a tree whose prefix plus first branch does not fit is refused
    with ValueError. Token weights use the number of branches that remain.
    """
    if not annotations:
        raise ValueError("a message tree needs at least one annotation")
    sequences = [a.input_ids for a in annotations]
    prefix_len = min(_common_prefix_length(sequences), min(a.first_answer_index for a in annotations) - 1)
    first = annotations[0]
    for a in annotations:
        visual_positions = [i for i, t in enumerate(a.mm_token_type_ids) if t]
        if visual_positions and visual_positions[-1] >= prefix_len:
            raise ValueError(
                "image/frame tokens must all come before the text that differs between annotations; "
                f"found one at position {visual_positions[-1]} but the shared prefix ends at {prefix_len}")
    branch_lengths = [len(a.input_ids) - prefix_len for a in annotations]
    keep = len(annotations)
    if max_tokens is not None:
        while keep > 0 and prefix_len + sum(branch_lengths[:keep]) > max_tokens:
            keep -= 1
        if keep == 0:
            raise ValueError(f"example {origin or '?'} needs {prefix_len + branch_lengths[0]} tokens for its "
                             f"first annotation alone, more than max_tokens={max_tokens}")
    kept = annotations[:keep]
    weighting = weighting or TokenWeighting()

    branch_ids, branch_labels, branch_weights = [], [], []
    for a in kept:
        ids = torch.tensor(a.input_ids, dtype=torch.long)
        loss = torch.tensor(a.loss_mask, dtype=torch.bool)
        # Shift: the token at i predicts ids[i+1] when ids[i+1] is an answer token.
        shifted = torch.full_like(ids, IGNORE_INDEX)
        predict = loss[1:]
        shifted[:-1] = torch.where(predict, ids[1:], torch.full_like(ids[1:], IGNORE_INDEX))
        n_loss = int(predict.sum())
        w = annotation_token_weight(a.task, n_loss, len(kept), weighting)
        weights = torch.where(shifted != IGNORE_INDEX, torch.tensor(w, dtype=torch.float32),
                              torch.tensor(0.0, dtype=torch.float32))
        # Everything the prefix predicts is prefix text (see the cut rule above): no labels there.
        branch_ids.append(ids[prefix_len:])
        branch_labels.append(shifted[prefix_len:])
        branch_weights.append(weights[prefix_len:])
    return MessageTree(
        prefix_ids=torch.tensor(first.input_ids[:prefix_len], dtype=torch.long),
        prefix_mm_token_type_ids=torch.tensor(first.mm_token_type_ids[:prefix_len], dtype=torch.long),
        branch_ids=branch_ids, branch_labels=branch_labels, branch_weights=branch_weights,
        branch_tasks=[a.task for a in kept], visual=visual, origin=origin,
        n_dropped_branches=len(annotations) - keep,
    )


def linearize(tree: MessageTree) -> TreeTokens:
    """Lay a tree out as one sequence: prefix, then each branch in order."""
    n_prefix = int(tree.prefix_ids.numel())
    ids = [tree.prefix_ids]
    positions = [torch.arange(n_prefix)]
    branch_index = [torch.zeros(n_prefix, dtype=torch.long)]
    mm = [tree.prefix_mm_token_type_ids]
    labels = [torch.full((n_prefix,), IGNORE_INDEX, dtype=torch.long)]
    weights = [torch.zeros(n_prefix, dtype=torch.float32)]
    for b, (b_ids, b_labels, b_weights) in enumerate(zip(tree.branch_ids, tree.branch_labels,
                                                         tree.branch_weights), start=1):
        n = int(b_ids.numel())
        ids.append(b_ids)
        positions.append(torch.arange(n_prefix, n_prefix + n))  # restart after the prefix
        branch_index.append(torch.full((n,), b, dtype=torch.long))
        mm.append(torch.zeros(n, dtype=torch.long))
        labels.append(b_labels)
        weights.append(b_weights)
    return TreeTokens(
        input_ids=torch.cat(ids), position_ids=torch.cat(positions), branch_index=torch.cat(branch_index),
        mm_token_type_ids=torch.cat(mm), labels=torch.cat(labels), weights=torch.cat(weights),
    )


def tree_attention_mask(example_index: torch.Tensor, branch_index: torch.Tensor,
                        mm_token_type_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The additive 4-D mask of packed message trees.

    example_index, branch_index, mm_token_type_ids: int64 [B, S]; example_index is -1 on padding.
    Returns float [B, 1, S, S]: 0 where query i may attend to key j, finfo(dtype).min elsewhere.
    Padding tokens attend to themselves only, so that no row is fully blocked.
    """
    if example_index.dim() == 1:
        example_index, branch_index, mm_token_type_ids = (
            example_index[None], branch_index[None], mm_token_type_ids[None])
    s = example_index.shape[-1]
    q_ex, k_ex = example_index[:, :, None], example_index[:, None, :]      # [B, S, 1], [B, 1, S]
    q_br, k_br = branch_index[:, :, None], branch_index[:, None, :]
    q_mm, k_mm = mm_token_type_ids[:, :, None] > 0, mm_token_type_ids[:, None, :] > 0
    idx = torch.arange(s, device=example_index.device)
    causal = (idx[None, :] <= idx[:, None])[None]                            # [1, S, S]
    same_example = (q_ex == k_ex) & (q_ex >= 0)
    branch_visible = (k_br == 0) | (k_br == q_br)
    allowed = same_example & (causal | (q_mm & k_mm)) & branch_visible      # [B, S, S]
    allowed = allowed | ((q_ex < 0) & torch.eye(s, dtype=torch.bool, device=idx.device)[None])
    mask = torch.zeros(allowed.shape, dtype=dtype, device=example_index.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]                                                     # [B, 1, S, S]
