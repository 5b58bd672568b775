"""Evaluation of Cα predictions: voxel-wise precision/recall/F1 against a threshold, and baselines.

* :func:`ca_f1_curve` — the voxel-wise curve of Cryo2Struct's Fig. 7: a voxel is predicted Cα
  when its probability exceeds the threshold, and counts as correct when it is a labelled Cα
  voxel (``maps.labels`` rule). ``tolerance_px`` > 0 relaxes "correct" to "within that many
  voxels (Chebyshev) of a labelled Cα" for precision and "a prediction within that distance"
  for recall.
* Baselines with the same output (a score per voxel): :func:`random_scores` (uniform noise) and
  :func:`density_peak_scores` (local maxima of the map at Cα spacing, scored by their density,
  zero elsewhere — what a non-learned tracer starts from).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["ca_f1_curve", "density_peak_scores", "model_region", "random_scores"]


def ca_f1_curve(
    scores: NDArray[np.floating],
    ca_mask: NDArray[np.bool_],
    thresholds: Sequence[float],
    *,
    tolerance_px: int = 0,
    evaluation_mask: NDArray[np.bool_] | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Precision, recall and F1 of ``scores > t`` against ``ca_mask`` for every threshold.

    Parameters
    ----------
    scores : array (z, y, x)
        Cα score per voxel (probability, or a baseline's score in [0, 1]).
    ca_mask : bool array, same shape
        Labelled Cα voxels.
    thresholds
        Thresholds ``t`` (a voxel is predicted when ``score > t``).
    tolerance_px
        0 for exact voxels; ``k`` counts a predicted voxel as correct within ``k`` voxels
        (Chebyshev distance) of a labelled one, and a labelled voxel as found likewise.
    evaluation_mask : bool array, same shape, optional
        Only voxels inside it are scored (predictions and labels outside are ignored): the
        region a deposited model explains, when the map holds more than the model (e.g. a
        filament map with one modelled subunit; see :func:`model_region`).

    Returns
    -------
    dict
        ``threshold``, ``precision``, ``recall``, ``f1`` arrays (NaN-free: 0 when undefined).
    """
    s = np.asarray(scores, dtype=np.float32)
    truth = np.asarray(ca_mask, dtype=bool)
    if s.shape != truth.shape:
        raise ValueError(f"scores {s.shape} and ca_mask {truth.shape} differ in shape")
    if evaluation_mask is not None:
        region = np.asarray(evaluation_mask, dtype=bool)
        if region.shape != s.shape:
            raise ValueError(f"evaluation_mask {region.shape} and scores {s.shape} differ in shape")
        s = np.where(region, s, -np.inf).astype(np.float32)
        truth = truth & region
    n_true = int(truth.sum())
    near_truth = ndimage.binary_dilation(truth, np.ones((3, 3, 3), bool), iterations=tolerance_px) \
        if tolerance_px > 0 else truth
    out = {k: np.zeros(len(thresholds)) for k in ("threshold", "precision", "recall", "f1")}
    for i, t in enumerate(thresholds):
        pred = s > t
        n_pred = int(pred.sum())
        tp_pred = int((pred & near_truth).sum())
        near_pred = ndimage.binary_dilation(pred, np.ones((3, 3, 3), bool), iterations=tolerance_px) \
            if tolerance_px > 0 else pred
        tp_true = int((truth & near_pred).sum())
        p = tp_pred / n_pred if n_pred else 0.0
        r = tp_true / n_true if n_true else 0.0
        out["threshold"][i] = t
        out["precision"][i] = p
        out["recall"][i] = r
        out["f1"][i] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return out


def model_region(
    xyz_a: NDArray[np.floating],
    shape: Sequence[int],
    origin_a: Sequence[float],
    *,
    voxel_size_a: float = 1.0,
    radius_a: float = 5.0,
) -> NDArray[np.bool_]:
    """Voxels within ``radius_a`` of any atom: the part of a map a model explains.

    Parameters
    ----------
    xyz_a : array (n, 3)
        Atom coordinates (x, y, z) in Å, in the map's frame.
    shape : (z, y, x)
        Map shape.
    origin_a : (z, y, x)
        Position of voxel (0, 0, 0) in Å.
    voxel_size_a, radius_a
        Voxel size and the distance from the nearest atom, in Å.

    Returns
    -------
    bool array (z, y, x)
    """
    if radius_a < 0:
        raise ValueError(f"radius_a must be ≥ 0, got {radius_a}")
    zyx = np.asarray(xyz_a, dtype=np.float64)[:, ::-1]
    idx = np.round((zyx - np.asarray(origin_a, dtype=np.float64)) / voxel_size_a).astype(np.int64)
    occ = np.zeros(tuple(int(n) for n in shape), dtype=bool)
    inside = np.all((idx >= 0) & (idx < np.asarray(occ.shape)), axis=1)
    occ[tuple(idx[inside].T)] = True
    if not occ.any():
        return occ
    return np.asarray(ndimage.distance_transform_edt(~occ) * voxel_size_a <= radius_a, dtype=bool)


def random_scores(shape: Sequence[int], seed: int = 0) -> NDArray[np.float32]:
    """Uniform random scores in [0, 1) (the random predictor)."""
    return np.random.default_rng(seed).random(tuple(shape), dtype=np.float32)


def density_peak_scores(volume: NDArray[np.floating], *, voxel_size_a: float = 1.0,
                        min_distance_a: float = 3.0) -> NDArray[np.float32]:
    """Local density maxima at Cα spacing, scored by their normalised density; 0 elsewhere.

    Peaks are the voxels equal to the maximum of their 3×3×3 neighbourhood with positive
    density; taken in decreasing density, a peak closer than ``min_distance_a`` to a kept one is
    dropped (Cα atoms are ≥ 3.8 Å apart along a chain). Scores are ``density / max(density)``.
    """
    vol = np.asarray(volume, dtype=np.float32)
    peak = (vol == ndimage.maximum_filter(vol, size=3, mode="constant", cval=-np.inf)) & (vol > 0)
    idx = np.argwhere(peak)
    out = np.zeros_like(vol)
    if idx.shape[0] == 0:
        return out
    values = vol[tuple(idx.T)]
    order = np.argsort(-values, kind="stable")
    idx, values = idx[order], values[order]
    keep = np.ones(len(idx), bool)
    tree = cKDTree(idx * voxel_size_a)
    for k in range(len(idx)):
        if keep[k]:
            for j in tree.query_ball_point(idx[k] * voxel_size_a, min_distance_a - 1e-9):
                if j > k:
                    keep[j] = False
    idx, values = idx[keep], values[keep]
    out[tuple(idx.T)] = values / max(float(values.max()), 1e-12)
    return out
