"""Pick evaluation: precision, recall, F1 and average precision against reference picks.

Matching is one-to-one within ``max_distance_px`` (default ``0.5 × diameter``), maximising
the number of matches: :func:`cryoset.picking.match.match_picks` (Hungarian) for the counts.
Average precision ranks picks by decreasing score (NaN last, ties in row order) and sums
``precision_k × (recall_k − recall_{k−1})`` over the ranking, where ``TP_k`` is the size of
a *maximum* one-to-one matching of the top ``k`` picks (computed incrementally with
augmenting paths, :func:`prefix_match_counts`; its last value equals the Hungarian count).
Pooled numbers sum the counts over micrographs; pooled AP ranks all picks together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from cryoset.errors import InputError
from cryoset.picking.match import match_counts

__all__ = ["PickScores", "average_precision", "evaluate_picks", "prefix_match_counts"]


@dataclass(frozen=True)
class PickScores:
    """Counts and metrics of one micrograph (or pooled)."""

    n_picks: int
    n_truth: int
    n_matched: int
    average_precision: float

    @property
    def precision(self) -> float:
        """``matched / picks`` (NaN without picks)."""
        return self.n_matched / self.n_picks if self.n_picks else float("nan")

    @property
    def recall(self) -> float:
        """``matched / truth`` (NaN without truth)."""
        return self.n_matched / self.n_truth if self.n_truth else float("nan")

    @property
    def f1(self) -> float:
        """``2 matched / (picks + truth)`` (NaN when both are empty)."""
        total = self.n_picks + self.n_truth
        return 2 * self.n_matched / total if total else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON/tables."""
        return {
            "n_picks": self.n_picks, "n_truth": self.n_truth, "n_matched": self.n_matched,
            "precision": self.precision, "recall": self.recall, "f1": self.f1,
            "average_precision": self.average_precision,
        }


def prefix_match_counts(
    picks_xy: ArrayLike, truth_xy: ArrayLike, max_distance_px: float
) -> NDArray[np.int64]:
    """Maximum one-to-one matching size of every prefix of the picks.

    Parameters
    ----------
    picks_xy : array_like, shape (n, 2)
        Picks, already in rank order.
    truth_xy : array_like, shape (m, 2)
    max_distance_px
        Inclusive match distance.

    Returns
    -------
    ndarray of int64, shape (n,)
        ``out[k]`` = matches among picks ``0..k``. Non-decreasing, steps of 0 or 1; the
        last value equals ``match_counts(...)[0]``.
    """
    p = np.asarray(picks_xy, dtype=np.float64).reshape(-1, 2)
    t = np.asarray(truth_xy, dtype=np.float64).reshape(-1, 2)
    if not max_distance_px > 0:
        raise ValueError(f"max_distance_px must be > 0, got {max_distance_px}")
    n = len(p)
    if n == 0 or len(t) == 0:
        return np.zeros(n, dtype=np.int64)
    nbrs = cKDTree(p).query_ball_tree(cKDTree(t), float(max_distance_px))
    match_of_truth = np.full(len(t), -1, dtype=np.int64)
    match_of_pick = np.full(n, -1, dtype=np.int64)
    out = np.zeros(n, dtype=np.int64)
    count = 0
    for k in range(n):
        # iterative DFS for an augmenting path starting at pick k (Kuhn's algorithm)
        seen = np.zeros(len(t), dtype=bool)
        stack: list[tuple[int, int]] = [(k, 0)]
        parent_truth: dict[int, int] = {}
        found = -1
        while stack and found < 0:
            pick, pos = stack[-1]
            cand = nbrs[pick]
            if pos >= len(cand):
                stack.pop()
                continue
            stack[-1] = (pick, pos + 1)
            tj = int(cand[pos])
            if seen[tj]:
                continue
            seen[tj] = True
            parent_truth[tj] = pick
            if match_of_truth[tj] < 0:
                found = tj
            else:
                stack.append((int(match_of_truth[tj]), 0))
        if found >= 0:
            tj = found
            while True:  # flip the path back to pick k
                pick = parent_truth[tj]
                prev = int(match_of_pick[pick])
                match_of_pick[pick] = tj
                match_of_truth[tj] = pick
                if pick == k:
                    break
                tj = prev
            count += 1
        out[k] = count
    return out


def average_precision(increments: ArrayLike, n_truth: int) -> float:
    """AP from per-rank match increments (1 where the k-th pick added a match).

    ``AP = Σ_k inc_k · (TP_k / k) / n_truth``; NaN when ``n_truth == 0``.

    Examples
    --------
    >>> average_precision([1, 0, 1], 2)
    0.8333333333333333
    """
    inc = np.asarray(increments, dtype=np.float64).reshape(-1)
    if n_truth <= 0:
        return float("nan")
    tp = np.cumsum(inc)
    prec = tp / np.arange(1, len(inc) + 1)
    return float(np.sum(inc * prec) / n_truth)


