"""Imported picks: give picks from any coordinate file the same treatment as our pickers
(edge exclusion, duplicate removal at a fraction of the diameter, NCC and power scores)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from cryoset.errors import InputError
from cryoset.picking.base import (
    Peaks,
    Picker,
    PickerInputs,
    PreparedMicrograph,
    ScoreMap,
    register_picker,
)
from cryoset.picking.blob import disk_ncc, prepare_micrograph
from cryoset.picking.peaks import edge_mask, local_power, remove_duplicates

__all__ = ["ImportedPicker", "score_imported"]


def score_imported(
    image: ArrayLike,
    picks: pd.DataFrame,
    diameter_px: float,
    *,
    min_distance_fraction: float = 0.5,
    edge_fraction: float = 0.5,
    dark_particles: bool = True,
    threshold: float | None = None,
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
    threshold
        Keep only picks scoring at least this (None: keep all).

    Returns
    -------
    DataFrame
        The kept picks with ``ncc`` and ``power`` columns and ``diameter_px`` filled.
    """
    return ImportedPicker(picks, diameter_px, min_distance_fraction=min_distance_fraction,
                          edge_fraction=edge_fraction, dark_particles=dark_particles,
                          threshold=threshold).pick(image, 1.0)


@register_picker("import")
class ImportedPicker(Picker):
    """Imported picks as the four :class:`~cryoset.picking.base.Picker` steps.

    The positions come from ``picks`` (a canonical picks table of one micrograph), so there
    is no score map; the peaks are the picks away from the edge, the picks those peaks
    scored and de-duplicated. ``diameter_px`` is in micrograph pixels (the pixel size given
    to :meth:`pick` is not used). With a ``threshold``, only picks scoring at least that
    are kept (after de-duplication).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"picks"})

    def __init__(self, picks: pd.DataFrame, diameter_px: float, *, min_distance_fraction: float = 0.5,
                 edge_fraction: float = 0.5, dark_particles: bool = True,
                 threshold: float | None = None) -> None:
        self.table = picks
        self.diameter_px = diameter_px
        self.min_distance_fraction = min_distance_fraction
        self.edge_fraction = edge_fraction
        self.dark_particles = dark_particles
        self.threshold = threshold

    @classmethod
    def from_inputs(cls, inputs: PickerInputs) -> ImportedPicker:
        """Needs ``picks``; the diameter in pixels is ``diameter_a / pixel_size_a``."""
        if inputs.picks is None:
            raise InputError("picks", "the imported picker needs a picks table")
        return cls(inputs.picks, inputs.diameter_a / inputs.pixel_size_a,
                   min_distance_fraction=inputs.min_distance_fraction,
                   dark_particles=inputs.dark_particles, threshold=cls.threshold_of(inputs))

    def prepare(self, image: ArrayLike, pixel_size_a: float) -> PreparedMicrograph:
        img = np.asarray(image, dtype=np.float32)
        work, factor = prepare_micrograph(img, self.diameter_px, dark_particles=self.dark_particles)
        return PreparedMicrograph(img, work, factor, pixel_size_a, self.diameter_px)

    def score_map(self, micrograph: PreparedMicrograph) -> ScoreMap:
        return ScoreMap(None)

    def peaks(self, micrograph: PreparedMicrograph, score: ScoreMap) -> Peaks:
        out = self.table.reset_index(drop=True).copy()
        xy = out[["x_px", "y_px"]].to_numpy(np.float64)
        out = out.loc[edge_mask(xy, micrograph.shape, self.edge_fraction * self.diameter_px)]
        out = out.reset_index(drop=True)
        xy = out[["x_px", "y_px"]].to_numpy(np.float64)
        scores = pd.to_numeric(out["score"], errors="coerce").to_numpy(np.float64)
        return Peaks(xy, scores, xy / micrograph.factor, out)

    def picks(self, micrograph: PreparedMicrograph, score: ScoreMap, peaks: Peaks, name: str) -> pd.DataFrame:
        assert peaks.rows is not None
        out = peaks.rows.copy()
        d_work = self.diameter_px / micrograph.factor
        out["ncc"] = disk_ncc(micrograph.work, peaks.xy_work, d_work)
        out["power"] = local_power(micrograph.work, peaks.xy_work, d_work / 2)
        score_col = pd.to_numeric(out["score"], errors="coerce")
        out["score"] = score_col.where(score_col.notna(), out["ncc"])
        out["diameter_px"] = pd.to_numeric(out["diameter_px"], errors="coerce").fillna(self.diameter_px)
        out = remove_duplicates(out, self.min_distance_fraction * self.diameter_px)
        if self.threshold is not None:
            out = out[out["score"] >= self.threshold].reset_index(drop=True)
        return out
