"""BundleManifest: the schema validates what it promises and survives a JSON round trip."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from molmo_edge.export.manifest import (
    DTYPE_NAMES,
    SUPPORTED_MANIFEST_VERSION,
    BundleManifest,
    EngineProfile,
    EngineSpec,
    FileEntry,
    GraphSpec,
    ShapeRange,
    TensorSpec,
    tool_versions,
)

dims = st.one_of(st.integers(0, 4096), st.sampled_from(["batch", "seq", "past_seq", "n_crops"]))
tensor_specs = st.builds(
    TensorSpec,
    name=st.text("abcdefghij_0123456789", min_size=1, max_size=12),
    dtype=st.sampled_from(DTYPE_NAMES),
    shape=st.lists(dims, max_size=5),
)


@settings(max_examples=60, deadline=None)
@given(inputs=st.lists(tensor_specs, max_size=4, unique_by=lambda t: t.name),
       precision=st.sampled_from(["fp32", "fp16", "int8", "mixed"]),
       token_ids=st.dictionaries(st.sampled_from(["bos", "eos", "image_patch_id"]), st.integers(0, 200_000)))
def test_manifest_json_round_trip(inputs, precision, token_ids):
    outputs = [TensorSpec(name="out_" + t.name, dtype=t.dtype, shape=t.shape) for t in inputs]
    manifest = BundleManifest(
        precision=precision, token_ids=token_ids, config={"text_config": {"hidden_size": 64}},
        graphs={"vit": GraphSpec(file="vit.onnx", inputs=inputs, outputs=outputs, opset=17)},
        files={"vit.onnx": FileEntry(sha256="ab" * 32, bytes=10)},
    )
    again = BundleManifest.model_validate_json(manifest.to_json())
    assert again == manifest
    assert again.version == SUPPORTED_MANIFEST_VERSION and again.format == "molmo-edge-bundle"


def test_unknown_fields_and_values_are_refused():
    with pytest.raises(ValidationError, match="precision"):
        BundleManifest(precision="int4")
    with pytest.raises(ValidationError, match="Extra inputs"):
        BundleManifest.model_validate({"format": "molmo-edge-bundle", "version": 1, "precison": "fp16"})
    with pytest.raises(ValidationError, match="unknown dtype"):
        TensorSpec(name="x", dtype="float", shape=[1])
    with pytest.raises(ValidationError, match="negative"):
        TensorSpec(name="x", dtype="float32", shape=[-1])
    with pytest.raises(ValidationError, match="sha256"):
        FileEntry(sha256="xyz", bytes=1)


@pytest.mark.parametrize("bad", ["../escape.onnx", "/abs/vit.onnx", "a//b.onnx", "./vit.onnx", "dir\\vit.onnx", "C:vit.onnx"])
def test_file_names_must_stay_inside_the_bundle(bad):
    with pytest.raises(ValidationError):
        BundleManifest(files={bad: FileEntry(sha256="0" * 64, bytes=0)})
    with pytest.raises(ValidationError):
        GraphSpec(file=bad, inputs=[], outputs=[], opset=17)


def test_manifest_cannot_list_itself_and_engines_must_name_a_graph():
    with pytest.raises(ValidationError, match="itself"):
        BundleManifest(files={"manifest.json": FileEntry(sha256="0" * 64, bytes=0)})
    engine = EngineSpec(file="vit.engine", graph="vit", precision="fp16", tensorrt_version="10.3.0",
                        device_name="Orin", compute_capability="8.7")
    with pytest.raises(ValidationError, match="not in graphs"):
        BundleManifest(engines={"vit": engine})
    ok = BundleManifest(graphs={"vit": GraphSpec(file="vit.onnx", inputs=[], outputs=[], opset=17)}, engines={"vit": engine})
    assert ok.engines["vit"].compute_capability == "8.7"


def test_duplicate_tensor_names_in_a_graph_are_refused():
    x = TensorSpec(name="x", dtype="float32", shape=[1])
    with pytest.raises(ValidationError, match="used twice"):
        GraphSpec(file="g.onnx", inputs=[x], outputs=[x], opset=17)


def test_created_utc_must_carry_a_timezone_and_is_stored_as_utc():
    with pytest.raises(ValidationError, match="timezone"):
        BundleManifest(created_utc=datetime(2025, 1, 1, 12, 0))
    from datetime import timedelta

    local = datetime(2025, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert BundleManifest(created_utc=local).created_utc == datetime(2025, 1, 1, 10, 0, tzinfo=timezone.utc)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=4),
       st.lists(st.integers(0, 60), min_size=1, max_size=4))
def test_shape_range_validation_and_contains(triples, shape):
    ordered = all(a <= b <= c for a, b, c in triples)
    lo, mid, hi = ([t[i] for t in triples] for i in range(3))
    if not ordered:
        with pytest.raises(ValidationError):
            ShapeRange(min=lo, opt=mid, max=hi)
        return
    shape_range = ShapeRange(min=lo, opt=mid, max=hi)
    expected = len(shape) == len(lo) and all(a <= s <= c for s, (a, _, c) in zip(shape, triples))
    assert shape_range.contains(shape) == expected
    assert shape_range.contains(mid)


def test_shape_range_ranks_must_agree():
    with pytest.raises(ValidationError, match="rank"):
        ShapeRange(min=[1], opt=[1, 2], max=[1, 2])
    profile = EngineProfile(shapes={"x": ShapeRange(min=[1, 16], opt=[4, 16], max=[8, 16])})
    assert profile.shapes["x"].contains((8, 16)) and not profile.shapes["x"].contains((9, 16))


def test_tool_versions_names_the_installed_tools():
    versions = tool_versions()
    for name in ("molmo-edge", "torch", "onnx", "onnxruntime"):
        assert versions.get(name), f"{name} missing from {versions}"
