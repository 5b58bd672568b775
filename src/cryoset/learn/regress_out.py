"""Acquisition regress-out: remove from frozen features the linear subspace that predicts
acquisition parameters.

Pure functions on arrays; nothing reads or writes files.

**What is removed.** Given training features ``X`` (n, d) and a nuisance matrix ``A`` (n, m)
(the acquisition parameters of each training particle, standardised: see
:func:`acquisition_matrix`), fit the ridge-regularised least-squares linear map
``W`` (d, m) with ``(X − μ) W ≈ A − ā`` (``μ``, ``ā`` the training means). The columns of
``W`` are the feature-space directions the map reads acquisition from; their span ``S``
(orthonormal basis ``B`` (d, k) from the SVD of ``W``, directions with singular value below
``rtol`` × the largest dropped) is the *acquisition subspace*. Features are projected onto its
orthogonal complement:

    x' = x − ((x − μ) B) Bᵀ

so ``(x' − μ) W = 0`` for every x: no linear read-out along ``W`` survives, and any component
of the features orthogonal to ``S`` is unchanged exactly. The map is fitted on training
experiments only and applied unchanged to every split.

**Which acquisition parameters.** :data:`ACQUISITION_COLUMNS` — voltage, pixel size, dose,
defocus, spherical aberration and the detector (one-hot) — restricted to those that *vary
across the training experiments* (a constant carries no direction); numeric columns are
z-scored with the training mean and sd, detector categories become 0/1 columns (categories
seen in training; others all zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ACQUISITION_COLUMNS",
    "RegressOut",
    "acquisition_matrix",
    "fit_regress_out",
]

#: Acquisition parameters considered, in this order: (name, store columns tried in order, kind).
ACQUISITION_COLUMNS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("voltage_kv", ("voltage_kv",), "numeric"),
    ("pixel_size_a", ("pixel_size_a",), "numeric"),
    ("dose_e_per_a2", ("dose_e_per_a2",), "numeric"),
    ("defocus_a", ("defocus_a", "defocus_u_a"), "numeric"),
    ("cs_mm", ("cs_mm",), "numeric"),
    ("detector", ("detector",), "categorical"),
)


@dataclass(frozen=True)
class RegressOut:
    """A fitted projector onto the orthogonal complement of the acquisition subspace.

    Attributes
    ----------
    mean : (d,)
        Training-feature mean ``μ``.
    basis : (d, k)
        Orthonormal basis ``B`` of the acquisition subspace (k ≤ m).
    coef : (d, m)
        The fitted map ``W`` (features → standardised acquisition parameters).
    nuisance_names
        The m nuisance columns (e.g. ``voltage_kv``, ``detector=K3``).
    train_r2 : per nuisance column, R² of the fit on the training rows.
    """

    mean: NDArray[np.float64]
    basis: NDArray[np.float64]
    coef: NDArray[np.float64]
    nuisance_names: tuple[str, ...] = ()
    train_r2: tuple[float, ...] = field(default=())

    @property
    def rank(self) -> int:
        """Dimension k of the removed subspace."""
        return int(self.basis.shape[1])

    def apply(self, x: ArrayLike) -> NDArray[np.float32]:
        """``x − ((x − μ) B) Bᵀ`` for features ``x`` (n, d)."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features must be (n, {self.mean.shape[0]}), got shape {a.shape}")
        return np.asarray(a - ((a - self.mean) @ self.basis) @ self.basis.T, dtype=np.float32)


