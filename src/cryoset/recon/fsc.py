"""Fourier ring and shell correlation, and the resolution at which a curve crosses a threshold.

For two images (volumes) ``a``, ``b`` of equal square (cubic) shape ``n`` with transforms
``F``, ``G`` (full ``fftn``), shell ``i`` holds the coefficients whose frequency radius
``|k|`` (in cycles per ``n`` samples) rounds to ``i``, for ``i = 0 … n//2``, and

.. math:: \\mathrm{FSC}_i = \\frac{\\mathrm{Re} \\sum_{k \\in i} F(k) G^*(k)}
          {\\sqrt{\\sum_{k \\in i} |F(k)|^2 \\sum_{k \\in i} |G(k)|^2}},

at spatial frequency ``i / (n · pixel_size_a)`` Å⁻¹. Shells with no power give NaN.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cryoset.fourier.shells import shell_count, shell_index, shell_sum


class CorrelationCurve(NamedTuple):
    """An FRC/FSC curve.

    Attributes
    ----------
    freq_per_a : ndarray, shape (n//2 + 1,)
        Shell frequency in Å⁻¹ (cycles per pixel when the pixel size is 1).
    correlation : ndarray, shape (n//2 + 1,)
        Correlation per shell, in [-1, 1] (NaN for shells without power).
    n_coefficients : ndarray of int, shape (n//2 + 1,)
        Fourier coefficients per shell (full transform, Friedel mates counted twice).
    """

    freq_per_a: NDArray[np.float64]
    correlation: NDArray[np.float64]
    n_coefficients: NDArray[np.int64]


def _shell_correlation(a: ArrayLike, b: ArrayLike, ndim: int, pixel_size_a: float) -> CorrelationCurve:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    kind = "images" if ndim == 2 else "volumes"
    if x.shape != y.shape:
        raise ValueError(f"{kind} must have the same shape, got {x.shape} and {y.shape}")
    if x.ndim != ndim or len(set(x.shape)) != 1 or x.shape[0] < 2:
        raise ValueError(f"expected two {'square' if ndim == 2 else 'cubic'} {kind}, got shape {x.shape}")
    if not (math.isfinite(pixel_size_a) and pixel_size_a > 0):
        raise ValueError(f"pixel_size_a must be positive, got {pixel_size_a}")
    n = x.shape[0]
    fx = np.fft.fftn(x)
    fy = np.fft.fftn(y)
    shell = shell_index(n, ndim, half=False)
    nshell = n // 2 + 1
    cross = shell_sum((fx * np.conj(fy)).real, shell, nshell)
    px = shell_sum(np.abs(fx) ** 2, shell, nshell)
    py = shell_sum(np.abs(fy) ** 2, shell, nshell)
    count = shell_count(shell, nshell)
    denom = np.sqrt(px * py)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, cross / np.where(denom > 0, denom, 1.0), np.nan)
    freqs = np.arange(nshell, dtype=np.float64) / (n * pixel_size_a)
    return CorrelationCurve(freqs, np.clip(corr, -1.0, 1.0), count)


def fourier_ring_correlation(a: ArrayLike, b: ArrayLike, *, pixel_size_a: float = 1.0) -> CorrelationCurve:
    """Fourier ring correlation of two square images.

    Parameters
    ----------
    a, b : array, shape (n, n)
    pixel_size_a
        Pixel size in Å (frequencies in Å⁻¹).

    Returns
    -------
    CorrelationCurve
        ``n//2 + 1`` rings, ring ``i`` at ``i / (n · pixel_size_a)``.

    Examples
    --------
    >>> img = np.random.default_rng(0).standard_normal((16, 16))
    >>> bool(np.allclose(fourier_ring_correlation(img, 2 * img).correlation[1:], 1.0))
    True
    """
    return _shell_correlation(a, b, 2, float(pixel_size_a))


def fourier_shell_correlation(a: ArrayLike, b: ArrayLike, *, voxel_size_a: float = 1.0) -> CorrelationCurve:
    """Fourier shell correlation of two cubic volumes (``(n, n, n)``); see the module docstring."""
    return _shell_correlation(a, b, 3, float(voxel_size_a))


def resolution_at(curve: ArrayLike, freqs: ArrayLike, threshold: float = 0.143) -> float:
    """Resolution (Å) where a correlation curve first falls below ``threshold``.

    The crossing frequency is interpolated linearly between the last shell at or above the
    threshold and the first shell below it, searching from shell 1 (shell 0, the mean, only
    serves as the left end of the first interval). NaN shells count as below the threshold.

    Parameters
    ----------
    curve : array, shape (m,)
        Correlation per shell.
    freqs : array, shape (m,)
        Shell frequencies in Å⁻¹, increasing.
    threshold
        E.g. 0.143 (half-maps, gold standard) or 0.5 (map vs model).

    Returns
    -------
    float
        ``1 / f_cross`` in Å; ``1 / freqs[-1]`` (the Nyquist-limited value) when the curve never
        falls below the threshold; ``inf`` when shells 0 and 1 are both below it.

    Examples
    --------
    >>> round(resolution_at([1.0, 0.8, 0.4, 0.0], [0.0, 0.1, 0.2, 0.3], 0.5), 4)
    5.7143
    """
    c = np.asarray(curve, dtype=np.float64).reshape(-1)
    f = np.asarray(freqs, dtype=np.float64).reshape(-1)
    if c.shape != f.shape or c.size < 2:
        raise ValueError(f"curve and freqs must be 1D of equal length >= 2, got {c.shape} and {f.shape}")
    below = ~(c[1:] >= threshold)
    if not below.any():
        return float(1.0 / f[-1])
    i = int(np.argmax(below)) + 1
    if i == 1 and not c[0] >= threshold:
        return math.inf
    c0, c1 = c[i - 1], c[i]
    if not math.isfinite(c1):
        f_cross = f[i - 1]
    else:
        t = (c0 - threshold) / (c0 - c1) if c0 != c1 else 0.0
        f_cross = f[i - 1] + t * (f[i] - f[i - 1])
    return float(1.0 / f_cross) if f_cross > 0 else math.inf
