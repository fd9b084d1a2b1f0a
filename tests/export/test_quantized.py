"""FP16 and INT8 bundles: they run, they are smaller, and they stay within the tolerances of
`molmo_edge.export.verify` (relative to the output scale, and teacher-forced top-1 agreement;
the module docstring there gives the reasoning and the measured errors)."""
from __future__ import annotations

import onnx
import pytest
import torch

from .export_helpers import cached_bundle, export, sample_image, wide_checkpoint
from molmo_edge.export.trt_ops import check_trt_support

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory):
    return cached_bundle("wide-checkpoint", lambda: wide_checkpoint(tmp_path_factory.mktemp("wide_ckpt")))


@pytest.fixture(scope="module")
def wide_bundles(wide_dir, tmp_path_factory):
    def make(precision, **options):
        return cached_bundle(f"wide-{precision}", lambda: export(wide_dir, tmp_path_factory.mktemp(precision) / "b",
                                                                precision=precision, **options))

    return {"fp32": make("fp32"), "fp16": make("fp16"), "int8": make("int8", calib="synthetic:0:6")}


def _bytes(folder, graph: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(f"{graph}.onnx*"))


def _weight_bytes(path) -> int:
    """Bytes of the graph's weight tensors (the graph structure of a tiny model is a large share of its file)."""
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer if len(t.dims) >= 1)


def _ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_bundles_pass_verification_against_torch(wide_bundles, wide_dir, precision):
    from molmo_edge.export.verify import TOLERANCES, verify_bundle

    report = verify_bundle(wide_bundles[precision], wide_dir, max_new_tokens=16)
    assert report.precision == precision and report.tolerance == TOLERANCES[precision]
    assert report.ok, report.summary()
    stages = {(s.sample, s.stage) for s in report.stages}
    assert stages == {(sample, stage) for sample in ("image", "video")
                      for stage in ("vit", "connector", "visual", "prefill", "decode")}
    # the quantisation really happened: errors far above fp32's (~1e-6 relative), yet inside the bound
    worst = max(s.rel_diff for s in report.stages)
    assert 1e-4 < worst <= TOLERANCES[precision].max_rel


def test_fp16_graphs_are_half_the_size_keep_float32_io_and_suit_tensorrt(wide_bundles):
    fp32, fp16 = wide_bundles["fp32"], wide_bundles["fp16"]
    for graph in ("vit", "connector", "decoder"):
        assert _weight_bytes(fp16 / f"{graph}.onnx") < 0.55 * _weight_bytes(fp32 / f"{graph}.onnx")
        assert _bytes(fp16, graph) < 0.7 * _bytes(fp32, graph)
        model = onnx.load(str(fp16 / f"{graph}.onnx"))
        weights = [t.data_type for t in model.graph.initializer if len(t.dims) == 2]
        assert weights and all(t == onnx.TensorProto.FLOAT16 for t in weights)
        float_io = [v for v in [*model.graph.input, *model.graph.output] if v.type.tensor_type.elem_type in (1, 10)]
        assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in float_io)
        onnx.checker.check_model(str(fp16 / f"{graph}.onnx"))  # topologically sorted after conversion
        report = check_trt_support(fp16 / f"{graph}.onnx")
        assert report.ok, report.summary()


def test_int8_graphs_quantise_as_documented(wide_bundles):
    fp32, int8 = wide_bundles["fp32"], wide_bundles["int8"]
    for graph in ("vit", "connector"):  # static Q/DQ with symmetric zero points: TensorRT takes them as they are
        assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(int8 / f"{graph}.onnx")
        assert check_trt_support(int8 / f"{graph}.onnx").ok
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= _ops(int8 / "decoder.onnx")
    assert check_trt_support(int8 / "decoder.onnx").unsupported_op_types == ["DynamicQuantizeLinear", "MatMulInteger"]
    # every MatMul weight is int8; the embedding table stays float (a lookup reads one row per token,
    # so quantising it saves disk, not bandwidth) and is a big share of this small model's decoder
    decoder = onnx.load(str(int8 / "decoder.onnx"))
    float_matrices = {t.name for t in decoder.graph.initializer if len(t.dims) == 2 and t.data_type == 1}
    matmul_inputs = {name for n in decoder.graph.node if n.op_type in ("MatMul", "MatMulInteger") for name in n.input}
    assert not float_matrices & matmul_inputs
    assert _bytes(int8, "decoder") < 0.6 * _bytes(fp32, "decoder")
    assert sum(_bytes(int8, g) for g in ("vit", "connector", "decoder")) < \
        0.6 * sum(_bytes(fp32, g) for g in ("vit", "connector", "decoder"))


def test_reduced_precision_bundles_generate_through_the_backend(wide_bundles, wide_dir):
    from molmo_edge.engine.engine import Engine
    from molmo_edge.engine.loading import load_backend

    image = sample_image(120, 150, seed=4)
    with Engine(load_backend(wide_dir, device="cpu")) as reference:
        want = reference.ask_image(image, "Point to the red circle.", max_new_tokens=10)
    for precision in ("fp16", "int8"):
        with Engine(load_backend(wide_bundles[precision], device="cpu")) as engine:
            assert engine.backend.precision == precision
            got = engine.ask_image(image, "Point to the red circle.", max_new_tokens=10)
            assert got.generation.stop_reason in ("eos", "max_tokens") and got.timings_ms["total"] > 0
            # the prompt's most likely first token survives quantisation
            assert got.generation.token_ids[0] == want.generation.token_ids[0]


def test_int8_calibration_from_an_image_folder(tiny_checkpoint_dir, tmp_path):
    import cv2

    from molmo_edge.export.verify import verify_bundle

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), sample_image(60, 80, seed=i))
    bundle = export(tiny_checkpoint_dir, tmp_path / "int8", precision="int8", calib=str(folder))
    report = verify_bundle(bundle, tiny_checkpoint_dir, max_new_tokens=8)
    assert report.ok, report.summary()
    ids = torch.tensor([[1, 2, 3]])
    from molmo_edge.engine.onnx_backend import OnnxBackend

    with OnnxBackend.from_bundle(bundle) as backend:
        logits, _ = backend.prefill(ids, None, torch.zeros_like(ids))
        assert torch.isfinite(logits).all()


def test_topological_sort_restores_an_order_the_checker_and_tensorrt_accept(wide_bundles):
    import random

    import numpy as np
    import onnxruntime as ort

    from molmo_edge.export.quantize import topological_sort

    model = onnx.load(str(wide_bundles["fp32"] / "connector.onnx"))
    nodes = list(model.graph.node)
    random.Random(0).shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(model)
    topological_sort(model.graph)
    onnx.checker.check_model(model)
    feeds = {"features": np.random.default_rng(0).standard_normal((2, 25, 96)).astype(np.float32),
             "pooling": np.array([[0, 1, 5, 6], [30, 31, -1, -1]], np.int64)}
    want = ort.InferenceSession(str(wide_bundles["fp32"] / "connector.onnx")).run(None, feeds)[0]
    got = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    assert np.array_equal(got, want)
