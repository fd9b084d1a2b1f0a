"""Multi-head attention for the three stages.

- `ProjectedAttention`: q/k/v/o projections with biases, no positions; self-attention in the ViT,
  cross-attention (one query per pooling window) in the connector.
- `DecoderAttention`: the LLM's attention: GQA, q/k RMSNorm (Qwen3 per head or OLMo over the full
  projection), rotary positions, a KV cache passed in and returned as plain tensors.

In eager torch, attention goes through `scaled_dot_product_attention` with an explicit additive
float mask (0 = attend, finite large negative = blocked) and explicitly expanded kv heads; it
matches the reference to fp32 rounding. Under ONNX export, GQA attention is written with grouped
queries instead (`grouped_query_attention`): the same sums without copying the KV cache once per
query head. Both are plain MatMul/Softmax in ONNX opset 17.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from molmo_edge.model.config import TextConfig
from molmo_edge.model.constant_reshape import reshape
from molmo_edge.model.layers import RMSNorm, expand_kv_heads
from molmo_edge.model.masks import mask_to_dtype
from molmo_edge.model.rope import apply_rotary

KVPair = tuple[torch.Tensor, torch.Tensor]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, n_rep: int,
           head_dim: int) -> torch.Tensor:
    """q [B, H, Sq, hd], k/v [B, Hkv, Skv, hd], mask [B|1, 1, Sq, Skv] additive or None -> [B, Sq, H·hd].

    n_rep = H / Hkv and head_dim are passed as Python ints (static facts of the config, not read
    from shapes): SDPA's default scale is computed from q's shape at run time, which the ONNX
    exporter turns into a Shape -> Sqrt -> Div chain in every attention of every decode step.
    """
    num_heads = q.shape[1]  # a Python int, also while tracing: the head count is a constant of the model
    if n_rep > 1 and torch.onnx.is_in_onnx_export():
        out = grouped_query_attention(q, k, v, mask, n_rep, head_dim)
    else:
        k, v = expand_kv_heads(k, n_rep), expand_kv_heads(v, n_rep)
        if mask is not None:
            mask = mask_to_dtype(mask, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=head_dim ** -0.5)  # [B, H, Sq, hd]
    return reshape(out.transpose(1, 2), (0, -1, num_heads * head_dim))  # [B, Sq, H·hd]


def grouped_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                            n_rep: int, head_dim: int) -> torch.Tensor:
    """The same attention as SDPA over `expand_kv_heads` (q [B, H, Sq, hd], k/v [B, Hkv, Skv, hd],
    mask [B|1, 1, Sq, Skv]) -> [B, H, Sq, hd], without materialising the expanded k and v.

    Query head h uses kv head h // n_rep, so the n_rep query heads of kv head j are rows of one
    [n_rep·Sq, hd] matrix that multiplies k_j directly. Why: at a decode step the expand copied the
    whole cache twice per layer (k and v, [B, H, Skv, hd]) and the score MatMul read it at H heads;
    on the shipped model's 478-token window that was about a quarter of the ONNX decode step.
    """
    num_heads = q.shape[1]
    grouped = reshape(q * head_dim ** -0.5, (0, num_heads // n_rep, -1, head_dim))  # [B, Hkv, n_rep·Sq, hd]
    scores = torch.matmul(grouped, k.transpose(-1, -2))  # [B, Hkv, n_rep·Sq, Skv]
    if mask is not None:
        # row r·Sq + s of a group is query position s: the mask rows, repeated once per query head
        scores = scores + mask_to_dtype(mask, q.dtype).repeat(1, 1, n_rep, 1)
    out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B, Hkv, n_rep·Sq, hd]
    return reshape(out, (0, num_heads, -1, head_dim))  # [B, H, Sq, hd]


def split_heads(x: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """[B, S, heads·hd] -> [B, heads, S, hd]. The head counts are config ints, so the exported graph
    reshapes by a constant instead of by sizes read from the tensor at run time."""
    return reshape(x, (0, -1, num_heads, head_dim)).transpose(1, 2)


class ProjectedAttention(nn.Module):
    """Biased q/k/v/o attention without positions (ViT blocks and the connector's pooling)."""

    def __init__(self, in_size: int, out_size: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 bias: bool = True) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.q_proj = nn.Linear(in_size, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(in_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(in_size, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, out_size, bias=bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, Sq, in] attends to context [B, Skv, in] (x itself when None) -> [B, Sq, out]."""
        context = x if context is None else context
        q = split_heads(self.q_proj(x), self.num_heads, self.head_dim)
        k = split_heads(self.k_proj(context), self.num_kv_heads, self.head_dim)
        v = split_heads(self.v_proj(context), self.num_kv_heads, self.head_dim)
        return self.o_proj(attend(q, k, v, mask, self.num_heads // self.num_kv_heads, self.head_dim))


class DecoderAttention(nn.Module):
    """Self-attention of one decoder layer, with rotary positions and a KV cache."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.qk_norm_type = config.qk_norm_type
        hidden = config.hidden_size
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden, q_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(hidden, kv_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(hidden, kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_size, hidden, bias=False)
        per_head = config.qk_norm_type == "qwen3"
        self.q_norm = RMSNorm(self.head_dim if per_head else q_size, eps=config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim if per_head else kv_size, eps=config.rms_norm_eps)

    def queries_keys(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> KVPair:
        """x [B, S, D] -> (q [B, H, S, hd], k [B, Hkv, S, hd]), normed and rotated as attention uses them.

        Separate from forward so training can score this layer's attention (training/pointing_attention.py)."""
        q, k = self.q_proj(x), self.k_proj(x)
        if self.qk_norm_type == "olmo":  # normalise the whole projection, before the head split
            q, k = self.q_norm(q), self.k_norm(k)
        q = reshape(q, (0, -1, self.num_heads, self.head_dim))  # [B, S, H, hd]
        k = reshape(k, (0, -1, self.num_kv_heads, self.head_dim))
        if self.qk_norm_type == "qwen3":  # normalise each head's vector
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, H, S, hd]
        return apply_rotary(q, cos, sin, self.head_dim), apply_rotary(k, cos, sin, self.head_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past: KVPair | None = None) -> tuple[torch.Tensor, KVPair]:
        """x [B, S, D], cos/sin [B, S, hd], mask [B, 1, S, S_past+S], past k/v [B, Hkv, S_past, hd].

        Returns (out [B, S, D], (k, v) [B, Hkv, S_past+S, hd]).
        """
        q, k = self.queries_keys(x, cos, sin)
        v = split_heads(self.v_proj(x), self.num_kv_heads, self.head_dim)
        if past is not None:
            k = torch.cat((past[0].to(k.dtype), k), dim=2)
            v = torch.cat((past[1].to(v.dtype), v), dim=2)
        return self.o_proj(attend(q, k, v, mask, self.num_heads // self.num_kv_heads, self.head_dim)), (k, v)
