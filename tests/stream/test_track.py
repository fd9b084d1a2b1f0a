"""`molmo-edge track VIDEO --query TEXT --jsonl OUT` on a real video file and a real (tiny) model."""
from __future__ import annotations

import json

import cv2

from molmo_edge.cli import main
from molmo_edge.stream.events import Event
from tests.stream.stream_media import write_mjpg_avi


def test_track_writes_one_event_per_line(tiny_checkpoint_dir, tmp_path, capsys):
    video = write_mjpg_avi(tmp_path / "clip.avi", n_frames=40, fps=10.0)  # 4 s: 8 frames at 2 fps
    out = tmp_path / "out" / "events.jsonl"
    code = main(["track", str(video), "--query", "Track the red circle.", "--query", "count: stars",
                 "--jsonl", str(out), "--model", str(tiny_checkpoint_dir), "--window", "4", "--stride", "2",
                 "--max-new-tokens", "4", "--annotate", str(tmp_path / "annotated.avi"),
                 "--contact-sheet", str(tmp_path / "sheet.png")])
    assert code == 0
    events = [Event.from_dict(json.loads(line)) for line in out.read_text().splitlines()]
    assert len(events) == 6  # windows after frames 4, 6, 8; two queries
    assert [(e.query_index, e.seq) for e in events] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert [e.window_t1_s for e in events[::2]] == [1.5, 2.5, 3.5]
    captured = capsys.readouterr()
    assert len([line for line in captured.out.splitlines() if line.startswith("[")]) == 6
    assert "6 events from 3 windows" in captured.err
    capture = cv2.VideoCapture(str(tmp_path / "annotated.avi"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
    capture.release()
    assert cv2.imread(str(tmp_path / "sheet.png")) is not None


def test_track_rewrites_the_output_file(tiny_checkpoint_dir, tmp_path):
    video = write_mjpg_avi(tmp_path / "clip.avi", n_frames=20, fps=10.0)
    out = tmp_path / "events.jsonl"
    out.write_text("stale line from an earlier run\n")
    assert main(["track", str(video), "--query", "Track all stars.", "--jsonl", str(out), "--quiet",
                 "--model", str(tiny_checkpoint_dir), "--window", "2", "--max-new-tokens", "2"]) == 0
    lines = out.read_text().splitlines()
    assert lines and all(json.loads(line)["v"] == 1 for line in lines)


def test_track_errors_are_one_line(tmp_path, capsys):
    assert main(["track", str(tmp_path / "missing.mp4"), "--query", "Track all stars.",
                 "--jsonl", str(tmp_path / "x.jsonl")]) == 2
    assert "no such video" in capsys.readouterr().err
    video = write_mjpg_avi(tmp_path / "clip.avi", n_frames=5, fps=10.0)
    previous = tmp_path / "previous.jsonl"
    previous.write_text('{"v": 1}\n')
    assert main(["track", str(video), "--query", "Track all stars.", "--jsonl", str(previous),
                 "--window", "2", "--stride", "3", "--model", str(tmp_path)]) == 2
    assert "stride" in capsys.readouterr().err
    assert main(["track", str(video), "--query", "Track all stars.", "--jsonl", str(previous),
                 "--model", str(tmp_path / "no-model")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert previous.read_text() == '{"v": 1}\n'  # a refused run loses nothing
