"""FSDP2 on 2 CPU processes (gloo) follows the same loss trajectory as 1 process, across a resume.

Same global batch in both runs: 1 process x 2 DataLoader workers x grad_accum 2, versus
2 processes x 1 worker x grad_accum 1. Data shards are (rank, worker) pairs, so both runs see the
same packed sequences in every step; only where the sums happen differs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from molmo_edge.training.recipes import recipe_json

from tests.training.train_helpers import tiny_recipe

pytestmark = pytest.mark.slow


def run_cli(args: list[str], nproc: int, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "molmo_edge", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--standalone", "-m", "molmo_edge", "train", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process(tmp_path: Path):
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(recipe_json(tiny_recipe("steps=4", "save_every=2")))
    common = ["--recipe", str(recipe_file), "--no-progress", "--device", "cpu"]
    run_cli(common + ["--out", str(tmp_path / "one"), "--num-workers", "2", "--grad-accum", "2"], 1, tmp_path)
    # The 2-process run is also interrupted after step 1 and resumed (sharded optimizer state and
    # the data position of both shards come back), and must still match the 1-process run.
    two = common + ["--out", str(tmp_path / "two"), "--num-workers", "1", "--grad-accum", "1"]
    run_cli(two + ["--max-minutes", "1e-9"], 2, tmp_path)
    assert len(losses(tmp_path / "two")) == 1
    run_cli(two, 2, tmp_path)

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, abs=1e-4)
    assert one[-1] < one[0]
    # The FSDP run gathers its shards into the same full checkpoint.
    w_one = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    w_two = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert w_one.keys() == w_two.keys()
    for name in w_one:
        assert torch.allclose(w_one[name], w_two[name], atol=1e-5), name
    state = json.loads((tmp_path / "two" / "checkpoints" / "step-000004" / "resume" / "trainer_state.json").read_text())
    assert state["data"]["n_shards"] == 2 and sorted(state["data"]["shards"]) == ["0", "1"]
