"""The TensorRT side without TensorRT: clear errors when it is absent, engine profiles that fit the
real graphs, the crop chunking the backend uses for long clips, and the parser check on every graph."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .export_helpers import sample_image
from molmo_edge.engine import graph_io as io
from molmo_edge.errors import BackendUnavailableError, InputError

pytest.importorskip("onnxruntime")
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def wide_model(wide_dir):
    from molmo_edge.model import load_checkpoint
    from molmo_edge.processing.processor import Processor

    return load_checkpoint(wide_dir, dtype=torch.float32).eval(), Processor.from_pretrained(wide_dir)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_without_tensorrt_every_entry_point_says_what_to_install(bundles, tiny_checkpoint_dir, tmp_path):
    from molmo_edge.engine.loading import load_backend
    from molmo_edge.engine.tensorrt_backend import TensorRTBackend
    from molmo_edge.export.exporter import ExportOptions, export_bundle

    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed.*pip install tensorrt"):
        TensorRTBackend.from_bundle(bundles["tiny"])
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        load_backend(bundles["tiny"], backend="tensorrt")
    with load_backend(bundles["tiny"]) as backend:  # auto: no engines in the bundle -> ONNX Runtime
        assert backend.name == "onnx"
    with pytest.raises(BackendUnavailableError, match="--trt builds TensorRT engines.*without --trt"):
        export_bundle(tiny_checkpoint_dir, tmp_path / "engines", ExportOptions(tensorrt=True))
    assert list(tmp_path.iterdir()) == []  # failed before writing anything


@pytest.mark.parametrize("name", ["tiny", "wide"])
def test_engine_profiles_fit_the_exported_graphs(bundles, name):
    from molmo_edge.export.bundle import open_bundle
    from molmo_edge.export.trt_engines import EngineLimits, engine_max_context, graph_profiles
    from molmo_edge.model.config import Molmo2Config
    from molmo_edge.processing.config import ProcessorConfig

    bundle = open_bundle(bundles[name])
    config = Molmo2Config.from_hf_dict(bundle.manifest.config)
    processing = ProcessorConfig(**bundle.manifest.processing)
    limits = EngineLimits(max_context_tokens=4096, video_frames_per_call=16)
    profiles = {graph: graph_profiles(graph, bundle.graph(graph), config, processing, limits)
                for graph in io.GRAPH_NAMES}  # graph_profiles runs tensorrt.check_profiles on each
    vit = profiles[io.VIT][0].shapes["pixel_values"]
    assert vit.min == [1, config.vision.num_patches, config.vision.patch_dim]
    assert vit.max[0] == max(processing.max_crops + 1, 16)
    window = profiles[io.CONNECTOR][0].shapes["pooling"]
    assert window.min[1] == 4 and window.max[1] == 9  # image 2×2 and video 3×3 windows in one engine
    prefill, step = profiles[io.DECODER]
    assert prefill.shapes["past_key_0"].max[2] == 0 and prefill.shapes["input_ids"].max[1] == \
        min(4096, config.text.max_position_embeddings)
    assert step.shapes["input_ids"].min == step.shapes["input_ids"].max == [1, 1]
    assert step.shapes["attention_mask"].max[3] == step.shapes["past_key_0"].max[2] + 1
    assert engine_max_context(profiles[io.DECODER]) == min(4096, config.text.max_position_embeddings)
    # a real prompt fits the prefill profile, a decode step the step profile
    from molmo_edge.export.tensorrt_runtime import select_profile

    shapes = {"input_ids": (1, 300), "attention_mask": (1, 1, 300, 300), "past_key_0": (1, config.text.
                                                                                         num_key_value_heads, 0,
                                                                                         config.text.head_dim)}
    assert select_profile(profiles[io.DECODER], shapes) == 0
    shapes = {"input_ids": (1, 1), "attention_mask": (1, 1, 1, 301), "past_key_0": (1, config.text.num_key_value_heads,
                                                                                   300, config.text.head_dim)}
    assert select_profile(profiles[io.DECODER], shapes) == 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_frames=st.integers(1, 9), max_crops=st.integers(1, 5))
@torch.no_grad()
def test_long_clips_are_encoded_in_chunks_of_whole_frames(wide_model, n_frames, max_crops):
    """Chunked ViT + connector calls give exactly the tokens of one call (run with the torch stages)."""
    from molmo_edge.engine.tensorrt_backend import crop_chunks

    model, processor = wide_model
    clip = processor.preprocess_frames([sample_image(70, 70, seed=s) for s in range(n_frames)])
    pixels, pooling = clip.pixel_values, clip.token_pooling
    patches = model.config.vision.num_patches
    whole = model.connector(model.vision(pixels), pooling)
    chunks = crop_chunks(pooling, n_frames, patches, max_crops)
    pieces = []
    for first_crop, end_crop, first_row, end_row in chunks:
        assert 0 < end_crop - first_crop <= max_crops
        rows = pooling[first_row:end_row]
        local = torch.where(rows >= 0, rows - first_crop * patches, rows)
        assert int(local.max()) < (end_crop - first_crop) * patches
        pieces.append(model.connector(model.vision(pixels[first_crop:end_crop]), local))
    assert [c[2] for c in chunks][0] == 0 and chunks[-1][3] == pooling.shape[0]
    assert all(a[3] == b[2] for a, b in zip(chunks, chunks[1:]))  # rows covered once, in order
    assert torch.allclose(torch.cat(pieces), whole, atol=1e-5)


def test_images_whose_windows_span_too_many_crops_are_refused(bundles):
    from molmo_edge.engine.tensorrt_backend import crop_chunks
    from molmo_edge.processing.processor import Processor

    processor = Processor.from_pretrained(bundles["wide"])
    image = processor.preprocess_image(sample_image(200, 260, seed=2))
    n_crops = image.pixel_values.shape[0]
    assert crop_chunks(image.token_pooling, n_crops, 25, n_crops) == [(0, n_crops, 0, image.token_pooling.shape[0])]
    with pytest.raises(InputError, match="crops"):
        crop_chunks(image.token_pooling, n_crops, 25, 1)


def test_fixed_size_calibration_batches():
    from molmo_edge.export.trt_engines import fixed_size_batches

    samples = [{"pixel_values": np.full((n, 2, 3), n, np.float32)} for n in (3, 1, 5)]
    batches = fixed_size_batches(samples, "pixel_values", 4)
    assert [b["pixel_values"].shape for b in batches] == [(4, 2, 3), (4, 2, 3)]
    assert batches[0]["pixel_values"][:, 0, 0].tolist() == [3, 3, 3, 1]
    assert fixed_size_batches([], "pixel_values", 4) == []
