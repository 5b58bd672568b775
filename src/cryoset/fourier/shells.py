"""Fourier shells: the rounded radius of every DFT sample, and sums and means over shells.

Shell ``i`` holds the samples whose frequency radius ``|k|`` (in Fourier pixels, cycles per
``n`` samples) rounds to ``i``; for an ``n``-sample edge shell ``i`` sits at ``i / (n p)``
cycles per Å (``p`` the pixel size). Used by the FSC/FRC (:mod:`cryoset.recon.fsc`), the
reconstruction's per-shell regulariser (:mod:`cryoset.recon.reconstruct`), 2D
classification's noise spectrum (:mod:`cryoset.classify.em2d`) and the CTF fit's radial
profiles (:mod:`cryoset.ctf.estimate`).

>>> shell_index(4, 2)
array([[0, 1, 2],
       [1, 1, 2],
       [2, 2, 3],
       [1, 1, 2]])
>>> shell_sum(np.ones((4, 3)), shell_index(4, 2), 3)
array([1., 5., 5.])
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["rfft_multiplicity", "shell_count", "shell_index", "shell_mean", "shell_sum"]


def shell_index(n: int, ndim: int, *, half: bool = True) -> NDArray[np.int64]:
    """Shell (rounded ``|k|``) of every sample of an ``n``-edge ``ndim``-D DFT grid.

    Parameters
    ----------
    n
        Edge of the grid (samples per axis).
    ndim
        2 or 3.
    half
        True: the ``rfftn`` half grid (last axis ``0 … n//2``); False: the full ``fftn`` grid.
        Other axes follow :func:`numpy.fft.fftfreq` order.

    Returns
    -------
    ndarray of int64, shape ``(n,) * (ndim - 1) + (n//2 + 1 if half else n,)``
    """
    k = np.fft.fftfreq(n) * n
    axes = [k] * (ndim - 1) + [np.arange(n // 2 + 1, dtype=np.float64) if half else k]
    grids = np.meshgrid(*axes, indexing="ij", sparse=True)
    radius = np.sqrt(sum(g * g for g in grids))
    return np.rint(radius).astype(np.int64)


def shell_sum(values: ArrayLike, shells: NDArray[np.integer], nshell: int) -> NDArray[np.float64]:
    """Sum of ``values`` over each of shells ``0 … nshell - 1`` (samples beyond are ignored).

    ``values`` has the shape of ``shells``; the samples are summed in C order.
    """
    s = np.ravel(shells)
    keep = s < nshell
    return np.asarray(np.bincount(s[keep], np.ravel(values)[keep], minlength=nshell), dtype=np.float64)


def shell_count(shells: NDArray[np.integer], nshell: int) -> NDArray[np.int64]:
    """Number of samples in each of shells ``0 … nshell - 1``."""
    s = np.ravel(shells)
    return np.bincount(s[s < nshell], minlength=nshell).astype(np.int64)


def shell_mean(values: NDArray[np.float64], shells: NDArray[np.int64], nshell: int) -> NDArray[np.float64]:
    """Mean over shells of a stack: ``values`` (..., *grid) → (..., nshell), empty shells 0.

    One matrix product with a (samples × shells) indicator for the whole stack.
    """
    flat = values.reshape(*values.shape[: values.ndim - shells.ndim], -1)
    s = shells.ravel()
    onehot = np.zeros((s.size, nshell))
    keep = s < nshell
    onehot[np.flatnonzero(keep), s[keep]] = 1.0
    count = np.maximum(onehot.sum(axis=0), 1.0)
    return np.asarray((flat @ onehot) / count, np.float64)


def rfft_multiplicity(n: int) -> NDArray[np.float64]:
    """Multiplicity of each ``rfft`` column (``0 … n//2``) in the full transform (Parseval).

    >>> rfft_multiplicity(4)
    array([1., 2., 1.])
    """
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w
