"""Reshape by a shape that is a constant of the model, with ONNX's meaning of 0 and -1.

    reshape(q, (0, -1, num_heads, head_dim))   # [B, S, H·hd] -> [B, S, H, hd]

In the shape, 0 keeps the input's size at that position and -1 (at most one) takes what is left,
as in ONNX `Reshape`. In eager torch this is `x.reshape` with the 0s filled in. Under
`torch.onnx.export` it becomes ONE `Reshape` node whose shape is a constant initializer.

Why: a torch reshape whose sizes come from `x.shape` (`unflatten`, `flatten`, `view(b, s, ...)`)
traces as Shape -> Slice -> Concat -> Reshape, and ONNX Runtime re-runs that chain at every decode
step (with the dynamic batch and sequence axes it cannot fold it away). The sizes that vary (batch,
sequence) are exactly the ones a 0 or -1 leaves to the runtime, so the graph needs no arithmetic.
Only Python ints go in `shape`: a size read from a tensor would be frozen at its traced value.
A shape with a 0 also needs a -1: the TorchScript exporter's shape inference rejects a 0 without
one (an internal assert), so write (0, -1, H, hd) rather than (0, 0, H, hd).
"""
from __future__ import annotations

from typing import Sequence

import torch


def resolved_shape(input_shape: Sequence[int], shape: Sequence[int]) -> list[int]:
    """`shape` with each 0 replaced by the input's size at the same position (-1 left for torch)."""
    if sum(1 for size in shape if size == -1) > 1:
        raise ValueError(f"reshape to {tuple(shape)}: at most one -1")
    out = []
    for i, size in enumerate(shape):
        if size == 0:
            if i >= len(input_shape):
                raise ValueError(f"reshape to {tuple(shape)}: 0 at position {i} of a rank-{len(input_shape)} input")
            size = input_shape[i]
        out.append(int(size))
    return out


class _ConstantShapeReshape(torch.autograd.Function):
    """Traced by the TorchScript ONNX exporter through `symbolic`; only ever applied during export."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:  # noqa: D102
        return x.reshape(resolved_shape(x.shape, shape))

    @staticmethod
    def symbolic(g, x, shape: tuple[int, ...]):  # noqa: D102
        target = g.op("Constant", value_t=torch.tensor(list(shape), dtype=torch.int64))
        return g.op("Reshape", x, target)


def reshape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """x reshaped to `shape` (0 = keep that size, -1 = infer one); a single constant Reshape in ONNX."""
    if torch.onnx.is_in_onnx_export():
        return _ConstantShapeReshape.apply(x, tuple(int(size) for size in shape))
    return x.reshape(resolved_shape(x.shape, shape))


__all__ = ["reshape", "resolved_shape"]
