"""The TensorRT build/run path without a GPU: argument checks, profiles, build plans, caches, errors.

The parts that call TensorRT itself run only where it is installed (a GPU machine or a Jetson);
here every test checks what happens before or around those calls.
"""
from __future__ import annotations

import ctypes
import importlib.util

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.errors import BackendUnavailableError, BundleError, ConfigError
from molmo_edge.export.manifest import EngineProfile, EngineSpec, ShapeRange, TensorSpec
from molmo_edge.export.onnx_io import describe_graph, graph_precision_facts
from molmo_edge.export.quantize import to_fp16
from molmo_edge.export.tensorrt import (
    ParserIssue,
    build_engine,
    check_profiles,
    format_parser_errors,
    plan_build,
    profile_from_dims,
    read_timing_cache,
    tensorrt_version_tuple,
    write_timing_cache,
)
from molmo_edge.export.tensorrt_calibrator import CalibrationCache, DeviceBatchFeeder, make_entropy_calibrator
from molmo_edge.export.tensorrt_runtime import (
    TensorRTEngine,
    check_engine_compatible,
    select_profile,
    torch_dtype_for,
)

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_no_tensorrt = pytest.mark.skipif(HAS_TENSORRT, reason="checks the error shown when TensorRT is absent")


# ----------------------------------------------------------------------------- build arguments

@needs_no_tensorrt
def test_build_without_tensorrt_says_how_to_install_it(mlp_onnx, tmp_path):
    profile = profile_from_dims(describe_graph(mlp_onnx).inputs, {"batch": (1, 4, 8)})
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed.*pip install tensorrt.*JetPack"):
        build_engine(mlp_onnx, tmp_path / "mlp.engine", "fp16", [profile])
    assert not (tmp_path / "mlp.engine").exists()


@needs_no_tensorrt
def test_calibrator_and_runtime_without_tensorrt_raise_the_same_error(tmp_path):
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        make_entropy_calibrator([{"x": np.zeros(2, np.float32)}], tmp_path / "calib.cache")
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        TensorRTEngine(tmp_path / "missing.engine")


def test_bad_build_arguments_are_refused_before_tensorrt_is_needed(mlp_onnx, tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "m.engine")
    with pytest.raises(ConfigError, match="fp32, fp16 or int8"):
        build_engine(mlp_onnx, tmp_path / "m.engine", precision="int4")
    with pytest.raises(ConfigError, match="workspace_bytes"):
        build_engine(mlp_onnx, tmp_path / "m.engine", workspace_bytes=0)
    with pytest.raises(ConfigError, match="should end in .engine"):
        build_engine(mlp_onnx, tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=r"dynamic inputs \['x'\].*optimisation profile"):
        build_engine(mlp_onnx, tmp_path / "m.engine")
    wrong = EngineProfile(shapes={"x": ShapeRange(min=[1, 8], opt=[1, 8], max=[1, 8])})
    with pytest.raises(ConfigError, match="axis 1 is fixed at 16"):
        build_engine(mlp_onnx, tmp_path / "m.engine", profiles=[wrong])


# ----------------------------------------------------------------------------- profiles

def test_profile_from_dims_gives_shared_dims_the_same_range():
    inputs = [TensorSpec(name="inputs_embeds", dtype="float32", shape=["batch", "seq", 64]),
              TensorSpec(name="attention_mask", dtype="float32", shape=["batch", 1, "seq", "total"]),
              TensorSpec(name="rope_table", dtype="float32", shape=[4096, 32])]
    profile = profile_from_dims(inputs, {"batch": (1, 1, 1), "seq": (1, 128, 1024), "total": (1, 640, 4096)})
    assert set(profile.shapes) == {"inputs_embeds", "attention_mask"}  # static inputs need no range
    assert profile.shapes["inputs_embeds"] == ShapeRange(min=[1, 1, 64], opt=[1, 128, 64], max=[1, 1024, 64])
    assert profile.shapes["attention_mask"].max == [1, 1, 1024, 4096]
    with pytest.raises(ConfigError, match="dynamic dimension 'total'"):
        profile_from_dims(inputs, {"batch": (1, 1, 1), "seq": (1, 2, 3)})
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        profile_from_dims(inputs, {"batch": (2, 1, 1), "seq": (1, 2, 3), "total": (1, 2, 3)})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 64), min_size=3, max_size=3).map(sorted),
       st.lists(st.integers(1, 64), min_size=3, max_size=3).map(sorted))
