"""Projections of cubic volumes: Fourier-slice (fast, batched) and real-space (reference).

Convention (:mod:`cryoset.geometry`): for a RELION rotation matrix ``A`` the projection is
``P(x, y) = ∫ V(Aᵀ (x, y, z)) dz`` and, by the projection-slice theorem, the 2D transform of
``P`` at ``(kx, ky)`` is the 3D transform of ``V`` at ``Aᵀ (kx, ky, 0)``. The rotation
centre is voxel ``[n//2, n//2, n//2]`` of an ``n³`` volume, which lands on pixel
``[n//2, n//2]`` of the ``n²`` image.

Fourier-slice algorithm (:func:`project_fourier`)
-----------------------------------------------
1. Zero-pad the volume to ``N = pad · n`` (centre ``n//2`` → ``N//2``) and divide it by the
   gridding correction ``c(x) c(y) c(z)`` (``x`` in voxels from the centre), the Fourier
   transform of the interpolation kernel: interpolating the 3D transform with a separable
   kernel ``φ`` multiplies the volume by ``ψ(x) = ∫ φ(u) exp(2πi u x / N) du`` per axis,
   which the pre-division cancels.

   * ``order=1``: trilinear interpolation (2 taps per axis, triangle kernel),
     ``c(x) = sinc²(x/N)`` with ``sinc(u) = sin(πu)/(πu)``.
   * ``order=3`` / ``order=5``: ``order + 1`` taps per axis of the "exponential of
     semicircle" kernel ``φ(u) = exp(β (√(1 − (2u/W)²) − 1))``, ``W = order + 1``,
     ``β = 2.3 W`` (Barnett, Magland & af Klinteberg 2019, the FINUFFT kernel for
     2× oversampling), with ``c`` computed by Gauss–Legendre quadrature. This is
     non-uniform-FFT gridding: the error no longer depends on where a sample falls between
     grid points (trilinear interpolation is exact on grid points but attenuates between
     them, so its amplitude error grows to several per cent for density far from the
     centre; see docs/simulate-physics.md).
2. ``rfftn`` of the (``ifftshift``-ed) padded volume — done once, reusable across batches
   through :func:`fourier_volume`.
3. For every rotation, sample the half-plane ``(kx ≥ 0)`` of the image's ``rfft2`` grid
   (``N × (N//2+1)``) at ``Aᵀ (kx, ky, 0)`` (Hermitian symmetry for ``kx < 0`` in the
   volume), zero beyond the Nyquist circle ``|k| > N//2`` (numba, rotations split over threads).
4. ``irfft2``, ``fftshift``, crop the central ``n × n``; multiply by ``voxel_size_a`` so the
   result is the line integral ``∫ V dz`` (a plain sum over voxels for the default 1.0).

:func:`project_real` rotates the volume with :func:`scipy.ndimage.map_coordinates`
and sums along ``z``: slow but independent, for tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from cryoset.fourier.slices import (
    check_rotations,
    extract_slices_es,
    extract_slices_trilinear,
)
from cryoset.simulate.potential import run_in_threads

#: Rotations per batch in :func:`project_fourier` (bounds the memory of the complex slices).
_BATCH = 64

#: Interpolation orders accepted by :func:`project_fourier` (taps per axis = order + 1).
ORDERS = (1, 3, 5)

#: Shape parameter of the exponential-of-semicircle kernel per tap (β = 2.3 W).
_ES_BETA_PER_TAP = 2.3


@dataclass(frozen=True)
class FourierVolume:
    """A gridding-corrected, zero-padded volume transform ready for slicing.

    Attributes
    ----------
    data : ndarray, complex64, shape (N, N, N//2 + 1)
        ``rfftn`` of the padded, gridding-corrected volume, indices ``[kz, ky, kx]`` with the
        origin at ``[0, 0, 0]`` (``ifftshift``-ed real-space centre).
    n : int
        Edge of the original volume.
    n_pad : int
        Edge ``N`` of the padded volume.
    order : int
        Interpolation order the gridding correction was made for (1, 3 or 5).
    """

    data: NDArray[np.complex64]
    n: int
    n_pad: int
    order: int = 1


def _check_volume(volume: ArrayLike) -> NDArray[np.float64]:
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3 or not (vol.shape[0] == vol.shape[1] == vol.shape[2]) or vol.shape[0] < 2:
        raise ValueError(f"volume: expected a cubic (n, n, n) array with n >= 2, got shape {vol.shape}")
    return vol


def padded_size(n: int, pad: float) -> int:
    """Edge of the padded volume, ``round(pad · n)`` (at least ``n``)."""
    if not (math.isfinite(pad) and pad >= 1.0):
        raise ValueError(f"pad must be >= 1, got {pad}")
    return max(int(n), round(pad * n))


def _check_order(order: int) -> int:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS} (taps per axis = order + 1), got {order!r}")
    return int(order)


def _es_kernel(u: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    beta = _ES_BETA_PER_TAP * width
    t = np.clip(1.0 - (2.0 * u / width) ** 2, 0.0, None)
    return np.where(np.abs(u) <= width / 2, np.exp(beta * (np.sqrt(t) - 1.0)), 0.0)


def gridding_correction(n_pad: int, order: int = 1) -> NDArray[np.float64]:
    """1D gridding factor ``c(i - N//2)`` for ``i = 0 … N-1``, shape (N,).

    ``sinc²(x/N)`` for ``order=1``; the Fourier transform of the ``order + 1``-tap
    exponential-of-semicircle kernel (Gauss–Legendre quadrature) for ``order`` 3 and 5.
    """
    _check_order(order)
    x = (np.arange(n_pad) - n_pad // 2) / n_pad
    if order == 1:
        return np.asarray(np.sinc(x) ** 2, dtype=np.float64)
    width = order + 1
    nodes, weights = np.polynomial.legendre.leggauss(200)
    u = nodes * width / 2
    w = weights * width / 2
    phi = _es_kernel(u, width)
    return np.asarray((w * phi) @ np.cos(2 * np.pi * np.outer(u, x)), dtype=np.float64)


def fourier_volume(volume: ArrayLike, *, pad: float = 2, order: int = 1) -> FourierVolume:
    """Pad, gridding-correct and Fourier-transform a cubic volume once for many projections.

    Parameters
    ----------
    volume : array, shape (n, n, n)
    pad
        Padding factor (``N = round(pad · n)``); 2 is accurate, 1 is fast but aliases.
    order
        Interpolation order the slices will use (1, 3 or 5; see the module docstring).

    Returns
    -------
    FourierVolume
    """
    vol = _check_volume(volume)
    order = _check_order(order)
    n = vol.shape[0]
    n_pad = padded_size(n, pad)
    padded = np.zeros((n_pad, n_pad, n_pad), dtype=np.float64)
    o = n_pad // 2 - n // 2
    padded[o:o + n, o:o + n, o:o + n] = vol
    g = gridding_correction(n_pad, order)
    padded /= g[:, None, None] * g[None, :, None] * g[None, None, :]
    data = scipy.fft.rfftn(np.fft.ifftshift(padded).astype(np.float32))
    return FourierVolume(data=np.ascontiguousarray(data, dtype=np.complex64), n=n, n_pad=n_pad,
                         order=order)


def fourier_slices(fvol: FourierVolume, rotations: ArrayLike, *, size: int | None = None,
                   workers: int | None = None) -> NDArray[np.complex64]:
    """Central slices (``rfft2`` layout) of a prepared volume for a batch of rotations.

    Parameters
    ----------
    fvol : FourierVolume
    rotations : array, shape (M, 3, 3)
    size : int, optional
        Edge ``s`` of the 2D grid: the slice is sampled at image frequencies ``k / s``
        (cycles per voxel) for ``k`` on an ``s × (s//2 + 1)`` ``rfft2`` grid. Default
        ``N`` (the padded edge: the transform of the padded projection).
    workers
        Threads (default :func:`cryoset.simulate.potential.default_workers`); the result
        does not depend on it.

    Returns
    -------
    ndarray, complex64, shape (M, s, s//2 + 1)
        Origin at ``[0, 0]``; zero outside the Nyquist circle ``|k| > s//2``.
    """
    rot = np.ascontiguousarray(check_rotations(rotations).reshape(-1, 3, 3))
    s = fvol.n_pad if size is None else int(size)
    if not 2 <= s <= fvol.n_pad:
        raise ValueError(f"size must be in [2, {fvol.n_pad}], got {s}")
    out = np.empty((rot.shape[0], s, s // 2 + 1), dtype=np.complex64)
    scale = fvol.n_pad / s
    width = fvol.order + 1

    def work(a: int, b: int) -> None:
        if fvol.order == 1:
            extract_slices_trilinear(fvol.data, rot[a:b], scale, out[a:b])
        else:
            extract_slices_es(fvol.data, rot[a:b], scale, width, _ES_BETA_PER_TAP * width, out[a:b])

    run_in_threads(work, rot.shape[0], workers)
    return out


def project_fourier(volume: ArrayLike | FourierVolume, rotations: ArrayLike, *, pad: float = 2,
                    order: int = 1, voxel_size_a: float = 1.0, crop_in_fourier: bool = False,
                    workers: int | None = None) -> NDArray[np.float32]:
    """Project a cubic volume along many orientations by the Fourier-slice theorem.

    Parameters
    ----------
    volume : array, shape (n, n, n), or FourierVolume
        The map (``(z, y, x)``), or the result of :func:`fourier_volume` to reuse the 3D FFT
        (then ``pad`` and ``order`` are those it was made with).
    rotations : array, shape (..., 3, 3)
        RELION rotation matrices ``A``.
    pad
        Padding factor of the 3D transform (2 is accurate).
    order
        1: gridding-corrected trilinear (fastest; amplitude errors of a few per cent for
        density far from the centre); 3 or 5: 4- or 6-tap exponential-of-semicircle gridding
        kernel (errors ~1e-3 / ~1e-5; about 3× / 8× slower slicing).
    voxel_size_a
        Multiplies the sum over voxels so the result is ``∫ V dz`` (1.0: plain sum).
    crop_in_fourier
        False (default): sample the slice on the padded ``N × N`` grid, inverse-transform,
        crop the central ``n × n`` (exact up to interpolation error). True: sample only the
        ``n × n`` frequencies of the output image (about 4× faster for ``pad=2``); the
        image is then periodic, so density projecting outside the ``n × n`` box (e.g. from
        the corners of the cube) wraps around. Use it for objects inside the inscribed
        sphere.
    workers
        Threads for the slice extraction (the result does not depend on it).

    Returns
    -------
    ndarray, float32, shape (..., n, n)
        ``P(x, y) = ∫ V(Aᵀ (x, y, z)) dz``, centre at pixel ``[n//2, n//2]``.

    Examples
    --------
    >>> vol = np.zeros((8, 8, 8)); vol[4, 4, 4] = 1.0
    >>> img = project_fourier(vol, np.eye(3))
    >>> round(float(img.sum()), 2), tuple(int(i) for i in np.unravel_index(img.argmax(), img.shape))
    (1.0, (4, 4))
    """
    _check_order(order)
    rot = check_rotations(rotations)
    fvol = (volume if isinstance(volume, FourierVolume)
            else fourier_volume(volume, pad=pad, order=order))
    n, n_pad = fvol.n, fvol.n_pad
    size = n if crop_in_fourier else n_pad
    flat = rot.reshape(-1, 3, 3)
    out = np.empty((flat.shape[0], n, n), dtype=np.float32)
    o = size // 2 - n // 2
    for start in range(0, flat.shape[0], _BATCH):
        stop = min(start + _BATCH, flat.shape[0])
        sl = fourier_slices(fvol, flat[start:stop], size=size, workers=workers)
        img = np.fft.fftshift(scipy.fft.irfft2(sl, s=(size, size)), axes=(-2, -1))
        out[start:stop] = img[:, o:o + n, o:o + n] * float(voxel_size_a)
    return out.reshape((*rot.shape[:-2], n, n))


def project_real(volume: ArrayLike, rotation: ArrayLike, *, order: int = 1,
                 voxel_size_a: float = 1.0) -> NDArray[np.float32]:
    """Reference projection: resample the rotated volume in real space and sum along ``z``.

    Parameters
    ----------
    volume : array, shape (n, n, n)
    rotation : array, shape (3, 3)
        RELION matrix ``A``; image point ``(x, y, z)`` samples the volume at ``Aᵀ (x, y, z)``.
    order
        Spline order of :func:`scipy.ndimage.map_coordinates`.
    voxel_size_a
        Multiplies the sum (see :func:`project_fourier`).

    Returns
    -------
    ndarray, float32, shape (n, n)
    """
    vol = _check_volume(volume)
    rot = check_rotations(rotation)
    if rot.shape != (3, 3):
        raise ValueError(f"rotation: expected shape (3, 3), got {rot.shape}")
    n = vol.shape[0]
    c = n // 2
    r = np.arange(n, dtype=np.float64) - c
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    img_xyz = np.stack([x.ravel(), y.ravel(), z.ravel()])  # (3, n³)
    vol_xyz = rot.T @ img_xyz
    coords = vol_xyz[::-1] + c  # (z, y, x) indices
    samples = ndimage.map_coordinates(vol, coords, order=order, mode="constant", cval=0.0)
    proj = samples.reshape(n, n, n).sum(axis=0) * float(voxel_size_a)
    return np.asarray(proj, dtype=np.float32)
