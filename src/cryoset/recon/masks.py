"""Soft solvent masks made from a map (what ``relion_mask_create`` does).

Algorithm of :func:`auto_mask` (all lengths in voxels unless the name says Å):

1. Low-pass the map at ``lowpass_a`` (:func:`cryoset.recon.validate.lowpass`, raised-cosine
   edge of 2 shells) so that the mask follows the molecule's envelope, not its noise.
2. Binarise at ``threshold``: voxels of the low-passed map ``> threshold`` form the seed. The
   default threshold (:func:`default_threshold`) comes from the low-passed map's statistics:
   ``median + max(n_sigma · σ, fraction · (max − median))`` with ``σ = 1.4826 · MAD`` (the median
   and MAD of a map that is mostly solvent describe the solvent) — above the solvent noise
   and above a small fraction of the strongest density.
3. Every voxel within ``extend_px`` (Euclidean distance, ``scipy.ndimage.distance_transform_edt``)
   of the seed is 1 (a *tight* mask extends by 2–3 voxels, a *loose* one by 6–10).
4. A raised-cosine edge of ``soft_edge_px``: at distance ``d`` from the seed with
   ``extend_px < d < extend_px + soft_edge_px`` the mask is
   ``0.5 + 0.5 cos(π (d − extend_px) / soft_edge_px)``; 0 beyond. The mask therefore falls
   monotonically with the distance from the seed, and every value lies in [0, 1].

The spherical mask of the reconstruction (1 inside radius ``b/2``, soft edge outside) is
:func:`cryoset.recon.reconstruct.inscribed_sphere_mask`, re-exported here as :func:`sphere_mask`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cryoset.recon.reconstruct import inscribed_sphere_mask as sphere_mask

__all__ = ["AutoMask", "auto_mask", "default_threshold", "soft_extend", "sphere_mask"]

#: Default low-pass (Å) of the map before thresholding.
MASK_LOWPASS_A = 15.0
#: Defaults of :func:`default_threshold`.
THRESHOLD_N_SIGMA = 3.0
THRESHOLD_FRACTION = 0.1


@dataclass(frozen=True)
class AutoMask:
    """A soft mask and how it was made.

    Attributes
    ----------
    mask : ndarray, float32, shape (n, n, n)
        Values in [0, 1].
    threshold
        The binarisation threshold applied to the low-passed map.
    lowpass_a, extend_px, soft_edge_px
        The parameters used.
    seed_fraction
        Fraction of the box in the binary seed.
    """

    mask: NDArray[np.float32]
    threshold: float
    lowpass_a: float
    extend_px: float
    soft_edge_px: float
    seed_fraction: float


def default_threshold(volume: ArrayLike, *, n_sigma: float = THRESHOLD_N_SIGMA,
                      fraction: float = THRESHOLD_FRACTION) -> float:
    """``median + max(n_sigma · 1.4826 · MAD, fraction · (max − median))`` of ``volume``."""
    v = np.asarray(volume, dtype=np.float64).ravel()
    med = float(np.median(v))
    sigma = 1.4826 * float(np.median(np.abs(v - med)))
    return med + max(n_sigma * sigma, fraction * (float(v.max()) - med))


def soft_extend(seed: ArrayLike, extend_px: float, soft_edge_px: float) -> NDArray[np.float32]:
    """Extend a binary ``seed`` by ``extend_px`` voxels and add a raised-cosine edge of
    ``soft_edge_px`` voxels (steps 3–4 of the module docstring)."""
    from scipy.ndimage import distance_transform_edt

    binary = np.asarray(seed, dtype=bool)
    if not binary.any():
        raise ValueError("the seed is empty (the threshold is above every voxel)")
    if not (math.isfinite(extend_px) and extend_px >= 0):
        raise ValueError(f"extend_px must be >= 0, got {extend_px}")
    if not (math.isfinite(soft_edge_px) and soft_edge_px >= 0):
        raise ValueError(f"soft_edge_px must be >= 0, got {soft_edge_px}")
    dist = np.asarray(distance_transform_edt(~binary), dtype=np.float64)
    mask = (dist <= extend_px).astype(np.float64)
    if soft_edge_px > 0:
        band = (dist > extend_px) & (dist < extend_px + soft_edge_px)
        mask[band] = 0.5 + 0.5 * np.cos(np.pi * (dist[band] - extend_px) / soft_edge_px)
    return mask.astype(np.float32)


def auto_mask(volume: ArrayLike, voxel_size_a: float, *, lowpass_a: float = MASK_LOWPASS_A,
              threshold: float | None = None, extend_px: float = 3.0,
              soft_edge_px: float = 6.0) -> AutoMask:
    """A soft mask of the density of ``volume`` (see the module docstring).

    Parameters
    ----------
    volume : array, shape (n, n, n)
        The map, e.g. the average of two half maps.
    voxel_size_a
        Voxel size in Å.
    lowpass_a
        Low-pass resolution (Å) before thresholding; 0 or less: no low-pass.
    threshold
        Binarisation threshold in the map's units; None: :func:`default_threshold` of the
        low-passed map.
    extend_px, soft_edge_px
        Hard extension and raised-cosine edge width, voxels.

    Raises
    ------
    ValueError
        A non-cubic volume, or a threshold at or above the low-passed map's maximum.
    """
    from cryoset.recon.validate import lowpass

    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != 3 or len(set(v.shape)) != 1:
        raise ValueError(f"expected a cubic volume, got shape {v.shape}")
    low = lowpass(v, voxel_size_a, lowpass_a) if lowpass_a > 0 else v
    thr = default_threshold(low) if threshold is None else float(threshold)
    seed = low > thr
    if not seed.any():
        raise ValueError(f"threshold {thr:.4g} is at or above the low-passed map's maximum "
                         f"{float(low.max()):.4g}")
    mask = soft_extend(seed, extend_px, soft_edge_px)
    return AutoMask(mask, thr, float(lowpass_a), float(extend_px), float(soft_edge_px),
                    float(seed.mean()))
