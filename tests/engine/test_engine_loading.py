"""load_backend / load_model: checkpoint vs bundle dispatch, and clear errors for bad paths."""
from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

import molmo_edge
from molmo_edge import ModelNotFoundError
from molmo_edge.engine import loading
from molmo_edge.engine.loading import load_backend, load_model, resolve_model_path
from molmo_edge.errors import BackendUnavailableError, BundleError, ConfigError, MolmoEdgeError


def _identity_graph(path) -> None:
    """A real one-node ONNX graph (x -> Identity -> y) to stand in for a bundle's graph file."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def make_bundle(folder, checkpoint_dir, with_engine: bool):
    """A real bundle folder (hashed manifest, config, tokenizer, one graph, optionally one engine file)."""
    from molmo_edge.export.bundle import write_manifest
    from molmo_edge.export.manifest import BundleManifest, EngineSpec, GraphSpec, TensorSpec

    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(checkpoint_dir / name, folder / name)
    _identity_graph(folder / "vit.onnx")
    spec = [TensorSpec(name="x", dtype="float32", shape=["n", 4])]
    graphs = {"vit": GraphSpec(file="vit.onnx", inputs=spec, outputs=[TensorSpec(name="y", dtype="float32",
                                                                                   shape=["n", 4])], opset=17)}
    engines = {}
    if with_engine:
        (folder / "vit.engine").write_bytes(b"not a real engine")
        engines = {"vit": EngineSpec(file="vit.engine", graph="vit", precision="fp16", tensorrt_version="10.0",
                                     device_name="test", compute_capability="8.7")}
    write_manifest(folder, BundleManifest(graphs=graphs, engines=engines))
    return folder


@pytest.fixture
def bundle_dir(tmp_path, engine_checkpoint_dir):
    return make_bundle(tmp_path / "bundle", engine_checkpoint_dir, with_engine=False)


@pytest.fixture
def engine_bundle_dir(tmp_path, engine_checkpoint_dir):
    return make_bundle(tmp_path / "bundle_trt", engine_checkpoint_dir, with_engine=True)


# ----- checkpoints -----------------------------------------------------------------------------------
def test_checkpoint_gives_the_torch_backend(engine_checkpoint_dir, torch_backend):
    for choice in ("auto", "torch"):
        with load_backend(engine_checkpoint_dir, backend=choice, device="cpu") as backend:
            assert backend.name == "torch" and backend.device.type == "cpu"
            assert backend.config == torch_backend.config
            ids, mm = backend.processor.text_prompt("hello")
            torch.testing.assert_close(backend.prefill(ids, None, mm)[0], torch_backend.prefill(ids, None, mm)[0])
    assert resolve_model_path(engine_checkpoint_dir) == (engine_checkpoint_dir, "checkpoint")


def test_load_model_gives_the_torch_model(engine_checkpoint_dir, torch_backend):
    from molmo_edge.model import Molmo2ForConditionalGeneration

    for model in (load_model(engine_checkpoint_dir), molmo_edge.load_model(engine_checkpoint_dir)):
        assert isinstance(model, Molmo2ForConditionalGeneration)
        ids, mm = torch_backend.processor.text_prompt("hello")
        with torch.no_grad():
            logits = model(ids, mm_token_type_ids=mm).logits[0, -1]
        torch.testing.assert_close(logits, torch_backend.prefill(ids, None, mm)[0])
    assert load_model(engine_checkpoint_dir, dtype="bfloat16").dtype == torch.bfloat16


def test_none_means_the_shipped_model():
    try:
        shipped = molmo_edge.default_model_path()
    except ModelNotFoundError as exc:  # not trained into the package yet: the same clear error
        with pytest.raises(ModelNotFoundError, match="shipped model is missing"):
            resolve_model_path(None)
        assert "--model" in str(exc)
    else:
        assert resolve_model_path(None) == (shipped, "checkpoint")


# ----- bad paths and bad combinations ---------------------------------------------------------------
def test_bad_paths_are_model_not_found(tmp_path, engine_checkpoint_dir):
    cases = {
        tmp_path / "nope": "does not exist",
        engine_checkpoint_dir / "config.json": "did you mean its folder",
        tmp_path: "neither a checkpoint folder",
    }
    for path, message in cases.items():
        for call in (load_backend, load_model, molmo_edge.load_model):
            with pytest.raises(ModelNotFoundError, match=message) as info:
                call(path)
            assert isinstance(info.value, MolmoEdgeError) and isinstance(info.value, FileNotFoundError)


def test_backend_and_folder_must_agree(engine_checkpoint_dir, bundle_dir):
    with pytest.raises(ConfigError, match="Export it first"):
        load_backend(engine_checkpoint_dir, backend="onnx")
    with pytest.raises(ConfigError, match="torch backend needs a checkpoint"):
        load_backend(bundle_dir, backend="torch")
    with pytest.raises(ConfigError, match="precision was fixed at export"):
        load_backend(bundle_dir, quantization="nf4")
    with pytest.raises(ConfigError, match="precision was fixed at export"):
        load_backend(bundle_dir, dtype="float16")
    with pytest.raises(ConfigError, match="unknown backend 'openvino'"):
        load_backend(engine_checkpoint_dir, backend="openvino")


# ----- bundles -----------------------------------------------------------------------------------------
def test_bundle_dispatch(bundle_dir, engine_bundle_dir, monkeypatch):
    assert resolve_model_path(bundle_dir) == (bundle_dir, "bundle")
    choose = loading._choose_bundle_backend
    assert choose(bundle_dir, "auto", None) == "onnx"
    assert choose(bundle_dir, "tensorrt", None) == "tensorrt"  # forced: the backend will say what is missing
    monkeypatch.setattr(loading, "tensorrt_available", lambda: False)
    assert choose(engine_bundle_dir, "auto", None) == "onnx"
    monkeypatch.setattr(loading, "tensorrt_available", lambda: True)
    assert choose(engine_bundle_dir, "auto", None) == "tensorrt"
    assert choose(engine_bundle_dir, "auto", "cpu") == "onnx"  # engines need a GPU
    assert choose(bundle_dir, "auto", None) == "onnx"  # no engines: TensorRT has nothing to run


def test_tensorrt_probe_does_not_lie():
    assert loading.tensorrt_available() == (importlib.util.find_spec("tensorrt") is not None)


def test_bundle_goes_to_the_onnx_backend(bundle_dir):
    """Auto on a bundle reaches molmo_edge.engine.onnx_backend: a clear BackendUnavailableError when that
    module (or onnxruntime) is missing; otherwise OnnxBackend.from_bundle itself refuses this graph-less
    bundle (what it says is the export package's business; here: that the call got there)."""
    if importlib.util.find_spec("molmo_edge.engine.onnx_backend") is None:
        with pytest.raises(BackendUnavailableError, match="onnx backend cannot be loaded"):
            load_backend(bundle_dir)
        with pytest.raises(BackendUnavailableError, match="cannot load the bundle"):
            load_model(bundle_dir)
    else:
        with pytest.raises(MolmoEdgeError) as info:
            load_backend(bundle_dir, device="cpu")
        assert any(entry.path.name == "onnx_backend.py" for entry in info.traceback)


def test_damaged_bundle_is_refused_clearly(bundle_dir):
    (bundle_dir / "vit.onnx").write_bytes(b"truncated")
    with pytest.raises(BundleError, match="vit.onnx"):
        load_backend(bundle_dir)
    (bundle_dir / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_backend(bundle_dir)
