"""Unsupervised picking from frozen encoder features (cryoPANDA's method, ml-anchors (e)).

No labels, no templates; every parameter follows from the particle diameter ``d`` (micrograph
pixels) and the encoder's input size ``S``:

1. **Working image.** The micrograph is Fourier-cropped so that a window of ``W = 1.25 d``
   (even; the training crops held the particle with about this margin) is about ``S`` pixels
   (never up-sampled).
2. **Feature grid.** Windows ``W`` (working pixels) on a centred grid with stride
   ``max(1, round(d / 4))`` (the encoder costs milliseconds per window on a CPU) go through
   the *featurizer* — a function windows ``(B, W, W)`` → features ``(B, D)`` given by the
   caller (the pick workflow builds it from a ViT checkpoint: per-window normalisation as the
   training particles, contrast inverted for dark particles, resized to ``S``). This module never loads a model, so it stays a kernel.
3. **Score.** The first principal component of that micrograph's window features (SVD in
   float64), min–max scaled to [0, 1]. PCA leaves the sign free; it is fixed without labels:
   the sign for which the score correlates *positively* with the window's disk contrast (mean
   of the flattened, particle-bright working image inside the disk of diameter ``d`` minus
   the mean of the ring ``d/2 … 3d/4`` around it) — particles are the windows whose centre
   stands out from their surroundings. When that correlation is exactly 0, the sign that
   makes high scores the minority is taken.
4. **Candidates** are grid cells with score > ``threshold``. The paper's fixed cap is 0.3; on
   real micrographs most windows score above it (min–max scaling is set by a few outliers),
   so the default here (``threshold`` None) is ``max(0.3, Otsu)``: the cut that best splits
   this micrograph's scores into two classes (largest between-class variance over the cuts
   0.02, 0.03 … 0.98; the middle one when several split alike) — a two-cluster split of PC1, as the paper's k-means(2) map, still
   without labels. ``--threshold 0.3`` gives the paper's rule exactly.
5. **Duplicate removal, round 1** (grid): a candidate survives only if its score is strictly
   larger than every other candidate within ``max(2, (W / stride) // 4)`` cells; it moves to
   the score-weighted mean position of that neighbourhood (itself included).
6. **Duplicate removal, round 2** (pixels): greedy, best first, at least
   ``min_distance_fraction · d`` apart (the distance rule of the other pickers); picks closer
   than ``d / 2`` to the micrograph edge are dropped.

Each pick also gets the ``ncc`` and ``power`` of the blob picker (on the flattened working
image) so the inspection step (``--min-ncc``, ``--min-power``, ``--max-power``) applies as for
the other pickers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cryoset.errors import InputError
from cryoset.picking.base import (
    Peaks,
    Picker,
    PickerInputs,
    PreparedMicrograph,
    ScoreMap,
    register_picker,
)
from cryoset.picking.peaks import disk, edge_mask, local_power, non_max_suppression, picks_table

__all__ = [
    "DEFAULT_THRESHOLD",
    "FeaturePicker",
    "Featurizer",
    "disk_contrast",
    "feature_grid",
    "grid_duplicates",
    "otsu_threshold",
    "pc1_score",
    "window_grid",
]

#: The paper's cap on the min–max scaled PC1 score.
DEFAULT_THRESHOLD = 0.3
#: Window side as a multiple of the diameter.
WINDOW_FRACTION = 1.25
#: Stride as a fraction of the diameter.
STRIDE_FRACTION = 0.25

Featurizer = Callable[[NDArray[np.float32]], NDArray[np.floating]]


def window_grid(shape_yx: tuple[int, int], window_px: int, stride_px: int
                ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Top-left rows and columns of the centred window grid (as ``cryoset featuremap``).

    ``g = (n − W) // s + 1`` windows per axis, offset ``(n − ((g − 1) s + W)) // 2``; window
    ``(i, j)`` has its centre at ``top[i] + W // 2``, ``left[j] + W // 2``.
    """
    h, w = int(shape_yx[0]), int(shape_yx[1])
    if window_px < 1 or stride_px < 1 or h < window_px or w < window_px:
        raise ValueError(f"a {window_px}-px window with stride {stride_px} does not fit a {h}×{w} image")
    gy, gx = (h - window_px) // stride_px + 1, (w - window_px) // stride_px + 1
    oy, ox = (h - ((gy - 1) * stride_px + window_px)) // 2, (w - ((gx - 1) * stride_px + window_px)) // 2
    return (oy + np.arange(gy, dtype=np.int64) * stride_px, ox + np.arange(gx, dtype=np.int64) * stride_px)


