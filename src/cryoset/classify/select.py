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

Junk rule (:func:`class_verdicts`, :func:`select_classes`): a class is **good** when
(1) it holds at least ``min_population`` particles,
(2) its mean power is at least ``power_fraction`` (0.25) and at most ``max_power_ratio`` (3) ×
the median mean power of the classes that pass (1) — the lower bound removes noise-only
classes, the upper bound high-contrast contamination (ice, carbon, aggregates), and
(3) its FRC resolution is at most ``resolution_factor`` (2) × the reference resolution: the
population-weighted median resolution of the classes that pass (1) and (2) (sort them by
resolution; the first whose cumulative population reaches half the total).
Every other class is junk. The reference is a median, not the best class, because the
sharpest class is often unusual (one well-populated view, or a class of contamination whose
FRC is inflated by alignment to its own average): a cut relative to it rejected whole
classes of real particles (see docs/classify.md for the measurements).

Second pass (:func:`recover_particles`, the CryoVirusDB step): every particle is aligned
(one hard E-step) against the good class averages only; a particle from a junk class is
recovered when its log-likelihood gain there is at least the ``percentile``-th percentile of
the gains of the particles already kept. With ``settings.offset_recentre`` (the default) the
translation window of that pass is centred on each particle's shift from the classification. The CLI and the benchmark recover only from classes
rejected for population or resolution (:func:`recoverable_classes`), not from classes
rejected for their power (noise, contamination).
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


def reference_resolution(resolution_a: NDArray[np.float64], population: NDArray[np.int64]) -> float:
    """Population-weighted median of the finite class resolutions.

    Parameters
    ----------
    resolution_a, population : arrays, shape (K,)

    Returns
    -------
    float
        The resolution of the first class (sorted by resolution) whose cumulative population
        reaches half the total population of the classes with a finite resolution; ``inf`` when
        none is finite or populated.
    """
    res = np.asarray(resolution_a, np.float64)
    pop = np.asarray(population, np.float64)
    finite = np.isfinite(res) & (pop > 0)
    if not finite.any():
        return float("inf")
    order = np.argsort(res[finite], kind="stable")
    cum = np.cumsum(pop[finite][order])
    return float(res[finite][order][np.searchsorted(cum, 0.5 * cum[-1])])


def class_verdicts(stats: pd.DataFrame, *, min_population: int = 3, resolution_factor: float = 2.0,
                   power_fraction: float = 0.25, max_power_ratio: float = 3.0) -> NDArray[np.str_]:
    """Verdict per class by the rule in the module docstring: good, or the first failed criterion.

    Parameters
    ----------
    stats
        From :func:`class_statistics`.
    min_population
        Smaller classes are junk.
    resolution_factor
        Good classes have resolution <= factor × :func:`reference_resolution` of the classes
        passing the population and power criteria.
    power_fraction, max_power_ratio
        Good classes have mean power within [fraction, ratio] × the median power of the
        populated classes (``max_power_ratio=inf`` disables the upper bound).

    Returns
    -------
    ndarray of str, shape (K,)
        ``"good"``, ``"small"`` (population), ``"low_power"`` (noise), ``"high_power"``
        (contamination) or ``"resolution"``.
    """
    pop = stats["population"].to_numpy(np.int64)
    res = stats["resolution_a"].to_numpy(np.float64)
    power = stats["mean_power"].to_numpy(np.float64)
    verdict = np.full(len(stats), "small", dtype="<U10")
    populated = pop >= min_population
    if not populated.any():
        return verdict
    median_power = float(np.median(power[populated]))
    low = populated & (power < power_fraction * median_power)
    high = populated & ~low & (power > max_power_ratio * median_power)
    candidates = populated & ~low & ~high
    reference = reference_resolution(np.where(candidates, res, np.inf), pop)
    verdict[low] = "low_power"
    verdict[high] = "high_power"
    verdict[candidates] = np.where(res[candidates] <= resolution_factor * reference, "good", "resolution")
    return verdict


def select_classes(stats: pd.DataFrame, *, min_population: int = 3, resolution_factor: float = 2.0,
                   power_fraction: float = 0.25, max_power_ratio: float = 3.0) -> NDArray[np.bool_]:
    """Good (True) / junk (False) per class: ``class_verdicts(...) == "good"``.

    Parameters
    ----------
    stats
        From :func:`class_statistics`.
    min_population, resolution_factor, power_fraction, max_power_ratio
        See :func:`class_verdicts`.

    Returns
    -------
    ndarray of bool, shape (K,)
    """
    verdict = class_verdicts(stats, min_population=min_population, resolution_factor=resolution_factor,
                             power_fraction=power_fraction, max_power_ratio=max_power_ratio)
    return np.asarray(verdict == "good", bool)


def recoverable_classes(verdict: NDArray[np.str_]) -> NDArray[np.bool_]:
    """Junk classes whose particles the second pass may take back: ``small`` and ``resolution``.

    Classes rejected for their power are junk by content (noise, contamination): a
    high-contrast contamination image correlates with any average, so its gain against the
    good averages says nothing (measured: the recovery pass re-admitted every ice image of
    the rejected ice classes), and noise images have no gain to speak of.

    Parameters
    ----------
    verdict : array of str, shape (K,)
        From :func:`class_verdicts`.

    Returns
    -------
    ndarray of bool, shape (K,)
    """
    return np.isin(np.asarray(verdict), ("small", "resolution"))


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
                      percentile: float = 10.0, recover_from: NDArray[np.bool_] | None = None) -> Recovery:
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
    recover_from : array of bool, shape (K,), optional
        Classes whose particles may be recovered (e.g. :func:`recoverable_classes`); default
        every junk class.

    Returns
    -------
    Recovery
    """
    in_good = good[result.class_index]
    if not good.any():
        empty = np.zeros(images.shape[0], bool)
        return Recovery(empty, empty, float("inf"), result)
    # with recentred searches (the default) the second pass searches around each image's shift
    centre = result.shift_px if settings.offset_recentre else None
    second = align_to_references(images, result.averages[good], settings, ctf=ctf, sigma2=result.sigma2,
                                 offset_centre_px=centre)
    gains = second.log_evidence_gain
    threshold = float(np.percentile(gains[in_good], percentile)) if in_good.any() else float("inf")
    allowed = ~good if recover_from is None else np.asarray(recover_from, bool) & ~good
    recovered = allowed[result.class_index] & (gains >= threshold)
    return Recovery(in_good | recovered, recovered, threshold, second)
