"""HOTA (Luiten et al., IJCV 2021) and CLEAR-MOT identity switches for point tracks.

Molmo2 adapts HOTA to points: the similarity of a predicted point and a ground-truth object is
binary, 1 when the point falls inside the object's (visible) mask. Written here for any
similarity in [0, 1], so the same code serves box IoU; with a binary similarity every alpha
threshold gives the same numbers.

Input: one `Timestep` per frame: the ground-truth ids present, the predicted ids present and the
similarity matrix between them. Ids are any integers (a track id means the same object in every
timestep). Output: additive counts (`HotaStats`), so sequences combine by summing, exactly as
TrackEval's `combine_sequences` does; `tests/training/test_metrics_hota.py` checks both against
`trackeval.metrics.HOTA` / `CLEAR`.

The algorithm, per sequence:
1. For every (gt id, predicted id) pair, a global alignment score: how often the two are seen
   together, as a Jaccard index over the timesteps either appears in (with soft co-occurrence
   sim / (row sum + column sum - sim) per timestep).
2. Per timestep, a one-to-one assignment maximising alignment × similarity (Hungarian); a pair
   counts as a true positive for threshold alpha when its similarity >= alpha.
3. DetA = TP / (TP + FN + FP). AssA = mean over true positives of the Jaccard index between the
   two tracks' matched timesteps: TPA / (TPA + FNA + FPA). HOTA = sqrt(DetA · AssA), averaged
   over alpha = 0.05, 0.10, ..., 0.95.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

ALPHAS = np.arange(1, 20) * 0.05  # 0.05 .. 0.95, the thresholds HOTA averages over
_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class Timestep:
    gt_ids: np.ndarray  # int [G], distinct
    pred_ids: np.ndarray  # int [P], distinct
    similarity: np.ndarray  # float [G, P] in 0..1

    @staticmethod
    def make(gt_ids: Sequence[int], pred_ids: Sequence[int], similarity) -> "Timestep":
        g = np.asarray(gt_ids, dtype=np.int64).reshape(-1)
        p = np.asarray(pred_ids, dtype=np.int64).reshape(-1)
        s = np.asarray(similarity, dtype=np.float64).reshape(len(g), len(p))
        if len(set(g.tolist())) != len(g) or len(set(p.tolist())) != len(p):
            raise ValueError("ids must be distinct within a timestep")
        return Timestep(g, p, s)


@dataclass
class HotaStats:
    """Additive HOTA counts, one value per alpha; sum two with `+` to combine sequences."""

    tp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    fn: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    fp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    # Σ over true positives of their association Jaccard, i.e. AssA · TP: additive across sequences
    ass_sum: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    id_switches: int = 0

    def __add__(self, other: "HotaStats") -> "HotaStats":
        return HotaStats(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp,
                         self.ass_sum + other.ass_sum, self.id_switches + other.id_switches)

    @property
    def deta_per_alpha(self) -> np.ndarray:
        return self.tp / np.maximum(1.0, self.tp + self.fn + self.fp)

    @property
    def assa_per_alpha(self) -> np.ndarray:
        return self.ass_sum / np.maximum(1.0, self.tp)

    @property
    def hota_per_alpha(self) -> np.ndarray:
        return np.sqrt(self.deta_per_alpha * self.assa_per_alpha)

    @property
    def hota(self) -> float:
        return float(self.hota_per_alpha.mean())

    @property
    def deta(self) -> float:
        return float(self.deta_per_alpha.mean())

    @property
    def assa(self) -> float:
        return float(self.assa_per_alpha.mean())


def _dense_ids(timesteps: Sequence[Timestep], attr: str) -> tuple[list[np.ndarray], int]:
    """Map arbitrary ids to 0..N-1 (per sequence). -> per-timestep index arrays, N."""
    all_ids = sorted({int(i) for ts in timesteps for i in getattr(ts, attr)})
    lookup = {i: k for k, i in enumerate(all_ids)}
    return [np.array([lookup[int(i)] for i in getattr(ts, attr)], dtype=np.int64) for ts in timesteps], len(all_ids)


def hota(timesteps: Sequence[Timestep]) -> HotaStats:
    """HOTA counts of one sequence (id switches included, see `id_switches`)."""
    gts, n_gt = _dense_ids(timesteps, "gt_ids")
    preds, n_pred = _dense_ids(timesteps, "pred_ids")
    stats = HotaStats(id_switches=id_switches(timesteps))

    # 1. global alignment between every gt track and every predicted track: [n_gt, n_pred]
    co_occurrence = np.zeros((n_gt, n_pred))
    gt_frames = np.zeros(n_gt)
    pred_frames = np.zeros(n_pred)
    for g, p, ts in zip(gts, preds, timesteps):
        gt_frames[g] += 1
        pred_frames[p] += 1
        if len(g) and len(p):
            sim = ts.similarity
            union = sim.sum(axis=1, keepdims=True) + sim.sum(axis=0, keepdims=True) - sim
            co_occurrence[np.ix_(g, p)] += np.divide(sim, union, out=np.zeros_like(sim), where=union > _EPS)
    alignment = co_occurrence / np.maximum(gt_frames[:, None] + pred_frames[None, :] - co_occurrence, _EPS)

    # 2. per-timestep assignment; matches[a][g, p] = timesteps where (g, p) matched at alpha a
    matches = np.zeros((len(ALPHAS), n_gt, n_pred))
    for g, p, ts in zip(gts, preds, timesteps):
        if len(g) == 0 or len(p) == 0:
            stats.fn += len(g)
            stats.fp += len(p)
            continue
        rows, cols = linear_sum_assignment(alignment[np.ix_(g, p)] * ts.similarity, maximize=True)
        pair_sim = ts.similarity[rows, cols]
        for a, alpha in enumerate(ALPHAS):
            ok = pair_sim >= alpha - _EPS
            n_ok = int(ok.sum())
            stats.tp[a] += n_ok
            stats.fn[a] += len(g) - n_ok
            stats.fp[a] += len(p) - n_ok
            matches[a, g[rows[ok]], p[cols[ok]]] += 1

    # 3. association: each TP of pair (g, p) scores |TPA| / (|gt track| + |pred track| - |TPA|)
    for a in range(len(ALPHAS)):
        m = matches[a]
        jaccard = m / np.maximum(1.0, gt_frames[:, None] + pred_frames[None, :] - m)
        stats.ass_sum[a] = float((m * jaccard).sum())
    return stats


def id_switches(timesteps: Sequence[Timestep], threshold: float = 0.5) -> int:
    """CLEAR-MOT identity switches: a gt object matched to a different predicted id than the last
    one it was matched to (any number of timesteps back).

    Matching per timestep keeps last timestep's pairs where still valid (they win over any other
    assignment), then maximises similarity; a pair is valid when similarity >= threshold.
    """
    last_pred: dict[int, int] = {}  # gt id -> predicted id it was last matched to
    previous_pairs: dict[int, int] = {}  # gt id -> predicted id, previous timestep only
    switches = 0
    for ts in timesteps:
        current: dict[int, int] = {}
        if len(ts.gt_ids) and len(ts.pred_ids):
            valid = ts.similarity >= threshold - _EPS
            kept = np.array([[previous_pairs.get(int(g)) == int(p) for p in ts.pred_ids] for g in ts.gt_ids])
            # a kept pair is worth more than any set of new ones (similarity <= 1 per pair, at
            # most min(G, P) pairs), so continuation is preferred first and similarity second
            score = np.where(valid, ts.similarity + kept * (1.0 + min(valid.shape)), 0.0)
            rows, cols = linear_sum_assignment(score, maximize=True)
            for r, c in zip(rows, cols):
                if valid[r, c]:
                    g, p = int(ts.gt_ids[r]), int(ts.pred_ids[c])
                    current[g] = p
                    if g in last_pred and last_pred[g] != p:
                        switches += 1
                    last_pred[g] = p
        previous_pairs = current
    return switches
