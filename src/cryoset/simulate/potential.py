"""Electrostatic potential of atomic models: 3D maps and direct 2D projections.

Every atom is the real-space transform of its 5-Gaussian electron scattering factor
(:mod:`cryoset.simulate.scattering`, Peng et al. 1996) convolved with its isotropic B-factor:

.. math:: V_\\mathrm{atom}(r) = K \\sum_{i=1}^{5} a_i \\left(\\frac{4\\pi}{\\beta_i}\\right)^{3/2}
          \\exp\\left(-\\frac{4\\pi^2 r^2}{\\beta_i}\\right), \\qquad \\beta_i = b_i + B + \\beta_\\mathrm{pix},

with ``K = h²/(2π m₀ e) = 47.878 V·Å²``. Each term is a normalised 3D Gaussian of variance
``σ² = β/(8π²)`` per axis, so the integral of an atom is ``K f_e(0)`` V·Å³.

Units
-----
* :func:`potential_volume` returns the potential in **volts** sampled at voxel centres
  (its sum times ``voxel_size_a³`` is the integral in V·Å³).
* :func:`project_atoms` returns the **projected potential in V·Å**: the analytic line
  integral ``∫ V dz`` of each Gaussian, ``K a_i (4π/β_i) exp(-4π² ρ²/β_i)``, sampled at pixel
  centres. ``project_fourier(potential_volume(...), R, voxel_size_a=p)`` gives the same units.

Pixel integration (anti-aliasing)
---------------------------------
``pixel_integration="gaussian"`` (default): values are sampled at voxel/pixel centres, but
each Gaussian is first widened by the variance of a uniform pixel, ``p²/12`` per axis
(``β_pix = 8π² p²/12 = (2π²/3) p²``), i.e. the Gaussian approximation of averaging the
potential over the pixel. This keeps the continuous integral exact and damps the spectrum
near Nyquist, but it does not remove aliasing: for sharp atoms (B ≈ 0) on pixels ≥ 1 Å the
sampled sum exceeds the integral (+14 % for a B = 0 carbon on 1 Å pixels).
``"box"``: the exact average of every Gaussian over the pixel square / voxel cube
(separable erf factors), which makes ``sum × p²`` (``× p³``) the exact integral for any B.
``"none"``: point samples of the unblurred Gaussians.

Geometry
--------
Atom coordinates are ``(x, y, z)`` in Å (PDB order). Maps are ``(z, y, x)`` arrays and
voxel ``[k, j, i]`` is centred at ``origin_a + (k, j, i) * voxel_size_a`` (``origin_a`` in
``(z, y, x)`` order, docs/conventions.md). Projections follow :mod:`cryoset.geometry`:
the image coordinates of an atom are ``A @ (p - c)`` (``A`` the RELION matrix, ``c`` the
model centre), and pixel ``[i, j]`` is centred at ``x = (j - nx//2) p``,
``y = (i - ny//2) p``.

Each Gaussian term is evaluated only within ``cutoff_sigma`` of its own standard deviations
(sphere in 3D, disc in 2D; the same relative truncation ``exp(-cutoff²/2)`` for every term),
with separable 1D factors (numba).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from types import MappingProxyType
from typing import Literal

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from cryoset.simulate.scattering import (
    FALLBACK_ELEMENT,
    POTENTIAL_PREFACTOR_V_A2,
    normalize_element,
    scattering_parameters,
)

#: Default truncation radius of every Gaussian term, in its own standard deviations.
DEFAULT_CUTOFF_SIGMA = 4.5

#: Standard atomic weights (Da, IUPAC) of the tabulated elements, for centres of mass.
ATOMIC_MASS_DA = MappingProxyType({
    "H": 1.008, "He": 4.0026, "Li": 6.94, "Be": 9.0122, "B": 10.81, "C": 12.011,
    "N": 14.007, "O": 15.999, "F": 18.998, "Ne": 20.180, "Na": 22.990, "Mg": 24.305,
    "Al": 26.982, "Si": 28.085, "P": 30.974, "S": 32.06, "Cl": 35.45, "Ar": 39.948,
    "K": 39.098, "Ca": 40.078, "Mn": 54.938, "Fe": 55.845, "Co": 58.933, "Ni": 58.693,
    "Cu": 63.546, "Zn": 65.38, "Se": 78.971, "Br": 79.904, "I": 126.90,
})

_EIGHT_PI2 = 8.0 * math.pi**2

#: How a pixel/voxel integrates the potential (see the module docstring).
PixelIntegration = Literal["gaussian", "box", "none"]


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True, nogil=True)
def _factor(c: float, d: float, box: bool) -> float:  # pragma: no cover
    """``exp(-c d²)``, or its average over ``[d - 1/2, d + 1/2]`` when ``box``."""
    if not box:
        return math.exp(-c * d * d)
    rc = math.sqrt(c)
    return 0.5 * math.sqrt(math.pi) / rc * (math.erf(rc * (d + 0.5)) - math.erf(rc * (d - 0.5)))


@numba.njit(cache=True, nogil=True)
def _splat_3d(pos: NDArray[np.float64], amp: NDArray[np.float64], coef: NDArray[np.float64],
              radius: NDArray[np.float64], box: bool, out: NDArray[np.float64]) -> None:  # pragma: no cover
    """Add every atom's Gaussians (each truncated to its own sphere ``radius[n, g]``) to ``out``."""
    nz, ny, nx = out.shape
    width = 2 * math.ceil(radius.max()) + 3 if radius.size else 1
    ez = np.empty(width)
    ey = np.empty(width)
    ex = np.empty(width)
    for n in range(pos.shape[0]):
        cz, cy, cx = pos[n, 0], pos[n, 1], pos[n, 2]
        for g in range(amp.shape[1]):
            r = radius[n, g]
            r2 = r * r
            z0 = max(math.ceil(cz - r), 0)
            z1 = min(math.floor(cz + r), nz - 1)
            y0 = max(math.ceil(cy - r), 0)
            y1 = min(math.floor(cy + r), ny - 1)
            x0 = max(math.ceil(cx - r), 0)
            x1 = min(math.floor(cx + r), nx - 1)
            if z0 > z1 or y0 > y1 or x0 > x1:
                continue
            c = coef[n, g]
            a = amp[n, g]
            for k in range(z0, z1 + 1):
                ez[k - z0] = a * _factor(c, k - cz, box)
            for j in range(y0, y1 + 1):
                ey[j - y0] = _factor(c, j - cy, box)
            for i in range(x0, x1 + 1):
                ex[i - x0] = _factor(c, i - cx, box)
            for k in range(z0, z1 + 1):
                dz2 = (k - cz) ** 2
                wz = ez[k - z0]
                for j in range(y0, y1 + 1):
                    rem = r2 - dz2 - (j - cy) ** 2
                    if rem < 0.0:
                        continue
                    half = math.sqrt(rem)
                    i0 = max(math.ceil(cx - half), x0)
                    i1 = min(math.floor(cx + half), x1)
                    w = wz * ey[j - y0]
                    for i in range(i0, i1 + 1):
                        out[k, j, i] += w * ex[i - x0]


