"""The user JSONL format: good lines load as examples, bad lines are reported with line numbers."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molmo_edge.errors import ConfigError
from molmo_edge.grounding import parse
from molmo_edge.training.user_data import UserDataset, read_user_jsonl


def write_image(path: Path, width: int = 200, height: int = 100) -> None:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (0, 0, 255)  # BGR red left half
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def write_video(path: Path, n_frames: int = 10, fps: float = 5.0, size=(64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(n_frames):
        frame = np.full((size[1], size[0], 3), 20 * i, np.uint8)
        writer.write(frame)
    writer.release()
    return path


def write_jsonl(path: Path, lines: list) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    write_image(tmp_path / "img" / "a.png")
    write_video(tmp_path / "clip.avi")
    return tmp_path


GOOD_IMAGE = {"image": "img/a.png", "units": "px", "annotations": [
    {"task": "point", "label": "red square", "points": [[150, 20], [50, 80]]},
    {"task": "count", "label": "red squares", "points": [[50, 80], [150, 20]]},
    {"task": "point", "label": "green circle", "points": []},
    {"task": "qa", "question": "What colour is the left half?", "answer": "Red."},
]}


def test_bad_lines_are_reported_with_their_line_numbers(data_dir: Path):
    lines = [
        GOOD_IMAGE,                                                                 # 1 ok
        '{"image": "img/a.png", "annotations": [',                                  # 2 malformed JSON
        {"image": "img/missing.png", "annotations": [{"task": "qa", "question": "q", "answer": "a"}]},  # 3
        {"image": "img/a.png", "units": "px",
         "annotations": [{"task": "point", "label": "x", "points": [[250, 10]]}]},  # 4 outside 200x100
        {"image": "img/a.png", "annotations": [{"task": "dance", "label": "x"}]},   # 5 unknown task
        "",                                                                          # 6 blank: fine
        {"image": "img/a.png", "annotations": [{"task": "point", "label": "x", "points": [[0.5, 0.5]]}]},  # 7 no units
        {"video": "clip.avi", "annotations": [
            {"task": "video_point", "label": "x", "units": "norm", "points": [[9.0, 0.5, 0.5]]}]},  # 8 t > 2 s
        {"image": "img/a.png", "annotations": [{"task": "qa", "question": "q", "answer": "a"}],
         "extra_field": 1},                                                         # 9 unknown field
    ]
    path = write_jsonl(data_dir / "train.jsonl", lines)
    records, problems = read_user_jsonl(path, on_error="skip")
    assert [r.line for r in records] == [1]
    by_line = {p.line: p.message for p in problems}
    assert sorted(by_line) == [2, 3, 4, 5, 7, 8, 9]
    assert "malformed JSON" in by_line[2]
    assert "not found" in by_line[3]
    assert "outside" in by_line[4] and "200x100" in by_line[4]
    assert "task" in by_line[5]
    assert "units" in by_line[7]
    assert "outside the video" in by_line[8]
    assert "extra_field" in by_line[9]

    with pytest.raises(ConfigError) as err:
        read_user_jsonl(path, on_error="raise")
    message = str(err.value)
    assert "7 bad line(s)" in message and "line 2:" in message and "line 9:" in message


def test_no_valid_line_is_refused_in_both_modes(data_dir: Path):
    bad = write_jsonl(data_dir / "bad.jsonl", ['{"image": 3}', "[1, 2]"])
    empty = write_jsonl(data_dir / "empty.jsonl", [""])
    for mode in ("skip", "raise"):
        with pytest.raises(ConfigError, match="no valid training example|bad line"):
            read_user_jsonl(bad, on_error=mode)
    with pytest.raises(ConfigError, match="empty"):
        UserDataset(empty)
    with pytest.raises(ConfigError, match="not found"):
        UserDataset(data_dir / "nope.jsonl")


def test_image_line_becomes_examples_in_the_molmo2_grammar(data_dir: Path):
    dataset = UserDataset(write_jsonl(data_dir / "train.jsonl", [GOOD_IMAGE]))
    assert len(dataset) == 1
    examples = dataset[0]
    assert [e.kind for e in examples] == ["point", "count", "point", "qa"]
    assert all(e.media is examples[0].media for e in examples)  # one visual input, four branches
    image = examples[0].media.image
    assert image.shape == (100, 200, 3) and tuple(image[0, 0]) == (255, 0, 0)  # RGB
    assert examples[0].origin == "train.jsonl:1"

    pointed = parse(examples[0].answer)
    got = sorted((round(p.x, 3), round(p.y, 3)) for p in pointed.points)
    assert got == [(0.25, 0.8), (0.75, 0.2)]  # px / (200, 100)
    # Ids ascend in written order, so the last id is the count.
    assert [p.object_id for p in pointed.points] == [1, 2]
    counted = parse(examples[1].answer)
    assert counted.count == 2
    assert examples[2].answer == "There are none."
    assert examples[3].prompt == "What colour is the left half?" and examples[3].answer == "Red."
    assert "red square" in examples[0].prompt


def test_video_line_snaps_points_to_sampled_frames(data_dir: Path):
    line = {"video": "clip.avi", "fps": 2, "units": "px", "annotations": [
        {"task": "track", "label": "grey square", "tracks": [
            {"id": 1, "points": [[0.0, 32, 24], [0.5, 34, 24], [1.1, 36, 24]]},
            {"id": 2, "points": [[0.0, 8, 8], [1.3, 10, 8]]}]},
        {"task": "video_point", "label": "squares", "units": "norm", "points": [[0.52, 0.5, 0.5], [0.1, 0.25, 0.75]]},
        {"task": "count", "label": "squares", "units": "norm", "points": [[0.0, 0.5, 0.5]]},
    ]}
    dataset = UserDataset(write_jsonl(data_dir / "video.jsonl", [line]))
    track, pointed, counted = dataset[0]
    media = track.media
    assert media.is_video and len(media.frames) == len(media.timestamps_s) >= 4
    assert media.timestamps_s[:4] == (0.0, 0.5, 1.0, 1.5)
    assert (track.kind, pointed.kind, counted.kind) == ("track", "video_point", "video_count")
    assert track.prompt.startswith("Track") and "grey square" in track.prompt

    tracks = parse(track.answer)
    by_object = {oid: sorted((p.t_s, p.x) for p in pts) for oid, pts in tracks.by_object().items()}
    # 1.1 s snaps to the 1.0 s frame, 1.3 s to the 1.5 s frame; x in px / 64 (to the grammar's 1/1000).
    assert sorted(by_object) == [1, 2]
    assert [t for t, _ in by_object[1]] == [0.0, 0.5, 1.0] and [t for t, _ in by_object[2]] == [0.0, 1.5]
    assert [x for _, x in by_object[1]] == pytest.approx([32 / 64, 34 / 64, 36 / 64], abs=1e-3)
    assert [x for _, x in by_object[2]] == pytest.approx([8 / 64, 10 / 64], abs=1e-3)
    points = parse(pointed.answer).points
    assert sorted((p.t_s, p.x) for p in points) == [(0.0, 0.25), (0.5, 0.5)]
    assert [p.object_id for p in sorted(points, key=lambda p: p.t_s)] == [1, 2]
    assert parse(counted.answer).count == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["image", "video", "fps", "units", "annotations", "task", "label", "points",
                         "tracks", "answer", "question", "id", "x"]), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(json_values.map(json.dumps) | st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
                min_size=1, max_size=4))
def test_arbitrary_lines_are_reported_never_crash(data_dir: Path, lines):
    """Garbage in: every non-blank line is either a record or a numbered problem; nothing else."""
    path = data_dir / "fuzz.jsonl"
    path.write_bytes("\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines).encode("utf-8", "replace"))
    try:
        records, problems = read_user_jsonl(path, on_error="skip")
    except ConfigError as exc:
        assert "no valid training example" in str(exc) or "empty" in str(exc)
        return
    numbered = {r.line for r in records} | {p.line for p in problems}
    assert len(numbered) == len(records) + len(problems)
