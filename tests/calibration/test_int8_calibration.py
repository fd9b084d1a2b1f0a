"""INT8 calibration data: frames from real video/image files, deterministic subsampling, readers that feed ORT."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from molmo_edge.calibration.int8 import (
    CalibrationInputs,
    CalibrationSet,
    CalibrationSetConfig,
    OnnxCalibrationReader,
    evenly_spaced_indices,
    frames_from_images,
    frames_from_video,
)
from molmo_edge.errors import ConfigError, SourceError


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 300))
def test_evenly_spaced_indices(n_total, max_count):
    picked = evenly_spaced_indices(n_total, max_count)
    assert len(picked) == min(n_total, max_count)
    assert all(a < b for a, b in zip(picked, picked[1:]))
    assert all(0 <= i < n_total for i in picked)
    if len(picked) >= 2:
        assert picked[0] == 0 and picked[-1] == n_total - 1
        gaps = np.diff(picked)
        assert gaps.max() - gaps.min() <= 1  # even spacing
    assert picked == evenly_spaced_indices(n_total, max_count)


def _write_video(path, n_frames: int, size=(64, 48)):
    """Frame i is uniformly grey at level 8*i, with a red square top-left (to check channel order)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for i in range(n_frames):
        frame = np.full((size[1], size[0], 3), 8 * i, np.uint8)
        frame[:8, :8] = (0, 0, 255)  # BGR red
        writer.write(frame)
    writer.release()


def test_video_frames_are_evenly_spaced_rgb(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path, 30)
    frames = list(frames_from_video(path, max_frames=5))
    assert len(frames) == 5 and all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    levels = [int(round(np.median(f[20:, 20:]) / 8)) for f in frames]
    assert levels == evenly_spaced_indices(30, 5) == [0, 7, 14, 21, 29]
    corner = frames[0][:8, :8].reshape(-1, 3).mean(axis=0)
    assert corner[0] > 200 and corner[2] < 60  # RGB order: red first
    assert len(list(frames_from_video(path))) == 30
    assert [int(round(np.median(f[20:, 20:]) / 8)) for f in CalibrationSet.from_video(path, 3)] == [0, 14, 29]


def test_broken_video_and_missing_files_raise_source_errors(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match="cannot open calibration video"):
        list(frames_from_video(bad))
    with pytest.raises(SourceError, match="not found"):
        CalibrationSet.from_video(tmp_path / "missing.mp4")
    with pytest.raises(SourceError, match="not found"):
        CalibrationSet.from_images(tmp_path / "missing")


def test_image_folder_frames_sorted_subsampled_and_unreadable_skipped(tmp_path, caplog):
    for i in range(10):
        cv2.imwrite(str(tmp_path / f"img_{i:02d}.png"), np.full((16, 24, 3), 20 * i, np.uint8))
    (tmp_path / "img_03.png").write_bytes(b"garbage")  # unreadable: skipped with a warning
    (tmp_path / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        frames = list(frames_from_images(tmp_path, max_frames=4))
    # indices 0, 3, 6, 9 of the sorted list; 3 is unreadable
    assert [int(f[0, 0, 0]) // 20 for f in frames] == [0, 6, 9]
    assert "img_03.png" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images"):
        list(frames_from_images(empty))


def test_synthetic_frames_are_deterministic():
    pytest.importorskip("molmo_edge.training.scenes", reason="the synthetic scene generator is not available")
    calibration_set = CalibrationSet.synthetic(max_frames=6, seed=3, width=64, height=48)
    first, second = list(calibration_set), list(calibration_set)
    assert len(first) == 6 and all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    other = list(CalibrationSet.synthetic(max_frames=6, seed=4, width=64, height=48))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_config_needs_a_path_for_file_sources():
    with pytest.raises(ValueError, match="needs a path"):
        CalibrationSetConfig(source="video")
    assert CalibrationSetConfig().source == "synthetic"


def _to_inputs(frame: np.ndarray) -> dict[str, np.ndarray]:
    # A stand-in for the processor: the mean colour as a [1, 3] float input in [-1, 1].
    return {"x": (frame.reshape(-1, 3).mean(axis=0, keepdims=True) / 127.5 - 1.0).astype(np.float32)}


def test_calibration_inputs_apply_the_hook_limit_and_repeat(tmp_path):
    frames = [np.full((4, 4, 3), v, np.uint8) for v in (0, 51, 102, 153, 204, 255)]
    inputs = CalibrationInputs(frames, _to_inputs, max_samples=4, progress=False)
    first = [s["x"] for s in inputs]
    assert len(first) == 4 and first[0].shape == (1, 3) and first[0].dtype == np.float32
    np.testing.assert_allclose([x[0, 0] for x in first], [-1.0, -0.6, -0.2, 0.2], atol=1e-6)
    assert all(np.array_equal(a, b["x"]) for a, b in zip(first, inputs))  # a second pass gives the same


def test_calibration_inputs_refuse_bad_hooks():
    frames = [np.zeros((2, 2, 3), np.uint8)] * 3
    with pytest.raises(ConfigError, match="non-empty dict"):
        list(CalibrationInputs(frames, lambda f: f, progress=False))
    names = iter([{"a": np.zeros(1)}, {"b": np.zeros(1)}])
    with pytest.raises(ConfigError, match="same input names"):
        list(CalibrationInputs(frames, lambda f: next(names), progress=False))
    with pytest.raises(ConfigError, match="no samples"):
        list(CalibrationInputs([], _to_inputs, progress=False))
    with pytest.raises(ConfigError, match="max_samples"):
        CalibrationInputs(frames, _to_inputs, max_samples=0)


def test_reader_checks_names_and_rewinds():
    samples = [{"x": np.full((1, 3), i, np.float32)} for i in range(3)]
    reader = OnnxCalibrationReader(samples, input_names=["x"])
    assert [reader.get_next()["x"][0, 0] for _ in range(3)] == [0, 1, 2]
    assert reader.get_next() is None and reader.samples_read == 3
    reader.rewind()
    assert reader.get_next()["x"][0, 0] == 0
    with pytest.raises(ConfigError, match=r"expects \['pixels'\]"):
        OnnxCalibrationReader(samples, input_names=["pixels"]).get_next()


def test_reader_feeds_onnxruntime_quantisation_with_the_calibration_data(tmp_path):
    """End to end: frames -> hook -> reader -> quantize_static; the activation scale is max|x| / 127."""
    from molmo_edge.export.quantize import quantize_static_int8

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], initializer=[weight])
    fp32 = tmp_path / "proj.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(fp32))
    for i in range(8):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), 10 + 30 * i, np.uint8))
    inputs = CalibrationInputs(CalibrationSet.from_images(tmp_path, max_frames=8), _to_inputs, progress=False)
    expected_scale = max(float(np.abs(s["x"]).max()) for s in inputs) / 127.0
    reader = OnnxCalibrationReader(inputs, input_names=["x"])
    quantize_static_int8(fp32, tmp_path / "proj_int8.onnx", reader)
    assert reader.samples_read == 8
    model = onnx.load(str(tmp_path / "proj_int8.onnx"))
    scales = {i.name: float(numpy_helper.to_array(i)) for i in model.graph.initializer if i.name == "x_scale"}
    assert scales["x_scale"] == pytest.approx(expected_scale, rel=1e-5)
