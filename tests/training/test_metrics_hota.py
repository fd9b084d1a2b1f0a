"""HOTA and ID switches: hand-made cases, and agreement with the `trackeval` package."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molmo_edge.training.hota import ALPHAS, HotaStats, Timestep, hota, id_switches

trackeval = pytest.importorskip("trackeval")


def _identity_sequence(n_frames: int, ids: list[int]) -> list[Timestep]:
    return [Timestep.make(ids, ids, np.eye(len(ids))) for _ in range(n_frames)]


def test_perfect_tracking_scores_one():
    stats = hota(_identity_sequence(6, [1, 2, 3]))
    assert stats.hota == pytest.approx(1.0)
    assert stats.deta == pytest.approx(1.0) and stats.assa == pytest.approx(1.0)
    assert stats.id_switches == 0


def test_all_wrong_scores_zero():
    # every predicted point misses every mask
    steps = [Timestep.make([1, 2], [7, 8], np.zeros((2, 2))) for _ in range(5)]
    stats = hota(steps)
    assert stats.hota == 0.0 and stats.deta == 0.0
    assert stats.tp.sum() == 0 and stats.fn[0] == 10 and stats.fp[0] == 10


def test_no_prediction_and_extra_prediction():
    missed = hota([Timestep.make([1], [], np.zeros((1, 0)))] * 3)
    assert missed.hota == 0.0 and missed.fn[0] == 3
    spurious = hota([Timestep.make([], [4], np.zeros((0, 1)))] * 2)
    assert spurious.hota == 0.0 and spurious.fp[0] == 2


def test_partial_detection():
    # object 1 found in 3 of 6 frames with the same id; in the other 3 the point misses the mask
    steps = [Timestep.make([1], [1], [[1.0 if t < 3 else 0.0]]) for t in range(6)]
    stats = hota(steps)
    assert stats.deta == pytest.approx(3 / 9)  # TP 3, FN 3, FP 3 (misplaced points)
    assert stats.assa == pytest.approx(3 / (6 + 6 - 3))  # |TPA| / (|gt track| + |pred track| - |TPA|)
    # the same misses without the misplaced points: no FP, and a predicted track of 3 frames
    silent = hota([Timestep.make([1], [1] if t < 3 else [], [[1.0]] if t < 3 else np.zeros((1, 0)))
                   for t in range(6)])
    assert silent.deta == pytest.approx(3 / 6) and silent.assa == pytest.approx(3 / 6)
    assert stats.hota < silent.hota < 1


def test_id_swap_gives_a_switch_and_lower_assa():
    ids = [1, 2]
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # predicted id 2 on object 1 and vice versa
    steps = [Timestep.make(ids, ids, np.eye(2)) for _ in range(4)] + [Timestep.make(ids, ids, swap) for _ in range(4)]
    stats = hota(steps)
    perfect = hota(_identity_sequence(8, ids))
    assert stats.id_switches == 2  # both objects change id once
    assert stats.deta == pytest.approx(1.0)  # every point still lands on an object
    assert stats.assa < perfect.assa and stats.hota < perfect.hota
    assert stats.assa == pytest.approx(4 / (8 + 8 - 4))  # each pair shares 4 of its 8 + 8 frames


def test_reappearing_object_with_new_id_counts_one_switch():
    steps = [Timestep.make([1], [5], [[1.0]]), Timestep.make([1], [], np.zeros((1, 0))),
             Timestep.make([1], [6], [[1.0]])]
    assert id_switches(steps) == 1


def test_stats_add_like_one_long_sequence_of_disjoint_ids():
    a = hota(_identity_sequence(3, [1, 2]))
    b = hota([Timestep.make([1], [9], [[0.0]])] * 2)
    total = a + b
    assert total.tp[0] == a.tp[0] + b.tp[0]
    assert total.deta == pytest.approx(6 / (6 + 2 + 2))
    assert isinstance(total, HotaStats)


# --- agreement with trackeval ------------------------------------------------------------------

def _trackeval_data(steps: list[Timestep]) -> dict:
    gt_all = sorted({int(i) for s in steps for i in s.gt_ids})
    pr_all = sorted({int(i) for s in steps for i in s.pred_ids})
    gmap = {v: k for k, v in enumerate(gt_all)}
    pmap = {v: k for k, v in enumerate(pr_all)}
    return {
        "num_timesteps": len(steps),
        "num_gt_ids": len(gt_all),
        "num_tracker_ids": len(pr_all),
        "num_gt_dets": sum(len(s.gt_ids) for s in steps),
        "num_tracker_dets": sum(len(s.pred_ids) for s in steps),
        "gt_ids": [np.array([gmap[int(i)] for i in s.gt_ids], dtype=int) for s in steps],
        "tracker_ids": [np.array([pmap[int(i)] for i in s.pred_ids], dtype=int) for s in steps],
        "similarity_scores": [s.similarity for s in steps],
    }


@st.composite
def sequences(draw, binary: bool, never_empty: bool = False):
    n_frames = draw(st.integers(1, 10))
    steps = []
    lo = 1 if never_empty else 0
    for _ in range(n_frames):
        g = draw(st.lists(st.integers(1, 5), min_size=lo, max_size=4, unique=True))
        p = draw(st.lists(st.integers(10, 16), min_size=lo, max_size=5, unique=True))
        if binary:
            # point semantics: each predicted point lies in at most one object's mask
            sim = np.zeros((len(g), len(p)))
            for j in range(len(p)):
                k = draw(st.integers(-1, len(g) - 1)) if g else -1
                if k >= 0:
                    sim[k, j] = 1.0
        else:
            sim = np.array(draw(st.lists(st.floats(0, 1), min_size=len(g) * len(p), max_size=len(g) * len(p))))
        steps.append(Timestep.make(g, p, sim.reshape(len(g), len(p))))
    return steps


def _compare_hota(steps: list[Timestep]) -> None:
    ours = hota(steps)
    theirs = trackeval.metrics.HOTA().eval_sequence(_trackeval_data(steps))
    np.testing.assert_allclose(ours.hota_per_alpha, theirs["HOTA"], atol=1e-6)
    np.testing.assert_allclose(ours.deta_per_alpha, theirs["DetA"], atol=1e-6)
    np.testing.assert_allclose(ours.assa_per_alpha, theirs["AssA"], atol=1e-6)
    np.testing.assert_allclose(ours.tp, theirs["HOTA_TP"], atol=1e-9)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences(binary=True))
def test_hota_matches_trackeval_point_in_mask(steps):
    _compare_hota(steps)
    ours = hota(steps)
    # binary similarity: every alpha agrees
    assert np.ptp(ours.hota_per_alpha) < 1e-12


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences(binary=False))
def test_hota_matches_trackeval_soft_similarity(steps):
    _compare_hota(steps)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sequences(binary=True), min_size=2, max_size=4))
def test_combined_sequences_match_trackeval(seqs):
    metric = trackeval.metrics.HOTA()
    per_seq = {str(i): metric.eval_sequence(_trackeval_data(s)) for i, s in enumerate(seqs)}
    theirs = metric.combine_sequences(per_seq)
    ours = sum((hota(s) for s in seqs), HotaStats())
    np.testing.assert_allclose(ours.hota_per_alpha, theirs["HOTA"], atol=1e-6)
    np.testing.assert_allclose(ours.assa_per_alpha, theirs["AssA"], atol=1e-6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences(binary=False, never_empty=True))
def test_id_switches_match_trackeval_clear(steps):
    clear = trackeval.metrics.CLEAR({"THRESHOLD": 0.5, "PRINT_CONFIG": False})
    theirs = clear.eval_sequence(_trackeval_data(steps))
    assert id_switches(steps) == theirs["IDSW"]


def test_alphas_are_the_hota_paper_grid():
    np.testing.assert_allclose(ALPHAS, np.arange(0.05, 0.99, 0.05))
