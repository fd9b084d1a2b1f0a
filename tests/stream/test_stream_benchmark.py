"""`molmo-edge bench --stream` and `molmo_edge.stream.benchmark`: a real pipeline on a synthetic source,
a real ZeroMQ publisher, a few seconds long; the RSS trend and window plan checked on their own."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from molmo_edge.cli import main
from molmo_edge.engine.engine import FrameFeatures
from molmo_edge.stream.benchmark import StreamBenchSettings, rss_trend, run_stream_benchmark, window_plan
from molmo_edge.stream.frame import Frame
from molmo_edge.stream.window import SlidingWindow, WindowConfig

SOURCE = "synthetic:0:64x64"


@pytest.fixture(scope="module")
def tiny_engine(tiny_checkpoint_dir):
    from molmo_edge.engine.engine import Engine
    from molmo_edge.engine.torch_backend import TorchBackend

    with Engine(TorchBackend.from_checkpoint(tiny_checkpoint_dir, device="cpu", dtype="float32")) as engine:
        yield engine


def test_stream_benchmark_measures_cache_rate_latency_and_rss(tiny_engine):
    settings = StreamBenchSettings(window=4, stride=2, max_new_tokens=6, seconds=3.0, cache_windows=3,
                                   warmup_windows=1, rss_interval_s=0.2)
    written = []
    report = run_stream_benchmark(tiny_engine, SOURCE, settings, sinks=[written.append])
    data = report.to_dict()

    cache = data["feature_cache"]
    assert cache["windows"] == 3
    assert cache["same_answers"] is True  # cached features are the features: the answers cannot change
    # 3 windows of 4 frames, stride 2: the cache encodes 4 + 2 + 2 frames, recomputing 3 x 4
    assert cache["frames_encoded_cached"] == 8 and cache["frames_encoded_recompute"] == 12
    # which of the two is faster is the benchmark's finding, not a test's: only that both were timed
    assert cache["recompute_vision_ms"]["median"] > 0 and cache["cached_vision_ms"]["median"] > 0

    sustained = data["sustained"]
    assert sustained["windows"] >= 3 and sustained["events"] == len(written)
    assert sustained["windows_per_s"] > 0
    assert sustained["frames_encoded"] == sustained["frames_sampled"]  # each frame through the ViT once
    latency = sustained["capture_to_publish_ms"]
    assert latency["n"] == len(written) - 1 and latency["min"] > 0
    # capture -> publish includes the model call of the window: never below its prefill + decode
    assert latency["max"] >= sustained["prefill_ms"]["min"]

    rss = data["rss"]
    assert rss["n"] >= 5 and rss["start_mb"] > 0 and rss["ok"] in (True, False)
    assert len(data["rss_samples"]) == rss["n"]
    assert data["machine"]["cpu_cores"] >= 1
    assert "windows/s" in report.summary()


def test_cli_stream_benchmark_publishes_on_zeromq(tiny_checkpoint_dir, tmp_path):
    out = tmp_path / "stream.json"
    assert main(["bench", "--stream", "--model", str(tiny_checkpoint_dir), "--backend", "torch", "--seconds", "2",
                 "--window", "4", "--stride", "2", "--max-new-tokens", "4", "--cache-windows", "2", "--source", SOURCE,
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    run = data["runs"][0]
    assert run["name"] == "torch" and run["backend"] == "torch"
    assert run["publisher"]["sent"] == run["sustained"]["events"] > 0  # every event went out on the PUB socket
    assert run["feature_cache"]["windows"] == 2
    assert run["load"]["load_s"] > 0


# ----------------------------------------------------------------------------- pieces
def _cheap_features(rgb: np.ndarray) -> FrameFeatures:
    return FrameFeatures(torch.zeros(1, 2), int(rgb.shape[1]), int(rgb.shape[0]))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 8), st.integers(1, 8))
def test_window_plan_matches_the_sliding_window(n_frames, size, stride):
    if stride > size:
        stride = size
    window = SlidingWindow(_cheap_features, WindowConfig(size=size, stride=stride, max_gap_s=None))
    made = []
    for i in range(n_frames):
        frame = Frame(np.zeros((4, 4, 3), np.uint8), stamp_ns=i, t_s=0.5 * i, index=i, source_id="s")
        for ready in window.push(frame):
            made.append(([f.index for f in ready.frames], ready.new_frames))
    plan = window_plan(n_frames, size, stride)
    assert [list(members) for _, members in plan] == [m for m, _ in made]
    assert [len(new) for new, _ in plan] == [n for _, n in made]


def test_flat_rss_is_noise():
    rng = np.random.default_rng(0)
    samples = [(float(t), 500.0 + float(rng.normal(0, 1.0))) for t in range(600)]
    trend = rss_trend(samples, warmup_fraction=0.1, tolerance_mb=2.0)
    assert trend["ok"] is True and abs(trend["slope_mb_per_min"]) < 0.5


def test_steady_growth_is_caught():
    rng = np.random.default_rng(1)
    samples = [(float(t), 500.0 + 0.05 * t + float(rng.normal(0, 0.5))) for t in range(600)]  # 3 MB/min
    trend = rss_trend(samples, warmup_fraction=0.1, tolerance_mb=2.0)
    assert trend["ok"] is False
    assert trend["slope_mb_per_min"] == pytest.approx(3.0, rel=0.1)
    assert trend["growth_mb"] == pytest.approx(0.05 * trend["span_s"], rel=0.1)


def test_warmup_growth_is_left_out():
    """Arenas filling during the first windows are not a leak: only the part after the warm-up is fitted."""
    samples = [(float(t), 400.0 + min(t, 30) * 2.0) for t in range(600)]  # +60 MB in the first 30 s, then flat
    trend = rss_trend(samples, warmup_fraction=0.1, tolerance_mb=1.0)
    assert trend["ok"] is True and trend["warmup_s"] >= 59.0
    assert trend["min_mb"] == 460.0 and trend["growth_mb"] == pytest.approx(0.0, abs=1e-6)


def test_no_samples():
    assert rss_trend([])["ok"] is None
