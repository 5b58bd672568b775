"""Diagnostic plots of CTF estimation (matplotlib, Agg backend; PNG files written atomically).

- :func:`plot_ctf_fit`: left, the 2D spectrum with the observed (background-removed)
  spectrum in the left half and the fitted ``sin²χ`` in the right half; right, the
  equiphase 1D average with the scaled fit, the shell cross-correlation and the 0.3 line.
- :func:`plot_defocus_landscape`: the fitted defocus surface over the micrograph with the
  patch estimates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from cryoset.report.figures import save_figure

if TYPE_CHECKING:
    import pandas as pd

    from cryoset.ctf.estimate import CTFEstimate
    from cryoset.ctf.patches import DefocusSurface

__all__ = ["full_centered_spectrum", "plot_ctf_fit", "plot_defocus_landscape"]


def full_centered_spectrum(half: NDArray[np.float64]) -> NDArray[np.float64]:
    """Expand an rfft-layout ``(n, n // 2 + 1)`` real spectrum to ``(n, n)``, zero at the centre.

    Uses the Hermitian symmetry of a real image's power spectrum: ``P(−k) = P(k)``.
    """
    n = half.shape[0]
    full = np.empty((n, n), dtype=np.float64)
    full[:, : half.shape[1]] = half
    kx = np.arange(half.shape[1], n)
    ky = (-np.arange(n)) % n
    full[:, half.shape[1] :] = half[ky][:, (n - kx)]
    out: NDArray[np.float64] = np.fft.fftshift(full)
    return out


def plot_ctf_fit(estimate: CTFEstimate, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write the 2D half/half and 1D diagnostic figure of one fit to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryoset.ctf.estimate import CC_THRESHOLD

    d = estimate.diagnostics
    obs = full_centered_spectrum(d["normalized_2d"])
    fit = full_centered_spectrum(d["fitted_2d"])
    n = obs.shape[0]
    # Standardise both halves in the fitting band for display.
    s = np.hypot(*np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij"))
    s = s / (n * estimate.spectrum.pixel_size_a)
    band = (s >= 1 / estimate.band_a[0]) & (s <= 1 / estimate.band_a[1])
    img = np.zeros_like(obs)
    left = np.arange(n) < n // 2
    obs_z = (obs - obs[band].mean()) / max(float(obs[band].std()), 1e-12)
    fit_z = (fit - fit[band].mean()) / max(float(fit[band].std()), 1e-12)
    img[:, left] = obs_z[:, left]
    img[:, ~left] = fit_z[:, ~left]
    img[s < 1 / estimate.band_a[0]] = 0.0
    p = estimate.params

    fig, (ax2d, ax1d) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [1, 1.5]})
    nyquist = 0.5 / estimate.spectrum.pixel_size_a
    s_show = min(nyquist, 1.25 / estimate.band_a[1])
    # Show the region up to a little beyond the fitting band.
    half_px = max(8, min(n // 2, int(np.ceil(s_show * n * estimate.spectrum.pixel_size_a))))
    crop = img[n // 2 - half_px : n // 2 + half_px, n // 2 - half_px : n // 2 + half_px]
    lim = half_px / (n * estimate.spectrum.pixel_size_a)
    ax2d.imshow(crop, cmap="gray", vmin=-2.5, vmax=2.5, origin="lower", extent=(-lim, lim, -lim, lim))
    ax2d.set_title("observed (left) | fitted (right)")
    ax2d.set_xlabel("s_x (1/Å)")
    ax2d.set_ylabel("s_y (1/Å)")

    s1 = d["s_per_a"]
    sel = (s1 >= 1 / estimate.band_a[0]) & (s1 <= 1 / estimate.band_a[1])
    o1, f1 = d["observed_1d"], d["fitted_1d"]
    if np.count_nonzero(sel) > 2:
        a, b = np.polyfit(f1[sel], o1[sel], 1)
    else:
        a, b = 1.0, 0.0
    show = (s1 >= 0.6 / estimate.band_a[0]) & (s1 <= s_show)
    ax1d.plot(s1[show], o1[show], lw=0.8, color="k", label="observed (equiphase average)")
    ax1d.plot(s1[show], a * f1[show] + b, lw=0.8, color="tab:red", label="fit")
    ax1d.set_xlabel("spatial frequency (1/Å)")
    ax1d.set_ylabel("normalised amplitude")
    ax1d.axvspan(1 / estimate.band_a[0], 1 / estimate.band_a[1], color="0.93", zorder=0)
    cc_ax = ax1d.twinx()
    cc_ax.plot(s1[show], d["cc_1d"][show], color="tab:blue", lw=1.2, label="cross-correlation")
    cc_ax.axhline(CC_THRESHOLD, color="tab:blue", ls="--", lw=0.8)
    if np.isfinite(estimate.fit_resolution_a):
        cc_ax.axvline(1 / estimate.fit_resolution_a, color="tab:green", ls=":", lw=1.0)
    cc_ax.set_ylim(-0.2, 1.05)
    cc_ax.set_ylabel("cross-correlation", color="tab:blue")
    lines = ax1d.get_lines()[:2] + cc_ax.get_lines()[:1]
    ax1d.legend(lines, [str(line.get_label()) for line in lines], loc="upper right", fontsize=8)
    ax1d.set_title(
        f"U {p.defocus_u_a:.0f} Å  V {p.defocus_v_a:.0f} Å  angle {p.defocus_angle_deg:.1f}°  "
        f"fit res {estimate.fit_resolution_a:.1f} Å  FOM {estimate.figure_of_merit:.3f}",
        fontsize=9,
    )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_defocus_landscape(
    patches: pd.DataFrame,
    surface: DefocusSurface,
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """Write the defocus surface with the patch estimates over the micrograph (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ny, nx = surface.shape
    ys = np.linspace(0, ny - 1, 64)
    xs = np.linspace(0, nx - 1, 64)
    gx, gy = np.meshgrid(xs, ys)
    z = surface(gx, gy)
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    vals = patches["defocus_a"].to_numpy(dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    lo = float(min(z.min(), finite.min() if finite.size else z.min()))
    hi = float(max(z.max(), finite.max() if finite.size else z.max()))
    if hi - lo < 1.0:
        lo, hi = lo - 0.5, hi + 0.5
    im = ax.imshow(z, extent=(0, nx, ny, 0), cmap="viridis", vmin=lo, vmax=hi)
    used = patches["used"].to_numpy(dtype=bool)
    px, py = patches["x_px"].to_numpy(), patches["y_px"].to_numpy()
    ax.scatter(px[used], py[used], c=vals[used], cmap="viridis", vmin=lo, vmax=hi, edgecolors="w", s=80)
    ax.scatter(px[~used], py[~used], marker="x", color="r", s=60, label="not used")
    for x, y, v in zip(px, py, vals, strict=True):
        if np.isfinite(v):
            ax.annotate(f"{v:.0f}", (x, y), textcoords="offset points", xytext=(0, 9), ha="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax, label="mean defocus (Å)")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title(title or f"defocus landscape ({surface.kind})", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
