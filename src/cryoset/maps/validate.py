"""Checks of the dataset products: the Cα label round trip and the normalised-map range.

Round trip (the paper's "validation of labelling", made exact)
--------------------------------------------------------------
For every voxel labelled Cα, its centre ``origin_a + (k, j, i) * voxel_size_a`` is converted
back to a coordinate and the nearest Cα of the model is looked up (``cKDTree``). The voxel is an
*exact match* when that nearest Cα rounds back to the same voxel under the labelling rule
(:func:`cryoset.maps.labels.voxel_indices`). Every Cα inside the grid must be accounted for:
either its voxel is labelled and it is the nearest Cα of that voxel, or it lost a reported
collision. With the nearest-centre rounding rule both hold for every map (100 %), which is
what :func:`ca_round_trip` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from cryoset.maps.labels import voxel_indices

__all__ = ["ca_round_trip", "check_normalised"]


def ca_round_trip(
    ca_mask: NDArray[np.integer],
    ca_xyz_a: NDArray[np.floating],
    voxel_size_a: Sequence[float],
    origin_a: Sequence[float],
) -> dict[str, Any]:
    """Recover the Cα atoms from a Cα label map and count exact matches.

    Parameters
    ----------
    ca_mask : int ndarray, shape (z, y, x)
        Non-zero where a Cα is labelled.
    ca_xyz_a : ndarray, shape (n, 3)
        All Cα coordinates of the model, ``(x, y, z)`` in Å.
    voxel_size_a, origin_a
        The grid, ``(z, y, x)``.

    Returns
    -------
    dict
        ``n_labelled`` voxels, ``n_exact`` of them whose nearest Cα maps back to them,
        ``n_ca_inside`` Cα atoms inside the grid, ``n_ca_recovered`` of them found as the
        nearest Cα of their own labelled voxel, ``n_ca_lost`` (= collisions),
        ``max_distance_a`` from a labelled voxel centre to its nearest Cα, and
        ``exact_fraction``.
    """
    vox = np.asarray(voxel_size_a, dtype=np.float64).reshape(3)
    org = np.asarray(origin_a, dtype=np.float64).reshape(3)
    xyz = np.asarray(ca_xyz_a, dtype=np.float64).reshape(-1, 3)
    labelled = np.argwhere(ca_mask != 0)
    idx = voxel_indices(xyz, org, vox)
    inside = np.all((idx >= 0) & (idx < np.asarray(ca_mask.shape)), axis=1)
    result: dict[str, Any] = {
        "n_labelled": int(labelled.shape[0]),
        "n_ca_inside": int(inside.sum()),
    }
    if labelled.shape[0] == 0 or xyz.shape[0] == 0:
        result.update(n_exact=0, n_ca_recovered=0, n_ca_lost=int(inside.sum()),
                      max_distance_a=float("nan"),
                      exact_fraction=1.0 if labelled.shape[0] == 0 else 0.0)
        return result
    centres_zyx = org + labelled * vox
    dist, nearest = cKDTree(xyz).query(centres_zyx[:, ::-1])
    back = idx[nearest]
    exact = np.all(back == labelled, axis=1)
    recovered = np.unique(nearest[exact])
    result.update(
        n_exact=int(exact.sum()),
        n_ca_recovered=int(recovered.size),
        n_ca_lost=int(inside.sum()) - int(recovered.size),
        max_distance_a=float(dist.max()),
        exact_fraction=float(exact.mean()),
    )
    return result


def check_normalised(data: NDArray[np.floating], low: float = 0.0, high: float = 1.0) -> dict[str, Any]:
    """Range check of a normalised map: every value finite and in ``[low, high]``.

    Returns
    -------
    dict
        ``ok``, ``min``, ``max``, ``n_out_of_range``, ``n_non_finite``.
    """
    arr = np.asarray(data)
    finite = np.isfinite(arr)
    out = int(np.count_nonzero(finite & ((arr < low) | (arr > high))))
    return {
        "ok": bool(out == 0 and finite.all()),
        "min": float(np.nanmin(arr)) if arr.size else float("nan"),
        "max": float(np.nanmax(arr)) if arr.size else float("nan"),
        "n_out_of_range": out,
        "n_non_finite": int(arr.size - np.count_nonzero(finite)),
    }