def _ranked(df: pd.DataFrame) -> pd.DataFrame:
    score = (pd.to_numeric(df["score"], errors="coerce") if "score" in df.columns
             else pd.Series(np.nan, index=df.index))
    key = np.where(np.isnan(score.to_numpy(np.float64)), -np.inf, score.to_numpy(np.float64))
    order = np.lexsort((np.arange(len(df)), -key))
    return df.iloc[order].assign(_key=key[order])


def evaluate_picks(
    picks: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    max_distance_px: float | None = None,
    diameter_px: float | None = None,
    match_fraction: float = 0.5,
) -> tuple[pd.DataFrame, PickScores]:
    """Score picks against reference picks, per micrograph and pooled.

    Parameters
    ----------
    picks, truth
        Canonical picks tables (``micrograph``, ``x_px``, ``y_px``; ``score`` ranks the
        picks for AP; ``diameter_px`` of the truth gives the distance when neither
        ``max_distance_px`` nor ``diameter_px`` is given).
    max_distance_px
        Match distance; default ``match_fraction × diameter``.
    diameter_px
        Particle diameter (pixels).
    match_fraction
        Fraction of the diameter used as match distance.

    Returns
    -------
    per_micrograph : DataFrame
        One row per micrograph named in either table: ``micrograph, n_picks, n_truth,
        n_matched, precision, recall, f1, average_precision``.
    pooled : PickScores
    """
    for name, df in (("picks", picks), ("truth", truth)):
        missing = [c for c in ("micrograph", "x_px", "y_px") if c not in df.columns]
        if missing:
            raise InputError(name, f"lacks column(s) {', '.join(missing)}")
    if max_distance_px is None:
        if diameter_px is None:
            d = pd.to_numeric(truth.get("diameter_px", pd.Series(dtype=float)), errors="coerce")
            if d.notna().sum() == 0:
                d = pd.to_numeric(picks.get("diameter_px", pd.Series(dtype=float)), errors="coerce")
            if d.notna().sum() == 0:
                raise InputError("diameter", "no diameter known: give the match distance or diameter")
            diameter_px = float(np.nanmedian(d.to_numpy(np.float64)))
        max_distance_px = match_fraction * float(diameter_px)
    if not max_distance_px > 0:
        raise InputError("max-distance", f"must be > 0, got {max_distance_px}")
    names = sorted(set(picks["micrograph"].astype(str)) | set(truth["micrograph"].astype(str)))
    rows: list[dict[str, Any]] = []
    keys: list[NDArray[np.float64]] = []
    incs: list[NDArray[np.int64]] = []
    pooled_counts = np.zeros(3, dtype=np.int64)
    for name in names:
        p = _ranked(picks[picks["micrograph"].astype(str) == name])
        t = truth[truth["micrograph"].astype(str) == name]
        pxy = p[["x_px", "y_px"]].to_numpy(np.float64)
        txy = t[["x_px", "y_px"]].to_numpy(np.float64)
        matched, n_p, n_t = match_counts(pxy, txy, max_distance_px)
        prefix = prefix_match_counts(pxy, txy, max_distance_px)
        inc = np.diff(np.r_[0, prefix])
        has_scores = bool(np.isfinite(p["_key"].to_numpy()).any()) if len(p) else False
        ap = average_precision(inc, n_t) if has_scores or n_p == 0 else float("nan")
        rows.append({"micrograph": name, **PickScores(n_p, n_t, matched, ap).as_dict()})
        pooled_counts += (n_p, n_t, matched)
        keys.append(p["_key"].to_numpy(np.float64))
        incs.append(inc)
    all_keys = np.concatenate(keys) if keys else np.zeros(0)
    all_inc = np.concatenate(incs) if incs else np.zeros(0, dtype=np.int64)
    order = np.argsort(-all_keys, kind="stable")
    any_scores = bool(np.isfinite(all_keys).any())
    pooled_ap = (average_precision(all_inc[order], int(pooled_counts[1]))
                 if any_scores or len(all_keys) == 0 else float("nan"))
    pooled = PickScores(int(pooled_counts[0]), int(pooled_counts[1]), int(pooled_counts[2]), pooled_ap)
    return pd.DataFrame(rows, columns=["micrograph", "n_picks", "n_truth", "n_matched", "precision",
                                       "recall", "f1", "average_precision"]), pooled