@numba.njit(cache=True, nogil=True)
def _splat_2d(pos: NDArray[np.float64], amp: NDArray[np.float64], coef: NDArray[np.float64],
              radius: NDArray[np.float64], box: bool, out: NDArray[np.float64]) -> None:  # pragma: no cover
    """Add every atom's 2D Gaussians (each truncated to its own disc ``radius[n, g]``) to ``out``."""
    ny, nx = out.shape
    width = 2 * math.ceil(radius.max()) + 3 if radius.size else 1
    ey = np.empty(width)
    ex = np.empty(width)
    for n in range(pos.shape[0]):
        cy, cx = pos[n, 0], pos[n, 1]
        for g in range(amp.shape[1]):
            r = radius[n, g]
            r2 = r * r
            y0 = max(math.ceil(cy - r), 0)
            y1 = min(math.floor(cy + r), ny - 1)
            x0 = max(math.ceil(cx - r), 0)
            x1 = min(math.floor(cx + r), nx - 1)
            if y0 > y1 or x0 > x1:
                continue
            c = coef[n, g]
            a = amp[n, g]
            for j in range(y0, y1 + 1):
                ey[j - y0] = a * _factor(c, j - cy, box)
            for i in range(x0, x1 + 1):
                ex[i - x0] = _factor(c, i - cx, box)
            for j in range(y0, y1 + 1):
                rem = r2 - (j - cy) ** 2
                if rem < 0.0:
                    continue
                half = math.sqrt(rem)
                i0 = max(math.ceil(cx - half), x0)
                i1 = min(math.floor(cx + half), x1)
                w = ey[j - y0]
                for i in range(i0, i1 + 1):
                    out[j, i] += w * ex[i - x0]


