"""The sampler picks frames by timestamp: on a grid, robust to jitter, gaps and slow sources."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.stream.sampler import FrameSampler


def source_times(fps: float, duration_s: float, jitter: float, seed: int) -> np.ndarray:
    """Frame times of a camera at `fps` with uniform jitter of +-jitter frame intervals."""
    rng = np.random.default_rng(seed)
    base = np.arange(0.0, duration_s, 1.0 / fps)
    times = base + rng.uniform(-jitter, jitter, size=base.shape) / fps
    return np.sort(times)


def sampled(sampler: FrameSampler, times) -> np.ndarray:
    return np.array([t for t in times if sampler.offer(float(t))])


@settings(max_examples=60, deadline=None)
@given(source_fps=st.floats(5.0, 120.0), jitter=st.floats(0.0, 0.3), target_fps=st.sampled_from([1.0, 2.0, 4.0]),
       seed=st.integers(0, 10_000))
def test_rate_matches_the_target_without_drift(source_fps, jitter, target_fps, seed):
    if source_fps < 2.5 * target_fps:
        return  # covered by the slow-source test
    duration_s = 30.0
    times = source_times(source_fps, duration_s, jitter, seed)
    picks = sampled(FrameSampler(target_fps=target_fps), times)
    period = 1.0 / target_fps
    # count: one per period (no drift over 30 s)
    assert abs(len(picks) - duration_s * target_fps) <= 2
    # each pick lies within one source interval of its grid point t0 + k * period
    grid = picks[0] + period * np.arange(len(picks))
    assert np.max(np.abs(picks - grid)) <= 1.5 / source_fps + 1e-9
    assert np.min(np.diff(picks)) >= 0.5 * period - 1e-9


@settings(max_examples=40, deadline=None)
@given(source_fps=st.floats(0.3, 1.6), jitter=st.floats(0.0, 0.1), seed=st.integers(0, 10_000))
def test_a_source_slower_than_the_target_gives_every_frame(source_fps, jitter, seed):
    times = source_times(source_fps, 20.0, jitter, seed)
    picks = sampled(FrameSampler(target_fps=2.0), times)
    assert len(picks) == len(times)


def test_a_gap_restarts_the_grid_instead_of_bursting():
    times = list(np.arange(0.0, 5.0, 1 / 30)) + list(np.arange(9.0, 14.0, 1 / 30))  # 4 s stall
    picks = sampled(FrameSampler(target_fps=2.0), times)
    assert np.min(np.diff(picks)) >= 0.5 - 1e-6
    after = picks[picks >= 9.0]
    assert after[0] == pytest.approx(9.0)
    np.testing.assert_allclose(np.diff(after), 0.5, atol=1 / 30 + 1e-9)


def test_time_going_backwards_resets():
    sampler = FrameSampler(target_fps=2.0)
    first = sampled(sampler, np.arange(0.0, 3.0, 0.1))
    second = sampled(sampler, np.arange(0.0, 3.0, 0.1))  # the file looped
    assert sampler.stats.resets == 1
    np.testing.assert_allclose(first, second)
    assert sampler.stats.offered == 60 and sampler.stats.selected == len(first) + len(second)


def test_sample_picks_frames_lazily():
    from molmo_edge.stream.frame import Frame

    frames = (Frame(np.zeros((2, 2, 3), np.uint8), stamp_ns=i, t_s=i / 10, index=i, source_id="s")
              for i in range(100))
    picked = [f.index for f in FrameSampler(target_fps=2.0).sample(frames)]
    assert picked == list(range(0, 100, 5))


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        FrameSampler(target_fps=0)
