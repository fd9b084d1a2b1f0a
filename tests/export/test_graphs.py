"""The three exported graphs: valid ONNX, TensorRT-parser friendly, and equal to the torch stages at
shapes other than the traced ones (ONNX Runtime, CPU)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from .export_helpers import sample_image
from molmo_edge.engine import graph_io as io
from molmo_edge.errors import ConfigError
from molmo_edge.export.trt_ops import check_trt_support

ort = pytest.importorskip("onnxruntime")
FORBIDDEN_OPS = {"If", "Loop", "Scan", "NonZero", "ScatterND", "ScatterElements", "Scatter"}


@pytest.fixture(scope="module")
def wide(wide_dir, bundles):
    """(torch model, processor, ONNX Runtime backend) of the wide model."""
    from molmo_edge.engine.onnx_backend import OnnxBackend
    from molmo_edge.model import load_checkpoint
    from molmo_edge.processing.processor import Processor

    backend = OnnxBackend.from_bundle(bundles["wide"], device="cpu")
    yield load_checkpoint(wide_dir, dtype=torch.float32).eval(), Processor.from_pretrained(wide_dir), backend
    backend.close()


def _close(got: np.ndarray, want: torch.Tensor | np.ndarray, rtol: float = 1e-4) -> float:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else want
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max(initial=0.0))
    assert diff <= rtol * max(1.0, float(np.abs(want).max(initial=0.0))), diff
    return diff


@pytest.mark.parametrize("name", ["tiny", "wide"])
def test_every_graph_is_valid_onnx_that_the_tensorrt_parser_takes(bundles, name):
    from molmo_edge.model.config import Molmo2Config

    folder = bundles[name]
    config = Molmo2Config.from_pretrained(folder)
    n_layers = config.text.num_hidden_layers
    expected_io = {
        io.VIT: (list(io.VIT_INPUTS), list(io.VIT_OUTPUTS)),
        io.CONNECTOR: (list(io.CONNECTOR_INPUTS), list(io.CONNECTOR_OUTPUTS)),
        io.DECODER: (io.decoder_input_names(n_layers), io.decoder_output_names(n_layers)),
    }
    for graph in io.GRAPH_NAMES:
        path = folder / f"{graph}.onnx"
        onnx.checker.check_model(str(path))
        report = check_trt_support(path)
        assert report.ok, report.summary()
        assert report.opset == 17
        model = onnx.load(str(path))
        ops = {node.op_type for node in model.graph.node}
        assert not ops & FORBIDDEN_OPS, f"{graph}: {ops & FORBIDDEN_OPS}"
        inputs, outputs = expected_io[graph]
        assert [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}] == inputs
        assert [o.name for o in model.graph.output] == outputs
    # declared shapes a runtime can rely on: static where the model fixes them
    vit_out = onnx.load(str(folder / "vit.onnx")).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in vit_out] == [io.DIM_CROPS, config.vision.num_patches,
                                                             config.vision.hidden_size * 2]
    logits = onnx.load(str(folder / "decoder.onnx")).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in logits] == [1, config.text.vocab_size]


@torch.no_grad()
def test_vit_and_connector_match_torch_for_images_and_video(wide):
    model, processor, backend = wide
    image = processor.preprocess_image(sample_image(150, 200, seed=1))  # several crops, 2×2 windows
    frames = processor.preprocess_frames([sample_image(70, 90, seed=s) for s in range(4)])  # 3×3 windows
    assert image.token_pooling.shape[1] == 4 and frames.token_pooling.shape[1] == 9
    one_crop = (image.pixel_values[:1], image.token_pooling[:4].clamp(max=model.config.vision.num_patches - 1))
    for pixels, pooling in ((image.pixel_values, image.token_pooling), (frames.pixel_values, frames.token_pooling),
                            one_crop):
        features = backend.run_graph(io.VIT, {"pixel_values": pixels.numpy()})["features"]
        _close(features, model.vision(pixels))
        torch_features = model.vision(pixels)
        tokens = backend.run_graph(io.CONNECTOR, {"features": torch_features.numpy(), "pooling": pooling.numpy()})
        _close(tokens["visual_tokens"], model.connector(torch_features, pooling))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 12), past=st.integers(0, 9), n_visual=st.integers(0, 4), seed=st.integers(0, 2**16))
@torch.no_grad()
def test_decoder_matches_torch_for_any_prompt_and_cache_length(wide, seq, past, n_visual, seed):
    """Prefill (past 0), decode steps (seq 1) and chunks after a cache: logits and present KV agree."""
    from molmo_edge.model.masks import build_attention_mask

    model, _, backend = wide
    config = model.config
    g = torch.Generator().manual_seed(seed)
    n_visual = min(n_visual, seq)
    ids = torch.randint(0, config.text.vocab_size, (1, seq), generator=g)
    patch_positions = torch.randperm(seq, generator=g)[:n_visual].sort().values
    ids[0, patch_positions] = config.image_patch_id
    mm = (ids == config.image_patch_id).long()
    visual = torch.randn(n_visual, config.text.hidden_size, generator=g) if n_visual else None
    past_kv = tuple((torch.randn(io.kv_shape(config, past), generator=g), torch.randn(io.kv_shape(config, past),
                                                                                      generator=g))
                    for _ in range(config.text.num_hidden_layers))
    # torch: the model's own embedding, mask and positions
    embeds = model.embed_inputs(ids, visual)
    mask = build_attention_mask(1, seq, past, mm_token_type_ids=mm if past == 0 else None)
    positions = torch.arange(past, past + seq)[None]
    hidden, present = model.decoder(embeds, mask, positions, past_kv if past else None)
    want_logits = model.lm_head(hidden[:, -1])

    if past == 0:
        feeds = io.prefill_feeds(ids, visual, mm, config)
    else:
        feeds = io.extend_feeds(ids[0], past, config)
        if n_visual:  # visual tokens after a cache are not a runtime path, but the graph allows it
            feeds.update({k: v for k, v in io.prefill_feeds(ids, visual, mm, config).items()
                          if k in ("visual_tokens", "visual_index")})
    feeds.update({name: t.numpy() for name, t in zip(io.past_names(config.text.num_hidden_layers),
                                                     [t for pair in past_kv for t in pair])})
    out = backend.run_graph(io.DECODER, feeds)
    _close(out["logits"], want_logits)
    for name, tensor in zip(io.present_names(config.text.num_hidden_layers), [t for pair in present for t in pair]):
        _close(out[name], tensor)


def test_integer_clip_becomes_max_so_tensorrt_can_parse_it():
    from molmo_edge.export.onnx_export import integer_clips_to_max_min

    zero = helper.make_tensor("zero", TensorProto.INT64, [], [0])
    three = helper.make_tensor("three", TensorProto.INT64, [], [3])
    graph = helper.make_graph(
        [helper.make_node("Clip", ["x", "zero", ""], ["low"], name="clip_low"),
         helper.make_node("Clip", ["low", "zero", "three"], ["y"], name="clip_both")],
        "clips", [helper.make_tensor_value_info("x", TensorProto.INT64, [5])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [5])], initializer=[zero, three])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.array([-4, -1, 0, 2, 9], np.int64)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert integer_clips_to_max_min(model) == 2
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Max", "Max", "Min"]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert before.tolist() == after.tolist() == [0, 0, 0, 2, 3]
    assert not [i for i in check_trt_support(model).notes if "Clip" in i]


def test_other_opsets_export_and_unsupported_ones_are_refused(wide, tmp_path):
    from molmo_edge.export.onnx_export import check_opset, export_vit

    model, processor, _ = wide
    with pytest.raises(ConfigError, match="opset 16 is not supported"):
        check_opset(16)
    spec = export_vit(model, tmp_path / "vit18.onnx", opset=18)
    assert spec.opset == 18 and check_trt_support(tmp_path / "vit18.onnx").ok
    pixels = processor.preprocess_frame(sample_image(70, 70)).pixel_values
    (features,) = ort.InferenceSession(str(tmp_path / "vit18.onnx")).run(None, {"pixel_values": pixels.numpy()})
    _close(features, model.vision(pixels).detach())


def test_decoder_attention_reads_no_sizes_and_copies_no_cache(bundles):
    """Head counts, head_dim and the rotary half are config ints, and every reshape in attention is
    by a constant shape (0 / -1 for batch and length): no Shape node, no size arithmetic (each such
    chain runs again at every decode step). GQA is computed with grouped queries, so no Expand
    copies the KV cache once per query head (the wide model has 8 query heads on 2 kv heads)."""
    from molmo_edge.model.config import Molmo2Config

    folder = bundles["wide"]
    text = Molmo2Config.from_pretrained(folder).text
    assert text.num_attention_heads > text.num_key_value_heads
    graph = onnx.load(str(folder / "decoder.onnx"), load_external_data=False).graph
    attention = [n for n in graph.node if "self_attn" in n.name]
    assert attention
    assert not [n.name for n in attention if n.op_type == "Shape"]
    producers = {out: node for node in graph.node for out in node.output}
    for node in attention:  # RMSNorm divides; nothing divides a size read from a shape
        if node.op_type == "Div":
            assert not {producers[i].op_type for i in node.input if i in producers} & {"Gather", "Shape"}, node.name
    # the only Expand broadcasts the additive mask (repeated per query head, [1, 1, n_rep·S, total])
    assert {n.input[0] for n in graph.node if n.op_type == "Expand"} <= {"attention_mask"}
    initializers = {t.name for t in graph.initializer}
    constants = {out for n in graph.node if n.op_type == "Constant" for out in n.output}
    for node in attention:
        if node.op_type == "Reshape":
            assert node.input[1] in initializers | constants, node.name


def test_onnx_runtime_runs_the_vit_gelu_as_one_kernel(bundles, tmp_path):
    """The ViT's tanh GELU is exported in the form ONNX Runtime fuses into FastGelu (one pass over the
    [N, P, intermediate] activations instead of eight elementwise ones)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "vit_optimized.onnx")
    ort.InferenceSession(str(bundles["wide"] / "vit.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "vit_optimized.onnx")).graph.node]
    n_blocks = ops.count("LayerNormalization") // 2  # two per pre-LN block
    assert ops.count("FastGelu") == n_blocks > 0, ops
    assert "Tanh" not in ops