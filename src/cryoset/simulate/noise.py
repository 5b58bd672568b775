"""Noise and detector models for simulated images: shot noise, a detector MTF and smooth
random fields (ice-thickness variation).

All functions are pure: arrays in, arrays out; randomness only from the ``rng`` passed in.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.typing import NDArray

_WORKERS = 2


def poisson_counts(expected: NDArray[np.floating], rng: np.random.Generator) -> NDArray[np.float32]:
    """Poisson shot noise: draw counts with the given per-pixel expectation.

    Parameters
    ----------
    expected : ndarray, any shape
        Expected electrons per pixel (negative values are treated as 0).
    rng
        Seeded generator.

    Returns
    -------
    ndarray of float32, same shape
    """
    arr = np.asarray(expected)
    out = np.empty(arr.shape, dtype=np.float32)
    flat_in = arr.reshape(-1)
    flat_out = out.reshape(-1)
    chunk = 1 << 20  # bounded float64 temporaries for 4096² images
    for start in range(0, flat_in.size, chunk):
        lam = np.clip(flat_in[start:start + chunk].astype(np.float64), 0.0, None)
        flat_out[start:start + chunk] = rng.poisson(lam)
    return out


def detector_mtf(shape: tuple[int, int], *, weight: float = 0.6, width_a: float = 0.25,
                 width_b: float = 1.0) -> NDArray[np.float32]:
    """Radial detector MTF on the ``rfft2`` grid of an image of ``shape``.

    ``MTF(f) = sinc(f) · [w / (1 + (f/a)²) + (1 − w) / (1 + (f/b)²)]`` with ``f`` the spatial
    frequency in cycles per pixel (Nyquist = 0.5) and ``sinc(f) = sin(πf)/(πf)`` the pixel
    aperture. ``MTF(0) = 1``; with the defaults ``MTF(Nyquist) ≈ 0.35``.

    Parameters
    ----------
    shape
        ``(ny, nx)`` of the image.
    weight, width_a, width_b
        Mixture weight and widths (cycles/pixel) of the two Lorentzian terms.

    Returns
    -------
    ndarray of float32, shape ``(ny, nx // 2 + 1)``
    """
    ny, nx = shape
    fy = scipy.fft.fftfreq(ny).astype(np.float32)[:, None]
    fx = scipy.fft.rfftfreq(nx).astype(np.float32)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    lorentz = weight / (1 + (f / width_a) ** 2) + (1 - weight) / (1 + (f / width_b) ** 2)
    return (np.sinc(f) * lorentz).astype(np.float32)


def apply_transfer(image: NDArray[np.floating], transfer: NDArray[np.floating]) -> NDArray[np.float32]:
    """Multiply the spectrum of ``image`` (shape (ny, nx)) by ``transfer`` (rfft2 grid)."""
    spec = scipy.fft.rfft2(np.asarray(image, dtype=np.float32), workers=_WORKERS)
    spec *= transfer
    out = scipy.fft.irfft2(spec, s=image.shape, workers=_WORKERS)
    return np.asarray(out, dtype=np.float32)


def smooth_random_field(shape: tuple[int, int], correlation_px: float,
                        rng: np.random.Generator) -> NDArray[np.float32]:
    """A smooth Gaussian random field with zero mean and unit standard deviation.

    White noise low-passed by a Gaussian of standard deviation ``correlation_px`` pixels
    (computed on a grid downsampled so the cost stays small for 4096² images).

    Parameters
    ----------
    shape
        ``(ny, nx)``.
    correlation_px
        Correlation length in pixels (> 0).
    rng
        Seeded generator.

    Returns
    -------
    ndarray of float32, shape ``shape``
    """
    ny, nx = shape
    step = max(1, int(correlation_px // 4))
    sy, sx = -(-ny // step) + 2, -(-nx // step) + 2
    white = rng.standard_normal((sy, sx)).astype(np.float32)
    fy = scipy.fft.fftfreq(sy)[:, None]
    fx = scipy.fft.rfftfreq(sx)[None, :]
    sigma = correlation_px / step
    gauss = np.exp(-2 * np.pi**2 * sigma**2 * (fy**2 + fx**2)).astype(np.float32)
    small = scipy.fft.irfft2(scipy.fft.rfft2(white) * gauss, s=(sy, sx))
    small -= small.mean()
    std = float(small.std())
    small /= std if std > 0 else 1.0
    # bilinear upsampling back to the full grid, as two small matrix products
    wy = _linear_interpolation_matrix(ny, sy, step)
    wx = _linear_interpolation_matrix(nx, sx, step)
    out = wy @ small.astype(np.float32) @ wx.T
    return np.ascontiguousarray(out, dtype=np.float32)


def _linear_interpolation_matrix(n: int, m: int, step: int) -> NDArray[np.float32]:
    """(n, m) weights that linearly interpolate m coarse samples (spacing ``step``) at n points."""
    pos = (np.arange(n, dtype=np.float64) + 0.5) / step
    i0 = np.clip(pos.astype(np.int64), 0, m - 2)
    w = pos - i0
    mat = np.zeros((n, m), dtype=np.float32)
    rows = np.arange(n)
    mat[rows, i0] = 1 - w
    mat[rows, i0 + 1] = w
    return mat
