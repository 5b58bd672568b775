"""Local defocus: CTF fits on a grid of patches and a smooth defocus surface.

The whole micrograph is fitted first (:func:`cryoset.ctf.estimate.estimate_ctf`); each
patch then gets its own mean defocus with the astigmatism (``U − V`` and angle) held at the
global values. A plane (or quadratic) ``D(x, y)`` is fitted to the patch defoci by
least squares weighted by the patch figure of merit, with one round of outlier rejection.
The local CTF of a particle at ``(x_px, y_px)`` is then ``U = D(x, y) + ½(U − V)``,
``V = D(x, y) − ½(U − V)`` at the global angle.

Surface coordinates are normalised: ``u = (x_px − (nx − 1)/2) / nx``,
``v = (y_px − (ny − 1)/2) / ny``; ``D = c0 + c1 u + c2 v [+ c3 u² + c4 u v + c5 v²]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cryoset.ctf.estimate import (
    CTFEstimate,
    EstimateOptions,
    fit_defocus_in_spectrum,
    tiled_power_spectrum,
)
from cryoset.ctf.model import CTFParams
from cryoset.errors import InputError

__all__ = [
    "DefocusSurface",
    "LocalCTF",
    "PatchFit",
    "add_local_defocus",
    "estimate_patches",
    "fit_surface",
    "parse_patch_grid",
]

SURFACE_KINDS = ("constant", "plane", "quadratic")
_N_TERMS = {"constant": 1, "plane": 3, "quadratic": 6}
#: Patches whose figure of merit is below this are not used for the surface.
MIN_PATCH_FOM = 0.1


def parse_patch_grid(text: str) -> tuple[int, int]:
    """Parse ``"NxM"`` (N columns along x, M rows along y) into ``(n_x, n_y)``.

    Examples
    --------
    >>> parse_patch_grid("3x2")
    (3, 2)
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        nx, ny = (int(p) for p in parts)
    except ValueError:
        raise InputError("--patches", f"expected NxM such as 3x3, got {text!r}") from None
    if nx < 1 or ny < 1 or nx * ny < 2 or nx > 16 or ny > 16:
        raise InputError("--patches", f"need 1–16 patches per side and at least 2 in all, got {text!r}")
    return nx, ny


@dataclass(frozen=True)
class DefocusSurface:
    """A smooth mean-defocus surface over a micrograph.

    Attributes
    ----------
    kind
        ``"constant"``, ``"plane"`` or ``"quadratic"``.
    coefficients
        ``c0…`` in Å for the normalised coordinates of the module docstring.
    shape
        ``(ny, nx)`` of the micrograph in original pixels.
    """

    kind: str
    coefficients: tuple[float, ...]
    shape: tuple[int, int]

    def _design(self, x_px: NDArray[np.float64], y_px: NDArray[np.float64]) -> NDArray[np.float64]:
        return _design(self.kind, x_px, y_px, self.shape)

    def __call__(self, x_px: ArrayLike, y_px: ArrayLike) -> NDArray[np.float64]:
        """Mean defocus (Å) at pixel coordinates (any broadcastable shapes)."""
        x, y = np.broadcast_arrays(np.asarray(x_px, dtype=np.float64), np.asarray(y_px, dtype=np.float64))
        a = self._design(x.ravel(), y.ravel())
        out: NDArray[np.float64] = (a @ np.asarray(self.coefficients)).reshape(x.shape)
        return out

    def gradient_a_per_px(self) -> tuple[float, float]:
        """``(∂D/∂x, ∂D/∂y)`` at the micrograph centre, Å per pixel."""
        ny, nx = self.shape
        c = list(self.coefficients) + [0.0] * (6 - len(self.coefficients))
        return c[1] / nx, c[2] / ny


def _design(
    kind: str, x_px: NDArray[np.float64], y_px: NDArray[np.float64], shape: tuple[int, int]
) -> NDArray[np.float64]:
    ny, nx = shape
    u = (x_px - 0.5 * (nx - 1)) / nx
    v = (y_px - 0.5 * (ny - 1)) / ny
    cols = [np.ones_like(u)]
    if kind in ("plane", "quadratic"):
        cols += [u, v]
    if kind == "quadratic":
        cols += [u * u, u * v, v * v]
    return np.stack(cols, axis=1)


