"""Density maps at a target resolution from atomic models (in the model's frame).

Two definitions of "a map at resolution d" are offered:

``method="gaussian"`` (default)
    The Peng 1996 potential (:func:`cryoset.simulate.potential.potential_volume`, volts)
    convolved with a normalised 3D Gaussian of standard deviation
    ``σ = 0.225 · d`` (``1/(π√2) ≈ 0.2251``, the default of Chimera's ``molmap``). The
    convolution is exact and analytic: it adds ``8π²σ²`` to every atom's B-factor.
``method="lowpass"``
    The potential multiplied in Fourier space by a low-pass filter at ``1/d`` Å⁻¹ with a
    raised-cosine edge: 1 below ``1/d - w/2``, 0 above ``1/d + w/2``, with
    ``w = 2 / (n_max · voxel_size_a)`` (two Fourier shells of the largest grid edge).

Both keep the grid and frame of the caller: voxel ``[k, j, i]`` is centred at
``origin_a + (k, j, i) · voxel_size_a`` (``(z, y, x)``), atoms are ``(x, y, z)`` in Å.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cryoset.simulate.potential import DEFAULT_CUTOFF_SIGMA, potential_volume

#: σ of the "gaussian" method per Å of resolution (Chimera molmap default, 1/(π√2)).
SIGMA_PER_RESOLUTION = 1.0 / (math.pi * math.sqrt(2.0))

Method = Literal["gaussian", "lowpass"]


def resolution_b_factor_a2(resolution_a: float) -> float:
    """B-factor (Å²) equivalent to the Gaussian blur of the ``"gaussian"`` method: ``8π²σ²``."""
    sigma = SIGMA_PER_RESOLUTION * float(resolution_a)
    return 8.0 * math.pi**2 * sigma**2


def lowpass_filter(volume: ArrayLike, voxel_size_a: float, resolution_a: float,
                   *, edge_width_per_a: float | None = None) -> NDArray[np.float32]:
    """Low-pass a 3D map at ``1/resolution_a`` Å⁻¹ with a raised-cosine edge.

    Parameters
    ----------
    volume : array, shape (nz, ny, nx)
    voxel_size_a
        Cubic voxel edge in Å.
    resolution_a
        Cut-off resolution ``d`` in Å (the filter is 0.5 at ``1/d``).
    edge_width_per_a
        Full width ``w`` of the cosine edge in Å⁻¹; default two shells of the largest edge.

    Returns
    -------
    ndarray, float32, same shape
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3:
        raise ValueError(f"volume: expected (nz, ny, nx), got shape {vol.shape}")
    if not (resolution_a > 0 and voxel_size_a > 0):
        raise ValueError("resolution_a and voxel_size_a must be positive")
    width = (2.0 / (max(vol.shape) * voxel_size_a)) if edge_width_per_a is None else float(edge_width_per_a)
    fz = np.fft.fftfreq(vol.shape[0], d=voxel_size_a)[:, None, None]
    fy = np.fft.fftfreq(vol.shape[1], d=voxel_size_a)[None, :, None]
    fx = np.fft.rfftfreq(vol.shape[2], d=voxel_size_a)[None, None, :]
    q = np.sqrt(fz**2 + fy**2 + fx**2)
    qc = 1.0 / resolution_a
    t = np.clip((q - (qc - width / 2)) / max(width, 1e-12), 0.0, 1.0)
    filt = 0.5 * (1.0 + np.cos(math.pi * t))
    out = np.fft.irfftn(np.fft.rfftn(vol) * filt, s=vol.shape, axes=(0, 1, 2))
    return np.asarray(out, dtype=np.float32)


def simulate_map(
    model_xyz_a: ArrayLike,
    elements: Iterable[str] | ArrayLike,
    b_factors: ArrayLike,
    *,
    shape: Sequence[int],
    voxel_size_a: float,
    origin_a: Sequence[float] = (0.0, 0.0, 0.0),
    resolution_a: float,
    method: Method = "gaussian",
    cutoff_sigma: float = DEFAULT_CUTOFF_SIGMA,
    permissive: bool = False,
) -> NDArray[np.float32]:
    """Simulate a density map of an atomic model at a target resolution.

    Parameters
    ----------
    model_xyz_a : array, shape (N, 3)
        Atom positions ``(x, y, z)`` in Å.
    elements : sequence of str, shape (N,)
    b_factors : array, shape (N,) or scalar
        Isotropic B-factors in Å².
    shape : (nz, ny, nx)
    voxel_size_a
        Cubic voxel edge in Å.
    origin_a : (z, y, x)
        Physical position (Å) of voxel ``[0, 0, 0]``'s centre.
    resolution_a
        Target resolution ``d`` in Å (see the module docstring for its definition).
    method
        ``"gaussian"`` (σ = 0.225 d blur, analytic) or ``"lowpass"`` (Fourier filter at 1/d).
    cutoff_sigma, permissive
        As in :func:`cryoset.simulate.potential.potential_volume`.

    Returns
    -------
    ndarray, float32, shape (nz, ny, nx)
        Blurred potential in volts.
    """
    if not (math.isfinite(resolution_a) and resolution_a > 0):
        raise ValueError(f"resolution_a must be positive, got {resolution_a}")
    b = np.asarray(b_factors, dtype=np.float64)
    if method == "gaussian":
        return potential_volume(model_xyz_a, elements, b + resolution_b_factor_a2(resolution_a),
                                shape, voxel_size_a, origin_a, cutoff_sigma=cutoff_sigma,
                                permissive=permissive)
    if method == "lowpass":
        vol = potential_volume(model_xyz_a, elements, b, shape, voxel_size_a, origin_a,
                               cutoff_sigma=cutoff_sigma, permissive=permissive)
        return lowpass_filter(vol, voxel_size_a, resolution_a)
    raise ValueError(f"method must be 'gaussian' or 'lowpass', got {method!r}")