def test_computed_profiles_always_pass_the_profile_check(batch, seq):
    from molmo_edge.export.manifest import GraphSpec

    graph = GraphSpec(file="decoder.onnx", opset=17,
                      inputs=[TensorSpec(name="ids", dtype="int64", shape=["batch", "seq"]),
                              TensorSpec(name="mask", dtype="float32", shape=["batch", 1, "seq", "seq"])],
                      outputs=[TensorSpec(name="logits", dtype="float32", shape=["batch", 128])])
    profile = profile_from_dims(graph.inputs, {"batch": tuple(batch), "seq": tuple(seq)})
    check_profiles(graph, [profile])
    assert profile.shapes["mask"].contains([batch[1], 1, seq[1], seq[1]])


def test_check_profiles_names_what_is_wrong(mlp_onnx):
    graph = describe_graph(mlp_onnx)
    with pytest.raises(ConfigError, match="'pixels' is not an input"):
        check_profiles(graph, [EngineProfile(shapes={"pixels": ShapeRange(min=[1], opt=[1], max=[1])})])
    with pytest.raises(ConfigError, match="rank 2, the range has rank 3"):
        check_profiles(graph, [EngineProfile(shapes={"x": ShapeRange(min=[1, 16, 1], opt=[1, 16, 1], max=[1, 16, 1])})])
    with pytest.raises(ConfigError, match=r"no shape range for the dynamic inputs \['x'\]"):
        check_profiles(graph, [EngineProfile(shapes={})])


# ----------------------------------------------------------------------------- build plans

@pytest.mark.parametrize("precision, version, qdq, dtype, calibrator, flags, strong, use_calibrator", [
    ("fp32", "10.3.0", False, "float32", False, (), False, False),
    ("fp16", "10.3.0", False, "float32", False, ("FP16",), False, False),
    ("int8", "10.3.0", True, "float32", False, ("FP16", "INT8"), False, False),
    ("int8", "10.3.0", False, "float32", True, ("FP16", "INT8"), False, True),
    ("fp16", "11.0.1", False, "float16", False, (), True, False),
    ("fp16", "10.3.0", False, "float16", False, (), True, False),  # fp16 graph: strongly typed on 10.x too
    ("int8", "11.2", True, "float32", False, (), True, False),
])
def test_build_plans(precision, version, qdq, dtype, calibrator, flags, strong, use_calibrator):
    plan = plan_build(precision, version, qdq, dtype, calibrator)
    assert plan.builder_flags == flags and plan.strongly_typed is strong and plan.use_calibrator is use_calibrator


@pytest.mark.parametrize("precision, version, qdq, dtype, calibrator, message", [
    ("int8", "10.3", False, "float32", False, "int8 needs scales"),
    ("int8", "10.3", True, "float32", True, "already carries Q/DQ"),
    ("fp16", "10.3", False, "float32", True, "only used for int8"),
    ("fp32", "10.3", True, "float32", False, "build it with precision int8"),
    ("fp16", "11.0", False, "float32", False, "quantize.to_fp16"),
    ("int8", "11.0", False, "float32", False, "Q/DQ nodes"),
    ("int8", "11.0", True, "float32", True, "no INT8 calibrators"),
    ("fp16", "8.6.1", False, "float32", False, "too old"),
    ("fp32", "10.3", False, "float16", False, "has fp16 weights"),
    ("int8", "10.3", False, "float16", True, "has fp16 weights"),
    ("bf16", "10.3", False, "float32", False, "fp32, fp16 or int8"),
])
def test_impossible_build_requests_are_explained(precision, version, qdq, dtype, calibrator, message):
    with pytest.raises(ConfigError, match=message):
        plan_build(precision, version, qdq, dtype, calibrator)


def test_graph_precision_facts_read_real_graphs(block_onnx, tmp_path):
    assert graph_precision_facts(block_onnx) == (False, "float32")
    fp16 = to_fp16(block_onnx, tmp_path / "b16.onnx")
    assert graph_precision_facts(fp16) == (False, "float16")


def test_version_parsing():
    assert tensorrt_version_tuple("10.3.0.30") == (10, 3, 0)
    assert tensorrt_version_tuple("11") == (11, 0, 0)
    with pytest.raises(ConfigError):
        tensorrt_version_tuple("ten")


# ----------------------------------------------------------------------------- parser errors, caches

def test_parser_errors_name_the_failing_nodes():
    message = format_parser_errors("decoder_step.onnx", [
        ParserIssue(12, "/layers.0/attn/NonZero", "NonZero", "UNSUPPORTED_NODE", "dynamic output shape"),
        ParserIssue(-1, "", "", "INVALID_GRAPH", "opset 26 is not supported"),
    ])
    assert "2 error(s)" in message
    assert "node 12 '/layers.0/attn/NonZero' (NonZero): UNSUPPORTED_NODE: dynamic output shape" in message
    assert "the graph: INVALID_GRAPH: opset 26" in message
    assert "molmo_edge.export.trt_ops" in message
    assert "no details" in format_parser_errors("x.onnx", [])


