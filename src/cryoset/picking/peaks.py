"""Peak finding shared by every picker: local maxima, non-maximum suppression, duplicate
removal, edge exclusion and the local power score.

All functions are pure: arrays in, arrays out. Positions are ``(x, y)`` in pixels with the
project convention (the centre of ``image[i, j]`` is ``x = j``, ``y = i``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.fft
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "convolve_same",
    "disk",
    "edge_mask",
    "find_peaks",
    "local_power",
    "non_max_suppression",
    "peaks_in_micrograph",
    "picks_table",
    "remove_duplicates",
]


def disk(radius_px: float) -> NDArray[np.bool_]:
    """A boolean disk of the given radius, shape ``(2r+1, 2r+1)`` with ``r = ceil(radius)``."""
    r = max(int(np.ceil(radius_px)), 0)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.asarray(xx * xx + yy * yy <= radius_px * radius_px + 1e-9)


def non_max_suppression(
    xy: ArrayLike, scores: ArrayLike, min_distance_px: float
) -> NDArray[np.intp]:
    """Greedy non-maximum suppression: keep the best pick, drop its neighbours, repeat.

    Parameters
    ----------
    xy : array_like, shape (n, 2)
        Positions ``(x, y)`` in pixels.
    scores : array_like, shape (n,)
        Higher is better; NaN ranks below every number. Ties keep the earlier row.
    min_distance_px
        Picks closer than this (strictly) to an already kept pick are removed.

    Returns
    -------
    ndarray of intp
        Indices of the kept picks, in decreasing score order. Every pair of kept picks
        is at least ``min_distance_px`` apart and the best pick is always kept.

    Examples
    --------
    >>> non_max_suppression([[0, 0], [3, 0], [10, 0]], [1.0, 2.0, 0.5], 5).tolist()
    [1, 2]
    """
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(p) != len(s):
        raise ValueError(f"{len(p)} positions but {len(s)} scores")
    if len(p) == 0:
        return np.zeros(0, dtype=np.intp)
    key = np.where(np.isnan(s), -np.inf, s)
    order = np.lexsort((np.arange(len(s)), -key))
    if not min_distance_px > 0:
        return order.astype(np.intp)
    # neighbours through a grid of cells of side min_distance: a pick's suppressed
    # neighbours lie in its own and the 8 adjacent cells (no k-d tree, no scipy.spatial)
    d2 = float(min_distance_px) ** 2
    cell = np.floor(p / float(min_distance_px)).astype(np.int64)
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, (cx, cy) in enumerate(cell.tolist()):
        buckets.setdefault((cx, cy), []).append(i)
    members = {key: np.asarray(v, dtype=np.intp) for key, v in buckets.items()}
    removed = np.zeros(len(p), dtype=bool)
    keep: list[int] = []
    for i in order.tolist():
        if removed[i]:
            continue
        keep.append(i)
        cx, cy = int(cell[i, 0]), int(cell[i, 1])
        for nb in ((cx + a, cy + b) for a in (-1, 0, 1) for b in (-1, 0, 1)):
            if nb in members:
                idx = members[nb]
                # strictly closer than min_distance
                removed[idx[((p[idx] - p[i]) ** 2).sum(axis=1) < d2]] = True
    return np.asarray(keep, dtype=np.intp)


def edge_mask(xy: ArrayLike, shape: tuple[int, int], margin_px: float) -> NDArray[np.bool_]:
    """True for positions at least ``margin_px`` from every edge of a ``(ny, nx)`` image.

    The valid range is ``margin <= x <= nx - 1 - margin`` (and the same for y).
    """
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    ny, nx = shape
    m = float(margin_px)
    return np.asarray(
        (p[:, 0] >= m) & (p[:, 0] <= nx - 1 - m) & (p[:, 1] >= m) & (p[:, 1] <= ny - 1 - m)
    )


def find_peaks(
    response: ArrayLike,
    min_distance_px: float,
    *,
    threshold: float = -np.inf,
    exclude_border_px: float = 0.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Local maxima of a score map, separated by at least ``min_distance_px``.

    Parameters
    ----------
    response : array_like, shape (ny, nx)
        Score map (higher = more particle-like).
    min_distance_px
        Minimum distance between returned peaks (greedy NMS, best first).
    threshold
        Only peaks with ``response > threshold`` are returned.
    exclude_border_px
        Peaks closer than this to an edge are dropped.

    Returns
    -------
    xy : ndarray, shape (k, 2)
        Peak positions ``(x, y)`` (integers stored as float).
    values : ndarray, shape (k,)
        Response at the peaks, in decreasing order.
    """
    r = np.asarray(response, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"response must be 2-D, got shape {r.shape}")
    fp = disk(max(1.0, 0.5 * float(min_distance_px)))
    local_max = _disk_maximum(r, fp)
    cand = (r >= local_max) & (r > threshold) & np.isfinite(r)
    rows, cols = np.nonzero(cand)
    xy = np.column_stack([cols, rows]).astype(np.float64)
    vals = r[rows, cols]
    inside = edge_mask(xy, (r.shape[0], r.shape[1]), exclude_border_px)
    xy, vals = xy[inside], vals[inside]
    keep = non_max_suppression(xy, vals, min_distance_px)
    return xy[keep], vals[keep]


