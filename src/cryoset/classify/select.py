"""Class statistics, junk-class selection and recovery of good particles from junk classes.

Class resolution: the particles of a class (MAP assignment) are split into two random halves
(seeded); each half is averaged at its MAP poses with the CTF-weighted average
``Σ C_i X_i / Σ ⟨C_i²⟩`` (see :func:`cryoset.classify.em2d.aligned_images`); both are
multiplied by the soft particle mask and their Fourier ring correlation (FRC) is computed with
:func:`cryoset.recon.fsc.fourier_ring_correlation`. The class resolution is where the FRC
falls below **0.143** (each half average holds half the data, as gold-standard half maps do;
0.5 would be the criterion for comparing a half to the full average). Mean power is the mean
of the squared class average inside the mask, in units of the image noise variance (images
are normalised to unit background standard deviation): a class of pure-noise images averages
to ≈ 0.

Junk rule (:func:`select_classes`): a class is **good** when
(1) it holds at least ``min_population`` particles,
(2) its FRC resolution is at most ``resolution_factor`` × the best class resolution, and
(3) its mean power is at least ``power_fraction`` × the median mean power of the classes
that pass (1). Every other class is junk.

Second pass (:func:`recover_particles`, the CryoVirusDB step): every particle is aligned
(one hard E-step) against the good class averages only; a particle from a junk class is
recovered when its log-likelihood gain there is at least the ``percentile``-th percentile of
the gains of the particles already kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.classify.em2d import (
    Classification2D,
    ClassifySettings,
    align_to_references,
    aligned_images,
    soft_disc,
)
from cryoset.recon.fsc import fourier_ring_correlation, resolution_at


def _wiener_average(aligned: NDArray[np.float32], ctf2_radial: NDArray[np.float64]) -> NDArray[np.float64]:
    b = aligned.shape[-1]
    spec = np.fft.rfft2(np.fft.ifftshift(aligned.sum(axis=0)))
    ky = np.fft.fftfreq(b)[:, None] * b
    kx = np.arange(b // 2 + 1)[None, :]
    shells = np.minimum(np.rint(np.hypot(ky, kx)).astype(np.int64), ctf2_radial.shape[1] - 1)
    denom = ctf2_radial.sum(axis=0)
    floor = 1e-3 * max(float(denom.max()), 1e-12)
    spec = spec / np.maximum(denom, floor)[shells]
    return np.asarray(np.fft.fftshift(np.fft.irfft2(spec, s=(b, b))), np.float64)


def class_statistics(images: NDArray[np.float32], result: Classification2D, settings: ClassifySettings,
                     pixel_size_a: float, *, ctf: NDArray[np.float32] | None = None,
                     seed: int = 0) -> pd.DataFrame:
    """Population, half-set FRC resolution and mean power of every class.

    Parameters
    ----------
    images : array, shape (n, b, b)
    result
        The classification.
    settings
        Its settings (mask diameter).
    pixel_size_a
        Pixel size (Å) for the resolution.
    ctf : array, shape (n, b, b//2 + 1), optional
    seed
        Seed of the half split.

    Returns
    -------
    DataFrame
        One row per class: ``class_number`` (1-based), ``population``, ``resolution_a`` (inf
        when a half is empty or the FRC is below 0.143 from the first ring), ``mean_power``.
    """
    b = images.shape[-1]
    k = result.averages.shape[0]
    mask = soft_disc(b, settings.particle_diameter_px or 0.8 * b)
    inside = mask > 0.5
    aligned, c2r = aligned_images(images, result.psi_deg, result.shift_px, settings, ctf=ctf)
    rng = np.random.default_rng(seed)
    half = rng.integers(0, 2, images.shape[0])
    rows = []
    for j in range(k):
        members = result.class_index == j
        res = float("inf")
        a, c = members & (half == 0), members & (half == 1)
        if a.sum() >= 1 and c.sum() >= 1:
            h1 = _wiener_average(aligned[a], c2r[a]) * mask
            h2 = _wiener_average(aligned[c], c2r[c]) * mask
            curve = fourier_ring_correlation(h1, h2, pixel_size_a=pixel_size_a)
            res = resolution_at(curve.correlation, curve.freq_per_a, 0.143)
        rows.append({"class_number": j + 1, "population": int(members.sum()), "resolution_a": res,
                     "mean_power": float(np.mean(result.averages[j][inside].astype(np.float64) ** 2))})
    return pd.DataFrame(rows)


def select_classes(stats: pd.DataFrame, *, min_population: int = 3, resolution_factor: float = 1.5,
                   power_fraction: float = 0.25) -> NDArray[np.bool_]:
    """Good (True) / junk (False) per class by the rule in the module docstring.

    Parameters
    ----------
    stats
        From :func:`class_statistics`.
    min_population, resolution_factor, power_fraction
        The three thresholds.

    Returns
    -------
    ndarray of bool, shape (K,)
    """
    pop = stats["population"].to_numpy()
    res = stats["resolution_a"].to_numpy(np.float64)
    power = stats["mean_power"].to_numpy(np.float64)
    populated = pop >= min_population
    if not populated.any():
        return np.zeros(len(stats), bool)
    best = float(np.min(res[populated]))
    median_power = float(np.median(power[populated]))
    good = populated & (res <= resolution_factor * best) & (power >= power_fraction * median_power)
    return np.asarray(good, bool)


@dataclass
class Recovery:
    """Result of :func:`recover_particles`.

    Attributes
    ----------
    kept : ndarray of bool, shape (n,)
        Final selection: particles of good classes plus the recovered ones.
    recovered : ndarray of bool, shape (n,)
        Particles of junk classes taken back.
    threshold : float
        Gain threshold used.
    second_pass : Classification2D
        Alignment of every particle against the good averages (classes indexed among the
        good ones).
    """

    kept: NDArray[np.bool_]
    recovered: NDArray[np.bool_]
    threshold: float
    second_pass: Classification2D


def recover_particles(images: NDArray[np.float32], result: Classification2D, good: NDArray[np.bool_],
                      settings: ClassifySettings, *, ctf: NDArray[np.float32] | None = None,
                      percentile: float = 10.0) -> Recovery:
    """Second pass: take back junk-class particles that fit a good class as well as kept ones do.

    Parameters
    ----------
    images : array, shape (n, b, b)
    result
        The classification.
    good : array of bool, shape (K,)
        From :func:`select_classes`.
    settings
        Search settings.
    ctf : array, shape (n, b, b//2 + 1), optional
    percentile
        Percentile of the kept particles' gains used as the threshold.

    Returns
    -------
    Recovery
    """
    in_good = good[result.class_index]
    if not good.any():
        empty = np.zeros(images.shape[0], bool)
        return Recovery(empty, empty, float("inf"), result)
    second = align_to_references(images, result.averages[good], settings, ctf=ctf, sigma2=result.sigma2)
    gains = second.log_evidence_gain
    threshold = float(np.percentile(gains[in_good], percentile)) if in_good.any() else float("inf")
    recovered = ~in_good & (gains >= threshold)
    return Recovery(in_good | recovered, recovered, threshold, second)
