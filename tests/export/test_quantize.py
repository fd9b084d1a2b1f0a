"""FP16 / static INT8 / dynamic INT8 copies of a real exported attention block, run in ONNX Runtime.

Tolerances, relative to the fp32 output (x is N(0, 1) activations; the block's output ~ 3-4 at most):
- fp16: each rounding to fp16 has relative error <= 2^-11 ~ 4.9e-4. The block chains about eight
  such roundings on the way to the output (inputs, six matmuls, the MLP), so relative errors of a
  few 1e-3 are expected; the bound is 1e-2 of the output's largest magnitude.
- int8: a symmetric int8 step is max|a|/127, and uniform rounding noise has RMS step/sqrt(12),
  about 0.23 % of a tensor's range, per quantised tensor. Four quantised matmuls (weights and
  inputs each rounded) add up to roughly 1 %, and the residual path (not quantised) damps it; the
  bound is 5 % relative RMS error and 10 % of the largest magnitude for the worst element.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from molmo_edge.calibration.int8 import OnnxCalibrationReader
from molmo_edge.errors import ConfigError
from molmo_edge.export.quantize import (cast_target, norm_statistic_nodes, quantize_dynamic_int8,
                                         quantize_static_int8, to_fp16)
from molmo_edge.export.trt_ops import check_trt_support

FP16_MAX_REL = 1e-2
INT8_REL_RMS = 5e-2
INT8_MAX_REL = 1e-1


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _errors(reference_path, candidate_path, samples):
    """Worst (max |diff| / max |y|, ||diff|| / ||y||) over the samples."""
    reference, candidate = _session(reference_path), _session(candidate_path)
    worst_max, worst_rms = 0.0, 0.0
    for sample in samples:
        y = reference.run(None, sample)[0]
        y_hat = candidate.run(None, sample)[0]
        assert y_hat.dtype == np.float32 and y_hat.shape == y.shape and np.isfinite(y_hat).all()
        worst_max = max(worst_max, float(np.abs(y - y_hat).max() / np.abs(y).max()))
        worst_rms = max(worst_rms, float(np.linalg.norm(y - y_hat) / np.linalg.norm(y)))
    return worst_max, worst_rms


@pytest.fixture(scope="module")
def eval_samples(make_block_sample):
    rng = np.random.default_rng(123)
    return [make_block_sample(rng, seq) for seq in (4, 8, 13)]


@pytest.fixture(scope="module")
def calibration_samples(make_block_sample):
    rng = np.random.default_rng(7)  # a different draw from the evaluation samples
    return [make_block_sample(rng, 8) for _ in range(12)]


def test_fp16_is_close_halves_the_file_and_keeps_norm_statistics_fp32(block_onnx, tmp_path, eval_samples):
    out = to_fp16(block_onnx, tmp_path / "block_fp16.onnx")
    max_rel, _ = _errors(block_onnx, out, eval_samples)
    assert max_rel < FP16_MAX_REL
    assert out.stat().st_size < 0.6 * block_onnx.stat().st_size
    model = onnx.load(str(out))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    nodes = {n.name: n for n in model.graph.node}
    kept = norm_statistic_nodes(onnx.load(str(block_onnx)))
    assert len(kept) == 8  # Pow, ReduceMean, Add, Sqrt for each of the two RMSNorms
    for name in kept:
        assert types[nodes[name].output[0]] == onnx.TensorProto.FLOAT, name
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert matmuls and all(types[n.output[0]] == onnx.TensorProto.FLOAT16 for n in matmuls)
    # inputs and outputs keep float32, so callers feed the same arrays
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT] * 2


def test_fp16_norm_statistics_stay_fp32_between_the_kept_nodes(block_onnx, tmp_path, make_block_sample):
    """Activations of a few hundred (a decoder's residual stream; the shipped model's final norm sees
    ~300 on video prompts) square past fp16's 65504. Keeping Pow and ReduceMean in fp32 helps only if
    the square is not cast to fp16 on its way between them, which the converter does by itself."""
    out = to_fp16(block_onnx, tmp_path / "block_fp16.onnx")
    model = onnx.load(str(out))
    made_by = {o: n for n in model.graph.node for o in n.output}
    round_trips = [n.name for n in model.graph.node if cast_target(n) == onnx.TensorProto.FLOAT
                   and n.input[0] in made_by and cast_target(made_by[n.input[0]]) == onnx.TensorProto.FLOAT16]
    assert round_trips == []
    reference, candidate = _session(block_onnx), _session(out)
    sample = make_block_sample(np.random.default_rng(5), 8)
    sample["x"] = sample["x"] * 300.0
    # the block's update y - x (the residual x itself is exact in fp16 at this size and would hide it)
    update = reference.run(None, sample)[0] - sample["x"]
    update_fp16 = candidate.run(None, sample)[0] - sample["x"]
    assert np.isfinite(update_fp16).all()
    assert np.abs(update - update_fp16).max() / np.abs(update).max() < FP16_MAX_REL  # was 1.0 with the round trip


def test_fp16_without_norm_protection_converts_the_statistics_too(block_onnx, tmp_path):
    out = to_fp16(block_onnx, tmp_path / "plain_fp16.onnx", keep_norms_fp32=False)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    assert types["/norm1/ReduceMean_output_0"] == onnx.TensorProto.FLOAT16


def test_static_int8_for_tensorrt_is_close_symmetric_and_builds(block_onnx, tmp_path, eval_samples, calibration_samples):
    reader = OnnxCalibrationReader(calibration_samples, input_names=["x", "mask"])
    out = quantize_static_int8(block_onnx, tmp_path / "block_int8.onnx", reader)
    assert reader.samples_read == len(calibration_samples)
    max_rel, rel_rms = _errors(block_onnx, out, eval_samples)
    assert rel_rms < INT8_REL_RMS and max_rel < INT8_MAX_REL
    assert out.stat().st_size < 0.4 * block_onnx.stat().st_size
    model = onnx.load(str(out))
    zero_points = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    # per-channel weights: the qkv weight [64, 192] has one scale per output column
    assert any(list(i.dims) == [192] for i in model.graph.initializer if i.name.endswith("_scale"))
    assert check_trt_support(out, "10.3").ok


def test_static_int8_for_onnxruntime_uses_zero_points_tensorrt_refuses(block_onnx, tmp_path, calibration_samples):
    out = quantize_static_int8(block_onnx, tmp_path / "block_uint8.onnx", OnnxCalibrationReader(calibration_samples),
                               for_tensorrt=False)
    report = check_trt_support(out, "10.15")
    assert not report.ok and any("zero point must be 0" in v.reason for v in report.violations)


def test_dynamic_int8_is_close_shrinks_and_is_cpu_only(block_onnx, tmp_path, eval_samples):
    out = quantize_dynamic_int8(block_onnx, tmp_path / "block_dyn.onnx")
    max_rel, rel_rms = _errors(block_onnx, out, eval_samples)
    assert rel_rms < INT8_REL_RMS and max_rel < INT8_MAX_REL
    assert out.stat().st_size < 0.4 * block_onnx.stat().st_size
    report = check_trt_support(out, "10.15")
    assert set(report.unsupported_op_types) == {"DynamicQuantizeLinear", "MatMulInteger"}


def test_external_data_in_and_out(block_onnx, tmp_path, eval_samples, calibration_samples):
    fp16 = to_fp16(block_onnx, tmp_path / "ext" / "block_fp16.onnx", external_data=True)
    weights = fp16.with_name("block_fp16.onnx.data")
    assert weights.stat().st_size > 3 * fp16.stat().st_size  # the big weights live outside the protobuf
    inline = to_fp16(block_onnx, tmp_path / "inline_fp16.onnx")
    sample = eval_samples[0]
    np.testing.assert_array_equal(_session(fp16).run(None, sample)[0], _session(inline).run(None, sample)[0])
    # A graph with external weights stays external through quantisation (automatically).
    external_fp32 = tmp_path / "ext" / "block.onnx"
    onnx.save_model(onnx.load(str(block_onnx)), str(external_fp32), save_as_external_data=True,
                    location="block.onnx.data", size_threshold=1024)
    int8 = quantize_static_int8(external_fp32, tmp_path / "ext" / "block_int8.onnx",
                                OnnxCalibrationReader(calibration_samples))
    assert int8.with_name("block_int8.onnx.data").is_file()
    assert np.isfinite(_session(int8).run(None, sample)[0]).all()
    dyn = quantize_dynamic_int8(external_fp32, tmp_path / "ext" / "dyn.onnx")
    assert dyn.with_name("dyn.onnx.data").is_file() and np.isfinite(_session(dyn).run(None, sample)[0]).all()
    # INT8 starts from the fp32 graph
    with pytest.raises(ConfigError, match="float16 weights"):
        quantize_dynamic_int8(fp16, tmp_path / "ext" / "nope.onnx")


def test_bad_arguments_are_refused_clearly(block_onnx, tmp_path, calibration_samples):
    with pytest.raises(ConfigError, match="not found"):
        to_fp16(tmp_path / "missing.onnx", tmp_path / "o.onnx")
    with pytest.raises(ConfigError, match="not found"):
        quantize_dynamic_int8(tmp_path / "missing.onnx", tmp_path / "o.onnx")
    with pytest.raises(ConfigError, match="get_next"):
        quantize_static_int8(block_onnx, tmp_path / "o.onnx", calibration_samples)
    with pytest.raises(ConfigError, match="calibrate_method"):
        quantize_static_int8(block_onnx, tmp_path / "o.onnx", OnnxCalibrationReader(calibration_samples),
                             calibrate_method="mse")


def test_norm_pattern_finds_nothing_in_a_plain_mlp(mlp_onnx):
    assert norm_statistic_nodes(onnx.load(str(mlp_onnx))) == []
