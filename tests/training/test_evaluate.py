"""`training.evaluate` and `molmo-edge eval` on real models and real held-out scenes.

The random-init tiny checkpoint answers nonsense: the report must still have every key, count its
parse errors and score it low. An "oracle" engine that answers with the ground-truth text of the
held-out examples must score perfectly, and one that answers garbage must score zero: together
they show the numbers come from the answers, not from the pipeline.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from molmo_edge.training.evaluate import (EvalConfig, evaluate, evaluate_engine, heldout_items, heldout_seed,
                                          write_report)
from molmo_edge.training.metrics import SUMMARY_KEYS

SMALL = dict(n_image=3, n_video=2, questions_per_input=2, n_frames=3, width=64, height=64, max_new_tokens=24)


def _key(frame: np.ndarray, prompt: str) -> str:
    return hashlib.sha1(frame.tobytes() + prompt.encode()).hexdigest()


class _TextEngine:
    """Answers from a table keyed by (first frame, prompt); the same calls as the real Engine."""

    class _Answer:
        def __init__(self, text: str):
            self.text = text

    def __init__(self, table: dict[str, str], default: str = ""):
        self.table, self.default, self.calls = table, default, 0

    def encode_frame(self, frame):
        return frame

    def ask_frames(self, features, timestamps_s, text, **_):
        self.calls += 1
        return self._Answer(self.table.get(_key(features[0], text), self.default))

    def ask_image(self, image, text, **_):
        self.calls += 1
        return self._Answer(self.table.get(_key(image, text), self.default))


def _oracle(config: EvalConfig) -> _TextEngine:
    table = {}
    for _, _, examples in heldout_items(config):
        for ex in examples:
            table[_key(ex.media.frames[0], ex.prompt)] = ex.answer
    return _TextEngine(table)


def test_heldout_split_is_deterministic_and_disjoint():
    config = EvalConfig(**SMALL)
    a, b = heldout_items(config), heldout_items(config)
    assert [(s, seed) for s, seed, _ in a] == [(s, seed) for s, seed, _ in b]
    assert [ex.answer for _, _, exs in a for ex in exs] == [ex.answer for _, _, exs in b for ex in exs]
    seeds = [seed for _, seed, _ in a]
    assert len(set(seeds)) == len(seeds)
    # different split or index -> different scene seed; a different --seed -> a different set
    assert heldout_seed(1, 0, 0) != heldout_seed(1, 1, 0) != heldout_seed(1, 0, 1)
    other = heldout_items(config.model_copy(update={"seed": config.seed + 1}))
    assert not {seed for _, seed, _ in other} & set(seeds)
    # clips are videos with n_frames frames and at most video_max_objects objects
    for split, _, examples in a:
        media = examples[0].media
        assert media.is_video == (split == "video")
        if media.is_video:
            assert len(media.frames) == SMALL["n_frames"]
            assert all(len(ex.truth.target_ids) <= config.video_max_objects for ex in examples)


def test_oracle_answers_score_perfectly_and_garbage_scores_zero():
    config = EvalConfig(**{**SMALL, "n_image": 12, "n_video": 4, "questions_per_input": 3})
    oracle = _oracle(config)
    perfect = evaluate_engine(oracle, config, progress=False)
    assert oracle.calls == perfect["n_examples"] == sum(perfect["task_counts"].values()) > 0
    assert set(perfect["task_counts"]) == {"point", "count", "video_point", "video_count", "track"}
    for key in ("pointing_f1", "pointing_precision", "pointing_recall", "count_accuracy", "video_pointing_f1",
                "tracking_hota", "tracking_deta", "tracking_assa"):
        assert perfect[key] == pytest.approx(1.0), key
    assert perfect["parse_errors"] == 0 and perfect["id_switches"] == 0

    # malformed markup, control characters, an absurd number: parsed without raising, all wrong
    garbage = evaluate_engine(_TextEngine({}, default='<points coords="1 1 x">\u00df\x00 1e9'), config,
                              progress=False)
    assert garbage["n_examples"] == perfect["n_examples"]
    assert garbage["parse_errors"] > 0
    for key in ("pointing_f1", "count_accuracy", "video_pointing_f1", "tracking_hota"):
        assert garbage[key] == 0.0, key
    assert all("parse_errors" in summary for summary in garbage["per_task"].values())


def test_random_model_report_has_every_key(tiny_checkpoint, tmp_path):
    config = EvalConfig(**SMALL, keep_predictions=True)
    report = evaluate(tiny_checkpoint, config, backend="torch", device="cpu", progress=False)
    for key in SUMMARY_KEYS:
        assert key in report, key
    assert report["n_examples"] == len(report["predictions"]) > 0
    assert report["backend"] and report["model"].endswith(tiny_checkpoint.name)
    assert report["wall_s"] > 0
    assert set(report["task_counts"]) <= {"point", "count", "video_point", "video_count", "track"}
    assert sum(report["task_counts"].values()) == report["n_examples"]
    # nonsense answers are scored, never crash; an untrained model does not point well
    assert report["pointing_f1"] is None or report["pointing_f1"] < 0.9
    out = write_report(report, tmp_path / "sub" / "eval.json")
    assert json.loads(out.read_text())["n_examples"] == report["n_examples"]


def test_cli_eval_writes_json(tiny_checkpoint, tmp_path, capsys):
    from molmo_edge.cli import main

    out = tmp_path / "eval.json"
    code = main(["eval", "--model", str(tiny_checkpoint), "--n-image", "2", "--n-video", "1", "--questions", "1",
                 "--max-new-tokens", "8", "--backend", "torch", "--device", "cpu", "--no-progress", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    for key in SUMMARY_KEYS + ("model", "backend", "wall_s", "per_task", "n_inputs"):
        assert key in report, key
    assert report["n_inputs"] == {"image": 2, "video": 1}
    assert "answers scored" in capsys.readouterr().out


def test_cli_eval_refuses_bad_counts(tmp_path):
    from molmo_edge.cli import main

    assert main(["eval", "--n-image", "0", "--n-video", "0", "--json", str(tmp_path / "x.json")]) != 0
    assert main(["eval", "--n", "-1"]) != 0
    assert not (tmp_path / "x.json").exists()
