"""How a map's power falls off with frequency: spherically averaged spectra and a falloff resolution.

Used to check that simulated training maps look like deposited ones:

* :func:`radial_power_spectrum` — the mean ``|F(k)|²`` in Fourier shells one voxel⁻¹ wide, with the
  shell frequency in Å⁻¹ (the map is mean-subtracted first, so the DC term is 0).
* :func:`falloff_resolution_a` — the resolution (Å) where the spectrum, normalised by its mean over a
  low-frequency band, first drops below ``ratio``: a model-free "how sharp is this map".
* :func:`local_falloff_resolutions_a` — the same in overlapping cubes that hold density: its spread
  measures how uneven the resolution is across the map (a local-resolution proxy).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from cryoset.fourier.shells import shell_count, shell_sum

__all__ = ["falloff_resolution_a", "local_falloff_resolutions_a", "radial_power_spectrum"]


def radial_power_spectrum(volume: NDArray[np.floating], voxel_size_a: float
                          ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Spherically averaged power of a cubic-voxel map.

    Returns
    -------
    frequency_per_a : (n_shells,)
        Shell centre ``s / (N · voxel)`` for shells ``s = 0 … N//2`` of the smallest edge ``N``.
    power : (n_shells,)
        Mean ``|F|²`` of the Fourier coefficients in each shell.
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3 or min(vol.shape) < 4:
        raise ValueError(f"volume must be 3-D with edges >= 4, got shape {vol.shape}")
    if not voxel_size_a > 0:
        raise ValueError("voxel_size_a must be positive")
    f = np.fft.rfftn(vol - vol.mean())
    kz = np.fft.fftfreq(vol.shape[0])[:, None, None]
    ky = np.fft.fftfreq(vol.shape[1])[None, :, None]
    kx = np.fft.rfftfreq(vol.shape[2])[None, None, :]
    n = min(vol.shape)
    radius = np.sqrt(kz**2 + ky**2 + kx**2) * n  # in shells of the smallest edge
    shell = np.rint(radius).astype(np.int64)  # non-cubic grids too, in shells of the smallest edge
    n_shells = n // 2 + 1
    total = shell_sum(np.abs(f) ** 2, shell, n_shells)
    count = shell_count(shell, n_shells)
    power = np.divide(total, count, out=np.zeros(n_shells), where=count > 0)
    return np.arange(n_shells) / (n * voxel_size_a), power


def falloff_resolution_a(frequency_per_a: NDArray[np.float64], power: NDArray[np.float64], *,
                         band_a: tuple[float, float] = (30.0, 15.0), ratio: float = 1e-2) -> float:
    """Resolution (Å) where ``power`` first falls below ``ratio`` × its mean over ``band_a``.

    Returns the Nyquist resolution when it never does, NaN when the band holds no shell.
    """
    lo, hi = 1.0 / band_a[0], 1.0 / band_a[1]
    band = (frequency_per_a >= lo) & (frequency_per_a <= hi)
    if not band.any():
        return math.nan
    ref = float(power[band].mean())
    if ref <= 0:
        return math.nan
    after = np.flatnonzero((frequency_per_a > hi) & (power < ratio * ref))
    k = int(after[0]) if after.size else len(frequency_per_a) - 1
    return float(1.0 / frequency_per_a[k]) if frequency_per_a[k] > 0 else math.nan


def local_falloff_resolutions_a(volume: NDArray[np.floating], voxel_size_a: float, *, cube_a: float = 40.0,
                                min_density_fraction: float = 0.2, band_a: tuple[float, float] = (30.0, 15.0),
                                ratio: float = 1e-2) -> NDArray[np.float64]:
    """Falloff resolution in half-overlapping cubes of edge ``cube_a`` that hold density.

    A cube counts when at least ``min_density_fraction`` of its voxels exceed the map's
    95th-percentile-of-positive / 4 (a crude envelope). Each cube is mean-subtracted and Hanning-
    windowed; the window's main lobe (two shells) biases the value sharper than the global one by up
    to ~30 % at coarse resolution, so compare local values with local values.
    ``band_a`` and ``ratio`` are those of :func:`falloff_resolution_a`.
    """
    vol = np.asarray(volume, dtype=np.float64)
    edge = max(8, round(cube_a / voxel_size_a))
    pos = vol[vol > 0]
    level = float(np.percentile(pos, 95)) / 4 if pos.size else 0.0
    out: list[float] = []
    step = edge // 2
    for z in range(0, max(1, vol.shape[0] - edge + 1), step):
        for y in range(0, max(1, vol.shape[1] - edge + 1), step):
            for x in range(0, max(1, vol.shape[2] - edge + 1), step):
                cube = vol[z:z + edge, y:y + edge, x:x + edge]
                if min(cube.shape) < 8 or (cube > level).mean() < min_density_fraction:
                    continue
                window = np.outer(np.hanning(cube.shape[0]), np.hanning(cube.shape[1]))[:, :, None] \
                    * np.hanning(cube.shape[2])[None, None, :]
                f, p = radial_power_spectrum((cube - cube.mean()) * window, voxel_size_a)
                out.append(falloff_resolution_a(f, p, band_a=band_a, ratio=ratio))
    return np.asarray([v for v in out if math.isfinite(v)], dtype=np.float64)
