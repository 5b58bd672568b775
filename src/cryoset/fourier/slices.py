"""Central slices of a 3D Fourier transform: the slice walk, extraction and insertion.

By the projection-slice theorem the 2D transform of a projection along RELION matrix ``A``
is the 3D transform of the volume on the plane ``Aᵀ (kx, ky, 0)``. Projection
(:mod:`cryoset.simulate.projection`) reads values off that plane (*extraction*);
reconstruction (:mod:`cryoset.recon.reconstruct`) adds image values onto it (*insertion*).
Both walk the image's ``rfft2`` half grid the same way (:func:`signed_frequency`,
:func:`slice_axes`, :func:`slice_frequency`); all the numba kernels are in this file.

Volumes are ``rfftn`` half grids ``[kz, ky, kx]`` (``kx ≥ 0``) with the origin at
``[0, 0, 0]``; a frequency with ``kx < 0`` is read from its Friedel mate (complex conjugate).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "central_slice_coordinates",
    "check_rotations",
    "extract_slices_es",
    "extract_slices_trilinear",
    "full_value",
    "insert_slices_trilinear",
    "signed_frequency",
    "slice_axes",
    "slice_frequency",
]


def check_rotations(rotations: ArrayLike) -> NDArray[np.float64]:
    """``rotations`` as float64, checked to have shape ``(..., 3, 3)`` (ValueError otherwise)."""
    rot = np.asarray(rotations, dtype=np.float64)
    if rot.ndim < 2 or rot.shape[-2:] != (3, 3):
        raise ValueError(f"rotations: expected shape (..., 3, 3), got {rot.shape}")
    return rot


def central_slice_coordinates(rotations: ArrayLike, n_pad: int) -> NDArray[np.float64]:
    """3D frequencies sampled by the central slices of an ``N × N`` image's ``rfft2`` grid.

    Parameters
    ----------
    rotations : array, shape (..., 3, 3)
        RELION matrices ``A``.
    n_pad : int
        Grid edge ``N``.

    Returns
    -------
    ndarray, shape (..., N, N//2 + 1, 3)
        ``Aᵀ (kx, ky, 0)`` as ``(kx, ky, kz)`` in index units (cycles per ``N`` samples),
        for ``ky = fftfreq(N)·N`` (rows) and ``kx = 0 … N//2`` (columns).
    """
    rot = check_rotations(rotations)
    ky = np.fft.fftfreq(n_pad) * n_pad
    kx = np.arange(n_pad // 2 + 1, dtype=np.float64)
    k2 = np.stack(np.broadcast_arrays(kx[None, :], ky[:, None]), axis=-1)  # (N, M, 2) as (kx, ky)
    # k_vol[c] = sum_r A[r, c] k2[r] for r in (x, y)
    return np.asarray(np.einsum("...rc,ijr->...ijc", rot[..., :2, :], k2), dtype=np.float64)


# The slice walk: helpers inlined into the extraction and insertion kernels below. They live
# in this one file with every kernel that inlines them because numba's on-disk cache of a
# kernel is invalidated only by edits to the kernel's own file.
@numba.njit(cache=True, nogil=True, inline="always")
def signed_frequency(i: int, n: int) -> int:  # pragma: no cover
    """Frequency (cycles per ``n``) of row ``i`` of an ``n``-point FFT: ``i`` or ``i - n``.

    The numba twin of ``np.fft.fftfreq(n)[i] * n`` for the central-slice kernels.
    """
    return i if i < (n + 1) // 2 else i - n


@numba.njit(cache=True, nogil=True, inline="always")
def slice_axes(rots: NDArray[np.float64], m: int, scale: float
               ) -> tuple[float, float, float, float, float, float]:  # pragma: no cover
    """First two rows of ``rots[m]`` times ``scale``: ``(a00, a01, a02, a10, a11, a12)``.

    The coefficients :func:`slice_frequency` needs for the central slice of pose ``m``;
    ``scale`` converts image frequencies to volume-grid frequencies (``N / s``).
    """
    return (rots[m, 0, 0] * scale, rots[m, 0, 1] * scale, rots[m, 0, 2] * scale,
            rots[m, 1, 0] * scale, rots[m, 1, 1] * scale, rots[m, 1, 2] * scale)


@numba.njit(cache=True, nogil=True, inline="always")
def slice_frequency(axes: tuple[float, float, float, float, float, float], kx: int, ky: int
                    ) -> tuple[float, float, float, bool]:  # pragma: no cover
    """Volume frequency ``Aᵀ (kx, ky, 0) · scale`` of image frequency ``(kx, ky)``, ``fx ≥ 0``.

    The central-slice step shared by :func:`extract_slices_trilinear`, :func:`extract_slices_es`
    and :func:`insert_slices_trilinear` (:func:`central_slice_coordinates` is its
    unfolded numpy form).

    Parameters
    ----------
    axes
        :func:`slice_axes` of the pose.
    kx, ky
        Image frequency (index units of the 2D grid).

    Returns
    -------
    fx, fy, fz, conj
        Half-grid frequency (``fx ≥ 0``; a point with ``fx < 0`` is replaced by its Friedel
        mate) and whether it was (the value there is the complex conjugate).
    """
    a00, a01, a02, a10, a11, a12 = axes
    fx = a00 * kx + a10 * ky
    fy = a01 * kx + a11 * ky
    fz = a02 * kx + a12 * ky
    if fx < 0.0:
        return -fx, -fy, -fz, True
    return fx, fy, fz, False


@numba.njit(cache=True, nogil=True)
def extract_slices_trilinear(fvol: NDArray[np.complex64], rots: NDArray[np.float64], scale: float,
                    out: NDArray[np.complex64]) -> None:  # pragma: no cover
    """Central slices of ``fvol`` (``rfftn`` half grid) by trilinear interpolation, into ``out``.

    ``out`` has shape ``(M, s, s//2 + 1)``; image frequency ``k`` samples the volume at
    ``Aᵀ k · scale``; zero beyond the Nyquist circle ``|k| > s//2``.
    """
    n_pad = fvol.shape[0]
    nxh = fvol.shape[2]
    n_out = out.shape[1]
    rmax = n_out // 2
    rmax2 = rmax * rmax
    for m in range(rots.shape[0]):
        axes = slice_axes(rots, m, scale)
        for iy in range(n_out):
            ky = signed_frequency(iy, n_out)
            for ix in range(out.shape[2]):
                kx = ix
                if kx * kx + ky * ky > rmax2:
                    out[m, iy, ix] = 0.0
                    continue
                fx, fy, fz, conj = slice_frequency(axes, kx, ky)
                x0 = math.floor(fx)
                y0 = math.floor(fy)
                z0 = math.floor(fz)
                wx, wy, wz = fx - x0, fy - y0, fz - z0
                x0 = min(x0, nxh - 1)
                x1 = min(x0 + 1, nxh - 1)
                y0m, y1m = y0 % n_pad, (y0 + 1) % n_pad
                z0m, z1m = z0 % n_pad, (z0 + 1) % n_pad
                c00 = fvol[z0m, y0m, x0] * (1.0 - wx) + fvol[z0m, y0m, x1] * wx
                c01 = fvol[z0m, y1m, x0] * (1.0 - wx) + fvol[z0m, y1m, x1] * wx
                c10 = fvol[z1m, y0m, x0] * (1.0 - wx) + fvol[z1m, y0m, x1] * wx
                c11 = fvol[z1m, y1m, x0] * (1.0 - wx) + fvol[z1m, y1m, x1] * wx
                c0 = c00 * (1.0 - wy) + c01 * wy
                c1 = c10 * (1.0 - wy) + c11 * wy
                v = c0 * (1.0 - wz) + c1 * wz
                out[m, iy, ix] = np.conj(v) if conj else v


@numba.njit(cache=True, nogil=True)
def full_value(fvol: NDArray[np.complex64], iz: int, iy: int, ix: int) -> complex:  # pragma: no cover
    """Value of the full 3D DFT at integer frequency (iz, iy, ix) from its rfftn half."""
    n_pad = fvol.shape[0]
    xm = ix % n_pad
    if xm < fvol.shape[2]:
        return complex(fvol[iz % n_pad, iy % n_pad, xm])
    return complex(np.conj(fvol[(-iz) % n_pad, (-iy) % n_pad, n_pad - xm]))


@numba.njit(cache=True, nogil=True)
def extract_slices_es(fvol: NDArray[np.complex64], rots: NDArray[np.float64], scale: float,
                       width: int, beta: float, out: NDArray[np.complex64]) -> None:  # pragma: no cover
    """As :func:`extract_slices_trilinear` with a ``width``-tap exponential-of-semicircle kernel."""
    n_pad = fvol.shape[0]
    nxh = fvol.shape[2]
    n_out = out.shape[1]
    rmax = n_out // 2
    rmax2 = rmax * rmax
    half = width / 2.0
    for m in range(rots.shape[0]):
        axes = slice_axes(rots, m, scale)
        wx = np.empty(width)
        wy = np.empty(width)
        wz = np.empty(width)
        iy_idx = np.empty(width, dtype=np.int64)
        iz_idx = np.empty(width, dtype=np.int64)
        for iy in range(n_out):
            ky = signed_frequency(iy, n_out)
            for ix in range(out.shape[2]):
                kx = ix
                if kx * kx + ky * ky > rmax2:
                    out[m, iy, ix] = 0.0
                    continue
                fx, fy, fz, conj = slice_frequency(axes, kx, ky)
                x0 = math.ceil(fx - half)
                y0 = math.ceil(fy - half)
                z0 = math.ceil(fz - half)
                for t in range(width):
                    ux = (x0 + t - fx) / half
                    uy = (y0 + t - fy) / half
                    uz = (z0 + t - fz) / half
                    wx[t] = math.exp(beta * (math.sqrt(max(1.0 - ux * ux, 0.0)) - 1.0))
                    wy[t] = math.exp(beta * (math.sqrt(max(1.0 - uy * uy, 0.0)) - 1.0))
                    wz[t] = math.exp(beta * (math.sqrt(max(1.0 - uz * uz, 0.0)) - 1.0))
                    iy_idx[t] = (y0 + t) % n_pad
                    iz_idx[t] = (z0 + t) % n_pad
                acc = 0j
                if x0 >= 0 and x0 + width <= nxh:
                    for tz in range(width):
                        for ty in range(width):
                            row = 0j
                            for tx in range(width):
                                row += wx[tx] * fvol[iz_idx[tz], iy_idx[ty], x0 + tx]
                            acc += wz[tz] * wy[ty] * row
                else:
                    for tz in range(width):
                        for ty in range(width):
                            row = 0j
                            for tx in range(width):
                                row += wx[tx] * full_value(fvol, z0 + tz, y0 + ty, x0 + tx)
                            acc += wz[tz] * wy[ty] * row
                out[m, iy, ix] = np.conj(acc) if conj else acc


@numba.njit(cache=True)
def insert_slices_trilinear(slices: NDArray[np.complex64], ctf2: NDArray[np.float32], rots: NDArray[np.float64],
            data: NDArray[np.complex128], weight: NDArray[np.float64]) -> None:  # pragma: no cover
    """Add slices (and ``ctf2`` weights) into the ``rfftn`` half grid ``data`` / ``weight``.

    The adjoint of :func:`extract_slices_trilinear`: each image frequency inside
    ``(N//2 - 1) / scale`` is spread trilinearly around ``Aᵀ k · scale``, ``scale = N / s``.
    """
    n_pad = data.shape[0]
    nxh = data.shape[2]
    s2d = slices.shape[1]
    scale = n_pad / s2d
    rmax = (n_pad // 2 - 1) / scale
    rmax2 = rmax * rmax
    for m in range(rots.shape[0]):
        axes = slice_axes(rots, m, scale)
        for iy in range(s2d):
            ky = signed_frequency(iy, s2d)
            for ix in range(slices.shape[2]):
                kx = ix
                if kx * kx + ky * ky > rmax2:
                    continue
                c2 = ctf2[m, iy, ix]
                val = slices[m, iy, ix]
                fx, fy, fz, conj = slice_frequency(axes, kx, ky)
                if conj:
                    val = np.conj(val)
                x0 = math.floor(fx)
                y0 = math.floor(fy)
                z0 = math.floor(fz)
                wx1, wy1, wz1 = fx - x0, fy - y0, fz - z0
                for dz in range(2):
                    wz = wz1 if dz else 1.0 - wz1
                    zi = (z0 + dz) % n_pad
                    for dy in range(2):
                        wy = wy1 if dy else 1.0 - wy1
                        yi = (y0 + dy) % n_pad
                        for dx in range(2):
                            wx = wx1 if dx else 1.0 - wx1
                            xi = x0 + dx
                            if xi >= nxh:
                                continue
                            w = wx * wy * wz
                            data[zi, yi, xi] += w * val
                            weight[zi, yi, xi] += w * c2
