"""Figures of map validation: FSC curves with their resolutions, the Guinier plot, the angular
distribution of the particles' viewing directions (:mod:`cryoset.recon.validate`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cryoset.recon.fsc import CorrelationCurve
from cryoset.recon.validate import AngularDistribution, GuinierFit, resolutions
from cryoset.report.figures import save_figure

__all__ = ["fsc_label", "plot_angular_distribution", "plot_fsc_curves", "plot_guinier"]


def _fmt(res_a: float) -> str:
    return f"{res_a:.2f} Å" if math.isfinite(res_a) else "—"


def fsc_label(name: str, curve: CorrelationCurve) -> str:
    """``name (0.143: 4.21 Å, 0.5: 5.80 Å)``."""
    r = resolutions(curve)
    return f"{name} (0.143: {_fmt(r['0.143'])}, 0.5: {_fmt(r['0.5'])})"


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fsc_curves(curves: Sequence[tuple[str, CorrelationCurve]], path: str | os.PathLike[str], *,
                    title: str = "Fourier shell correlation") -> Path:
    """FSC curves against spatial frequency (resolution in Å on the top axis), the 0.143 and 0.5
    thresholds dashed, each curve's resolutions at both in its legend entry."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, curve in curves:
        ax.plot(curve.freq_per_a, curve.correlation, label=fsc_label(name, curve), lw=1.3)
    for t in (0.143, 0.5):
        ax.axhline(t, color="grey", lw=0.7, ls="--")
        ax.text(0.0, t + 0.01, f"{t:g}", color="grey", fontsize=7)
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.15, 1.05)
    if curves:
        ax.set_xlim(0.0, float(curves[0][1].freq_per_a[-1]))

    top = ax.twiny()
    lo, hi = ax.get_xlim()
    top.set_xlim(lo, hi)
    ticks = [float(t) for t in ax.get_xticks() if lo < t <= hi and t > 0]
    top.set_xticks(ticks)
    top.set_xticklabels([f"{1.0 / t:.3g}" for t in ticks])
    top.set_xlabel("resolution (Å)")
    fig.suptitle(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_guinier(fits: Sequence[tuple[str, GuinierFit]], path: str | os.PathLike[str]) -> Path:
    """``ln(amplitude)`` against ``s²`` for each spectrum, the fitted range and line of each."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, fit in fits:
        ok = np.isfinite(fit.ln_amplitude) & (fit.s2_per_a2 > 0)
        (line,) = ax.plot(fit.s2_per_a2[ok], fit.ln_amplitude[ok], lw=1.0, label=name)
        s2 = fit.s2_per_a2[fit.fitted]
        ax.plot(s2, fit.ln_amplitude[fit.fitted], "o", ms=2.5, color=line.get_color())
        ax.plot(s2, fit.intercept + fit.bfactor_a2 / 4.0 * s2, "--", color=line.get_color(), lw=1.0,
                label=f"fit {fit.low_a:.1f}–{fit.high_a:.2f} Å: B = {fit.bfactor_a2:.1f} Å²")
    ax.set_xlabel("s² (1/Å²)")
    ax.set_ylabel("ln(amplitude)")
    ax.set_title("Guinier plot", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_angular_distribution(hist: AngularDistribution, path: str | os.PathLike[str]) -> Path:
    """Viewing directions: counts per equal-area bin relative to a uniform distribution, azimuth
    (RELION rot) across, elevation (tilt) down."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    e = hist.expected_per_bin
    rel = hist.counts / e if e > 0 else hist.counts.astype(np.float64)
    mesh = ax.pcolormesh(hist.azimuth_edges_deg, hist.tilt_edges_deg, rel, cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label="particles / uniform")
    ax.set_xlabel("azimuth, rot (°)")
    ax.set_ylabel("elevation, tilt (°)")
    ax.set_xlim(-180, 180)
    ax.set_ylim(180, 0)
    s = hist.summary()
    ax.set_title(f"{s['particles']} particles; empty bins {100 * s['empty_bin_fraction']:.0f} %, "
                 f"max/mean {s['max_over_mean']:.1f}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
