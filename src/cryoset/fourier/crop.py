"""Fourier cropping: down-sampling images and stacks without aliasing.

Cropping the centred Fourier transform of an ``n``-pixel image to ``m < n`` samples
down-samples it without aliasing; the pixel size becomes ``p · n / m`` and output sample
``k`` sits at input position ``k · n / m`` (pixel centres aligned at index 0). Values are
scaled by ``m² / n²`` so that the image mean is preserved.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.typing import ArrayLike, NDArray

__all__ = ["fourier_crop", "resampled_pixel_size_a"]


def _crop_axis(n: int, m: int) -> NDArray[np.intp]:
    """Indices of the ``m`` lowest frequencies of an unshifted ``n``-point FFT axis."""
    # 0, 1, …, -1 as integers for an m-point FFT (rounded: fftfreq(m) * m is not exact,
    # e.g. 14.999… for m = 366, and truncation would duplicate a frequency)
    k = np.rint(np.fft.fftfreq(m) * m)
    return np.asarray(np.where(k >= 0, k, n + k), dtype=np.intp)


def fourier_crop(data: ArrayLike, out_shape: tuple[int, int]) -> NDArray[np.float32]:
    """Down-sample images by cropping their Fourier transform.

    Parameters
    ----------
    data : array_like, shape (..., ny, nx)
        One image or a stack.
    out_shape
        ``(my, mx)`` with ``my <= ny`` and ``mx <= nx``.

    Returns
    -------
    ndarray of float32, shape (..., my, mx)
        Equal to ``data`` (as float32) when the shapes are equal. For even ``m`` the
        Nyquist row/column of the output is taken from the input's ``-m/2`` frequency.

    Examples
    --------
    >>> fourier_crop(np.ones((8, 8)), (4, 4)).mean()
    np.float32(1.0)
    """
    a = np.asarray(data, dtype=np.float64)
    ny, nx = a.shape[-2:]
    my, mx = (int(out_shape[0]), int(out_shape[1]))
    if not (0 < my <= ny and 0 < mx <= nx):
        raise ValueError(f"out_shape {out_shape} must be positive and at most {(ny, nx)}")
    if (my, mx) == (ny, nx):
        return a.astype(np.float32)
    f = scipy.fft.fft2(a, axes=(-2, -1), workers=-1)
    f = f[..., _crop_axis(ny, my), :][..., _crop_axis(nx, mx)]
    out = scipy.fft.ifft2(f, axes=(-2, -1), workers=-1).real * (my * mx / (ny * nx))
    return np.asarray(out, dtype=np.float32)


def resampled_pixel_size_a(pixel_size_a: float, n_in: int, n_out: int) -> float:
    """Pixel size after resampling ``n_in`` pixels to ``n_out``: ``p · n_in / n_out``."""
    return float(pixel_size_a) * n_in / n_out
