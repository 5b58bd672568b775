"""Synthetic micrographs with a known CTF, for tests and benchmarks of CTF estimation.

The image is a random (white or coloured) Gaussian "object", filtered by the true 2D CTF
and an envelope, plus white detector noise and a smooth, slowly varying background. It
is deliberately simple — full image formation lives in :mod:`cryoset.simulate` — but it
has the three things estimation must cope with: rings that decay, noise, and a
low-frequency background that is not part of the CTF.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from cryoset.ctf.model import CTFParams, ctf_2d_batch, frequency_grid

__all__ = ["synthetic_micrograph"]


def synthetic_micrograph(
    params: CTFParams,
    shape: tuple[int, int],
    pixel_size_a: float,
    *,
    seed: int,
    snr: float = 0.3,
    bfactor_a2: float = 150.0,
    colored: bool = True,
    background: float = 0.5,
    defocus_gradient_a_per_px: tuple[float, float] = (0.0, 0.0),
    n_gradient_blocks: int = 4,
) -> NDArray[np.float32]:
    """A micrograph whose Fourier transform is ``object × CTF × envelope`` plus noise.

    Parameters
    ----------
    params
        The true CTF (its own ``bfactor_a2`` is ignored; see ``bfactor_a2``).
    shape
        ``(ny, nx)``.
    pixel_size_a
        Pixel size (Å).
    seed
        Seed of the random generator.
    snr
        Variance ratio of the CTF-modulated signal to the white noise.
    bfactor_a2
        Envelope ``exp(−B s²/4)`` applied to the signal.
    colored
        If True the object has a ``1 / (1 + (s/0.02)²)^0.5`` amplitude falloff (protein-like
        low-frequency excess); otherwise it is white.
    background
        Relative amplitude of a smooth additive background (a few long-wavelength cosines).
    defocus_gradient_a_per_px
        ``(d/dx, d/dy)`` of the defocus in Å per pixel (a tilted specimen). The image is
        assembled from ``n_gradient_blocks²`` blocks, each filtered with the defocus at its
        centre, ``params`` being the defocus at the image centre.
    n_gradient_blocks
        Blocks per side used for a defocus gradient.

    Returns
    -------
    ndarray, float32, shape (ny, nx)
    """
    ny, nx = shape
    rng = np.random.default_rng(seed)
    obj = rng.standard_normal((ny, nx))
    fobj = np.fft.rfft2(obj)
    s, _ = frequency_grid((ny, nx), pixel_size_a, rfft=True)
    if colored:
        fobj *= 1.0 / np.sqrt(1.0 + (s / 0.02) ** 2)
    envelope = np.exp(-0.25 * bfactor_a2 * s * s)
    gx, gy = defocus_gradient_a_per_px
    if gx == 0.0 and gy == 0.0:
        blocks = 1
    else:
        blocks = max(1, int(n_gradient_blocks))
    signal = np.zeros((ny, nx), dtype=np.float64)
    edges_y = np.linspace(0, ny, blocks + 1).astype(int)
    edges_x = np.linspace(0, nx, blocks + 1).astype(int)
    for by in range(blocks):
        for bx in range(blocks):
            cy = 0.5 * (edges_y[by] + edges_y[by + 1]) - 0.5 * (ny - 1)
            cx = 0.5 * (edges_x[bx] + edges_x[bx + 1]) - 0.5 * (nx - 1)
            shift = gx * cx + gy * cy
            ctf = ctf_2d_batch(
                params.defocus_u_a + shift,
                params.defocus_v_a + shift,
                params.defocus_angle_deg,
                (ny, nx),
                pixel_size_a,
                voltage_kv=params.voltage_kv,
                cs_mm=params.cs_mm,
                amplitude_contrast=params.amplitude_contrast,
                phase_shift_deg=params.phase_shift_deg,
                rfft=True,
            ).astype(np.float64)
            # Raw images are modulated by −CTF (dark particles for underfocus).
            filtered = np.fft.irfft2(-fobj * ctf * envelope, s=(ny, nx))
            signal[edges_y[by] : edges_y[by + 1], edges_x[bx] : edges_x[bx + 1]] = filtered[
                edges_y[by] : edges_y[by + 1], edges_x[bx] : edges_x[bx + 1]
            ]
    signal /= max(float(signal.std()), 1e-12)
    noise = rng.standard_normal((ny, nx)) / np.sqrt(max(snr, 1e-12))
    yy, xx = np.mgrid[0:ny, 0:nx]
    bg = np.zeros((ny, nx))
    for _ in range(3):
        ky, kx = rng.uniform(0.2, 1.5, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        bg += np.cos(2 * np.pi * (kx * xx / nx + ky * yy / ny) + phase)
    image = 100.0 + signal + noise + background * bg * float(noise.std())
    return image.astype(np.float32)
