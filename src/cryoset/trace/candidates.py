"""Cα candidates from a per-voxel Cα probability map: threshold, peak picking, suppression.

A voxel is a peak when its probability is at least ``threshold`` and is the maximum of its
3×3×3 neighbourhood. Peaks are accepted in order of decreasing probability; a peak closer
than ``min_distance_a`` to an already accepted one is dropped (non-maximum suppression).
Each accepted peak is refined to the probability-weighted centroid of its 3×3×3
neighbourhood, and its 20 amino-acid probabilities are the Cα-probability-weighted mean
over the same neighbourhood, renormalised to sum to one.

Positions are returned as ``(x, y, z)`` in Å (the order of atomic coordinates), computed
from the map frame ``(z, y, x)_a = origin_a + index * voxel_size_a``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class Candidates:
    """Cα candidates.

    Attributes
    ----------
    positions_a
        Shape (n, 3): ``(x, y, z)`` in Å.
    ca_prob
        Shape (n,): Cα probability at the peak voxel.
    aa_prob
        Shape (n, 20): amino-acid probabilities, rows sum to 1.
    """

    positions_a: npt.NDArray[np.float64]
    ca_prob: npt.NDArray[np.float64]
    aa_prob: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.positions_a.shape[0])


def extract_candidates(
    ca_prob: npt.ArrayLike,
    aa_prob: npt.ArrayLike,
    *,
    voxel_size_a: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin_a: tuple[float, float, float] = (0.0, 0.0, 0.0),
    threshold: float = 0.5,
    min_distance_a: float = 2.0,
    local_maxima: bool = True,
) -> Candidates:
    """Pick Cα candidates from probability maps.

    Parameters
    ----------
    ca_prob
        Cα probability per voxel, shape (z, y, x).
    aa_prob
        Amino-acid probabilities, shape (20, z, y, x), class order of
        :data:`cryoset.trace.residues.AMINO_ACIDS`.
    voxel_size_a, origin_a
        Map geometry, ``(z, y, x)`` order, Å.
    threshold
        Minimum Cα probability of a peak.
    min_distance_a
        Minimum distance between two accepted candidates, Å.
    local_maxima
        True: only voxels that are the maximum of their 3×3×3 neighbourhood are candidates.
        False: every voxel above ``threshold`` is, so a broad blob covering two Cα yields two
        candidates once they are ``min_distance_a`` apart (greedy suppression).

    Returns
    -------
    Candidates
        Sorted by decreasing Cα probability.
    """
    ca = np.asarray(ca_prob, dtype=np.float32)
    aa = np.asarray(aa_prob, dtype=np.float32)
    if ca.ndim != 3:
        raise ValueError(f"ca_prob must be 3-D (z, y, x), got shape {ca.shape}")
    if aa.shape != (20, *ca.shape):
        raise ValueError(f"aa_prob must have shape (20, {', '.join(map(str, ca.shape))}), got {aa.shape}")
    if min_distance_a < 0:
        raise ValueError("min_distance_a must be non-negative")
    voxel = np.asarray(voxel_size_a, dtype=np.float64)
    origin = np.asarray(origin_a, dtype=np.float64)

    if local_maxima:
        local_max = ndimage.maximum_filter(ca, size=3, mode="constant", cval=-np.inf)
        peaks = np.argwhere((ca >= threshold) & (ca == local_max))
    else:  # every voxel above the threshold competes in the suppression below
        peaks = np.argwhere(ca >= threshold)
    if peaks.shape[0] == 0:
        return Candidates(np.zeros((0, 3)), np.zeros(0), np.zeros((0, 20)))
    values = ca[tuple(peaks.T)].astype(np.float64)
    order = np.argsort(-values, kind="stable")
    peaks, values = peaks[order], values[order]
    zyx_a = origin + peaks * voxel

    keep = np.ones(peaks.shape[0], dtype=bool)
    if min_distance_a > 0:
        tree = cKDTree(zyx_a)
        for k in range(peaks.shape[0]):
            if not keep[k]:
                continue
            for other in tree.query_ball_point(zyx_a[k], min_distance_a - 1e-9):
                if other > k:
                    keep[other] = False
    peaks, values = peaks[keep], values[keep]

    # 3x3x3 neighbourhoods, clipped at the border.
    offsets = np.stack(np.meshgrid(*(np.arange(-1, 2),) * 3, indexing="ij"), -1).reshape(-1, 3)
    idx = peaks[:, None, :] + offsets[None, :, :]
    inside = np.all((idx >= 0) & (idx < np.asarray(ca.shape)), axis=2)
    idx = np.clip(idx, 0, np.asarray(ca.shape) - 1)
    w = ca[idx[..., 0], idx[..., 1], idx[..., 2]].astype(np.float64)
    w = np.where(inside, np.clip(w, 0.0, None), 0.0)
    w_sum = w.sum(axis=1, keepdims=True)
    w = np.where(w_sum > 0, w / np.where(w_sum > 0, w_sum, 1.0), 1.0 / w.shape[1])
    centre_idx = np.einsum("nk,nkd->nd", w, idx.astype(np.float64))
    pos_zyx = origin + centre_idx * voxel
    probs = aa[:, idx[..., 0], idx[..., 1], idx[..., 2]].astype(np.float64)  # (20, n, 27)
    aa_mean = np.einsum("nk,cnk->nc", w, probs)
    aa_mean = np.clip(aa_mean, 0.0, None)
    totals = aa_mean.sum(axis=1, keepdims=True)
    aa_mean = np.where(totals > 0, aa_mean / np.where(totals > 0, totals, 1.0), 1.0 / 20.0)
    return Candidates(positions_a=pos_zyx[:, ::-1].copy(), ca_prob=values, aa_prob=aa_mean)
