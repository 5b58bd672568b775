"""CTF estimation from one micrograph: Welch power spectrum, background removal, fit.

Pipeline (all pure numpy/scipy, arrays in, dataclasses out):

1. **Spectrum** (:func:`tiled_power_spectrum`). Micrographs with pixels smaller than
   ``target_pixel_a`` are binned (block mean) so the working pixel is ~1–1.4 Å; the image
   is cut into ``tile_px`` tiles (50 % overlap unless there are already ≥ 36 tiles), each
   tile has its mean removed and a 2D Hann window applied, and the power spectra of the
   tiles are averaged (Welch). The fit uses the amplitude ``√P``.
2. **1D search**: background = moving average of the radial profile over a fixed window,
   residual divided by its local RMS; its rotational average is correlated with
   ``sin²χ(s; Δf)`` for log-spaced defoci (0.3 % steps; and phase shifts), then refined by
   a bounded scalar search. The 1D band stops where astigmatism would wash rings out.
3. **Model-aware background** (:func:`_model_normalise`): on the equiphase profile the
   background at each radius is the intercept of a local fit
   ``B₀ + B₁r + (E₀ + E₁r)·sin²χ(r)`` over ±1 ring period (a moving average over one period
   where rings are narrow); residual / local RMS. The 1D search is repeated twice on it.
4. **2D refinement**: the defocus is written ``Δf(θ) = D + a_x cos 2θ + a_y sin 2θ``
   (linear in the parameters, no singularity at zero astigmatism); a coarse grid over
   ``(a_x, a_y)``, then BFGS with the analytic gradient maximises the correlation of the 2D
   residual with ``sin²χ`` on a band widened in steps up to the limit; the background is
   recomputed from the astigmatic fit and the last stage repeated; finally the
   astigmatism is refitted with shells weighted by their correlation.
   ``U = D + a``, ``V = D − a``, ``angle = ½ atan2(a_y, a_x)``.
5. **Quality**: the cross-correlation curve is computed in shells at least one ring
   period wide; the **fit resolution** is where it drops below 0.3; the **figure of
   merit** is the cross-correlation over the fitting band. The **ice-ring ratio** is the
   mean amplitude in 3.5–3.9 Å over that in the flanking 3.2–3.4 Å and 4.0–4.5 Å bands
   (≈ 1 for thin vitreous ice or none; NaN when Nyquist is coarser than 3.2 Å).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from numpy.typing import NDArray
from scipy import optimize

from cryoset.ctf.model import CTFParams, amplitude_contrast_phase_rad, electron_wavelength_a
from cryoset.errors import InputError
from cryoset.fourier.shells import shell_count, shell_index, shell_sum

__all__ = [
    "CC_THRESHOLD",
    "CTFEstimate",
    "EstimateOptions",
    "PowerSpectrum",
    "estimate_ctf",
    "fit_defocus_in_spectrum",
    "tiled_power_spectrum",
]

#: The fit resolution is where the shell cross-correlation first falls below this.
CC_THRESHOLD = 0.3
_MIN_TILE_PX = 128


@dataclass(frozen=True)
class PowerSpectrum:
    """A Welch-averaged power spectrum.

    Attributes
    ----------
    power : ndarray, float64, shape (tile_px, tile_px // 2 + 1)
        Mean tile power in :func:`numpy.fft.rfft2` layout (zero frequency at ``[0, 0]``).
    pixel_size_a : float
        Working pixel size (Å) after binning.
    bin_factor : int
        Real-space binning applied to the micrograph.
    n_tiles : int
        Number of tiles averaged.
    """

    power: NDArray[np.float64]
    pixel_size_a: float
    bin_factor: int
    n_tiles: int

    @property
    def tile_px(self) -> int:
        """Tile edge length (pixels of the working sampling)."""
        return int(self.power.shape[0])


@dataclass(frozen=True)
class EstimateOptions:
    """Settings of :func:`estimate_ctf` (the defaults suit 0.5–5 µm defocus, 0.5–6 Å pixels).

    Attributes
    ----------
    tile_px
        Tile edge length in working pixels (a power of two is fastest).
    target_pixel_a
        Micrographs with pixels ≤ half of this are binned by ``floor(target / pixel)``.
    min_resolution_a
        Low-frequency end of the fit (Å).
    max_resolution_a
        High-frequency end of the fit (Å); also limited to 0.9 × Nyquist and to where the
        rings are at least 3 spectrum pixels apart.
    defocus_min_a, defocus_max_a
        Range of the 1D defocus search (Å).
    fit_phase_shift
        Also fit a phase shift (phase plate data), 0–180°.
    max_astigmatism_a
        Half-width of the initial astigmatism grid (|U − V| up to twice this is reachable).
    snr_weighting
        Finish with an astigmatism fit whose shells are weighted by their correlation
        (see :func:`_weighted_refit`).
    """

    tile_px: int = 512
    target_pixel_a: float = 1.4
    min_resolution_a: float = 30.0
    max_resolution_a: float = 4.0
    defocus_min_a: float = 2000.0
    defocus_max_a: float = 80000.0
    fit_phase_shift: bool = False
    max_astigmatism_a: float = 1200.0
    snr_weighting: bool = True

    def __post_init__(self) -> None:
        if self.tile_px < _MIN_TILE_PX:
            raise ValueError(f"the tile size must be at least {_MIN_TILE_PX} px, got {self.tile_px}")
        if not 0 < self.max_resolution_a < self.min_resolution_a:
            raise ValueError(
                "the fit's maximum resolution must be positive and finer (smaller) than its minimum "
                f"resolution, got {self.max_resolution_a} Å and {self.min_resolution_a} Å"
            )
        if not 0 < self.defocus_min_a < self.defocus_max_a:
            raise ValueError("the defocus search range must be positive and its minimum smaller than its maximum, "
                             f"got {self.defocus_min_a} Å to {self.defocus_max_a} Å")


@dataclass(frozen=True)
class CTFEstimate:
    """The result of :func:`estimate_ctf`.

    Attributes
    ----------
    params
        Fitted CTF (``defocus_u_a ≥ defocus_v_a``, angle in (−90°, 90°]).
    fit_resolution_a
        Resolution (Å) where the shell cross-correlation first drops below 0.3.
    figure_of_merit
        Cross-correlation between observed and fitted spectrum in the fitting band (−1…1).
    ice_ring_ratio
        Amplitude at 3.5–3.9 Å over the flanks (NaN when not sampled).
    band_a
        ``(low, high)`` resolution limits of the fit, Å.
    spectrum
        The power spectrum the fit used.
    diagnostics
        Arrays for plots: ``s_per_a`` (shell centres), ``observed_1d`` (equiphase average of
        the normalised spectrum), ``fitted_1d``, ``cc_1d``, ``normalized_2d`` (rfft layout) and
        ``fitted_2d``.
    """

    params: CTFParams
    fit_resolution_a: float
    figure_of_merit: float
    ice_ring_ratio: float
    band_a: tuple[float, float]
    spectrum: PowerSpectrum
    diagnostics: dict[str, NDArray[np.float64]] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------------------
# Spectrum


def _check_image(image: NDArray[np.floating], pixel_size_a: float) -> NDArray[np.float32]:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise InputError(None, f"a micrograph must be a 2D image, got shape {arr.shape}")
    if not math.isfinite(pixel_size_a) or pixel_size_a <= 0:
        raise InputError(None, f"pixel size must be positive, got {pixel_size_a!r}")
    if not np.all(np.isfinite(arr)):
        n_bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InputError(None, f"the micrograph contains {n_bad} NaN or infinite pixel values")
    if min(arr.shape) < _MIN_TILE_PX:
        raise InputError(
            None,
            f"the micrograph is too small ({arr.shape[1]}x{arr.shape[0]} px); "
            f"CTF estimation needs at least {_MIN_TILE_PX}x{_MIN_TILE_PX}",
        )
    arr32 = arr.astype(np.float32, copy=False)
    if float(arr32.max()) == float(arr32.min()):
        raise InputError(None, "the micrograph is blank (every pixel has the same value)")
    return arr32


def bin_image(image: NDArray[np.float32], factor: int) -> NDArray[np.float32]:
    """Block-mean binning by an integer ``factor`` (edges that do not fill a block dropped)."""
    if factor <= 1:
        return image
    ny, nx = image.shape[0] // factor, image.shape[1] // factor
    view = image[: ny * factor, : nx * factor].reshape(ny, factor, nx, factor)
    out: NDArray[np.float32] = view.mean(axis=(1, 3), dtype=np.float32)
    return out


def _tile_starts(length: int, tile: int, step: int) -> list[int]:
    n = max(1, (length - tile) // step + 1)
    starts = [i * step for i in range(n)]
    # Centre the tiling.
    offset = (length - (starts[-1] + tile)) // 2
    return [s + offset for s in starts]


def tiled_power_spectrum(
    image: NDArray[np.floating],
    pixel_size_a: float,
    *,
    tile_px: int = 512,
    target_pixel_a: float = 1.4,
    region: tuple[int, int, int, int] | None = None,
    workers: int = 1,
) -> PowerSpectrum:
    """Welch-averaged power spectrum of a micrograph.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        The micrograph (any real dtype; must be finite and not constant).
    pixel_size_a
        Pixel size (Å).
    tile_px
        Tile size in working pixels; reduced (halving, ≥ 128) for small images.
    target_pixel_a
        Bin by ``floor(target_pixel_a / pixel_size_a)`` when that is ≥ 2.
    region
        ``(y0, y1, x0, x1)`` in original pixels: only tiles inside it (patch mode).
    workers
        Threads for :func:`scipy.fft.rfft2`.

    Returns
    -------
    PowerSpectrum

    Raises
    ------
    InputError
        For non-2D, non-finite, constant or too small images.
    """
    arr = np.asarray(image)
    if region is not None and arr.ndim == 2:
        y0, y1, x0, x1 = region
        arr = arr[y0:y1, x0:x1]
    arr = _check_image(arr, pixel_size_a)
    factor = max(1, math.floor(target_pixel_a / pixel_size_a + 1e-9))
    binned = bin_image(arr, factor)
    tile = int(tile_px)
    while tile > min(binned.shape) and tile // 2 >= _MIN_TILE_PX:
        tile //= 2
    if tile > min(binned.shape):
        raise InputError(
            None,
            f"the micrograph (or patch) is too small: {binned.shape[1]}x{binned.shape[0]} "
            f"working pixels, need {_MIN_TILE_PX}",
        )
    ny, nx = binned.shape
    n_plain = (ny // tile) * (nx // tile)
    step = tile if n_plain >= 36 else tile // 2
    ys, xs = _tile_starts(ny, tile, step), _tile_starts(nx, tile, step)
    hann = np.hanning(tile).astype(np.float32)
    window = np.outer(hann, hann)
    total = np.zeros((tile, tile // 2 + 1), dtype=np.float64)
    corners = [(y, x) for y in ys for x in xs]
    chunk = 16
    for i in range(0, len(corners), chunk):
        batch = np.stack([binned[y : y + tile, x : x + tile] for y, x in corners[i : i + chunk]])
        batch = batch - batch.mean(axis=(1, 2), keepdims=True)
        batch *= window
        f = scipy.fft.rfft2(batch, workers=workers)
        total += np.sum(f.real**2 + f.imag**2, axis=0, dtype=np.float64)
    power = total / len(corners)
    if not np.any(power[1:, 1:] > 0):
        raise InputError(None, "the micrograph has no contrast (zero power spectrum)")
    return PowerSpectrum(power, pixel_size_a * factor, factor, len(corners))


# --------------------------------------------------------------------------------------
# Background and normalisation


@dataclass(frozen=True)
class _Grid:
    """Fourier-pixel geometry of the rfft half plane."""

    tile: int
    pixel_size_a: float
    r: NDArray[np.float64]  # radius in Fourier pixels
    rbin: NDArray[np.intp]  # rounded radius
    s: NDArray[np.float64]  # 1/Å
    cos2: NDArray[np.float64]
    sin2: NDArray[np.float64]
    nbins: int

    @classmethod
    def make(cls, tile: int, pixel_size_a: float) -> _Grid:
        ky = np.fft.fftfreq(tile) * tile
        kx = np.arange(tile // 2 + 1, dtype=np.float64)
        gy, gx = np.meshgrid(ky, kx, indexing="ij")
        r2 = gx * gx + gy * gy
        r = np.sqrt(r2)
        inv = 1.0 / np.where(r2 > 0, r2, 1.0)
        rbin = shell_index(tile, 2).astype(np.intp)
        # cos 2θ and sin 2θ without trigonometry (θ = atan2(k_y, k_x)); 1 and 0 at the origin.
        cos2 = np.where(r2 > 0, (gx * gx - gy * gy) * inv, 1.0)
        sin2 = 2.0 * gx * gy * inv
        return cls(tile, pixel_size_a, r, rbin, r / (tile * pixel_size_a), cos2, sin2, int(rbin.max()) + 1)

    def radial_mean(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        sums = shell_sum(values, self.rbin, self.nbins)
        counts = shell_count(self.rbin, self.nbins)
        out: NDArray[np.float64] = sums / np.maximum(counts, 1)
        return out


def _moving_average(profile: NDArray[np.float64], half_width: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean of ``profile`` over ``[i − h_i, i + h_i]`` (fractional ``h`` by interpolation)."""
    n = profile.size
    cum = np.concatenate([[0.0], np.cumsum(profile)])
    idx = np.arange(n, dtype=np.float64)
    lo = np.clip(idx - half_width, 0.0, n - 1.0)
    hi = np.clip(idx + half_width, 0.0, n - 1.0)
    # cumulative integral at fractional positions x (sum of profile[0..x] with pixel centres)
    grid = np.arange(n + 1, dtype=np.float64) - 0.5
    c_hi = np.interp(hi + 0.5, grid, cum)
    c_lo = np.interp(lo - 0.5, grid, cum)
    out: NDArray[np.float64] = (c_hi - c_lo) / np.maximum(hi - lo + 1.0, 1e-9)
    return out


def _ring_period_px(
    grid: _Grid, defocus_a: float, wavelength_a: float, cs_a: float
) -> NDArray[np.float64]:
    """Period (Fourier pixels) of ``sin²χ`` at every radius bin."""
    r = np.arange(grid.nbins, dtype=np.float64)
    s = r / (grid.tile * grid.pixel_size_a)
    dchi_ds = np.abs(2 * np.pi * wavelength_a * defocus_a * s - 2 * np.pi * cs_a * wavelength_a**3 * s**3)
    period_s = np.pi / np.maximum(dchi_ds, 1e-12)
    out: NDArray[np.float64] = period_s * grid.tile * grid.pixel_size_a
    return out


def _normalise(
    amplitude: NDArray[np.float64], grid: _Grid, half_width: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``(amplitude − local mean) / local RMS``, both from radial moving averages."""
    profile = grid.radial_mean(amplitude)
    background = _moving_average(profile, half_width)
    resid = amplitude - background[grid.rbin]
    ms = _moving_average(grid.radial_mean(resid * resid), half_width)
    out: NDArray[np.float64] = resid / np.sqrt(np.maximum(ms, 1e-30))[grid.rbin]
    return out


def _model_normalise(
    amplitude: NDArray[np.float64],
    grid: _Grid,
    x: NDArray[np.float64],
    lam: float,
    cs_a: float,
    w: float,
    half_width: NDArray[np.float64],
    wide_ring_px: float = 12.0,
) -> NDArray[np.float64]:
    """Background removal that knows the current CTF estimate ``x = (D, a_x, a_y, phase)``.

    Every pixel is mapped to its equiphase radius (the isotropic radius with the same
    defocus phase); on that 1D profile, at each radius ``r₀`` the background ``B`` is the
    intercept of a local least-squares fit of ``B₀ + B₁(r − r₀) + (E₀ + E₁(r − r₀))·sin²χ(r)``
    over ``r₀ ± half_width``. Because the rings are a regressor, wide low-defocus rings and
    an envelope that changes within one ring no longer bias the background (a plain moving
    average does). Where the ring period is below ``wide_ring_px`` the plain moving average
    over one period is used. Returns ``(amplitude − B) / local RMS``.
    """
    d = max(float(x[0]), 1.0)
    dfz = d + x[1] * grid.cos2 + x[2] * grid.sin2
    r_eq = grid.r * np.sqrt(np.clip(dfz / d, 0.0, None))
    rb = np.clip(np.rint(r_eq).astype(np.intp), 0, grid.nbins - 1).ravel()
    counts = np.bincount(rb, minlength=grid.nbins).astype(np.float64)
    profile = np.bincount(rb, amplitude.ravel(), minlength=grid.nbins) / np.maximum(counts, 1.0)
    r = np.arange(grid.nbins, dtype=np.float64)
    s = r / (grid.tile * grid.pixel_size_a)
    m = np.sin(np.pi * lam * d * s**2 - 0.5 * np.pi * cs_a * lam**3 * s**4 + x[3] + w) ** 2
    valid = (counts > 0) & (r >= 2)
    # Where rings are narrow a moving average over one period is already unbiased.
    background = _moving_average(profile, 0.5 * half_width)
    for r0 in range(grid.nbins):
        if half_width[r0] < wide_ring_px:
            continue
        h = math.ceil(half_width[r0])
        lo, hi = max(2, r0 - h), min(grid.nbins - 1, r0 + h)
        idx = np.arange(lo, hi + 1)
        idx = idx[valid[idx]]
        if idx.size < 8:
            background[r0] = profile[idx].mean() if idx.size else profile[r0]
            continue
        xr = (r[idx] - r0) / max(h, 1)
        design = np.stack([np.ones_like(xr), xr, m[idx], xr * m[idx]], axis=1)
        wts = counts[idx]
        gram = (design * wts[:, None]).T @ design
        rhs = (design * wts[:, None]).T @ profile[idx]
        gram[np.diag_indices(4)] *= 1.0 + 1e-9
        try:
            beta = np.linalg.solve(gram, rhs)
        except np.linalg.LinAlgError:
            background[r0] = profile[idx].mean()
            continue
        background[r0] = beta[0]
    resid = amplitude.ravel() - background[rb]
    ms = np.bincount(rb, resid * resid, minlength=grid.nbins) / np.maximum(counts, 1.0)
    ms = _moving_average(ms, half_width)
    out: NDArray[np.float64] = (resid / np.sqrt(np.maximum(ms, 1e-30))[rb]).reshape(amplitude.shape)
    return out


# --------------------------------------------------------------------------------------
# Fitting


@dataclass(frozen=True)
class _Band:
    """The fitting band: flattened pixel data and precomputed geometry."""

    z: NDArray[np.float64]
    s2: NDArray[np.float64]
    s4: NDArray[np.float64]
    cos2: NDArray[np.float64]
    sin2: NDArray[np.float64]


def _band(
    z: NDArray[np.float64], grid: _Grid, s_lo: float, s_hi: float, stride: int = 1
) -> _Band:
    """Pixels with ``s_lo ≤ s ≤ s_hi`` (every ``stride``-th of them, for coarse stages)."""
    mask = (grid.s >= s_lo) & (grid.s <= s_hi)
    sel = np.flatnonzero(mask)[::stride]
    s2 = grid.s.ravel()[sel] ** 2
    return _Band(z.ravel()[sel], s2, s2 * s2, grid.cos2.ravel()[sel], grid.sin2.ravel()[sel])


def _cc(obs: NDArray[np.float64], model: NDArray[np.float64]) -> float:
    """Pearson correlation (elementwise sums: BLAS dot is slow on a busy machine)."""
    o = obs - obs.mean()
    m = model - model.mean()
    den = math.sqrt(float((o * o).sum()) * float((m * m).sum()))
    return float((o * m).sum()) / den if den > 0 else 0.0


def _model(chi: NDArray[np.float64]) -> NDArray[np.float64]:
    """``−cos 2χ``: an affine transform of ``sin²χ`` (same correlation), one cosine call."""
    out: NDArray[np.float64] = -np.cos(2.0 * chi)
    return out


def _chi(
    band: _Band,
    mean_a: float,
    ax: float,
    ay: float,
    phase_rad: float,
    lam: float,
    cs_a: float,
    w: float,
) -> NDArray[np.float64]:
    dfz = mean_a + ax * band.cos2 + ay * band.sin2
    out: NDArray[np.float64] = (
        np.pi * lam * dfz * band.s2 - 0.5 * np.pi * cs_a * lam**3 * band.s4 + phase_rad + w
    )
    return out


def _search_1d(
    profile: NDArray[np.float64],
    s_bins: NDArray[np.float64],
    lam: float,
    cs_a: float,
    w: float,
    options: EstimateOptions,
) -> tuple[float, float]:
    """Grid + bounded search for (defocus, phase) maximising the 1D correlation."""
    n_steps = math.ceil(math.log(options.defocus_max_a / options.defocus_min_a) / math.log(1.003))
    defoci = options.defocus_min_a * 1.003 ** np.arange(n_steps + 1)
    phases = np.deg2rad(np.arange(0.0, 180.0, 10.0)) if options.fit_phase_shift else np.zeros(1)
    obs = profile - profile.mean()
    obs_norm = math.sqrt(float((obs * obs).sum()))
    s2 = s_bins**2
    best = (-2.0, float(defoci[0]), 0.0)
    for ph in phases:
        chi = np.pi * lam * defoci[:, None] * s2[None, :] - 0.5 * np.pi * cs_a * lam**3 * s2**2 + ph + w
        model = _model(chi)
        model -= model.mean(axis=1, keepdims=True)
        norms = np.sqrt((model * model).sum(axis=1))
        cc = (model * obs[None, :]).sum(axis=1) / np.maximum(norms * obs_norm, 1e-30)
        i = int(np.argmax(cc))
        if cc[i] > best[0]:
            best = (float(cc[i]), float(defoci[i]), float(ph))
    _, d0, ph0 = best

    def neg_cc(d: float) -> float:
        chi = np.pi * lam * d * s2 - 0.5 * np.pi * cs_a * lam**3 * s2**2 + ph0 + w
        return -_cc(profile, _model(chi))

    res = optimize.minimize_scalar(neg_cc, bounds=(d0 / 1.004, d0 * 1.004), method="bounded")
    return float(res.x), ph0


def _refine_2d(
    band: _Band,
    x0: NDArray[np.float64],
    lam: float,
    cs_a: float,
    w: float,
    *,
    astig_grid_a: float | None,
    fit_phase: bool,
) -> tuple[NDArray[np.float64], float]:
    """Optional coarse astigmatism grid, then a local fit of ``x = (D, a_x, a_y, phase)``."""

    def cc_of(x: NDArray[np.float64], b: _Band = band) -> float:
        return _cc(b.z, _model(_chi(b, x[0], x[1], x[2], x[3], lam, cs_a, w)))

    best_x = np.asarray(x0, dtype=np.float64).copy()
    if astig_grid_a is not None and astig_grid_a > 0:
        # The coarse astigmatism grid uses every 4th band pixel.
        sub = _Band(band.z[::4], band.s2[::4], band.s4[::4], band.cos2[::4], band.sin2[::4])
        steps = np.linspace(-astig_grid_a, astig_grid_a, 13)
        best_cc = cc_of(best_x, sub)
        for ax in steps:
            for ay in steps:
                if ax * ax + ay * ay > astig_grid_a * astig_grid_a * 1.01:
                    continue
                x = best_x.copy()
                x[1], x[2] = ax, ay
                c = cc_of(x, sub)
                if c > best_cc:
                    best_cc, best_x = c, x
    return _local_fit(band, best_x, lam, cs_a, w, (True, True, True, fit_phase))


def _local_fit(
    band: _Band,
    x0: NDArray[np.float64],
    lam: float,
    cs_a: float,
    w: float,
    free: tuple[bool, bool, bool, bool],
) -> tuple[NDArray[np.float64], float]:
    """Maximise the correlation over the free components of ``x = (D, a_x, a_y, phase)``.

    BFGS with the analytic gradient (L-BFGS-B's compiled core is slow on a busy machine): with ``m = −cos 2χ``, ``∂m/∂x_j = 2 sin 2χ ∂χ/∂x_j``
    and ``∂χ/∂(D, a_x, a_y, φ) = (πλs², πλs² cos 2θ, πλs² sin 2θ, 1)``.
    """
    scale = np.array([100.0, 100.0, 100.0, 0.1])
    idx = np.nonzero(np.asarray(free))[0]
    o = band.z - band.z.mean()
    o_norm = math.sqrt(float((o * o).sum()))
    k = np.pi * lam * band.s2
    dchi = (k, k * band.cos2, k * band.sin2, np.ones_like(k))

    def unpack(y: NDArray[np.float64]) -> NDArray[np.float64]:
        x = x0.copy()
        x[idx] = y * scale[idx]
        return x

    def neg_cc_and_grad(y: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        x = unpack(y)
        two_chi = 2.0 * _chi(band, x[0], x[1], x[2], x[3], lam, cs_a, w)
        m = -np.cos(two_chi)
        mc = m - m.mean()
        m_norm = math.sqrt(float((mc * mc).sum()))
        if m_norm == 0 or o_norm == 0:
            return 0.0, np.zeros(idx.size)
        cc = float((o * mc).sum()) / (o_norm * m_norm)
        sin2 = 2.0 * np.sin(two_chi)
        grad = np.empty(idx.size)
        for n, j in enumerate(idx):
            dm = sin2 * dchi[j]
            g = float((o * dm).sum()) / (o_norm * m_norm) - cc * float((mc * dm).sum()) / m_norm**2
            grad[n] = -g * scale[j]
        return -cc, grad

    res = optimize.minimize(
        neg_cc_and_grad,
        x0[idx] / scale[idx],
        jac=True,
        method="BFGS",
        options={"maxiter": 200, "gtol": 1e-5},
    )
    return unpack(np.asarray(res.x, dtype=np.float64)), float(-res.fun)


def _weighted_refit(
    z: NDArray[np.float64],
    grid: _Grid,
    x: NDArray[np.float64],
    lam: float,
    cs_a: float,
    w: float,
    s_lo: float,
    s_hi: float,
    half_width: NDArray[np.float64],
    free: tuple[bool, bool, bool, bool],
) -> NDArray[np.float64]:
    """Refit with every shell weighted by its own (clipped) correlation with the fit.

    Shells where the rings are lost in noise add only noise to an equally weighted
    correlation; weighting by the shell correlation (a matched-filter approximation)
    sharpens the optimum, mostly the astigmatism angle.
    """
    full = _Band(z, grid.s**2, grid.s**4, grid.cos2, grid.sin2)
    fitted = _model(_chi(full, x[0], x[1], x[2], x[3], lam, cs_a, w))
    cc = _shell_cc(z, fitted, grid, np.maximum(half_width, 2.5))
    weights = np.clip(cc, 0.0, None)
    if not np.any(weights[grid.rbin] > 0):
        return x
    band = _band(z * weights[grid.rbin], grid, s_lo, s_hi)
    x_new, _ = _local_fit(band, x, lam, cs_a, w, free)
    return x_new


def _params_from(
    x: NDArray[np.float64], ph: float, voltage_kv: float, cs_mm: float, amplitude_contrast: float
) -> CTFParams:
    d, ax, ay = float(x[0]), float(x[1]), float(x[2])
    a = math.hypot(ax, ay)
    angle = 0.5 * math.degrees(math.atan2(ay, ax)) if a > 0 else 0.0
    if angle <= -90.0:
        angle += 180.0
    phase_deg = math.degrees(ph) % 180.0 if ph != 0.0 else 0.0
    return CTFParams(
        defocus_u_a=d + a,
        defocus_v_a=d - a,
        defocus_angle_deg=angle,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        phase_shift_deg=phase_deg,
    )


def _shell_cc(
    obs: NDArray[np.float64],
    model: NDArray[np.float64],
    grid: _Grid,
    half_width: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Cross-correlation in shells ``[r − h, r + h]`` (per radius bin)."""
    def rsum(v: NDArray[np.float64]) -> NDArray[np.float64]:
        return shell_sum(v, grid.rbin, grid.nbins)

    counts = shell_count(grid.rbin, grid.nbins).astype(np.float64)

    def window(v: NDArray[np.float64]) -> NDArray[np.float64]:
        # windowed sums = windowed mean × windowed count
        return _moving_average(v, half_width) * (2 * half_width + 1)

    n = window(counts)
    sx, sy = window(rsum(obs)), window(rsum(model))
    sxx, syy, sxy = window(rsum(obs * obs)), window(rsum(model * model)), window(rsum(obs * model))
    n = np.maximum(n, 1.0)
    cov = sxy - sx * sy / n
    vx = np.maximum(sxx - sx * sx / n, 0.0)
    vy = np.maximum(syy - sy * sy / n, 0.0)
    out: NDArray[np.float64] = np.where(vx * vy > 0, cov / np.sqrt(vx * vy + 1e-300), 0.0)
    return out


def _ice_ring_ratio(profile: NDArray[np.float64], s_bins: NDArray[np.float64]) -> float:
    nyquist = float(s_bins[-1])
    if nyquist < 1 / 3.2:
        return float("nan")

    def band_mean(lo_a: float, hi_a: float) -> float:
        sel = (s_bins >= 1 / lo_a) & (s_bins <= 1 / hi_a)
        return float(profile[sel].mean()) if np.any(sel) else float("nan")

    ring = band_mean(3.9, 3.5)
    flanks = 0.5 * (band_mean(4.5, 4.0) + band_mean(3.4, 3.2))
    return ring / flanks if flanks > 0 else float("nan")


def fit_defocus_in_spectrum(
    spectrum: PowerSpectrum,
    *,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    options: EstimateOptions | None = None,
    fixed_astigmatism: tuple[float, float] | None = None,
    defocus_range_a: tuple[float, float] | None = None,
    diagnostics: bool = True,
) -> CTFEstimate:
    """Fit a CTF to a power spectrum (see the module docstring for the method).

    Parameters
    ----------
    spectrum
        From :func:`tiled_power_spectrum`.
    voltage_kv, cs_mm, amplitude_contrast
        Microscope constants.
    options
        Settings; defaults when None.
    fixed_astigmatism
        ``(U − V, angle_deg)`` to keep fixed (patch mode: only the mean defocus is fitted).
    defocus_range_a
        Overrides ``options.defocus_min_a/max_a`` for the 1D search.
    diagnostics
        Compute the fit resolution, ice-ring ratio and plot arrays (patch fits skip them:
        their ``fit_resolution_a`` and ``ice_ring_ratio`` are NaN, ``diagnostics`` empty).

    Returns
    -------
    CTFEstimate
    """
    opts = options or EstimateOptions()
    if defocus_range_a is not None:
        opts = dataclasses.replace(
            opts, defocus_min_a=defocus_range_a[0], defocus_max_a=defocus_range_a[1]
        )
    CTFParams(1.0, 1.0, 0.0, voltage_kv, cs_mm, amplitude_contrast)  # validates the constants
    lam = electron_wavelength_a(voltage_kv)
    cs_a = cs_mm * 1e7
    w = amplitude_contrast_phase_rad(amplitude_contrast)
    tile, pix = spectrum.tile_px, spectrum.pixel_size_a
    grid = _Grid.make(tile, pix)
    amplitude = np.sqrt(spectrum.power)
    nyquist = 0.5 / pix
    s_lo = min(1.0 / opts.min_resolution_a, 0.35 * nyquist)
    s_hi_user = min(1.0 / opts.max_resolution_a, 0.9 * nyquist)
    r_bins = np.arange(grid.nbins, dtype=np.float64)
    s_bins = r_bins / (tile * pix)

    # The rotational average washes out (and inverts) rings where the astigmatic phase
    # spread 2πλ·a·s² exceeds ~1.2 rad: the 1D search stops there.
    a_max = opts.max_astigmatism_a if fixed_astigmatism is None else 0.5 * abs(fixed_astigmatism[0])
    s_1d = math.sqrt(1.2 / (2 * math.pi * lam * max(a_max, 1.0)))
    s_1d = min(max(s_1d, 2.5 * s_lo), s_hi_user)

    # Pass 1: fixed-window background, 1D search on the rotational average.
    hw1 = np.full(grid.nbins, max(3.0, tile / 48.0))
    z1 = _normalise(amplitude, grid, hw1)
    prof1 = grid.radial_mean(z1)
    sel = (s_bins >= s_lo) & (s_bins <= s_1d)
    d1, ph = _search_1d(prof1[sel], s_bins[sel], lam, cs_a, w, opts)

    def ring_half_width(defocus: float) -> NDArray[np.float64]:
        """Half a ring period (moving averages, shell correlations)."""
        period = _ring_period_px(grid, defocus, lam, cs_a)
        return np.clip(0.5 * period, 1.5, tile / 8.0)

    def model_window(defocus: float) -> NDArray[np.float64]:
        """One ring period each side (local regressions)."""
        period = _ring_period_px(grid, defocus, lam, cs_a)
        return np.clip(period, 3.0, tile / 6.0)

    # Pass 2 (twice): model-aware background; 1D re-search near the previous defocus.
    d2 = d1
    for _ in range(2):
        z = _model_normalise(amplitude, grid, np.array([d2, 0.0, 0.0, ph]), lam, cs_a, w, model_window(d2))
        prof2 = grid.radial_mean(z)
        near = dataclasses.replace(opts, defocus_min_a=d2 * 0.9, defocus_max_a=d2 * 1.1)
        d2, ph = _search_1d(prof2[sel], s_bins[sel], lam, cs_a, w, near)

    # Rings closer than 3 spectrum pixels are not resolved: cap the band there.
    period = _ring_period_px(grid, d2 + a_max + 1000.0, lam, cs_a)
    unresolved = np.nonzero((period < 3.0) & (s_bins > s_lo))[0]
    s_alias = float(s_bins[unresolved[0]]) if unresolved.size else nyquist
    s_hi = max(min(s_hi_user, s_alias), min(s_1d, s_hi_user))

    # 2D refinement with a widening band (the basin shrinks as the band grows).
    stages = [s_1d]
    while stages[-1] < s_hi * 0.999:
        stages.append(min(stages[-1] * 1.35, s_hi))
    if fixed_astigmatism is None:
        x = np.array([d2, 0.0, 0.0, ph])
    else:
        astig, ang = fixed_astigmatism
        a = 0.5 * astig
        x = np.array([d2, a * math.cos(math.radians(2 * ang)), a * math.sin(math.radians(2 * ang)), ph])
    fom = 0.0
    for k, s_k in enumerate(stages):
        band = _band(z, grid, s_lo, s_k, stride=1 if k == len(stages) - 1 else 3)
        if fixed_astigmatism is None:
            x, fom = _refine_2d(
                band,
                x,
                lam,
                cs_a,
                w,
                astig_grid_a=opts.max_astigmatism_a if k == 0 else None,
                fit_phase=opts.fit_phase_shift,
            )
        else:
            x, fom = _local_fit(band, x, lam, cs_a, w, (True, False, False, opts.fit_phase_shift))
        if k == 0 or k == len(stages) - 1:
            # Background from the refined (astigmatic) estimate.
            z = _model_normalise(amplitude, grid, x, lam, cs_a, w, model_window(float(x[0])))
            if k == len(stages) - 1:
                band = _band(z, grid, s_lo, s_k)
                if fixed_astigmatism is None:
                    x, fom = _local_fit(band, x, lam, cs_a, w, (True, True, True, opts.fit_phase_shift))
                else:
                    x, fom = _local_fit(band, x, lam, cs_a, w, (True, False, False, opts.fit_phase_shift))
                if opts.snr_weighting and fixed_astigmatism is None:
                    # Astigmatism only: weighting sharpens the angle (median error 2.4° →
                    # 1.4° at |U − V| = 300–800 Å) but biases low-defocus D, kept unweighted.
                    hw = ring_half_width(float(x[0]))
                    free = (False, True, True, False)
                    x = _weighted_refit(z, grid, x, lam, cs_a, w, s_lo, s_k, hw, free)
                    fom = _cc(band.z, _model(_chi(band, x[0], x[1], x[2], x[3], lam, cs_a, w)))
    ph_fit = float(x[3])
    params = _params_from(x, ph_fit, voltage_kv, cs_mm, amplitude_contrast)

    if not diagnostics:
        return CTFEstimate(
            params=params,
            fit_resolution_a=math.nan,
            figure_of_merit=float(fom),
            ice_ring_ratio=math.nan,
            band_a=(1.0 / s_lo, 1.0 / s_hi),
            spectrum=spectrum,
        )
    # Diagnostics and quality on the final background.
    z_final = _model_normalise(amplitude, grid, x, lam, cs_a, w, model_window(float(x[0])))
    full = _Band(z_final, grid.s**2, grid.s**4, grid.cos2, grid.sin2)
    chi2d = _chi(full, x[0], x[1], x[2], ph_fit, lam, cs_a, w)
    fitted2d = np.sin(chi2d) ** 2
    # Equiphase 1D average: map every pixel to the isotropic radius with the same phase.
    dfz = x[0] + x[1] * grid.cos2 + x[2] * grid.sin2
    r_eq = grid.r * np.sqrt(np.clip(dfz / max(x[0], 1.0), 0.0, None))
    rb_eq = np.clip(np.rint(r_eq).astype(np.intp), 0, grid.nbins - 1)
    counts = np.bincount(rb_eq.ravel(), minlength=grid.nbins)
    obs_1d = np.bincount(rb_eq.ravel(), z_final.ravel(), minlength=grid.nbins) / np.maximum(counts, 1)
    chi1d = np.pi * lam * x[0] * s_bins**2 - 0.5 * np.pi * cs_a * lam**3 * s_bins**4 + ph_fit + w
    fit_1d = np.sin(chi1d) ** 2
    cc_hw = np.maximum(ring_half_width(params.defocus_mean_a), 2.5)
    cc_curve = _shell_cc(z_final, fitted2d, grid, cc_hw)
    n_nyq = tile // 2 + 1
    fit_res = _fit_resolution(cc_curve[:n_nyq], s_bins[:n_nyq], s_lo)
    ice = _ice_ring_ratio(grid.radial_mean(amplitude), s_bins)
    arrays = {
        "s_per_a": s_bins,
        "observed_1d": obs_1d,
        "fitted_1d": fit_1d,
        "cc_1d": cc_curve,
        "normalized_2d": z_final,
        "fitted_2d": fitted2d,
    }
    return CTFEstimate(
        params=params,
        fit_resolution_a=fit_res,
        figure_of_merit=float(fom),
        ice_ring_ratio=ice,
        band_a=(1.0 / s_lo, 1.0 / s_hi),
        spectrum=spectrum,
        diagnostics=arrays,
    )


def _fit_resolution(cc: NDArray[np.float64], s_bins: NDArray[np.float64], s_lo: float,
                    sustain_shells: int | None = None) -> float:
    """1/s where the shell correlation falls below the threshold for good.

    The scan starts at the first shell beyond ``s_lo`` whose correlation reaches the
    threshold (the lowest frequencies are often dominated by the specimen, not the CTF)
    and stops at the first shell that begins a run of ``sustain_shells`` consecutive shells
    below it (default ``max(3, n // 50)`` of the ``n`` shells): a brief dip — next to a
    strong solvent or ice ring, say — does not end the fit. ``1/s_lo`` when the correlation
    never reaches the threshold; the last shell when it never falls below it for good.
    """
    idx = np.nonzero((s_bins >= s_lo) & (s_bins <= s_bins[-1]))[0]
    if idx.size == 0:
        return float("nan")
    above = np.nonzero(cc[idx] >= CC_THRESHOLD)[0]
    if above.size == 0:
        return float(1.0 / s_lo)
    rest = idx[above[0] :]
    run = sustain_shells if sustain_shells is not None else max(3, len(s_bins) // 50)
    low = cc[rest] < CC_THRESHOLD
    first_k = -1
    count = 0
    for k, is_low in enumerate(low):
        count = count + 1 if is_low else 0
        if count == min(run, len(rest)):
            first_k = k - count + 1
            break
    if first_k < 0:
        # Never below for good; a dip that reaches the last shell still counts.
        tail = np.nonzero(~low)[0]
        if low[-1] and tail.size:
            first_k = int(tail[-1]) + 1
        else:
            return float(1.0 / s_bins[rest[-1]])
    first = rest[first_k]
    # Interpolate the crossing between the last shell above and the first below.
    a, b = cc[first - 1], cc[first]
    frac = (a - CC_THRESHOLD) / (a - b) if a != b else 0.0
    s = s_bins[first - 1] + frac * (s_bins[first] - s_bins[first - 1])
    return float(1.0 / s)


def estimate_ctf(
    image: NDArray[np.floating],
    pixel_size_a: float,
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.1,
    options: EstimateOptions | None = None,
    workers: int = 1,
) -> CTFEstimate:
    """Estimate the CTF of one micrograph.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        The micrograph.
    pixel_size_a
        Pixel size (Å).
    voltage_kv, cs_mm, amplitude_contrast
        Microscope constants.
    options
        Settings (:class:`EstimateOptions`).
    workers
        FFT threads.

    Returns
    -------
    CTFEstimate

    Raises
    ------
    InputError
        Non-finite, constant or too small images.

    Examples
    --------
    >>> from cryoset.ctf.synthetic import synthetic_micrograph
    >>> truth = CTFParams(15000.0, 14000.0, 30.0)
    >>> img = synthetic_micrograph(truth, (1024, 1024), 1.5, seed=1)
    >>> est = estimate_ctf(img, 1.5)
    >>> abs(est.params.defocus_mean_a - 14500.0) < 150
    True
    """
    opts = options or EstimateOptions()
    spectrum = tiled_power_spectrum(
        image, pixel_size_a, tile_px=opts.tile_px, target_pixel_a=opts.target_pixel_a, workers=workers
    )
    return fit_defocus_in_spectrum(
        spectrum,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        options=opts,
    )
