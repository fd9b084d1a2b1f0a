"""`verify_bundle` and `molmo-edge export --verify`: pass on a faithful export, fail on a wrong one."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from .export_helpers import cached_bundle, export

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint_dir, tmp_path_factory):
    return cached_bundle("tiny-fp32", lambda: export(tiny_checkpoint_dir, tmp_path_factory.mktemp("t") / "b"))


def test_a_faithful_fp32_bundle_passes(bundle, tiny_checkpoint_dir):
    from molmo_edge.export.verify import verify_bundle

    report = verify_bundle(bundle, tiny_checkpoint_dir, max_new_tokens=12)
    assert report.ok, report.summary()
    assert all(s.max_abs_diff <= 1e-3 for s in report.stages)
    assert [g.sample for g in report.greedy] == ["image", "video"] and all(g.identical for g in report.greedy)
    assert all(g.top1_agreement == 1.0 for g in report.greedy)
    text = report.summary()
    assert "PASS" in text and "image   vit" in text and "video   decode" in text


def test_a_bundle_from_other_weights_fails(bundle, tiny_checkpoint_dir, tmp_path):
    """The check can fail: the same architecture with one decoder layer changed is caught."""
    from molmo_edge.export.verify import verify_bundle
    from molmo_edge.model import load_checkpoint, save_checkpoint
    from molmo_edge.processing.tokenizer import Tokenizer

    model = load_checkpoint(tiny_checkpoint_dir, dtype=torch.float32)
    with torch.no_grad():
        model.decoder.layers[1].mlp.down_proj.weight.mul_(3.0)
    other = tmp_path / "other"
    save_checkpoint(model, other, tokenizer=Tokenizer.from_pretrained(tiny_checkpoint_dir))
    report = verify_bundle(bundle, other, max_new_tokens=8)
    assert not report.ok
    failing = {s.stage for s in report.stages if not s.ok}
    assert {"prefill", "decode"} <= failing and not failing & {"vit", "connector", "visual"}
    assert "FAIL" in report.summary() and "above tolerance" in report.summary()


def test_tolerances_scale_with_the_reference():
    from molmo_edge.export.verify import TOLERANCES, StageCheck, Tolerance

    assert TOLERANCES["fp32"].stage_limit(1000.0) == 1e-3
    assert TOLERANCES["fp16"].stage_limit(10.0) == pytest.approx(0.2)
    assert Tolerance(max_abs=1e-3, max_rel=1e-2).stage_limit(0.01) == pytest.approx(1e-4)
    assert not StageCheck("image", "vit", float("nan"), 1.0, 1.0).ok
    assert StageCheck("image", "vit", 0.5, 10.0, 1.0).rel_diff == pytest.approx(0.05)


@pytest.mark.slow
def test_export_cli_with_verify_exits_zero(tiny_checkpoint_dir, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "bundle"
    run = subprocess.run([sys.executable, "-m", "molmo_edge", "export", str(tiny_checkpoint_dir), "--out", str(out),
                          "--verify"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASS" in run.stdout and "decoder.onnx" in run.stdout
    assert "tracing decoder.onnx" in run.stderr  # progress output
    assert (out / "manifest.json").is_file()
    again = subprocess.run([sys.executable, "-m", "molmo_edge", "export", str(tiny_checkpoint_dir), "--out", str(out)],
                           capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
