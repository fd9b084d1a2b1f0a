"""`constant_reshape.reshape`: torch's reshape in eager mode, one constant-shape Reshape under export."""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from molmo_edge.model.constant_reshape import reshape, resolved_shape

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("shape, target, expected", [
    ((2, 5, 12), (0, -1, 3, 4), (2, 5, 3, 4)),
    ((2, 5, 3, 4), (0, -1, 12), (2, 5, 12)),
    ((1, 6, 7, 16), (0, 3, -1, 16), (1, 3, 14, 16)),
])
def test_eager_reshape_keeps_zero_dims_and_infers_minus_one(shape, target, expected):
    x = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    y = reshape(x, target)
    assert tuple(y.shape) == expected
    assert torch.equal(y.flatten(), x.flatten())  # a reshape: same elements, same order


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="at most one -1"):
        resolved_shape((2, 3), (-1, -1))
    with pytest.raises(ValueError, match="0 at position 2 of a rank-2 input"):
        resolved_shape((2, 3), (0, -1, 0))


class SplitMerge(nn.Module):
    """[B, S, 12] -> heads [B, S, 3, 4] -> scaled -> merged back [B, S, 12]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = reshape(x, (0, -1, 3, 4))
        return reshape(heads * 2.0, (0, -1, 12))


def test_export_is_one_reshape_per_call_by_a_constant_and_runs_at_other_shapes():
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SplitMerge(), (torch.randn(2, 5, 12),), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b", 1: "s"}, "y": {0: "b", 1: "s"}})
    graph = onnx.load_from_string(buffer.getvalue()).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("Reshape") == 2 and not {"Shape", "Gather", "Slice", "Concat"} & set(ops), ops
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    assert all(node.input[1] in constants for node in graph.node if node.op_type == "Reshape")
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 7, 12)).astype(np.float32)  # not the traced (2, 5)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(y, x * 2.0)
