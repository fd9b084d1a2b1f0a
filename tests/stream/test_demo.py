"""`molmo-edge demo`: a generated video in, points printed, an annotated video and a contact sheet out."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from molmo_edge import ModelNotFoundError, default_model_path
from molmo_edge.cli import main
from molmo_edge.commands.demo import DEFAULT_SEED, run_demo
from molmo_edge.stream.annotate import track_colour_rgb
from molmo_edge.stream.sources import open_source
from tests.stream.oracle_model import SceneOracleBackend


def shipped_model_installed() -> bool:
    try:
        default_model_path()
    except ModelNotFoundError:
        return False
    return True


def count_colour(rgb: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(rgb == np.array(colour, np.uint8), axis=-1).sum())


def test_demo_draws_the_points_and_track_ids(tiny_checkpoint_dir, tmp_path):
    # The oracle answers like a perfect model, so there are points to draw. It reads frames back
    # from the lossy sample video, so it takes the nearest scene frame rather than an exact one.
    oracle = SceneOracleBackend(tiny_checkpoint_dir, DEFAULT_SEED, 320, 240, 10.0, 6.0, exact_frames=False)
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", model=oracle, duration_s=6.0, print_fn=lines.append)

    assert result.query == "Track all squares."
    for path in (result.video_path, result.annotated_path, result.contact_sheet_path, result.events_path):
        assert path.is_file() and path.stat().st_size > 0
    assert len(result.events_path.read_text().splitlines()) == len(result.events) >= 2
    window_lines = [line for line in lines if line.startswith("window ")]
    assert len(window_lines) == len(result.events) and all("#" in line for line in window_lines)

    track_ids = sorted({o.track_id for e in result.events for o in e.objects})
    assert len(track_ids) == 3  # three squares, three tracks
    sheet = cv2.imread(str(result.contact_sheet_path))[:, :, ::-1]
    with open_source(result.video_path) as source:
        raw = [frame.rgb for frame in source]
    for track_id in track_ids:
        colour = track_colour_rgb(track_id)
        drawn = count_colour(sheet, colour)
        already_there = max(count_colour(frame, colour) for frame in raw)
        assert drawn > 50 * max(1, already_there), f"track {track_id}: its marks are not on the contact sheet"

    annotated = cv2.VideoCapture(str(result.annotated_path))
    n_frames = int(annotated.get(cv2.CAP_PROP_FRAME_COUNT))
    annotated.release()
    assert n_frames == len(raw)  # every frame of the video, annotated


def test_demo_cli_with_a_model(tiny_checkpoint_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["demo", "--out", str(out), "--model", str(tiny_checkpoint_dir), "--duration", "3",
                 "--max-new-tokens", "4", "--seed", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "window" in printed and str(out / "contact_sheet.png") in printed
    for name in ("sample.mp4", "annotated.mp4", "contact_sheet.png", "events.jsonl"):
        assert (out / name).is_file()
    assert cv2.imread(str(out / "contact_sheet.png")) is not None


@pytest.mark.skipif(shipped_model_installed(), reason="the shipped model is installed: no fallback to check")
def test_demo_without_a_shipped_model_says_so_and_falls_back_only_when_allowed(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "shipped model" in error and "--allow-random-model" in error and "--model" in error
    assert not out.exists()  # nothing written before the model question was settled

    assert main(["demo", "--out", str(out), "--allow-random-model", "--duration", "2", "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert "RANDOM-INIT" in captured.out and "RANDOM-INIT" in captured.err
    assert (out / "contact_sheet.png").is_file() and (out / "random-tiny-model" / "config.json").is_file()


def test_demo_refuses_a_scene_with_nothing_to_track(tmp_path):
    from molmo_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="no object"):
        run_demo(tmp_path, model=Path("unused"), seed=4)  # scene 4 is empty


def _event(seq: int, t0: float, t1: float, points: list[tuple[int, float]]):
    from molmo_edge.stream.events import Event, EventObject

    objects = [EventObject(track_id=tid, x=0.5, y=0.5, u_px=32.0, v_px=24.0, t_s=t) for tid, t in points]
    return Event(stream_id="s", seq=seq, query="Track all stars.", query_index=0, window_t0_s=t0, window_t1_s=t1,
                 stamp_ns=1, frame_width_px=64, frame_height_px=48, objects=objects)


def test_the_newest_window_decides_what_is_drawn_on_a_frame():
    from molmo_edge.stream.annotate import objects_by_frame, pick_evenly

    first = _event(0, 0.0, 1.5, [(1, 0.0), (1, 0.5), (1, 1.0), (2, 1.5)])
    second = _event(1, 1.0, 2.5, [(1, 1.0), (1, 2.5)])  # no longer sees track 2 at 1.5 s
    by_time = objects_by_frame([first, second])
    assert [o.track_id for o in by_time[1.5]] == []
    assert [o.track_id for o in by_time[0.5]] == [1]  # outside the newer window: kept
    assert by_time[1.0][0] is second.objects[0]
    assert pick_evenly(list(range(20)), 3) == [0, 10, 19]
