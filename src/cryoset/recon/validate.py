"""Map validation and post-processing: masked and phase-randomisation-corrected FSC, FSC against
a reference, Guinier B-factor, sharpening, angular distribution.

Conventions
-----------
* Maps are cubic ``(n, n, n)`` arrays ``(z, y, x)`` with voxel size ``v`` Å. A Fourier
  coefficient at index radius ``r`` (cycles per box) has spatial frequency ``s = r / (n v)`` Å⁻¹;
  shell ``i`` holds the coefficients with ``round(r) = i`` (:mod:`cryoset.recon.fsc`).
* B-factors multiply amplitudes by ``exp(−B s² / 4)``: a blurred map has ``B > 0``; sharpening
  applies ``B < 0`` (RELION's sign: ``rlnBfactorUsedForSharpening``).

Phase-randomisation-corrected FSC (Chen et al. 2013, *Ultramicroscopy* 135, 24)
----------------------------------------------------------------------------
Masking two half maps raises their FSC where the mask's own transform correlates them. To
measure that, the phases of both half maps are replaced by random ones at every coefficient in
shell ``i ≥ i_r``, ``i_r`` the first shell above 0 where the *unmasked* FSC falls below 0.8, and
the randomised halves are masked the same way: their FSC ``FSC_n`` is the mask's contribution.
The corrected curve is ``FSC_masked`` below shell ``i_r + 2`` and
``(FSC_masked − FSC_n) / (1 − FSC_n)`` (0 where ``FSC_n > FSC_masked``) from there on, as in
``relion_postprocess`` (which also moves the switch 2 shells up). The random phases are those of
the transform of seeded white noise, so they are Hermitian-consistent and the randomised map
keeps every amplitude.

Guinier B-factor (Rosenthal & Henderson 2003)
---------------------------------------------
``ln`` of the shell's mean amplitude ``|F|`` against ``s²``, fitted by least squares over
the shells between ``low_a`` (10 Å) and ``high_a`` (the FSC resolution), as relion_postprocess
does; the B-factor that flattens the spectrum is ``4 × slope`` (negative for a decaying map).

Sharpening
----------
The transform of the map times ``exp(−B s²/4)`` (``B`` the sharpening B-factor), times the
FSC weight ``sqrt(2 FSC / (1 + FSC))`` per shell (0 from the first shell with FSC < 1e-4 on,
as RELION), times a low-pass at the resolution with a raised-cosine edge ``edge_shells`` wide
centred on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cryoset.fourier.shells import rfft_multiplicity, shell_index, shell_sum
from cryoset.recon.fsc import CorrelationCurve, fourier_shell_correlation, resolution_at

__all__ = [
    "AngularDistribution",
    "CorrectedFsc",
    "GuinierFit",
    "LocalResolution",
    "align_reference",
    "angular_distribution",
    "corrected_fsc",
    "fsc_weights",
    "guinier_fit",
    "local_resolution",
    "lowpass",
    "masked_fsc",
    "radial_amplitude",
    "randomise_phases",
    "reference_fsc",
    "resolutions",
    "sharpen",
]

#: Thresholds every report gives a resolution at.
THRESHOLDS: tuple[float, ...] = (0.143, 0.5)


def _cubic(volume: ArrayLike, name: str = "volume") -> NDArray[np.float64]:
    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != 3 or len(set(v.shape)) != 1 or v.shape[0] < 2:
        raise ValueError(f"{name}: expected a cubic volume, got shape {v.shape}")
    return v


def _positive(value: float, name: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive, got {value}")
    return float(value)


def _radius(n: int) -> NDArray[np.float64]:
    """Index radius ``|k|`` of every sample of the ``rfftn`` half grid of an ``n³`` volume."""
    k = np.fft.fftfreq(n) * n
    kx = np.arange(n // 2 + 1, dtype=np.float64)
    return np.asarray(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2))


def resolutions(curve: CorrelationCurve, thresholds: tuple[float, ...] = THRESHOLDS) -> dict[str, float]:
    """Resolution (Å) at each threshold, keyed ``"0.143"``, ``"0.5"`` (:func:`resolution_at`)."""
    return {f"{t:g}": resolution_at(curve.correlation, curve.freq_per_a, t) for t in thresholds}


# ----------------------------------------------------------------------------- filters


def lowpass(volume: ArrayLike, voxel_size_a: float, resolution_a: float, *,
            edge_shells: float = 2.0) -> NDArray[np.float64]:
    """Low-pass ``volume`` at ``resolution_a``: 1 below shell ``r_c − w/2``, 0 above
    ``r_c + w/2`` and a raised cosine between (``r_c = n v / resolution_a``, ``w = edge_shells``)."""
    v = _cubic(volume)
    n = v.shape[0]
    rc = n * _positive(voxel_size_a, "voxel_size_a") / _positive(resolution_a, "resolution_a")
    return np.fft.irfftn(np.fft.rfftn(v) * _cosine_edge(_radius(n), rc, edge_shells), s=v.shape, axes=(0, 1, 2))


def _cosine_edge(radius: NDArray[np.float64], centre: float, width: float) -> NDArray[np.float64]:
    if width <= 0:
        return (radius <= centre).astype(np.float64)
    t = np.clip((radius - (centre - 0.5 * width)) / width, 0.0, 1.0)
    return np.asarray(0.5 + 0.5 * np.cos(np.pi * t))


def fsc_weights(fsc: ArrayLike) -> NDArray[np.float64]:
    """``sqrt(2 FSC / (1 + FSC))`` per shell, 0 from the first shell (above 0) with FSC < 1e-4 on."""
    c = np.nan_to_num(np.asarray(fsc, dtype=np.float64), nan=0.0)
    w = np.sqrt(2.0 * np.clip(c, 0.0, 1.0) / (1.0 + np.clip(c, 0.0, 1.0)))
    low = np.flatnonzero(c[1:] < 1e-4)
    if low.size:
        w[low[0] + 1:] = 0.0
    w[0] = 1.0
    return np.asarray(w)


def sharpen(volume: ArrayLike, voxel_size_a: float, *, bfactor_a2: float = 0.0,
            fsc: ArrayLike | None = None, lowpass_a: float | None = None,
            edge_shells: float = 2.0) -> NDArray[np.float32]:
    """Sharpen ``volume`` (module docstring): ``exp(−B s²/4)`` × FSC weight × low-pass.

    Parameters
    ----------
    volume : array, shape (n, n, n)
    voxel_size_a
        Voxel size in Å.
    bfactor_a2
        Applied B-factor (negative sharpens), Å².
    fsc : array, shape (n//2 + 1,), optional
        Per-shell FSC of the half maps; None: no FSC weighting.
    lowpass_a
        Low-pass resolution in Å; None: none.
    edge_shells
        Width of the low-pass edge in shells.
    """
    v = _cubic(volume)
    n = v.shape[0]
    vs = _positive(voxel_size_a, "voxel_size_a")
    r = _radius(n)
    s2 = (r / (n * vs)) ** 2
    factor = np.exp(-float(bfactor_a2) * s2 / 4.0)
    if fsc is not None:
        c = np.asarray(fsc, dtype=np.float64).reshape(-1)
        if c.size != n // 2 + 1:
            raise ValueError(f"fsc must have {n // 2 + 1} shells, got {c.size}")
        shells = np.rint(r).astype(np.int64)
        w = np.concatenate([fsc_weights(c), [0.0]])
        factor = factor * w[np.minimum(shells, n // 2 + 1)]
    if lowpass_a is not None:
        factor = factor * _cosine_edge(r, n * vs / _positive(lowpass_a, "lowpass_a"), edge_shells)
    return np.fft.irfftn(np.fft.rfftn(v) * factor, s=v.shape, axes=(0, 1, 2)).astype(np.float32)


# ----------------------------------------------------------------------------- FSC variants


def masked_fsc(half1: ArrayLike, half2: ArrayLike, mask: ArrayLike, voxel_size_a: float) -> CorrelationCurve:
    """FSC of ``mask · half1`` and ``mask · half2``."""
    h1, h2, m = _cubic(half1, "half1"), _cubic(half2, "half2"), _cubic(mask, "mask")
    if not h1.shape == h2.shape == m.shape:
        raise ValueError(f"half maps and mask differ in shape: {h1.shape}, {h2.shape}, {m.shape}")
    return fourier_shell_correlation(h1 * m, h2 * m, voxel_size_a=voxel_size_a)


def randomise_phases(volume: ArrayLike, from_shell: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """``volume`` with random phases at every coefficient of shell ``≥ from_shell`` (amplitudes
    kept; the phases are those of the transform of white noise drawn from ``rng``)."""
    v = _cubic(volume)
    f = np.fft.rfftn(v)
    noise = np.fft.rfftn(rng.standard_normal(v.shape))
    mag = np.abs(noise)
    unit = np.where(mag > 0, noise / np.where(mag > 0, mag, 1.0), 1.0)
    sel = shell_index(v.shape[0], 3, half=True) >= int(from_shell)
    f = np.where(sel, np.abs(f) * unit, f)
    return np.asarray(np.fft.irfftn(f, s=v.shape, axes=(0, 1, 2)))


@dataclass(frozen=True)
class CorrectedFsc:
    """Half-map FSCs of :func:`corrected_fsc`.

    Attributes
    ----------
    unmasked, masked, randomised, corrected : CorrelationCurve
        ``randomised`` is the masked FSC of the phase-randomised halves; ``corrected`` the
        Chen et al. curve (equal to ``masked`` when the unmasked FSC never falls below the
        randomisation threshold).
    randomise_from_shell
        ``i_r``, or None when the unmasked FSC never falls below the threshold.
    """

    unmasked: CorrelationCurve
    masked: CorrelationCurve
    randomised: CorrelationCurve
    corrected: CorrelationCurve
    randomise_from_shell: int | None


def corrected_fsc(half1: ArrayLike, half2: ArrayLike, mask: ArrayLike, voxel_size_a: float, *,
                  randomise_below_fsc: float = 0.8, seed: int = 0) -> CorrectedFsc:
    """Unmasked, masked and phase-randomisation-corrected FSC of two half maps (module docstring)."""
    h1, h2 = _cubic(half1, "half1"), _cubic(half2, "half2")
    unmasked = fourier_shell_correlation(h1, h2, voxel_size_a=voxel_size_a)
    masked = masked_fsc(h1, h2, mask, voxel_size_a)
    below = np.flatnonzero(~(unmasked.correlation[1:] >= randomise_below_fsc))
    if below.size == 0:
        return CorrectedFsc(unmasked, masked, masked, masked, None)
    i_r = int(below[0]) + 1
    rng = np.random.default_rng(seed)
    r1 = randomise_phases(h1, i_r, rng)
    r2 = randomise_phases(h2, i_r, rng)
    randomised = masked_fsc(r1, r2, mask, voxel_size_a)
    ct, cn = masked.correlation, np.nan_to_num(randomised.correlation, nan=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        true = np.where(cn > ct, 0.0, (ct - cn) / np.where(cn < 1.0, 1.0 - cn, 1.0))
    shells = np.arange(ct.size)
    corrected = np.where(shells < i_r + 2, ct, true)
    return CorrectedFsc(unmasked, masked, randomised,
                        CorrelationCurve(masked.freq_per_a, corrected, masked.n_coefficients), i_r)


def align_reference(reference: ArrayLike, reference_voxel_size_a: float | tuple[float, float, float],
                    box: int, voxel_size_a: float, *,
                    reference_origin_a: tuple[float, float, float] | None = None,
                    origin_a: tuple[float, float, float] | None = None) -> NDArray[np.float32]:
    """``reference`` on the ``box³`` grid of voxel size ``voxel_size_a``.

    The reference is resampled to ``voxel_size_a`` (band-limited, :func:`cryoset.maps.resample.resample`
    with ``method="fourier"``), then placed so that physical positions coincide: with both
    origins given (``(z, y, x)`` Å of voxel 0, e.g. ``MapData.origin_a``) by them, otherwise
    the two box centres (voxel ``n//2``) coincide. The integer part of the offset is a crop or
    zero-pad; the sub-voxel remainder is a Fourier phase shift.
    """
    from cryoset.maps.resample import resample

    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 3:
        raise ValueError(f"reference must be 3D, got shape {ref.shape}")
    v = _positive(voxel_size_a, "voxel_size_a")
    rv = np.broadcast_to(np.asarray(reference_voxel_size_a, dtype=np.float64), (3,))
    if reference_origin_a is not None and origin_a is not None:
        ro = np.asarray(reference_origin_a, dtype=np.float64)
        to = np.asarray(origin_a, dtype=np.float64)
    else:
        ro = -(np.asarray(ref.shape) // 2) * rv
        to = -np.full(3, box // 2) * v
    if not np.allclose(rv, v, rtol=1e-6):
        ref = np.asarray(resample(ref, tuple(float(x) for x in rv), v, method="fourier"), dtype=np.float64)
    d = (to - ro) / v  # index into ref of the target's voxel 0
    i0 = np.rint(d).astype(np.int64)
    frac = d - i0
    out = np.zeros((box, box, box))
    src, dst = [], []
    for ax in range(3):
        lo, hi = max(0, int(i0[ax])), min(ref.shape[ax], int(i0[ax]) + box)
        if hi <= lo:
            return out.astype(np.float32)
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(i0[ax]), hi - int(i0[ax])))
    out[tuple(dst)] = ref[tuple(src)]
    if np.any(np.abs(frac) > 1e-9):
        k = np.fft.fftfreq(box)
        kx = np.fft.rfftfreq(box)
        phase = np.exp(2j * np.pi * (k[:, None, None] * frac[0] + k[None, :, None] * frac[1]
                                     + kx[None, None, :] * frac[2]))
        out = np.fft.irfftn(np.fft.rfftn(out) * phase, s=out.shape, axes=(0, 1, 2))
    return out.astype(np.float32)


def reference_fsc(volume: ArrayLike, reference: ArrayLike, voxel_size_a: float, *,
                  mask: ArrayLike | None = None) -> CorrelationCurve:
    """FSC of a map and a reference already on its grid (:func:`align_reference`), masked when
    ``mask`` is given."""
    a, b = _cubic(volume), _cubic(reference, "reference")
    if mask is not None:
        m = _cubic(mask, "mask")
        a, b = a * m, b * m
    return fourier_shell_correlation(a, b, voxel_size_a=voxel_size_a)


# ----------------------------------------------------------------------------- B-factor


def radial_amplitude(volume: ArrayLike, voxel_size_a: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Shell frequencies (Å⁻¹) and mean Fourier amplitude ``|F|`` per shell, ``n//2 + 1`` shells."""
    v = _cubic(volume)
    n = v.shape[0]
    f = np.fft.rfftn(v)
    shells = shell_index(n, 3, half=True)
    mult = np.broadcast_to(rfft_multiplicity(n), f.shape)
    total = shell_sum(mult * np.abs(f), shells, n // 2 + 1)
    count = shell_sum(mult, shells, n // 2 + 1)
    amp = total / np.maximum(count, 1.0)
    return np.arange(n // 2 + 1) / (n * _positive(voxel_size_a, "voxel_size_a")), amp


@dataclass(frozen=True)
class GuinierFit:
    """A straight-line fit of ``ln(amplitude)`` against ``s²``.

    Attributes
    ----------
    bfactor_a2
        ``4 × slope``: the B-factor that flattens the spectrum in the fitted range (negative
        for a map whose amplitudes decay; RELION's sign).
    intercept
        ``ln(amplitude)`` at ``s = 0`` of the line.
    correlation
        Pearson correlation of the fitted points (−1 for a perfect decay).
    low_a, high_a
        Fitted range in Å.
    s2_per_a2, ln_amplitude : ndarray
        Every shell's ``s²`` (Å⁻²) and ``ln(amplitude)`` (for plotting; NaN for shells below
        10⁻⁶ of the largest amplitude, i.e. zeroed by a weight).
    fitted : ndarray of bool
        Which shells were fitted.
    """

    bfactor_a2: float
    intercept: float
    correlation: float
    low_a: float
    high_a: float
    s2_per_a2: NDArray[np.float64]
    ln_amplitude: NDArray[np.float64]
    fitted: NDArray[np.bool_]


def guinier_fit(volume: ArrayLike, voxel_size_a: float, *, high_a: float, low_a: float = 10.0) -> GuinierFit:
    """Fit ``ln(mean amplitude)`` vs ``s²`` over the shells with ``1/low_a ≤ s ≤ 1/high_a``.

    Raises
    ------
    ValueError
        Fewer than 3 shells in the range (e.g. ``high_a`` ≥ ``low_a``).
    """
    freq, amp = radial_amplitude(volume, voxel_size_a)
    with np.errstate(divide="ignore"):
        floor = 1e-6 * float(amp.max()) if amp.size and amp.max() > 0 else 0.0
        ok = amp > floor  # shells a weight zeroed hold only rounding noise
        ln_amp = np.where(ok, np.log(np.where(ok, amp, 1.0)), np.nan)
    s2 = freq ** 2
    fitted = (freq >= 1.0 / _positive(low_a, "low_a") - 1e-12) & (freq <= 1.0 / _positive(high_a, "high_a") + 1e-12)
    fitted &= np.isfinite(ln_amp)
    if int(fitted.sum()) < 3:
        raise ValueError(f"fewer than 3 shells between {low_a:.3g} Å and {high_a:.3g} Å to fit a B-factor")
    slope, intercept = np.polyfit(s2[fitted], ln_amp[fitted], 1)
    corr = float(np.corrcoef(s2[fitted], ln_amp[fitted])[0, 1])
    return GuinierFit(float(4.0 * slope), float(intercept), corr, float(low_a), float(high_a),
                      s2, ln_amp, fitted)


# ----------------------------------------------------------------------------- angles


@dataclass(frozen=True)
class AngularDistribution:
    """Histogram of viewing directions on equal-area bins.

    Attributes
    ----------
    azimuth_edges_deg : ndarray, shape (n_azimuth + 1,)
        RELION ``rot`` bin edges, −180 … 180.
    tilt_edges_deg : ndarray, shape (n_tilt + 1,)
        RELION ``tilt`` (elevation from +z) bin edges, 0 … 180, equal steps in ``cos(tilt)``
        so that every bin covers the same solid angle.
    counts : ndarray of int, shape (n_tilt, n_azimuth)
    """

    azimuth_edges_deg: NDArray[np.float64]
    tilt_edges_deg: NDArray[np.float64]
    counts: NDArray[np.int64]

    @property
    def expected_per_bin(self) -> float:
        """Count per bin if the directions were uniform on the sphere."""
        return float(self.counts.sum()) / self.counts.size

    def summary(self) -> dict[str, Any]:
        """Particles, bins, the empty-bin fraction and the max/mean bin ratio."""
        e = self.expected_per_bin
        return {"particles": int(self.counts.sum()), "bins": int(self.counts.size),
                "empty_bin_fraction": float((self.counts == 0).mean()),
                "max_over_mean": float(self.counts.max() / e) if e > 0 else math.nan}


def angular_distribution(rotations: ArrayLike, *, n_azimuth: int = 36, n_tilt: int = 18) -> AngularDistribution:
    """Viewing directions of RELION rotation matrices ``A`` (shape (m, 3, 3)) binned by
    ``(tilt, rot)`` (:func:`cryoset.geometry.matrix_to_euler`); the direction ``Aᵀ ẑ`` has
    azimuth ``rot`` and polar angle ``tilt``."""
    from cryoset.geometry import matrix_to_euler

    if n_azimuth < 1 or n_tilt < 1:
        raise ValueError(f"bins must be >= 1, got {n_azimuth} x {n_tilt}")
    eul = np.asarray(matrix_to_euler(rotations), dtype=np.float64).reshape(-1, 3)
    rot = (eul[:, 0] + 180.0) % 360.0 - 180.0
    cos_tilt = np.cos(np.deg2rad(eul[:, 1]))
    az_edges = np.linspace(-180.0, 180.0, n_azimuth + 1)
    cos_edges = np.linspace(1.0, -1.0, n_tilt + 1)
    ti = np.clip(np.floor((1.0 - cos_tilt) / 2.0 * n_tilt).astype(np.int64), 0, n_tilt - 1)
    ai = np.clip(np.floor((rot + 180.0) / 360.0 * n_azimuth).astype(np.int64), 0, n_azimuth - 1)
    counts = np.zeros((n_tilt, n_azimuth), np.int64)
    np.add.at(counts, (ti, ai), 1)
    return AngularDistribution(az_edges, np.rad2deg(np.arccos(cos_edges)), counts)



# ----------------------------------------------------------------------------- local resolution


@dataclass(frozen=True)
class LocalResolution:
    """Sliding-window FSC resolution.

    Attributes
    ----------
    map_a : ndarray, float32, shape (n, n, n)
        Each voxel carries the resolution (Å) of the nearest window centre; 0 where no window
        was evaluated (outside the mask).
    centres : ndarray of int, shape (m, 3)
        ``(z, y, x)`` window centres evaluated.
    resolution_a : ndarray, shape (m,)
        Their resolutions (Å; ``2 · voxel`` when the window's FSC never falls below the threshold).
    """

    map_a: NDArray[np.float32]
    centres: NDArray[np.int64]
    resolution_a: NDArray[np.float64]


def local_resolution(half1: ArrayLike, half2: ArrayLike, voxel_size_a: float, *, window_px: int = 20,
                     step_px: int = 4, mask: ArrayLike | None = None, threshold: float = 0.143,
                     batch: int = 64, progress: Callable[[int, int], None] | None = None) -> LocalResolution:
    """Local resolution by FSC in a sliding soft spherical window.

    At every ``step_px``-th voxel (where ``mask > 0.5`` when a mask is given) both half maps are
    cut out in a ``window_px``³ cube about it (periodic at the box edges), multiplied by a
    raised-cosine sphere (1 to radius ``window_px/4``, 0 from ``window_px/2``), and the FSC of
    the two cubes gives the resolution at ``threshold`` (:func:`resolution_at`). The shells are
    those of the window, ``1 / (window_px · v)`` apart, so the local values are that coarse.
    ``progress(done, total)`` is called after every batch of windows.
    """
    h1, h2 = _cubic(half1, "half1"), _cubic(half2, "half2")
    if h1.shape != h2.shape:
        raise ValueError(f"half maps differ in shape: {h1.shape}, {h2.shape}")
    n = h1.shape[0]
    v = _positive(voxel_size_a, "voxel_size_a")
    w, step = int(window_px), int(step_px)
    if not 8 <= w <= n:
        raise ValueError(f"window_px must lie in [8, {n}], got {w}")
    if step < 1:
        raise ValueError(f"step_px must be >= 1, got {step}")
    c = np.arange(w, dtype=np.float64) - w // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    window = 0.5 + 0.5 * np.cos(np.pi * np.clip((r - w / 4) / (w / 4), 0.0, 1.0))
    grid = np.arange(step // 2, n, step)
    centres = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    if mask is not None:
        m = _cubic(mask, "mask")
        centres = centres[m[centres[:, 0], centres[:, 1], centres[:, 2]] > 0.5]
    half = w // 2
    p1 = np.pad(h1, half, mode="wrap")
    p2 = np.pad(h2, half, mode="wrap")
    shells = shell_index(w, 3, half=True)
    mult = np.broadcast_to(rfft_multiplicity(w), shells.shape).ravel()
    nshell = w // 2 + 1
    onehot = np.zeros((shells.size, nshell))
    keep = shells.ravel() < nshell
    onehot[np.flatnonzero(keep), shells.ravel()[keep]] = mult[keep]
    freqs = np.arange(nshell) / (w * v)
    out = np.empty(len(centres))
    for start in range(0, len(centres), batch):
        pts = centres[start:start + batch]
        idx = [np.s_[z:z + w, y:y + w, x:x + w] for z, y, x in pts]
        a = np.fft.rfftn(np.stack([p1[s] for s in idx]) * window, axes=(1, 2, 3)).reshape(len(pts), -1)
        b = np.fft.rfftn(np.stack([p2[s] for s in idx]) * window, axes=(1, 2, 3)).reshape(len(pts), -1)
        cross = (a * np.conj(b)).real @ onehot
        pa = (np.abs(a) ** 2) @ onehot
        pb = (np.abs(b) ** 2) @ onehot
        with np.errstate(invalid="ignore", divide="ignore"):
            fsc = cross / np.sqrt(pa * pb)
        for j in range(len(pts)):
            out[start + j] = resolution_at(fsc[j], freqs, threshold)
        if progress is not None:
            progress(start + len(pts), len(centres))
    out = np.where(np.isfinite(out), out, float(freqs[1] ** -1))
    vol = np.zeros((n, n, n), np.float32)
    if len(centres):
        coarse = np.zeros((len(grid),) * 3)
        gi = (centres - step // 2) // step
        coarse[gi[:, 0], gi[:, 1], gi[:, 2]] = out
        near = np.clip(np.rint((np.arange(n) - step // 2) / step).astype(np.int64), 0, len(grid) - 1)
        vol = coarse[np.ix_(near, near, near)].astype(np.float32)
        if mask is not None:
            vol[_cubic(mask, "mask") <= 0.5] = 0.0
    return LocalResolution(vol, centres.astype(np.int64), out)
