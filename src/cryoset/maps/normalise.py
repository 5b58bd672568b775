"""Percentile normalisation of a density map (the Cryo2StructData rule).

``normalised = clip(data / p, low, high)`` where ``p`` is the ``percentile``-th percentile
(default 95) of the strictly positive values of the map, and ``[low, high]`` defaults to
``[0, 1]``. A map with no positive value cannot be normalised this way and raises
``ValueError``. The percentile uses numpy's default (linear) interpolation on float64 copies
of the positive values only.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["normalise", "positive_percentile"]


def positive_percentile(data: ArrayLike, percentile: float = 95.0) -> float:
    """The ``percentile``-th percentile of the strictly positive finite values.

    Examples
    --------
    >>> positive_percentile([-1.0, 0.0, 1.0, 2.0, 3.0], 50)
    2.0
    """
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    arr = np.asarray(data)
    pos = arr[(arr > 0) & np.isfinite(arr)]
    if pos.size == 0:
        raise ValueError("the map has no positive value: it cannot be percentile-normalised")
    return float(np.percentile(pos.astype(np.float64), percentile))


def normalise(
    data: ArrayLike,
    *,
    percentile: float = 95.0,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> NDArray[np.float32]:
    """Divide by the positive-value percentile and clip (Cryo2StructData normalisation).

    Parameters
    ----------
    data : array, shape (z, y, x)
    percentile
        Percentile of the positive values used as the scale (default 95).
    clip
        ``(low, high)`` bounds applied after the division, or None for no clipping.

    Returns
    -------
    ndarray, float32, same shape

    Examples
    --------
    >>> normalise([[[-2.0, 0.5, 1.0, 4.0]]], percentile=50).tolist()
    [[[0.0, 0.5, 1.0, 1.0]]]
    """
    arr = np.asarray(data, dtype=np.float32)
    scale = positive_percentile(arr, percentile)
    out = arr / np.float32(scale)
    if clip is not None:
        low, high = clip
        if low > high:
            raise ValueError(f"clip low {low} is above high {high}")
        np.clip(out, low, high, out=out)
    return out
