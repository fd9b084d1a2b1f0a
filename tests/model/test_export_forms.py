"""The forms the ONNX exporter traces equal the eager ones: grouped-query attention (vs SDPA over
expanded kv heads) and the rotate-half permutation matrix (vs Split -> Neg -> Concat)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from molmo_edge.model.attention import grouped_query_attention
from molmo_edge.model.layers import expand_kv_heads


@pytest.mark.parametrize("n_rep", [2, 3, 4])
@pytest.mark.parametrize("sq, past", [(1, 9), (5, 0), (4, 6)])
@pytest.mark.parametrize("with_mask", [True, False])
def test_grouped_queries_give_the_expanded_heads_result(n_rep, sq, past, with_mask):
    generator = torch.Generator().manual_seed(n_rep * 100 + sq * 10 + past)
    kv_heads, head_dim, batch = 2, 16, 2
    q = torch.randn(batch, kv_heads * n_rep, sq, head_dim, generator=generator)
    k = torch.randn(batch, kv_heads, past + sq, head_dim, generator=generator)
    v = torch.randn(batch, kv_heads, past + sq, head_dim, generator=generator)
    mask = None
    if with_mask:  # causal over the new tokens, plus one blocked past column per query row
        allowed = torch.ones(sq, past + sq, dtype=torch.bool).tril(diagonal=past)
        if past:
            allowed[:, 0] = False
        mask = torch.zeros(1, 1, sq, past + sq).masked_fill(~allowed, -1e30)
    want = F.scaled_dot_product_attention(q, expand_kv_heads(k, n_rep), expand_kv_heads(v, n_rep),
                                          attn_mask=mask, scale=head_dim ** -0.5)  # [B, H, Sq, hd]
    got = grouped_query_attention(q, k, v, mask, n_rep, head_dim)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_exported_rotate_half_is_the_same_permutation():
    from molmo_edge.model.rope import rotate_half_matrix

    x = torch.randn(2, 3, 5, 16)
    torch.testing.assert_close(x @ rotate_half_matrix(16), torch.cat((-x[..., 8:], x[..., :8]), dim=-1),
                               rtol=0, atol=0)