def fit_surface(
    x_px: ArrayLike,
    y_px: ArrayLike,
    defocus_a: ArrayLike,
    weights: ArrayLike,
    shape: tuple[int, int],
    kind: str = "plane",
) -> tuple[DefocusSurface, NDArray[np.bool_]]:
    """Weighted least-squares surface with one round of outlier rejection.

    Parameters
    ----------
    x_px, y_px, defocus_a, weights : array-like, shape (n,)
        Patch centres, their defoci and (non-negative) weights.
    shape
        Micrograph ``(ny, nx)``.
    kind
        ``"plane"``, ``"quadratic"`` or ``"constant"``; lowered automatically when there
        are too few usable patches (quadratic needs 6, plane 3).

    Returns
    -------
    surface : DefocusSurface
    used : ndarray of bool, shape (n,)
        Patches kept in the final fit.
    """
    if kind not in SURFACE_KINDS:
        raise ValueError(f"kind must be one of {SURFACE_KINDS}, got {kind!r}")
    x = np.asarray(x_px, dtype=np.float64)
    y = np.asarray(y_px, dtype=np.float64)
    d = np.asarray(defocus_a, dtype=np.float64)
    wt = np.asarray(weights, dtype=np.float64)
    used = np.isfinite(d) & np.isfinite(wt) & (wt > 0)

    def solve(mask: NDArray[np.bool_]) -> tuple[str, NDArray[np.float64]]:
        k = kind
        while _N_TERMS[k] > max(int(mask.sum()), 1) and k != "constant":
            k = "plane" if k == "quadratic" else "constant"
        if not mask.any():
            return "constant", np.array([float(np.nanmedian(d)) if np.isfinite(d).any() else math.nan])
        a = _design(k, x[mask], y[mask], shape)
        sw = np.sqrt(wt[mask])
        coef, *_ = np.linalg.lstsq(a * sw[:, None], d[mask] * sw, rcond=None)
        return k, np.asarray(coef, dtype=np.float64)

    k, coef = solve(used)
    if used.sum() > _N_TERMS[k] + 1:
        resid = d - _design(k, x, y, shape) @ coef
        med = float(np.median(np.abs(resid[used])))
        limit = max(4.0 * 1.4826 * med, 150.0)
        keep = used & (np.abs(resid) <= limit)
        if keep.sum() < used.sum() and keep.sum() >= _N_TERMS[k]:
            used = keep
            k, coef = solve(used)
    return DefocusSurface(k, tuple(float(c) for c in coef), (int(shape[0]), int(shape[1]))), used