def feature_grid(image: ArrayLike, featurize: Featurizer, window_px: int, stride_px: int, *,
                 batch_size: int = 256) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.int64]]:
    """Features ``(gy, gx, D)`` of every grid window, and the window tops and lefts."""
    img = np.asarray(image, dtype=np.float32)
    top, left = window_grid(img.shape, window_px, stride_px)  # type: ignore[arg-type]
    gy, gx = len(top), len(left)
    view = np.lib.stride_tricks.sliding_window_view(img, (window_px, window_px))
    feats: NDArray[np.float32] | None = None
    n = gy * gx
    for lo in range(0, n, batch_size):
        ids = np.arange(lo, min(lo + batch_size, n))
        wins = np.ascontiguousarray(view[top[ids // gx], left[ids % gx]])
        f = np.asarray(featurize(wins), dtype=np.float32)
        if f.ndim != 2 or len(f) != len(ids):
            raise ValueError(f"the featurizer returned shape {f.shape} for {len(ids)} windows")
        if feats is None:
            feats = np.empty((n, f.shape[1]), np.float32)
        feats[ids] = f
    assert feats is not None
    return feats.reshape(gy, gx, -1), top, left


def disk_contrast(work: ArrayLike, diameter_px: float) -> NDArray[np.float64]:
    """Mean inside the disk of diameter ``d`` minus the mean of the ring ``d/2 … 3d/4``, at every pixel."""
    from cryoset.picking.peaks import convolve_same

    img = np.asarray(work, dtype=np.float64)
    r_in, r_out = 0.5 * diameter_px, 0.75 * diameter_px
    outer = disk(r_out).astype(np.float64)
    inner = np.zeros_like(outer)
    c = outer.shape[0] // 2
    d_in = disk(r_in).astype(np.float64)
    k = d_in.shape[0] // 2
    inner[c - k:c + k + 1, c - k:c + k + 1] = d_in
    ring = outer - inner
    kernel = inner / max(inner.sum(), 1.0) - ring / max(ring.sum(), 1.0)
    return convolve_same(img, kernel)


def pc1_score(features: ArrayLike, orientation: ArrayLike | None = None) -> tuple[NDArray[np.float64], float]:
    """First principal component of grid features ``(gy, gx, D)``, min–max scaled to [0, 1].

    The sign makes the score correlate positively with ``orientation`` (same grid shape);
    without one (or a zero correlation) high scores are made the minority.

    Returns ``(score (gy, gx), explained variance ratio of PC1)``.
    """
    f = np.asarray(features, dtype=np.float64)
    gy, gx, d = f.shape
    x = f.reshape(-1, d)
    x = x - x.mean(axis=0)
    if x.shape[0] < 2 or not np.any(x):
        return np.zeros((gy, gx)), 0.0
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    pc = x @ vt[0]
    sign = 0.0
    if orientation is not None:
        o = np.asarray(orientation, dtype=np.float64).reshape(-1)
        if o.std() > 0 and pc.std() > 0:
            sign = float(np.sign(np.corrcoef(pc, o)[0, 1]))
    if sign == 0.0:
        sign = -1.0 if np.mean(pc > pc.mean()) > 0.5 else 1.0
    pc = sign * pc
    span = pc.max() - pc.min()
    score = (pc - pc.min()) / span if span > 0 else np.zeros_like(pc)
    var = sv ** 2
    return score.reshape(gy, gx), float(var[0] / var.sum()) if var.sum() > 0 else 0.0


def otsu_threshold(score: ArrayLike) -> float:
    """The cut among 0.02, 0.03 … 0.98 with the largest between-class variance of ``score`` (in [0, 1])."""
    v = np.asarray(score, dtype=np.float64).ravel()
    cuts = np.round(np.arange(2, 99) / 100.0, 2)
    between = np.full(len(cuts), -1.0)
    for k, t in enumerate(cuts):
        above = v > t
        n1 = int(above.sum())
        n0 = v.size - n1
        if n0 and n1:
            between[k] = n0 * n1 * (v[~above].mean() - v[above].mean()) ** 2
    if between.max() <= 0:
        return DEFAULT_THRESHOLD
    tied = cuts[between >= between.max() * (1 - 1e-9)]
    return float(tied[len(tied) // 2])  # the middle of a plateau of equal splits


def grid_duplicates(score: ArrayLike, threshold: float, radius_cells: float
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Round 1 of duplicate removal on the score grid (module docstring, step 5).

    Returns ``(positions (k, 2) as (column, row) in grid cells, fractional; their scores)``.
    """
    s = np.asarray(score, dtype=np.float64)
    rows, cols = np.nonzero(s > threshold)
    if len(rows) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    pos = np.column_stack([cols, rows]).astype(np.float64)
    val = s[rows, cols]
    from scipy.spatial import cKDTree

    tree = cKDTree(pos)
    neigh = tree.query_ball_point(pos, r=radius_cells - 1e-9)
    out_xy: list[NDArray[np.float64]] = []
    out_v: list[float] = []
    for j, nb in enumerate(neigh):
        others = [k for k in nb if k != j]
        if others and not val[j] > val[others].max():
            continue
        w = val[nb]
        out_xy.append((pos[nb] * w[:, None]).sum(axis=0) / w.sum())
        out_v.append(float(val[j]))
    order = np.argsort(-np.asarray(out_v), kind="stable")
    return np.asarray(out_xy).reshape(-1, 2)[order], np.asarray(out_v)[order]


def _flatten(work: NDArray[np.float32], diameter_px: float, dark: bool) -> NDArray[np.float32]:
    """Slow background removed (Gaussian of sd 2 d), sd 1, particles bright."""
    from scipy.ndimage import gaussian_filter

    w = work.astype(np.float64)
    w = w - gaussian_filter(w, 2.0 * diameter_px, mode="reflect")
    sd = float(w.std())
    w = w / sd if sd > 0 else w
    return np.asarray(-w if dark else w, dtype=np.float32)


@register_picker("features")
class FeaturePicker(Picker):
    """Unsupervised picker on frozen encoder features (see the module docstring)."""

    default_threshold: ClassVar[float | None] = None  # max(0.3, Otsu) per micrograph
    needs: ClassVar[frozenset[str]] = frozenset({"featurizer"})

    def __init__(self, diameter_a: float, featurize: Featurizer, input_px: int, *,
                 threshold: float | None = None, min_distance_fraction: float = 0.5,
                 dark_particles: bool = True, batch_size: int = 256) -> None:
        if not (math.isfinite(diameter_a) and diameter_a > 0):
            raise InputError("--diameter-a", f"must be a positive number of Å, got {diameter_a}")
        if input_px < 8:
            raise ValueError(f"encoder input size must be >= 8 px, got {input_px}")
        self.diameter_a, self.featurize, self.input_px = diameter_a, featurize, int(input_px)
        self.threshold = None if threshold is None else float(threshold)
        self.min_distance_fraction = float(min_distance_fraction)
        self.threshold_used = float("nan")
        self.dark, self.batch_size = dark_particles, batch_size
        self.explained_variance = 0.0

    @classmethod
    def from_inputs(cls, inputs: PickerInputs) -> FeaturePicker:
        if inputs.featurizer is None or inputs.featurizer_input_px is None:
            raise InputError("--checkpoint", "--method features needs an encoder checkpoint")
        return cls(inputs.diameter_a, inputs.featurizer, inputs.featurizer_input_px,
                   threshold=cls.threshold_of(inputs),
                   min_distance_fraction=inputs.min_distance_fraction, dark_particles=inputs.dark_particles)

    def geometry(self, diameter_px: float) -> tuple[float, int, int]:
        """``(factor, window, stride)``: micrograph pixels per working pixel, window and stride (working px)."""
        window_mic = WINDOW_FRACTION * diameter_px
        factor = max(1.0, window_mic / self.input_px)
        d_work = diameter_px / factor
        window = max(8, 2 * round(WINDOW_FRACTION * d_work / 2))
        stride = max(1, round(STRIDE_FRACTION * d_work))
        return factor, window, stride

    def prepare(self, image: ArrayLike, pixel_size_a: float) -> PreparedMicrograph:
        from cryoset.picking.blob import fourier_crop_f32

        if not pixel_size_a > 0:
            raise InputError("pixel-size", f"must be > 0 Å, got {pixel_size_a}")
        img = np.asarray(image, dtype=np.float32)
        if img.ndim != 2:
            raise ValueError(f"micrograph must be 2-D, got shape {img.shape}")
        d_px = self.diameter_a / pixel_size_a
        factor, _, _ = self.geometry(d_px)
        ny, nx = img.shape
        mx = min(nx, max(8, round(nx / factor / 2) * 2))
        factor = nx / mx
        my = min(ny, max(8, round(ny / factor)))
        work = fourier_crop_f32(img, (my, mx)) if (my, mx) != img.shape else img.copy()
        return PreparedMicrograph(img, np.asarray(work, np.float32), float(factor), float(pixel_size_a), d_px)

    def score_map(self, micrograph: PreparedMicrograph) -> ScoreMap:
        _, window, stride = self.geometry(micrograph.diameter_px)
        d_work = micrograph.diameter_work_px
        if min(micrograph.work.shape) < window:
            raise InputError("--diameter-a", f"a {window}-px window (1.25 × the diameter) does not fit the "
                                             f"micrograph ({micrograph.shape[0]}×{micrograph.shape[1]} px)")
        feats, top, left = feature_grid(micrograph.work, self.featurize, window, stride, batch_size=self.batch_size)
        flat = _flatten(micrograph.work, d_work, self.dark)
        contrast = disk_contrast(flat, d_work)
        cy, cx = top + window // 2, left + window // 2
        score, ev = pc1_score(feats, contrast[np.ix_(cy, cx)])
        self.explained_variance = ev
        return ScoreMap(score, {"centre_y": cy, "centre_x": cx, "flat": flat,
                                "window": np.asarray([window, stride])})

    def peaks(self, micrograph: PreparedMicrograph, score: ScoreMap) -> Peaks:
        assert score.values is not None
        window, stride = (int(v) for v in score.extra["window"])
        radius = max(2.0, float((window / stride) // 4))
        thr = max(DEFAULT_THRESHOLD, otsu_threshold(score.values)) if self.threshold is None else self.threshold
        self.threshold_used = thr
        cells, vals = grid_duplicates(score.values, thr, radius)
        cy = score.extra["centre_y"].astype(np.float64)
        cx = score.extra["centre_x"].astype(np.float64)
        # fractional grid cells → working pixels (centres are evenly spaced)
        xw = cx[0] + cells[:, 0] * stride if len(cells) else np.zeros(0)
        yw = cy[0] + cells[:, 1] * stride if len(cells) else np.zeros(0)
        xy_work = np.column_stack([xw, yw])
        xy = xy_work * micrograph.factor
        keep = non_max_suppression(xy, vals, self.min_distance_fraction * micrograph.diameter_px)
        xy, vals, xy_work = xy[keep], vals[keep], xy_work[keep]
        ok = edge_mask(xy, micrograph.shape, 0.5 * micrograph.diameter_px)
        return Peaks(xy[ok], vals[ok], xy_work[ok])

    def picks(self, micrograph: PreparedMicrograph, score: ScoreMap, peaks: Peaks, name: str) -> pd.DataFrame:
        from cryoset.picking.blob import disk_ncc

        flat = np.asarray(score.extra["flat"], dtype=np.float32)
        d_work = micrograph.diameter_work_px
        return picks_table(name, peaks.xy, peaks.values, micrograph.diameter_px,
                           ncc=disk_ncc(flat, peaks.xy_work, d_work),
                           power=local_power(flat, peaks.xy_work, d_work / 2))
