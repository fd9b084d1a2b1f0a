"""Bundles: written with hashes of every file, refused with a clear error whenever they don't match."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from molmo_edge.errors import BundleError
from molmo_edge.export.bundle import MANIFEST_NAME, hash_file, is_bundle, open_bundle, read_manifest, write_manifest
from molmo_edge.export.manifest import BundleManifest, GraphSpec, TensorSpec
from molmo_edge.export.onnx_io import describe_graph


def _manifest_for(folder) -> BundleManifest:
    return BundleManifest(
        config=json.loads((folder / "config.json").read_text()),
        processing={"crop_size": 378},
        token_ids={"image_patch_id": 151938, "eos_token_id": 151645},
        graphs={"vit": describe_graph(folder / "vit.onnx")},
    )


def _write(folder) -> BundleManifest:
    return write_manifest(folder, _manifest_for(folder))


def _rewrite_manifest(folder, edit) -> None:
    data = json.loads((folder / MANIFEST_NAME).read_text())
    edit(data)
    (folder / MANIFEST_NAME).write_text(json.dumps(data))


def test_written_bundle_opens_and_lists_every_file_with_its_sha256(bundle_dir):
    written = _write(bundle_dir)
    assert sorted(written.files) == ["config.json", "processor_config.json", "tokenizer.json", "vit.onnx"]
    for name, entry in written.files.items():
        data = (bundle_dir / name).read_bytes()
        assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.bytes == len(data)
    bundle = open_bundle(bundle_dir)
    assert bundle.manifest == written
    assert bundle.graph_path("vit") == bundle_dir / "vit.onnx"
    assert bundle.tokenizer_path == bundle_dir / "tokenizer.json"
    assert bundle.graph("vit").inputs[0].name == "x" and bundle.graph("vit").inputs[0].shape == ["batch", 16]
    assert is_bundle(bundle_dir)
    # no temporary files are left behind by the atomic write
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted([*written.files, MANIFEST_NAME])


def test_unknown_graph_or_engine_names_give_helpful_errors(bundle_dir):
    _write(bundle_dir)
    bundle = open_bundle(bundle_dir)
    with pytest.raises(BundleError, match=r"no graph 'decoder_step'.*\['vit'\]"):
        bundle.graph_path("decoder_step")
    with pytest.raises(BundleError, match="no TensorRT engine 'vit'.*--tensorrt"):
        bundle.engine_path("vit")
    assert bundle.engine_for_graph("vit") is None


def test_missing_manifest_is_refused(bundle_dir):
    with pytest.raises(BundleError, match="no manifest.json.*not a molmo-edge bundle"):
        open_bundle(bundle_dir)
    assert not is_bundle(bundle_dir)
    with pytest.raises(BundleError, match="folder not found"):
        open_bundle(bundle_dir / "nope")


def test_unparseable_manifest_is_refused_with_its_position(bundle_dir):
    _write(bundle_dir)
    (bundle_dir / MANIFEST_NAME).write_text('{"format": "molmo-edge-bundle",\n "version": 1,,}')
    with pytest.raises(BundleError, match=r"not valid JSON \(line 2"):
        open_bundle(bundle_dir)
    assert not is_bundle(bundle_dir)


def test_invalid_manifest_names_the_bad_field(bundle_dir):
    _write(bundle_dir)
    _rewrite_manifest(bundle_dir, lambda d: d.update(precision="int3"))
    with pytest.raises(BundleError, match="invalid manifest: precision"):
        open_bundle(bundle_dir)


def test_other_formats_and_newer_versions_are_refused(bundle_dir):
    _write(bundle_dir)
    _rewrite_manifest(bundle_dir, lambda d: d.update(version=2, brand_new_field=True))
    with pytest.raises(BundleError, match="version 2 was written by a newer molmo-edge.*up to 1"):
        open_bundle(bundle_dir)
    _rewrite_manifest(bundle_dir, lambda d: d.update(format="some-other-tool", version=1))
    with pytest.raises(BundleError, match="not a molmo-edge bundle"):
        read_manifest(bundle_dir / MANIFEST_NAME)


def test_a_missing_listed_file_is_named(bundle_dir):
    _write(bundle_dir)
    (bundle_dir / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is listed in the manifest but missing"):
        open_bundle(bundle_dir, verify=False)


def test_tampered_file_is_refused_by_its_hash(bundle_dir):
    _write(bundle_dir)
    data = bytearray((bundle_dir / "config.json").read_bytes())
    data[2] ^= 0x01  # same size, different content
    (bundle_dir / "config.json").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="config.json does not match its sha256"):
        open_bundle(bundle_dir)
    # the cheap mode checks sizes only: a same-size edit passes it, which is what verify=True is for
    assert open_bundle(bundle_dir, verify=False).manifest.files["config.json"].bytes == len(data)


def test_truncated_file_is_refused_even_without_hashing(bundle_dir):
    _write(bundle_dir)
    graph = bundle_dir / "vit.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"vit.onnx has \d+ bytes but the manifest says"):
        open_bundle(bundle_dir, verify=False)


def test_unlisted_graph_or_engine_files_are_refused_and_other_extras_ignored(bundle_dir, caplog):
    _write(bundle_dir)
    (bundle_dir / "NOTES.txt").write_text("copied by hand")
    with caplog.at_level(logging.WARNING):
        open_bundle(bundle_dir)
    assert "NOTES.txt" in caplog.text
    shutil.copy(bundle_dir / "vit.onnx", bundle_dir / "old_vit.onnx")
    with pytest.raises(BundleError, match="old_vit.onnx is a graph/engine file that the manifest does not list"):
        open_bundle(bundle_dir, verify=False)
    (bundle_dir / "old_vit.onnx").unlink()
    (bundle_dir / "sub").mkdir()
    (bundle_dir / "sub" / "vit.engine").write_bytes(b"\0" * 16)
    with pytest.raises(BundleError, match="sub/vit.engine is a graph/engine file"):
        open_bundle(bundle_dir)


def _graph_with_input(name: str):
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])
    return helper.make_model(helper.make_graph([helper.make_node("Relu", [name], ["y"])], "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_graph_whose_io_differs_from_the_manifest_is_refused(bundle_dir):
    _write(bundle_dir)
    # An exporter bug: the graph file was replaced (and re-hashed) but its description was not updated.
    onnx.save(_graph_with_input("pixels"), str(bundle_dir / "vit.onnx"))
    new_entry = hash_file(bundle_dir / "vit.onnx").model_dump()
    _rewrite_manifest(bundle_dir, lambda d: d["files"].update({"vit.onnx": new_entry}))
    with pytest.raises(BundleError, match=r"graph 'vit' \(vit.onnx\): inputs in the file are pixels:float32\[rank 2\] "
                                          r"but the manifest lists x:float32\[rank 2\]"):
        open_bundle(bundle_dir)
    # write_manifest catches the same mistake before anything is written
    with pytest.raises(BundleError, match="inputs in the file are pixels"):
        write_manifest(bundle_dir, _manifest_for(bundle_dir).model_copy(
            update={"graphs": {"vit": GraphSpec(file="vit.onnx", opset=17, inputs=[
                TensorSpec(name="x", dtype="float32", shape=["batch", 16])], outputs=[
                TensorSpec(name="y", dtype="float32", shape=["batch", 16])])}}))


def test_graph_not_listed_in_files_is_refused(bundle_dir):
    _write(bundle_dir)
    _rewrite_manifest(bundle_dir, lambda d: d["graphs"]["vit"].update(file="connector.onnx"))
    with pytest.raises(BundleError, match="graph 'vit' file connector.onnx is not listed"):
        open_bundle(bundle_dir, verify=False)


def test_external_weight_files_are_part_of_the_bundle(bundle_dir):
    model = onnx.load(str(bundle_dir / "vit.onnx"))
    onnx.save_model(model, str(bundle_dir / "vit.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="vit.onnx.data", size_threshold=0)
    written = _write(bundle_dir)
    assert "vit.onnx.data" in written.files
    open_bundle(bundle_dir)
    # the weights file is needed: removing it is a missing file...
    data = (bundle_dir / "vit.onnx.data").read_bytes()
    (bundle_dir / "vit.onnx.data").unlink()
    with pytest.raises(BundleError, match="vit.onnx.data is listed in the manifest but missing"):
        open_bundle(bundle_dir)
    (bundle_dir / "vit.onnx.data").write_bytes(data)
    # ...and a graph pointing at weights the manifest does not cover is refused
    _rewrite_manifest(bundle_dir, lambda d: d["files"].pop("vit.onnx.data"))
    (bundle_dir / "vit.onnx.data").rename(bundle_dir / "weights.bin")
    model = onnx.load(str(bundle_dir / "vit.onnx"), load_external_data=False)
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "weights.bin"
    onnx.save(model, str(bundle_dir / "vit.onnx"))
    new_entry = hash_file(bundle_dir / "vit.onnx").model_dump()
    _rewrite_manifest(bundle_dir, lambda d: d["files"].update({"vit.onnx": new_entry}))
    with pytest.raises(BundleError, match="keeps weights in 'weights.bin', which is not a file listed"):
        open_bundle(bundle_dir)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=5000), chunk=st.integers(1, 700))
def test_chunked_hash_equals_whole_file_hash(tmp_path_factory, data, chunk):
    path = tmp_path_factory.mktemp("h") / "blob.bin"
    path.write_bytes(data)
    entry = hash_file(path, chunk_bytes=chunk)
    assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.bytes == len(data)


def test_is_bundle_never_raises(tmp_path):
    assert not is_bundle(tmp_path / "missing")
    (tmp_path / MANIFEST_NAME).write_bytes(np.arange(7, dtype=np.uint8).tobytes())
    assert not is_bundle(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("[1, 2]")
    assert not is_bundle(tmp_path)