def fit_regress_out(features: ArrayLike, nuisance: ArrayLike, *, names: Sequence[str] = (),
                    ridge: float = 1e-6, rtol: float = 1e-8) -> RegressOut:
    """Fit the acquisition projector on *training* rows (see the module docstring).

    Parameters
    ----------
    features : (n, d)
        Training features.
    nuisance : (n, m)
        Their acquisition parameters (already standardised; see :func:`acquisition_matrix`).
    ridge
        Ridge penalty relative to the mean eigenvalue of the feature covariance (keeps the fit
        defined when features are collinear or d > n).
    rtol
        Directions of ``W`` with singular value below ``rtol`` × the largest are dropped.
    """
    x = np.asarray(features, dtype=np.float64)
    a = np.asarray(nuisance, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if x.ndim != 2 or a.ndim != 2 or len(x) != len(a):
        raise ValueError(f"need features (n, d) and nuisance (n, m) with the same n, got {x.shape}, {a.shape}")
    if not (np.isfinite(x).all() and np.isfinite(a).all()):
        raise ValueError("features or nuisance contain NaN or infinite values")
    d = x.shape[1]
    mu = x.mean(axis=0)
    xc = x - mu
    ac = a - a.mean(axis=0)
    if a.shape[1] == 0 or len(x) < 2:
        return RegressOut(mu, np.zeros((d, 0)), np.zeros((d, a.shape[1])), tuple(names), ())
    cov = xc.T @ xc
    lam = ridge * max(float(np.trace(cov)) / d, 1e-300)
    coef = np.linalg.solve(cov + lam * np.eye(d), xc.T @ ac)
    u, s, _ = np.linalg.svd(coef, full_matrices=False)
    keep = s > rtol * s.max() if s.size and s.max() > 0 else np.zeros(s.shape, bool)
    basis = u[:, keep]
    resid = ac - xc @ coef
    tot = (ac ** 2).sum(axis=0)
    r2 = tuple(float(1 - r / t) if t > 0 else 0.0 for r, t in zip((resid ** 2).sum(axis=0), tot, strict=True))
    return RegressOut(mu, basis, coef, tuple(names), r2)


def acquisition_matrix(frame: pd.DataFrame, train: ArrayLike, *, experiment_column: str = "experiment_id",
                       columns: Sequence[str] | None = None) -> tuple[NDArray[np.float64], list[str]]:
    """The standardised nuisance matrix of every row of ``frame`` and its column names.

    Parameters
    ----------
    frame
        One row per particle (store annotations).
    train
        Boolean mask of the training rows: which parameters vary, the z-scores and the detector
        categories are taken from these rows only.
    columns
        Names of :data:`ACQUISITION_COLUMNS` to consider (default: all).

    Returns
    -------
    matrix : (n, m)
        Rows with a missing numeric value get 0 (the training mean) in that column.
    names
        ``voltage_kv``, ``defocus_a``, ``detector=<name>`` …: exactly what is regressed out.
    """
    mask = np.asarray(train, dtype=bool)
    if mask.shape != (len(frame),):
        raise ValueError(f"train mask must have {len(frame)} entries, got {mask.shape}")
    wanted = {c[0] for c in ACQUISITION_COLUMNS} if columns is None else set(columns)
    unknown = wanted - {c[0] for c in ACQUISITION_COLUMNS}
    if unknown:
        raise ValueError(f"unknown acquisition parameters {sorted(unknown)}")
    cols: list[NDArray[np.float64]] = []
    names: list[str] = []
    exp = frame[experiment_column].astype(str).to_numpy() if experiment_column in frame else None
    for name, candidates, kind in ACQUISITION_COLUMNS:
        if name not in wanted:
            continue
        src = next((c for c in candidates if c in frame.columns and frame[c].notna().any()), None)
        if src is None:
            continue
        if kind == "numeric":
            v = pd.to_numeric(frame[src], errors="coerce").to_numpy(np.float64)
            tv = v[mask]
            ok = np.isfinite(tv)
            if ok.sum() < 2:
                continue
            if exp is not None:  # varies across training experiments (not only within one)
                per = pd.Series(tv[ok]).groupby(exp[mask][ok]).mean()
                if per.nunique() < 2:
                    continue
            sd = float(np.std(tv[ok]))
            if not sd > 0:
                continue
            z = (v - float(np.mean(tv[ok]))) / sd
            cols.append(np.where(np.isfinite(z), z, 0.0))
            names.append(name)
        else:
            v = frame[src].astype("string").fillna("").to_numpy(dtype=object)
            cats = sorted(set(v[mask].tolist()) - {""})
            if len(cats) < 2:
                continue
            for c in cats:
                cols.append((v == c).astype(np.float64))
                names.append(f"{name}={c}")
    m = np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0))
    return m, names
