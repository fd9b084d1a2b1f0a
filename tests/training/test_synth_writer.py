"""`molmo-edge synth`: real media files, ground truth that loads back and matches the scenes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from molmo_edge.cli import main
from molmo_edge.errors import ConfigError
from molmo_edge.training.scenes import SceneSimulator
from molmo_edge.training.synth_writer import (GroundTruthError, load_ground_truth, load_label_map, read_media,
                                              write_synthetic_dataset)


def test_image_dataset_round_trip(tmp_path):
    gt = write_synthetic_dataset(tmp_path / "ds", n=3, seed=4, width=64, height=48, progress=False)
    loaded = load_ground_truth(tmp_path / "ds")
    assert loaded == gt and loaded.version == 1 and len(loaded.items) == 3
    for item in loaded.items:
        assert item.kind == "image" and item.file.endswith(".png") and len(item.frames) == 1
        sim = SceneSimulator(item.seed, item.width, item.height, config=loaded.scene_config)
        frame = sim.frame_at(item.frames[0].t_s)
        # PNG is lossless: the decoded image and mask are exactly the rendered ones
        assert np.array_equal(read_media(tmp_path / "ds", item)[0], frame.rgb)
        assert np.array_equal(load_label_map(tmp_path / "ds", item.frames[0]), frame.label_map)
        assert [o.object_id for o in item.frames[0].objects] == [o.object_id for o in frame.objects]
        for o in item.frames[0].objects:
            assert o.visible_fraction == pytest.approx(frame.object(o.object_id).visible_fraction)


@pytest.mark.parametrize("size", [(64, 48), (50, 34)])
def test_video_round_trip_through_opencv(tmp_path, size):
    width, height = size
    gt = write_synthetic_dataset(tmp_path, n=2, seed=1, video=True, n_frames=5, fps=2.0, width=width,
                                 height=height, progress=False)
    for item in gt.items:
        assert item.kind == "video" and item.fps == 2.0
        assert [f.t_s for f in item.frames] == [0.0, 0.5, 1.0, 1.5, 2.0]
        decoded = read_media(tmp_path, item)
        assert len(decoded) == 5
        sim = SceneSimulator(item.seed, width, height, config=gt.scene_config)
        for frame_truth, rgb in zip(item.frames, decoded):
            assert rgb.shape == (height, width, 3)
            rendered = sim.frame_at(frame_truth.t_s)
            # lossy codec: close, not equal
            assert np.abs(rgb.astype(int) - rendered.rgb.astype(int)).mean() < 12
            assert np.array_equal(load_label_map(tmp_path, frame_truth), rendered.label_map)


def test_same_seed_same_files_different_seed_different(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_synthetic_dataset(tmp_path / name, n=2, seed=seed, width=48, height=48, progress=False)
    text = {n: (tmp_path / n / "ground_truth.json").read_text() for n in "abc"}
    png = {n: (tmp_path / n / "images" / "000000.png").read_bytes() for n in "abc"}
    assert text["a"] == text["b"] and png["a"] == png["b"]
    assert text["a"] != text["c"] and png["a"] != png["c"]


def test_existing_dataset_is_not_overwritten_by_accident(tmp_path):
    write_synthetic_dataset(tmp_path, n=1, seed=0, width=32, height=32, progress=False)
    before = (tmp_path / "ground_truth.json").read_text()
    with pytest.raises(ConfigError, match="--overwrite"):
        write_synthetic_dataset(tmp_path, n=1, seed=9, width=32, height=32, progress=False)
    assert (tmp_path / "ground_truth.json").read_text() == before
    write_synthetic_dataset(tmp_path, n=1, seed=9, width=32, height=32, overwrite=True, progress=False)
    assert (tmp_path / "ground_truth.json").read_text() != before


def test_bad_ground_truth_gives_clear_errors(tmp_path):
    with pytest.raises(GroundTruthError, match="molmo-edge synth"):
        load_ground_truth(tmp_path)
    write_synthetic_dataset(tmp_path, n=1, seed=0, width=32, height=32, progress=False)
    path = tmp_path / "ground_truth.json"
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "version": 99}))
    with pytest.raises(GroundTruthError, match="upgrade"):
        load_ground_truth(tmp_path)
    path.write_text("{not json")
    with pytest.raises(GroundTruthError, match="JSON"):
        load_ground_truth(tmp_path)
    path.write_text(json.dumps({**raw, "items": [{"file": 3}]}))
    with pytest.raises(GroundTruthError, match="schema"):
        load_ground_truth(tmp_path)


def test_cli_writes_a_dataset_and_reports_bad_flags(tmp_path, capsys):
    out = tmp_path / "clips"
    rc = main(["synth", "--out", str(out), "--n", "2", "--video", "--frames", "3", "--size", "64x48",
               "--seed", "5", "--no-progress"])
    assert rc == 0 and "wrote 2 videos" in capsys.readouterr().out
    gt = load_ground_truth(out)
    assert len(gt.items) == 2 and all(len(i.frames) == 3 for i in gt.items)
    assert main(["synth", "--out", str(tmp_path / "x"), "--n", "1", "--size", "64by48"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "y"), "--n", "0"]) == 2
    (tmp_path / "a_file").write_text("not a folder")
    assert main(["synth", "--out", str(tmp_path / "a_file"), "--n", "1", "--no-progress"]) == 2
    assert "cannot create the output folder" in capsys.readouterr().err
    assert (tmp_path / "a_file").read_text() == "not a folder"
