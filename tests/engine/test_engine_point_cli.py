"""`molmo-edge point`: the real CLI in a subprocess on a generated PNG, and its error exits."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from molmo_edge.cli import main
from molmo_edge.commands.point import draw_points, print_points
from molmo_edge.engine.engine import Answer
from molmo_edge.engine.generation import GenerationResult
from molmo_edge.grounding import parse

OUTCOME_LINES = ("There are none.", "No points in the answer.")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molmo_edge", "point", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def scene_png(tmp_path):
    """A 160x120 PNG with a red circle and a blue square on grey."""
    image_bgr = np.full((120, 160, 3), 128, np.uint8)
    cv2.circle(image_bgr, (50, 60), 18, (0, 0, 255), -1)
    cv2.rectangle(image_bgr, (100, 30), (130, 60), (255, 0, 0), -1)
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), image_bgr)
    return path


def test_point_prints_points_json_and_draws(scene_png, engine_checkpoint_dir, tmp_path):
    out_png = tmp_path / "out" / "annotated.png"
    done = run_cli(str(scene_png), "--query", "red circle", "--model", str(engine_checkpoint_dir),
                   "--device", "cpu", "--max-new-tokens", "24", "--json", "--out", str(out_png))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["prompt"].startswith("Point to red circle")
    assert report["image"] == {"path": str(scene_png), "width_px": 160, "height_px": 120}
    assert report["backend"] == "torch"
    # the reported points are exactly what the grounding parser reads from the reported text
    parsed = parse(report["text"], kind_hint="image")
    assert [(p["x_norm"], p["y_norm"]) for p in report["points"]] == [(p.x, p.y) for p in parsed.points]
    assert report["none"] == parsed.none
    assert [(p["u_px"], p["v_px"]) for p in report["points"]] == [p.to_pixels(160, 120) for p in parsed.points]
    assert set(report["timings_ms"]) == {"vision", "prefill", "decode", "total"}
    assert "ms" in done.stderr and "wrote" in done.stderr
    annotated = cv2.imread(str(out_png))
    assert annotated is not None and annotated.shape == (120, 160, 3)


def test_point_text_output(scene_png, engine_checkpoint_dir):
    done = run_cli(str(scene_png), "--query", "blue square", "--model", str(engine_checkpoint_dir),
                   "--device", "cpu", "--max-new-tokens", "16")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] in OUTCOME_LINES or lines[0].split(" point")[0].isdigit(), done.stdout
    assert lines[-1].startswith("answer: ")


def test_corrupt_image_exits_2(tmp_path, engine_checkpoint_dir):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    done = run_cli(str(corrupt), "--query", "red circle", "--model", str(engine_checkpoint_dir))
    assert done.returncode == 2
    assert "cannot decode" in done.stderr and "broken.png" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("case, message", [
    ("missing_image", "does not exist"),
    ("folder_as_image", "is not a file"),
    ("bad_model", "neither a checkpoint folder"),
    ("bad_backend_for_checkpoint", "Export it first"),
])
def test_errors_exit_2_with_one_line(case, message, scene_png, engine_checkpoint_dir, tmp_path, capsys):
    image, model, extra = str(scene_png), str(engine_checkpoint_dir), []
    if case == "missing_image":
        image = str(tmp_path / "nope.png")
    elif case == "folder_as_image":
        image = str(tmp_path)
    elif case == "bad_model":
        model = str(tmp_path)
    else:
        extra = ["--backend", "onnx"]
    rc = main(["point", image, "--query", "red circle", "--model", model, *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def fake_answer(text: str, size=(200, 100)) -> Answer:
    """An Answer around a given model text (the output formatting is what is tested here)."""
    return Answer(text=text, grounding=parse(text, kind_hint="image"), timings_ms={},
                  generation=GenerationResult(text, [], "eos"), image_sizes=[size])


def test_print_points_formats(capsys):
    print_points(fake_answer('<points coords="1 1 500 250 2 100 900">red circle</points>'))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2 points (red circle):"
    assert "object 1: x_norm 0.500 y_norm 0.250" in lines[1] and "u_px 100.0 v_px 25.0" in lines[1]
    assert "object 2: x_norm 0.100 y_norm 0.900" in lines[2] and "u_px 20.0 v_px 90.0" in lines[2]
    print_points(fake_answer("There are none."))
    assert capsys.readouterr().out.splitlines()[0] == "There are none."
    print_points(fake_answer("a cat"))
    assert capsys.readouterr().out.splitlines()[0] == "No points in the answer."


def test_draw_points_marks_the_points(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)
    answer = fake_answer('<points coords="1 1 500 250">red circle</points>')
    out = draw_points(image, answer.points_px(), tmp_path / "a.png")
    drawn = cv2.imread(str(out))[:, :, ::-1]
    assert drawn[25, 100].any() and not drawn[90, 10].any()  # marked at (u 100, v 25), untouched far away
    from molmo_edge.errors import InputError

    with pytest.raises(InputError, match="cannot write"):
        draw_points(image, answer.points_px(), tmp_path / "a.unknown_ext")