@dataclass(frozen=True)
class LocalCTF:
    """Position-dependent CTF: a mean-defocus surface plus global astigmatism.

    Attributes
    ----------
    params
        The global fit (its astigmatism, angle and constants are used everywhere).
    surface
        Mean defocus ``D(x, y)``.
    """

    params: CTFParams
    surface: DefocusSurface

    def at(self, x_px: ArrayLike, y_px: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """``(defocus_u_a, defocus_v_a, defocus_angle_deg)`` arrays at pixel coordinates."""
        mean = self.surface(x_px, y_px)
        half = 0.5 * (self.params.defocus_u_a - self.params.defocus_v_a)
        angle = np.full(mean.shape, self.params.defocus_angle_deg)
        return mean + half, mean - half, angle


@dataclass(frozen=True)
class PatchFit:
    """Result of :func:`estimate_patches`.

    Attributes
    ----------
    global_estimate
        Whole-micrograph fit.
    patches
        One row per patch: ``patch_col``, ``patch_row``, ``x_px``, ``y_px`` (centre),
        ``defocus_a`` (mean), ``figure_of_merit``, ``used``, ``surface_defocus_a``, ``error``.
    local
        The surface and astigmatism for any coordinate.
    """

    global_estimate: CTFEstimate
    patches: pd.DataFrame
    local: LocalCTF


def estimate_patches(
    image: NDArray[np.floating],
    pixel_size_a: float,
    grid: tuple[int, int],
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.1,
    options: EstimateOptions | None = None,
    global_estimate: CTFEstimate | None = None,
    surface: str = "plane",
    workers: int = 1,
) -> PatchFit:
    """Fit the mean defocus on an ``n_x × n_y`` grid of patches and a smooth surface.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        The micrograph.
    pixel_size_a
        Pixel size (Å).
    grid
        ``(n_x, n_y)`` patches along x and y.
    voltage_kv, cs_mm, amplitude_contrast
        Microscope constants.
    options
        Estimation settings.
    global_estimate
        A whole-micrograph fit to reuse (computed when None).
    surface
        ``"plane"`` (default), ``"quadratic"`` or ``"constant"``.
    workers
        FFT threads.

    Returns
    -------
    PatchFit
    """
    from cryoset.ctf.estimate import estimate_ctf

    opts = options or EstimateOptions()
    img = np.asarray(image)
    if global_estimate is None:
        global_estimate = estimate_ctf(
            img, pixel_size_a, voltage_kv=voltage_kv, cs_mm=cs_mm,
            amplitude_contrast=amplitude_contrast, options=opts, workers=workers,
        )  # fmt: skip
    g = global_estimate.params
    ny, nx = img.shape
    n_x, n_y = grid
    edges_x = np.linspace(0, nx, n_x + 1).round().astype(int)
    edges_y = np.linspace(0, ny, n_y + 1).round().astype(int)
    d0 = g.defocus_mean_a
    span = max(0.3 * d0, 3000.0)
    rows = []
    for j in range(n_y):
        for i in range(n_x):
            y0, y1, x0, x1 = int(edges_y[j]), int(edges_y[j + 1]), int(edges_x[i]), int(edges_x[i + 1])
            row: dict[str, object] = {
                "patch_col": i,
                "patch_row": j,
                "x_px": 0.5 * (x0 + x1 - 1),
                "y_px": 0.5 * (y0 + y1 - 1),
                "defocus_a": math.nan,
                "figure_of_merit": math.nan,
                "error": "",
            }
            try:
                spec = tiled_power_spectrum(
                    img, pixel_size_a, tile_px=opts.tile_px, target_pixel_a=opts.target_pixel_a,
                    region=(y0, y1, x0, x1), workers=workers,
                )  # fmt: skip
                fit = fit_defocus_in_spectrum(
                    spec, voltage_kv=voltage_kv, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast,
                    options=opts, fixed_astigmatism=(g.defocus_u_a - g.defocus_v_a, g.defocus_angle_deg),
                    defocus_range_a=(max(d0 - span, 500.0), d0 + span), diagnostics=False,
                )  # fmt: skip
                row["defocus_a"] = fit.params.defocus_mean_a
                row["figure_of_merit"] = fit.figure_of_merit
            except InputError as exc:
                row["error"] = exc.message
            rows.append(row)
    table = pd.DataFrame(rows)
    fom = table["figure_of_merit"].to_numpy(dtype=np.float64)
    weights = np.where(np.isfinite(fom) & (fom >= MIN_PATCH_FOM), np.clip(fom, 0, None) ** 2, 0.0)
    surf, used = fit_surface(
        table["x_px"], table["y_px"], table["defocus_a"], weights, (ny, nx), kind=surface
    )
    if not np.isfinite(surf.coefficients[0]):
        surf = DefocusSurface("constant", (d0,), (ny, nx))
    table["used"] = used
    table["surface_defocus_a"] = surf(table["x_px"].to_numpy(), table["y_px"].to_numpy())
    return PatchFit(global_estimate, table, LocalCTF(g, surf))


def add_local_defocus(
    table: pd.DataFrame,
    local: Mapping[str, LocalCTF],
    *,
    micrograph_column: str = "micrograph",
) -> pd.DataFrame:
    """Return a copy of a picks/particle table with local defocus columns.

    Parameters
    ----------
    table
        Canonical picks or particle table (``micrograph``, ``x_px``, ``y_px``).
    local
        Micrograph name → :class:`LocalCTF`. Table names are matched exactly, then by the
        name without directory, then without extension.
    micrograph_column
        The column naming the micrograph.

    Returns
    -------
    DataFrame
        With ``defocus_u_a``, ``defocus_v_a``, ``defocus_angle_deg`` (overwritten) plus
        ``voltage_kv``, ``cs_mm``, ``amplitude_contrast``, ``phase_shift_deg`` where absent;
        NaN for rows whose micrograph has no fit.

    Raises
    ------
    InputError
        When required columns are missing.
    """
    missing = [c for c in (micrograph_column, "x_px", "y_px") if c not in table.columns]
    if missing:
        raise InputError(None, f"the table lacks column(s) {', '.join(missing)}")
    lookup: dict[str, LocalCTF] = {}
    for name, value in local.items():
        for key in _name_keys(str(name)):
            lookup.setdefault(key, value)
    out = table.copy()
    n = len(out)
    cols = {
        "defocus_u_a": np.full(n, np.nan),
        "defocus_v_a": np.full(n, np.nan),
        "defocus_angle_deg": np.full(n, np.nan),
        "voltage_kv": np.full(n, np.nan),
        "cs_mm": np.full(n, np.nan),
        "amplitude_contrast": np.full(n, np.nan),
        "phase_shift_deg": np.full(n, np.nan),
    }
    names = out[micrograph_column].astype(str).to_numpy()
    x = pd.to_numeric(out["x_px"], errors="coerce").to_numpy(dtype=np.float64)
    y = pd.to_numeric(out["y_px"], errors="coerce").to_numpy(dtype=np.float64)
    for name in pd.unique(names):
        fit = next((lookup[k] for k in _name_keys(name) if k in lookup), None)
        if fit is None:
            continue
        rows = names == name
        u, v, a = fit.at(x[rows], y[rows])
        cols["defocus_u_a"][rows] = u
        cols["defocus_v_a"][rows] = v
        cols["defocus_angle_deg"][rows] = a
        cols["voltage_kv"][rows] = fit.params.voltage_kv
        cols["cs_mm"][rows] = fit.params.cs_mm
        cols["amplitude_contrast"][rows] = fit.params.amplitude_contrast
        cols["phase_shift_deg"][rows] = fit.params.phase_shift_deg
    for key, values in cols.items():
        if key.startswith("defocus") or key not in out.columns:
            out[key] = values
    return out


def _name_keys(name: str) -> list[str]:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.split(".", 1)[0] if "." in base else base
    return [name, base, stem]
