"""Imported picks: give picks from any coordinate file the same treatment as our pickers
(edge exclusion, duplicate removal at a fraction of the diameter, NCC and power scores)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from cryoset.picking.blob import disk_ncc, prepare_micrograph
from cryoset.picking.peaks import edge_mask, local_power, remove_duplicates

__all__ = ["score_imported"]


def score_imported(
    image: ArrayLike,
    picks: pd.DataFrame,
    diameter_px: float,
    *,
    min_distance_fraction: float = 0.5,
    edge_fraction: float = 0.5,
    dark_particles: bool = True,
) -> pd.DataFrame:
    """Filter and score imported picks of one micrograph.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
    picks
        Canonical picks table of this micrograph (any ``score`` is kept; NaN scores are
        replaced by the disk NCC so duplicates are resolved by it).
    diameter_px
        Particle diameter (pixels).
    min_distance_fraction, edge_fraction, dark_particles
        As in :class:`cryoset.picking.blob.BlobSettings`.

    Returns
    -------
    DataFrame
        The kept picks with ``ncc`` and ``power`` columns and ``diameter_px`` filled.
    """
    img = np.asarray(image, dtype=np.float32)
    work, factor = prepare_micrograph(img, diameter_px, dark_particles=dark_particles)
    out = picks.reset_index(drop=True).copy()
    xy = out[["x_px", "y_px"]].to_numpy(np.float64)
    out = out.loc[edge_mask(xy, (img.shape[0], img.shape[1]), edge_fraction * diameter_px)]
    out = out.reset_index(drop=True)
    xy_w = out[["x_px", "y_px"]].to_numpy(np.float64) / factor
    out["ncc"] = disk_ncc(work, xy_w, diameter_px / factor)
    out["power"] = local_power(work, xy_w, diameter_px / factor / 2)
    score = pd.to_numeric(out["score"], errors="coerce")
    out["score"] = score.where(score.notna(), out["ncc"])
    out["diameter_px"] = pd.to_numeric(out["diameter_px"], errors="coerce").fillna(diameter_px)
    return remove_duplicates(out, min_distance_fraction * diameter_px)