def default_workers() -> int:
    """Threads used by the batched kernels by default: ``min(4, cpu count)``."""
    return max(1, min(4, os.cpu_count() or 1))


def run_in_threads(fn: Callable[[int, int], None], n: int, workers: int | None = None) -> None:
    """Call ``fn(start, stop)`` on contiguous chunks of ``range(n)`` in a thread pool.

    The numba kernels release the GIL; every item is computed independently, so the result
    does not depend on the number of workers.
    """
    w = default_workers() if workers is None else max(1, int(workers))
    w = min(w, n)
    if w <= 1:
        if n:
            fn(0, n)
        return
    bounds = np.linspace(0, n, w + 1).astype(int)
    with ThreadPoolExecutor(max_workers=w) as pool:
        futures = [pool.submit(fn, int(a), int(b)) for a, b in pairwise(bounds.tolist())]
        for f in futures:
            f.result()


# --------------------------------------------------------------------------- helpers


def _atoms(xyz_a: ArrayLike, elements: Iterable[str] | ArrayLike, b_factors_a2: ArrayLike,
           permissive: bool) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Validate inputs; return xyz (N,3), a (N,5), b + B (N,5)."""
    xyz = np.asarray(xyz_a, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz_a: expected shape (N, 3), got {xyz.shape}")
    if not np.all(np.isfinite(xyz)):
        raise ValueError("xyz_a: coordinates must be finite")
    elem = np.asarray(elements, dtype=object).reshape(-1)
    if elem.shape[0] != xyz.shape[0]:
        raise ValueError(f"elements: expected {xyz.shape[0]} symbols, got {elem.shape[0]}")
    bfac = np.broadcast_to(np.asarray(b_factors_a2, dtype=np.float64), (xyz.shape[0],))
    if not np.all(np.isfinite(bfac)):
        raise ValueError("b_factors_a2: must be finite")
    params = scattering_parameters(elem, permissive=permissive)
    return xyz, params.a_a, params.b_a2 + bfac[:, None]


def _widths(b_total: NDArray[np.float64], pixel_a: float, mode: str) -> tuple[NDArray[np.float64], bool]:
    """Gaussian widths β (Å²) after pixel integration, and whether the kernel box-averages."""
    if mode not in ("gaussian", "box", "none"):
        raise ValueError(f"pixel_integration must be 'gaussian', 'box' or 'none', got {mode!r}")
    beta = b_total + (_EIGHT_PI2 * pixel_a**2 / 12.0 if mode == "gaussian" else 0.0)
    if np.any(beta <= 0):
        raise ValueError("b_factors_a2: b_i + B must be positive for every Gaussian "
                         "(a B-factor is too negative)")
    return beta, mode == "box"


def _radius_px(beta: NDArray[np.float64], pixel_a: float, cutoff_sigma: float,
               box: bool) -> NDArray[np.float64]:
    """Truncation radius (pixels) of every Gaussian, shape (N, 5): ``cutoff_sigma`` σ each.

    For box averaging σ includes the pixel's own variance ``p²/12`` (the averaged profile
    is that much wider).
    """
    if not cutoff_sigma > 0:
        raise ValueError(f"cutoff_sigma must be positive, got {cutoff_sigma}")
    sigma_a = np.sqrt(beta / _EIGHT_PI2 + (pixel_a**2 / 12.0 if box else 0.0))
    return np.ascontiguousarray(cutoff_sigma * sigma_a / pixel_a, dtype=np.float64)


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return v


def center_of_mass(xyz_a: ArrayLike, elements: Iterable[str] | ArrayLike) -> NDArray[np.float64]:
    """Mass-weighted centre ``(x, y, z)`` in Å (standard atomic weights; unknown → carbon).

    Parameters
    ----------
    xyz_a : array, shape (N, 3)
    elements : sequence of str, shape (N,)

    Returns
    -------
    ndarray, shape (3,)
    """
    xyz = np.asarray(xyz_a, dtype=np.float64).reshape(-1, 3)
    elem = np.asarray(elements, dtype=object).reshape(-1)
    if elem.shape[0] != xyz.shape[0]:
        raise ValueError(f"elements: expected {xyz.shape[0]} symbols, got {elem.shape[0]}")
    if xyz.shape[0] == 0:
        raise ValueError("xyz_a: no atoms")
    uniq, inverse = np.unique(elem.astype(str), return_inverse=True)
    table = np.array([ATOMIC_MASS_DA.get(normalize_element(e), ATOMIC_MASS_DA[FALLBACK_ELEMENT])
                      for e in uniq], dtype=np.float64)
    mass = table[inverse.reshape(-1)]
    return np.asarray(mass @ xyz / mass.sum(), dtype=np.float64)


# --------------------------------------------------------------------------- public API


def potential_volume(
    xyz_a: ArrayLike,
    elements: Iterable[str] | ArrayLike,
    b_factors_a2: ArrayLike,
    shape: Sequence[int],
    voxel_size_a: float,
    origin_a: Sequence[float] = (0.0, 0.0, 0.0),
    *,
    cutoff_sigma: float = DEFAULT_CUTOFF_SIGMA,
    pixel_integration: PixelIntegration = "gaussian",
    permissive: bool = False,
) -> NDArray[np.float32]:
    """Electrostatic potential (volts) of an atomic model sampled on a 3D grid.

    Parameters
    ----------
    xyz_a : array, shape (N, 3)
        Atom positions ``(x, y, z)`` in Å.
    elements : sequence of str, shape (N,)
        Element symbols.
    b_factors_a2 : array, shape (N,) or scalar
        Isotropic B-factors in Å² (0 for a static atom).
    shape : (nz, ny, nx)
        Grid shape.
    voxel_size_a
        Cubic voxel edge in Å.
    origin_a : (z, y, x)
        Physical position (Å) of the centre of voxel ``[0, 0, 0]``.
    cutoff_sigma
        Truncation radius of every Gaussian term in its own standard deviations.
    pixel_integration
        ``"gaussian"`` (default): add the voxel variance ``voxel_size_a²/12`` per axis to
        every Gaussian, then sample at voxel centres; ``"box"``: exact average of every
        Gaussian over the voxel (erf), so sums are exact integrals even for sharp atoms;
        ``"none"``: point samples.
    permissive
        Replace unknown elements by carbon instead of raising ``ValueError``.

    Returns
    -------
    ndarray, float32, shape (nz, ny, nx)
        Potential in V; ``volume.sum() * voxel_size_a**3`` is the integral in V·Å³ of the
        atoms inside the grid.
    """
    voxel = _positive("voxel_size_a", voxel_size_a)
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or min(shp) < 1:
        raise ValueError(f"shape: expected three positive sizes (nz, ny, nx), got {shape!r}")
    origin = np.asarray(origin_a, dtype=np.float64).reshape(3)
    xyz, a, b_total = _atoms(xyz_a, elements, b_factors_a2, permissive)
    beta, box = _widths(b_total, voxel, pixel_integration)
    amp = POTENTIAL_PREFACTOR_V_A2 * a * (4.0 * math.pi / beta) ** 1.5
    coef = 4.0 * math.pi**2 * voxel**2 / beta
    pos = (xyz[:, ::-1] - origin) / voxel
    out = np.zeros(shp, dtype=np.float64)
    _splat_3d(np.ascontiguousarray(pos), np.ascontiguousarray(amp), np.ascontiguousarray(coef),
              _radius_px(beta, voxel, cutoff_sigma, box), box, out)
    return out.astype(np.float32)


def _image_positions(xyz: NDArray[np.float64], center: NDArray[np.float64],
                     rotations: NDArray[np.float64], shifts: NDArray[np.float64],
                     shape: tuple[int, int], pixel: float) -> NDArray[np.float64]:
    """Fractional pixel positions ``(row, col)`` of every atom, shape (M, N, 2)."""
    img_xy = np.einsum("nc,mrc->mnr", xyz - center, rotations[:, :2, :]) + shifts[:, None, :]
    pos = np.empty((rotations.shape[0], xyz.shape[0], 2), dtype=np.float64)
    pos[..., 0] = shape[0] // 2 + img_xy[..., 1] / pixel
    pos[..., 1] = shape[1] // 2 + img_xy[..., 0] / pixel
    return pos


def _projection_setup(
    xyz_a: ArrayLike, elements: Iterable[str] | ArrayLike, b_factors_a2: ArrayLike,
    shape: Sequence[int], pixel_size_a: float, center_xyz_a: ArrayLike | None,
    cutoff_sigma: float, pixel_integration: str, permissive: bool,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
           NDArray[np.float64], bool, tuple[int, int], float]:
    pixel = _positive("pixel_size_a", pixel_size_a)
    shp = tuple(int(s) for s in shape)
    if len(shp) != 2 or min(shp) < 1:
        raise ValueError(f"shape: expected two positive sizes (ny, nx), got {shape!r}")
    xyz, a, b_total = _atoms(xyz_a, elements, b_factors_a2, permissive)
    center = (center_of_mass(xyz, np.asarray(elements, dtype=object).reshape(-1))
              if center_xyz_a is None else np.asarray(center_xyz_a, dtype=np.float64).reshape(3))
    beta, box = _widths(b_total, pixel, pixel_integration)
    amp = np.ascontiguousarray(POTENTIAL_PREFACTOR_V_A2 * a * (4.0 * math.pi / beta))
    coef = np.ascontiguousarray(4.0 * math.pi**2 * pixel**2 / beta)
    radius = _radius_px(beta, pixel, cutoff_sigma, box)
    return xyz, center, amp, coef, radius, box, (shp[0], shp[1]), pixel


def project_atoms(
    xyz_a: ArrayLike,
    elements: Iterable[str] | ArrayLike,
    b_factors_a2: ArrayLike,
    rotation: ArrayLike,
    shape: Sequence[int],
    pixel_size_a: float,
    *,
    center_xyz_a: ArrayLike | None = None,
    shift_xy_a: Sequence[float] = (0.0, 0.0),
    cutoff_sigma: float = DEFAULT_CUTOFF_SIGMA,
    pixel_integration: PixelIntegration = "gaussian",
    permissive: bool = False,
) -> NDArray[np.float32]:
    """Projected potential (V·Å) of a rotated atomic model, by analytic 2D Gaussians.

    Parameters
    ----------
    xyz_a : array, shape (N, 3)
        Atom positions ``(x, y, z)`` in Å.
    elements : sequence of str, shape (N,)
    b_factors_a2 : array, shape (N,) or scalar
        Isotropic B-factors in Å².
    rotation : array, shape (3, 3)
        RELION matrix ``A`` (:func:`cryoset.geometry.euler_to_matrix`): the image
        coordinates of an atom are ``A @ (p - center)``.
    shape : (ny, nx)
        Image shape.
    pixel_size_a
        Pixel size in Å.
    center_xyz_a : array, shape (3,), optional
        Model point placed at the image centre (pixel ``[ny//2, nx//2]``); default the
        centre of mass (:func:`center_of_mass`).
    shift_xy_a : (x, y)
        Translation (Å) of the projected model in the image: the centre lands at
        ``x = shift_x, y = shift_y`` relative to the image centre. A particle with
        RELION 3.1 ``rlnOriginX/YAngst = (ox, oy)`` sits at ``(-ox, -oy)``.
    cutoff_sigma, pixel_integration, permissive
        As in :func:`potential_volume` (``"gaussian"`` adds ``pixel_size_a²/12`` per axis,
        ``"box"`` averages over the pixel square).

    Returns
    -------
    ndarray, float32, shape (ny, nx)
        Projected potential ``∫ V dz`` in V·Å.

    See Also
    --------
    project_atoms_batch : many poses at once (threads, parameters looked up once).
    """
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.shape != (3, 3):
        raise ValueError(f"rotation: expected shape (3, 3), got {rot.shape}")
    xyz, center, amp, coef, radius, box, shp, pixel = _projection_setup(
        xyz_a, elements, b_factors_a2, shape, pixel_size_a, center_xyz_a, cutoff_sigma,
        pixel_integration, permissive)
    shift = np.asarray(shift_xy_a, dtype=np.float64).reshape(1, 2)
    pos = _image_positions(xyz, center, rot[None], shift, shp, pixel)[0]
    out = np.zeros(shp, dtype=np.float64)
    _splat_2d(pos, amp, coef, radius, box, out)
    return out.astype(np.float32)


def project_atoms_batch(
    xyz_a: ArrayLike,
    elements: Iterable[str] | ArrayLike,
    b_factors_a2: ArrayLike,
    rotations: ArrayLike,
    shape: Sequence[int],
    pixel_size_a: float,
    *,
    center_xyz_a: ArrayLike | None = None,
    shifts_xy_a: ArrayLike | None = None,
    cutoff_sigma: float = DEFAULT_CUTOFF_SIGMA,
    pixel_integration: PixelIntegration = "gaussian",
    permissive: bool = False,
    batch: int = 64,
    workers: int | None = None,
) -> NDArray[np.float32]:
    """:func:`project_atoms` for many poses: parameters looked up once, poses in threads.

    Parameters
    ----------
    xyz_a, elements, b_factors_a2, shape, pixel_size_a, center_xyz_a
        As in :func:`project_atoms`.
    rotations : array, shape (M, 3, 3)
        RELION matrices, one per image.
    shifts_xy_a : array, shape (M, 2), optional
        Per-image translation ``(x, y)`` in Å (see ``shift_xy_a`` of :func:`project_atoms`).
    cutoff_sigma, pixel_integration, permissive
        As in :func:`project_atoms`.
    batch
        Poses per block (bounds memory: ``batch × N × 2`` positions).
    workers
        Threads (default :func:`default_workers`); the result does not depend on it.

    Returns
    -------
    ndarray, float32, shape (M, ny, nx)
        Identical (bit for bit) to calling :func:`project_atoms` per pose.
    """
    rots = np.asarray(rotations, dtype=np.float64)
    if rots.ndim != 3 or rots.shape[1:] != (3, 3):
        raise ValueError(f"rotations: expected shape (M, 3, 3), got {rots.shape}")
    m = rots.shape[0]
    shifts = (np.zeros((m, 2)) if shifts_xy_a is None
              else np.asarray(shifts_xy_a, dtype=np.float64).reshape(m, 2))
    xyz, center, amp, coef, radius, box, shp, pixel = _projection_setup(
        xyz_a, elements, b_factors_a2, shape, pixel_size_a, center_xyz_a, cutoff_sigma,
        pixel_integration, permissive)
    out = np.empty((m, *shp), dtype=np.float32)
    step = max(int(batch), 1)
    for start in range(0, m, step):
        stop = min(start + step, m)
        pos = _image_positions(xyz, center, rots[start:stop], shifts[start:stop], shp, pixel)
        acc = np.zeros((stop - start, *shp), dtype=np.float64)

        def work(a: int, b: int, pos: NDArray[np.float64] = pos,
                 acc: NDArray[np.float64] = acc) -> None:
            for k in range(a, b):
                _splat_2d(pos[k], amp, coef, radius, box, acc[k])

        run_in_threads(work, stop - start, workers)
        out[start:stop] = acc
    return out
