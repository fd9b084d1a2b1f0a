"""Placing visual tokens into the prompt: a host-side index, then a pure gather + add.

Molmo2 ADDS each visual token to the embedding of its `<im_patch>` token (it does not replace
it). Instead of boolean scatter (not exportable), the host computes for every prompt position
the row of `visual_tokens` it receives (0 = none, i+1 = visual token i); the traced part is then
`embeds + cat([zeros, visual_tokens])[index]`.
"""
from __future__ import annotations

import torch

from molmo_edge.errors import MolmoEdgeError


class ModelInputError(MolmoEdgeError, ValueError):
    """Model inputs that do not fit together (e.g. visual tokens vs <im_patch> count)."""


def visual_token_index(input_ids: torch.Tensor, image_patch_id: int,
                       n_visual_tokens: int | None = None) -> torch.Tensor:
    """input_ids [B, S] -> index [B, S] int64: 0 on non-patch tokens, i+1 on the i-th <im_patch>.

    Patch tokens are numbered row-major over (batch, sequence), the order in which the processor
    lays out the visual tokens of a batch. With `n_visual_tokens`, a count mismatch raises
    ModelInputError (host-side check, not traced).
    """
    is_patch = input_ids == image_patch_id
    order = is_patch.reshape(-1).long().cumsum(0).reshape(is_patch.shape)
    index = order * is_patch.long()
    if n_visual_tokens is not None:
        n_patch_tokens = int(is_patch.sum())
        if n_patch_tokens != n_visual_tokens:
            raise ModelInputError(
                f"the prompt has {n_patch_tokens} <im_patch> tokens (id {image_patch_id}) but {n_visual_tokens} "
                "visual tokens were given; build input_ids and pixel values with the same processor call"
            )
    return index


def add_visual_tokens(inputs_embeds: torch.Tensor, visual_tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """inputs_embeds [B, S, D] + rows of visual_tokens [T, D] picked by index [B, S] (0 = add nothing)."""
    zero_row = torch.zeros(1, visual_tokens.shape[-1], dtype=inputs_embeds.dtype, device=inputs_embeds.device)
    table = torch.cat((zero_row, visual_tokens.to(inputs_embeds.dtype)), dim=0)  # [T+1, D]
    return inputs_embeds + table[index]  # gather -> [B, S, D]