def _disk_maximum(image: NDArray[np.float64], footprint: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Maximum over a centred footprint with edge-replicated borders: what
    ``scipy.ndimage.maximum_filter(image, footprint=footprint, mode="nearest")`` returns."""
    ry, rx = footprint.shape[0] // 2, footprint.shape[1] // 2
    ny, nx = image.shape
    padded = np.pad(image, ((ry, ry), (rx, rx)), mode="edge")
    # horizontal maxima over [x - w, x + w] for every half-width w (each from the previous
    # one: [x-w, x+w] = [x-w, x+w-2] ∪ [x-w+2, x+w]), then one vertical shift per footprint row
    rows = [padded]
    for w in range(1, rx + 1):
        prev = rows[-1]
        h = np.full(prev.shape, -np.inf)
        h[:, 1:-1] = np.maximum(prev[:, :-2], prev[:, 2:])
        if w == 1:  # [x-1, x+1] needs the centre too; wider ones overlap
            np.maximum(h, prev, out=h)
        rows.append(h)
    out = np.full(image.shape, -np.inf)
    for dy in range(footprint.shape[0]):
        cols = np.flatnonzero(footprint[dy])
        if len(cols) == 0:
            continue
        lo, hi = int(cols[0]), int(cols[-1])
        if hi - rx != rx - lo or len(cols) != hi - lo + 1:  # not a centred run: shift by shift
            for dx in cols:
                np.maximum(out, padded[dy : dy + ny, dx : dx + nx], out=out)
            continue
        np.maximum(out, rows[rx - lo][dy : dy + ny, rx : rx + nx], out=out)
    return out


def peaks_in_micrograph(
    response: ArrayLike,
    factor: float,
    micrograph_shape: tuple[int, int],
    min_distance_px: float,
    *,
    threshold: float,
    edge_margin_px: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Peaks of a score map computed on a binned working image, placed in the micrograph.

    Parameters
    ----------
    response : array_like, shape (my, mx)
        Score map on the working image (binned ``factor`` times).
    factor
        Micrograph pixels per working pixel.
    micrograph_shape
        ``(ny, nx)`` of the original micrograph.
    min_distance_px
        Minimum peak separation in working pixels (:func:`find_peaks`).
    threshold
        Only peaks with ``response > threshold``.
    edge_margin_px
        Peaks closer than this (micrograph pixels) to a micrograph edge are dropped
        (:func:`edge_mask`).

    Returns
    -------
    xy : ndarray, shape (k, 2)
        Peak positions ``(x, y)`` in micrograph pixels.
    values : ndarray, shape (k,)
        Response at the peaks, in decreasing order.
    xy_work : ndarray, shape (k, 2)
        The same peaks in working pixels.
    """
    xy_work, values = find_peaks(response, min_distance_px, threshold=threshold)
    xy = xy_work * factor
    ok = edge_mask(xy, (int(micrograph_shape[0]), int(micrograph_shape[1])), edge_margin_px)
    return xy[ok], values[ok], xy_work[ok]


def picks_table(micrograph: str, xy: ArrayLike, score: ArrayLike, diameter_px: float,
                **extra: ArrayLike) -> pd.DataFrame:
    """Canonical picks table of one micrograph, extra columns after the canonical ones.

    Parameters
    ----------
    micrograph
        Name for the ``micrograph`` column.
    xy : array_like, shape (k, 2)
        Positions ``(x, y)`` in micrograph pixels.
    score : array_like, shape (k,)
    diameter_px
        One diameter for every pick.
    **extra : array_like, shape (k,)
        Further columns, in the order given.

    Returns
    -------
    DataFrame
        ``micrograph, x_px, y_px, score, diameter_px`` (float64) plus ``extra``.
    """
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return pd.DataFrame({
        "micrograph": pd.Series([micrograph] * len(p), dtype=object),
        "x_px": p[:, 0],
        "y_px": p[:, 1],
        "score": np.asarray(score).astype(np.float64),
        "diameter_px": np.full(len(p), diameter_px),
        **extra,
    })


def local_power(image: ArrayLike, xy: ArrayLike, radius_px: float) -> NDArray[np.float64]:
    """Mean squared value of ``image`` inside a disk around each position.

    With ``image`` normalised to mean 0 and sd 1 this is cryoSPARC-like "power": about 1
    on empty ice, larger on particles, much larger on carbon edges and contamination.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
    xy : array_like, shape (n, 2)
        Positions ``(x, y)``; rounded to the nearest pixel, clipped to the image.
    radius_px
        Disk radius.

    Returns
    -------
    ndarray, shape (n,)
    """
    img = np.asarray(image, dtype=np.float64)
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0:
        return np.zeros(0)
    fp = disk(radius_px).astype(np.float64)
    fp /= fp.sum()
    energy = convolve_same(img * img, fp)
    j = np.clip(np.rint(p[:, 0]).astype(int), 0, img.shape[1] - 1)
    i = np.clip(np.rint(p[:, 1]).astype(int), 0, img.shape[0] - 1)
    return np.asarray(energy[i, j], dtype=np.float64)


def convolve_same(image: NDArray[np.float64], kernel: NDArray[np.float64]) -> NDArray[np.float64]:
    """Linear ``same``-size convolution with a small centred kernel (zero padding), via FFT."""
    ky, kx = kernel.shape
    ny, nx = image.shape
    fy = scipy.fft.next_fast_len(ny + ky - 1, real=True)
    fx = scipy.fft.next_fast_len(nx + kx - 1, real=True)
    full = scipy.fft.irfft2(
        scipy.fft.rfft2(image, s=(fy, fx)) * scipy.fft.rfft2(kernel, s=(fy, fx)), s=(fy, fx)
    )
    oy, ox = ky // 2, kx // 2
    return np.asarray(full[oy : oy + ny, ox : ox + nx])


def remove_duplicates(picks: pd.DataFrame, min_distance_px: float | ArrayLike) -> pd.DataFrame:
    """Drop picks closer than a minimum distance to a better pick of the same micrograph.

    Parameters
    ----------
    picks
        Canonical picks table (``micrograph``, ``x_px``, ``y_px``, ``score``).
    min_distance_px
        One distance for every micrograph, or one per row (the value of the micrograph's
        first row is used), e.g. ``fraction × diameter_px``.

    Returns
    -------
    DataFrame
        The kept rows in their original order (index reset).
    """
    if len(picks) == 0:
        return picks.reset_index(drop=True)
    dist = np.broadcast_to(np.asarray(min_distance_px, dtype=np.float64), (len(picks),))
    xy = picks[["x_px", "y_px"]].to_numpy(dtype=np.float64)
    score = (
        pd.to_numeric(picks["score"], errors="coerce").to_numpy(dtype=np.float64)
        if "score" in picks.columns
        else np.full(len(picks), np.nan)
    )
    names = picks["micrograph"].astype(str).to_numpy()
    keep = np.zeros(len(picks), dtype=bool)
    for name in pd.unique(names):
        rows = np.flatnonzero(names == name)
        kept = non_max_suppression(xy[rows], score[rows], float(dist[rows[0]]))
        keep[rows[kept]] = True
    return picks.loc[keep].reset_index(drop=True)