def test_timing_cache_round_trip(tmp_path):
    path = tmp_path / "caches" / "timing.cache"
    assert read_timing_cache(path) == b"" and read_timing_cache(None) == b""
    blob = bytes(range(256)) * 3
    write_timing_cache(path, memoryview(blob))
    assert read_timing_cache(path) == blob
    assert [p.name for p in path.parent.iterdir()] == ["timing.cache"]
    with pytest.raises(ConfigError, match="not a file"):
        read_timing_cache(tmp_path)


def test_calibration_cache_is_tied_to_its_graph(tmp_path):
    table = b"TRT-1001-EntropyCalibration2\nx: 3c010a14\n"
    cache = CalibrationCache(tmp_path / "vit.calib", graph_sha256="a" * 64)
    assert cache.read() is None
    cache.write(table)
    assert cache.read() == table
    assert CalibrationCache(tmp_path / "vit.calib", graph_sha256="b" * 64).read() is None  # other graph
    assert CalibrationCache(tmp_path / "vit.calib").read() == table  # no fingerprint requested
    cache.sidecar_path.unlink()
    assert cache.read() is None  # fingerprint unknown: not trusted


def test_device_batch_feeder_orders_inputs_by_name_and_keeps_them_alive():
    samples = [{"pixels": np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * i,
                "pooling": np.array([[i, -1]], dtype=np.int64)} for i in range(3)]
    feeder = DeviceBatchFeeder(samples, device="cpu")
    for i in range(3):
        pooling_ptr, pixels_ptr = feeder.next_pointers(["pooling", "pixels"])
        # read the memory TensorRT would read, through the raw pointers
        pixels = np.ctypeslib.as_array((ctypes.c_float * 6).from_address(pixels_ptr))
        pooling = np.ctypeslib.as_array((ctypes.c_int64 * 2).from_address(pooling_ptr))
        np.testing.assert_array_equal(pixels, samples[i]["pixels"].reshape(-1))
        np.testing.assert_array_equal(pooling, [i, -1])
    assert feeder.next_pointers(["pooling", "pixels"]) is None
    assert feeder.batches_served == 3
    with pytest.raises(ConfigError, match=r"lacks the network inputs \['ids'\]"):
        DeviceBatchFeeder(samples, device="cpu").next_pointers(["ids"])


# ----------------------------------------------------------------------------- runtime helpers

def _spec(**overrides) -> EngineSpec:
    values = dict(file="vit.engine", graph="vit", precision="fp16", tensorrt_version="10.3.0.30",
                  device_name="Orin", compute_capability="8.7",
                  profiles=[EngineProfile(shapes={"x": ShapeRange(min=[1, 16], opt=[4, 16], max=[8, 16])}),
                            EngineProfile(shapes={"x": ShapeRange(min=[9, 16], opt=[16, 16], max=[64, 16])})])
    values.update(overrides)
    return EngineSpec(**values)


def test_engines_only_run_where_they_were_built():
    spec = _spec()
    check_engine_compatible(spec, "10.3.0.26", "8.7")  # same major.minor.patch, other build number
    with pytest.raises(BundleError, match="built with TensorRT 10.3.0.30, this machine has 10.4.0.*rebuild"):
        check_engine_compatible(spec, "10.4.0", "8.7")
    with pytest.raises(BundleError, match=r"built for Orin \(compute capability 8.7\).*9.0"):
        check_engine_compatible(spec, "10.3.0", "9.0")


def test_select_profile_picks_the_first_profile_that_fits():
    profiles = _spec().profiles
    assert select_profile(profiles, {"x": (4, 16)}) == 0
    assert select_profile(profiles, {"x": (9, 16)}) == 1
    assert select_profile([], {"x": (100, 16)}) == 0
    with pytest.raises(ConfigError, match=r"fit no optimisation profile.*profile 1: x \[9, 16\]..\[64, 16\]"):
        select_profile(profiles, {"x": (65, 16)})


def test_tensorrt_types_map_to_torch():
    assert torch_dtype_for("HALF") is torch.float16 and torch_dtype_for("INT64") is torch.int64
    assert torch_dtype_for("BF16") is torch.bfloat16 and torch_dtype_for("BOOL") is torch.bool


def test_onnx_graph_description_matches_the_file(mlp_onnx):
    graph = describe_graph(mlp_onnx)
    model = onnx.load(str(mlp_onnx))
    assert [t.name for t in graph.inputs] == [i.name for i in model.graph.input] == ["x"]
    assert graph.outputs[0].shape == ["batch", 8] and graph.opset == 17
