"""One-to-one matching of picks to reference positions (Hungarian assignment).

A pick matches a reference particle when their centres are within ``max_distance_px``
of each other; each pick and each reference is used at most once, and among all such
one-to-one assignments the one with the most matches (then the smallest total distance)
is chosen. This is the match rule of the project's picking evaluations
(``max_distance_px = 0.5 × diameter``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def match_picks(
    picks_xy: ArrayLike, truth_xy: ArrayLike, max_distance_px: float
) -> NDArray[np.intp]:
    """Match picks to reference positions one-to-one within a distance.

    Parameters
    ----------
    picks_xy : array_like, shape (n, 2)
        Pick centres ``(x, y)`` in pixels.
    truth_xy : array_like, shape (m, 2)
        Reference centres ``(x, y)`` in pixels, same frame.
    max_distance_px
        Largest centre distance (inclusive) at which a pair may match; must be > 0.

    Returns
    -------
    ndarray of intp, shape (k, 2)
        Matched index pairs ``(pick index, truth index)``, sorted by pick index;
        ``k <= min(n, m)``.

    Examples
    --------
    >>> match_picks([[0, 0], [10, 0]], [[9, 0], [50, 50]], 2.0).tolist()
    [[1, 0]]
    """
    p = np.asarray(picks_xy, dtype=np.float64).reshape(-1, 2)
    t = np.asarray(truth_xy, dtype=np.float64).reshape(-1, 2)
    if not max_distance_px > 0:
        raise ValueError(f"max_distance_px must be > 0, got {max_distance_px}")
    if len(p) == 0 or len(t) == 0:
        return np.zeros((0, 2), dtype=np.intp)
    # Only pairs within range matter. They split into independent groups (connected
    # components of the bipartite "within range" graph); each group is solved densely.
    pairs_in_range = cKDTree(p).sparse_distance_matrix(
        cKDTree(t), float(max_distance_px), output_type="ndarray"
    )
    if len(pairs_in_range) == 0:
        return np.zeros((0, 2), dtype=np.intp)
    pi = np.asarray(pairs_in_range["i"], dtype=np.intp)
    ti = np.asarray(pairs_in_range["j"], dtype=np.intp)
    dist = np.asarray(pairs_in_range["v"], dtype=np.float64)
    n, m = len(p), len(t)
    graph = coo_matrix((np.ones(len(pi)), (pi, n + ti)), shape=(n + m, n + m))
    _, labels = connected_components(graph, directed=False)
    comp = labels[pi]
    order = np.argsort(comp, kind="stable")
    pi, ti, dist, comp = pi[order], ti[order], dist[order], comp[order]
    starts = np.flatnonzero(np.r_[True, comp[1:] != comp[:-1]])
    ends = np.r_[starts[1:], len(comp)]
    out: list[NDArray[np.intp]] = []
    single = (ends - starts) == 1  # one pick, one reference: matched outright
    out.append(np.column_stack([pi[starts[single]], ti[starts[single]]]))
    for a, b in zip(starts[~single], ends[~single], strict=True):
        rows, r_idx = np.unique(pi[a:b], return_inverse=True)
        cols, c_idx = np.unique(ti[a:b], return_inverse=True)
        # infeasible pairs cost more than all feasible ones together, so the assignment
        # maximises the number of matches first, then minimises their total distance
        big = float(max_distance_px) * (min(len(rows), len(cols)) + 1) + 1.0
        cost = np.full((len(rows), len(cols)), big)
        cost[r_idx, c_idx] = dist[a:b]
        r, c = linear_sum_assignment(cost)
        keep = cost[r, c] < big
        out.append(np.column_stack([rows[r[keep]], cols[c[keep]]]))
    pairs = np.concatenate(out).astype(np.intp).reshape(-1, 2)
    return pairs[np.argsort(pairs[:, 0], kind="stable")]


def match_counts(
    picks_xy: ArrayLike, truth_xy: ArrayLike, max_distance_px: float
) -> tuple[int, int, int]:
    """Count matches: ``(matched, number of picks, number of references)``.

    Recall is ``matched / references``, precision ``matched / picks``.
    """
    p = np.asarray(picks_xy, dtype=np.float64).reshape(-1, 2)
    t = np.asarray(truth_xy, dtype=np.float64).reshape(-1, 2)
    return len(match_picks(p, t, max_distance_px)), len(p), len(t)
