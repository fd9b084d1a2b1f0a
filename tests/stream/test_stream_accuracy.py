"""The published stream scored against the truth, next to the offline evaluation of the same model
(molmo_edge/stream/accuracy.py, `molmo-edge eval --stream N`)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from molmo_edge.engine.engine import Engine
from molmo_edge.stream.accuracy import StreamAccuracyConfig, scene_accuracy, scene_query, stream_accuracy
from molmo_edge.training.scenes import SceneSimulator
from tests.stream.oracle_model import SceneOracleBackend

SEED, W_PX, H_PX = 7, 160, 120  # three stars and a square moving through the frame
SOURCE_FPS, DURATION_S = 5.0, 12.0


def test_the_query_names_the_most_frequent_shape():
    assert scene_query(SceneSimulator(SEED, W_PX, H_PX)) == ("star", "Track all stars.")


@pytest.mark.parametrize("stride", [2, 8])
def test_an_oracle_scores_perfect_hota_streamed_and_offline(tiny_checkpoint_dir: Path, stride: int):
    """A model that is always right must score HOTA 1 both ways: the harness lines the published
    points up with the right frames and the stream's ids with the truth's (a point put on the wrong
    frame, a frame left out of the truth or an id that changes between windows would each cost HOTA)."""
    oracle = SceneOracleBackend(tiny_checkpoint_dir, SEED, W_PX, H_PX, SOURCE_FPS, DURATION_S)
    config = StreamAccuracyConfig(duration_s=DURATION_S, source_fps=SOURCE_FPS, width=W_PX, height=H_PX,
                                  stride=stride)
    result = scene_accuracy(Engine(oracle), SEED, config)
    assert result.query == "Track all stars."
    assert result.clips == 3 and result.windows >= result.clips  # 25 sampled frames: 3 whole clips
    assert result.stream.hota == pytest.approx(1.0, abs=1e-6)
    assert result.offline.hota == pytest.approx(1.0, abs=1e-6)
    assert result.stream.id_switches == 0
    assert result.same_answers is (True if stride == 8 else None)


def test_with_stride_equal_to_window_the_stream_answers_as_the_offline_clips():
    """The shipped model: the stream's windows are then exactly the offline clips, and every window
    must get the offline answer, token for token (same cached features, same prompt)."""
    with Engine.from_pretrained(None, backend="torch", device="cpu") as engine:
        report = stream_accuracy(engine, StreamAccuracyConfig(n_scenes=1, duration_s=8.0, stride=8), progress=False)
    assert report["same_answers"] is True
    (scene,) = report["scenes"]
    assert scene["clips"] == 2 and scene["windows"] >= 2
    for side in ("stream", "offline"):
        assert 0.0 <= report[side]["hota"] <= 1.0
    assert report["hota_difference"] == pytest.approx(report["stream"]["hota"] - report["offline"]["hota"])


def test_cli_eval_stream_writes_json(tiny_checkpoint_dir: Path, tmp_path: Path, capsys):
    from molmo_edge.cli import main

    out = tmp_path / "stream.json"
    code = main(["eval", "--model", str(tiny_checkpoint_dir), "--stream", "1", "--duration", "4", "--window", "4",
                 "--stride", "4", "--max-new-tokens", "8", "--backend", "torch", "--device", "cpu", "--no-progress",
                 "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["stream"]) == set(report["offline"]) == {"hota", "deta", "assa", "id_switches"}
    assert len(report["scenes"]) == 1 and report["config"]["stride"] == report["config"]["window"] == 4
    # 4 s at 2 fps = 9 sampled frames: two 4-frame offline clips, each the same window as the stream's
    assert report["scenes"][0]["clips"] == 2 and report["scenes"][0]["same_answers"] is True
    assert "stream - offline HOTA" in capsys.readouterr().out


def test_cli_eval_stream_refuses_bad_settings(tmp_path: Path):
    from molmo_edge.cli import main

    assert main(["eval", "--stream", "0"]) != 0
    assert main(["eval", "--stream", "1", "--stride", "0"]) != 0
    assert main(["eval", "--stride", "2", "--json", str(tmp_path / "x.json")]) != 0  # --stride without --stream
    assert main(["eval", "--stream", "1", "--window", "0"]) != 0
    assert main(["eval", "--window", "4"]) != 0  # --window without --stream
    assert not (tmp_path / "x.json").exists()
