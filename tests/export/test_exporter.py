"""export_bundle: the bundle's files and manifest, the output-folder rules, external weights, --calib sources."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from .export_helpers import cached_bundle, export, sample_image
from molmo_edge.errors import CheckpointError, ConfigError

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint_dir, tmp_path_factory):
    return cached_bundle("tiny-fp32", lambda: export(tiny_checkpoint_dir, tmp_path_factory.mktemp("t") / "b"))


def test_bundle_holds_graphs_tokenizer_configs_and_a_complete_manifest(bundle, tiny_checkpoint_dir):
    from molmo_edge.export.bundle import hash_file, open_bundle
    from molmo_edge.model.config import Molmo2Config
    from molmo_edge.processing.processor import Processor

    opened = open_bundle(bundle, verify=True)
    manifest = opened.manifest
    assert sorted(manifest.files) == ["config.json", "connector.onnx", "decoder.onnx", "processor_config.json",
                                      "tokenizer.json", "vit.onnx"]
    assert sorted(p.name for p in bundle.iterdir()) == sorted([*manifest.files, "manifest.json"])
    for name, entry in manifest.files.items():
        assert hash_file(bundle / name) == entry
    assert manifest.precision == "fp32" and sorted(manifest.graphs) == ["connector", "decoder", "vit"]
    assert {k: manifest.tools[k] for k in ("onnx_opset",)} == {"onnx_opset": "17"}
    assert {"torch", "onnx", "onnxruntime", "molmo-edge"} <= set(manifest.tools)
    source = Molmo2Config.from_pretrained(tiny_checkpoint_dir)
    assert Molmo2Config.from_hf_dict(manifest.config) == source
    assert Molmo2Config.from_pretrained(bundle) == source
    assert manifest.token_ids["image_patch_id"] == source.image_patch_id
    assert manifest.token_ids["eos_token_id"] == source.stop_token_ids[0]
    assert manifest.token_ids["frame_start_token_id"] == source.frame_start_token_id
    processor, original = Processor.from_pretrained(bundle), Processor.from_pretrained(tiny_checkpoint_dir)
    assert processor.cfg == original.cfg and manifest.processing == original.cfg.model_dump(mode="json")
    image = sample_image(90, 120)
    assert torch.equal(processor("Point to the star.", images=image)["input_ids"],
                       original("Point to the star.", images=image)["input_ids"])
    pixels = manifest.graphs["vit"].inputs[0]
    assert (pixels.name, pixels.dtype, pixels.shape) == ("pixel_values", "float32", ["n_crops", 16, 588])
    pooling = manifest.graphs["connector"].inputs[1]
    assert (pooling.name, pooling.dtype, pooling.shape) == ("pooling", "int64", ["n_tokens", "window"])
    assert [t.name for t in manifest.graphs["decoder"].outputs][:3] == ["logits", "present_key_0", "present_value_0"]
    assert oct((bundle / "manifest.json").stat().st_mode & 0o777) == "0o644"


def test_output_folder_rules_and_what_can_be_exported(bundle, tiny_checkpoint_dir, tmp_path):
    from molmo_edge.export.exporter import ExportOptions, export_bundle

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty.*--overwrite"):
        export_bundle(tiny_checkpoint_dir, busy)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="already an exported bundle"):
        export_bundle(bundle, tmp_path / "again")
    with pytest.raises(ConfigError, match="is a file"):
        export_bundle(tiny_checkpoint_dir, busy / "notes.txt")
    # an empty folder is fine; --overwrite replaces whatever was there
    (tmp_path / "empty").mkdir()
    export_bundle(tiny_checkpoint_dir, tmp_path / "empty")
    export_bundle(tiny_checkpoint_dir, busy, ExportOptions(overwrite=True))
    assert not (busy / "notes.txt").exists() and (busy / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty"]  # no staging leftovers


def test_a_failed_export_leaves_nothing_behind(tiny_checkpoint_dir, tmp_path):
    from molmo_edge.export.exporter import export_bundle

    broken = tmp_path / "broken_ckpt"
    shutil.copytree(tiny_checkpoint_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    with pytest.raises(CheckpointError):
        export_bundle(broken, out_parent / "bundle")
    assert list(out_parent.iterdir()) == []


def test_external_weights_are_bundle_files_and_run_the_same(bundle, tiny_checkpoint_dir, tmp_path):
    from molmo_edge.engine.onnx_backend import OnnxBackend
    from molmo_edge.export.bundle import open_bundle

    external = export(tiny_checkpoint_dir, tmp_path / "ext", external_data=True)
    files = open_bundle(external).manifest.files
    assert {"vit.onnx.data", "connector.onnx.data", "decoder.onnx.data"} <= set(files)
    assert files["decoder.onnx"].bytes * 10 < files["decoder.onnx.data"].bytes
    with OnnxBackend.from_bundle(external, device="cpu") as a, OnnxBackend.from_bundle(bundle, device="cpu") as b:
        inputs = a.processor("Point to the circle.", images=sample_image(80, 100))
        tokens = a.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"])
        assert torch.equal(tokens, b.encode_visual(inputs["pixel_values"], inputs["image_token_pooling"]))
        assert torch.equal(a.prefill(inputs["input_ids"], tokens, inputs["mm_token_type_ids"])[0],
                           b.prefill(inputs["input_ids"], tokens, inputs["mm_token_type_ids"])[0])
    (external / "decoder.onnx.data").unlink()
    with pytest.raises(Exception, match="decoder.onnx.data is listed in the manifest but missing"):
        OnnxBackend.from_bundle(external)


def test_calibration_sources(tmp_path):
    import cv2

    from molmo_edge.export.exporter import calibration_set

    frames = list(calibration_set("synthetic:3:5", max_frames=32))
    assert len(frames) == 5 and frames[0].dtype == np.uint8 and frames[0].shape[2] == 3
    assert np.array_equal(frames[0], list(calibration_set("synthetic:3:1", 32))[0])  # seeded
    assert len(list(calibration_set(None, max_frames=3))) == 3
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), sample_image(40, 60, seed=i))
    assert len(list(calibration_set(str(folder), max_frames=3))) == 3
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(6):
        writer.write(sample_image(48, 64, seed=i))
    writer.release()
    assert len(list(calibration_set(str(video), max_frames=4))) == 4
    for bad in ("synthetic:x", "synthetic:1:0", "synthetic:1:2:3", str(tmp_path / "missing.mp4")):
        with pytest.raises(ConfigError, match="--calib"):
            calibration_set(bad, max_frames=4)


def test_options_are_validated():
    from molmo_edge.export.exporter import ExportOptions

    with pytest.raises(ValueError, match="opset 12 is not supported"):
        ExportOptions(opset=12)
    with pytest.raises(ValueError):
        ExportOptions(precision="int4")
    assert json.loads(ExportOptions(precision="int8").model_dump_json())["precision"] == "int8"
