"""Curation after 2D classification: one annotation table, duplicate removal.

The papers' processing after extraction: several rounds of 2D classification, each with the
junk rule and the recovery pass (:func:`cryoset.workflows.classify2d.run_classify2d` with
``rounds``; round ``k + 1`` classifies the particles round ``k`` kept), then duplicate removal
among the kept particles at a distance (default: the particle diameter).
:func:`particle_annotations` reads the extraction and the rounds back into one table with a row
per extracted particle — rejected ones included, labelled (``kept`` 0 and ``rejected_reason``)
as CryoVirusDB keeps its false positives — and :func:`mark_duplicates` labels duplicates.

The same functions serve ``cryoset build`` and a by-hand run of the commands, so both give
the same particles and annotations (``tests/pipeline/test_build_equals_commands.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryoset.io import relion_labels as L

__all__ = [
    "CurateParams",
    "mark_duplicates",
    "particle_annotations",
]

#: ``rejected_reason`` of a particle within the duplicate distance of a better-scored kept one.
DUPLICATE = "duplicate"


@dataclass(frozen=True)
class CurateParams:
    """Curation parameters with their one default (the build's ``duplicates:``).

    Attributes
    ----------
    min_distance_a
        Duplicate distance, Å: of two kept particles of a micrograph closer than this the one
        with the lower picking score is a duplicate. None: the particle diameter; 0: no removal.
    """

    min_distance_a: float | None = None


def _keys(table: pd.DataFrame, star: Path) -> list[tuple[str, int]]:
    from cryoset.io.particles import resolve_image_path

    resolved: dict[str, str] = {}
    out = []
    for name, idx in zip(table["image_path"].astype(str), table["image_index"].astype(np.int64), strict=True):
        if name not in resolved:
            resolved[name] = str(Path(resolve_image_path(name, star)).resolve())
        out.append((resolved[name], int(idx)))
    return out


_ROUND_COLUMNS = ("class_number", "psi_deg", "shift_x_a", "shift_y_a", "max_prob", "ess", "eca")
#: Labels of ``cryoset classify2d``'s particles.star that have no canonical column.
_RAW_LABELS = {"ess": L.CRYOSET_POSE_ESS, "eca": L.CRYOSET_CLASS_ECA}


def particle_annotations(extract_dir: str | os.PathLike[str], round_dirs: list[Path], *,
                         pick_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One row per extracted particle (the order of ``particles.star``) with every annotation.

    Columns: the extraction's canonical table (picks, local defocus, acquisition), then from
    the last round each particle took part in ``class_number``, ``psi_deg``, ``shift_x_a``,
    ``shift_y_a``, ``max_prob``, ``ess``, ``eca``, ``class_resolution_a`` (the class's half-set
    FRC resolution), ``class_verdict`` and ``recovered`` (1: recovered from a junk class by the
    second pass); ``classify_rounds`` (rounds taken part in), ``kept``
    (1: survived every round) and ``rejected_reason`` (empty when kept, else e.g.
    ``2D round 1: low_power class``); ``ncc_score``, ``power`` and (where the coordinate
    files lack it) ``diameter_px`` from the picker when ``pick_dir`` holds its scores.
    """
    from cryoset.io.particles import read_particles
    from cryoset.io.star import read_star

    star = Path(extract_dir) / "particles.star"
    table = read_particles(star).table.reset_index(drop=True)
    n = len(table)
    where = {key: i for i, key in enumerate(_keys(table, star))}
    for col in _ROUND_COLUMNS:
        table[col] = np.nan
    table["class_resolution_a"] = np.nan
    table["class_verdict"] = ""
    table["classify_rounds"] = np.zeros(n, np.int64)
    table["recovered"] = np.zeros(n, np.int64)
    kept = np.zeros(n, bool) if round_dirs else np.ones(n, bool)
    reason = np.full(n, "", dtype=object)
    for k, d in enumerate(round_dirs, start=1):
        rstar = d / "particles.star"
        rt = read_particles(rstar).table.reset_index(drop=True)
        raw = next(df for df in read_star(rstar).values() if L.CRYOSET_KEPT in df.columns)
        rows = np.array([where[key] for key in _keys(rt, rstar)], np.int64)
        stats = pd.read_csv(d / "classes.csv")
        res = stats.set_index("class_number")["resolution_a"]
        verdict = stats.set_index("class_number")["verdict"].astype(str)
        cls = rt["class_number"].astype(np.int64)
        for col in _ROUND_COLUMNS:
            source = rt[col] if col in rt.columns else raw[_RAW_LABELS[col]]
            table.loc[rows, col] = pd.to_numeric(source).to_numpy(np.float64)
        table.loc[rows, "recovered"] = raw[L.CRYOSET_RECOVERED].astype(np.int64).to_numpy()
        table.loc[rows, "class_resolution_a"] = cls.map(res).to_numpy(np.float64)
        table.loc[rows, "class_verdict"] = cls.map(verdict).to_numpy(object)
        table.loc[rows, "classify_rounds"] = k
        ok = raw[L.CRYOSET_KEPT].astype(np.int64).to_numpy() == 1
        kept[rows] = ok
        reason[rows[~ok]] = [f"2D round {k}: {v} class" for v in cls[~ok].map(verdict)]
    table["class_number"] = table["class_number"].astype("Int64")
    table["kept"] = kept.astype(np.int8)
    table["rejected_reason"] = np.where(kept, "", reason).astype(str)
    if pick_dir is not None:
        table = _join_pick_scores(table, Path(pick_dir))
    return table


def _join_pick_scores(table: pd.DataFrame, pick_dir: Path) -> pd.DataFrame:
    """``ncc_score`` and ``power`` of every particle from the picker's scores (nearest pick, ≤ 0.5 px)."""
    from cryoset.workflows.pick import SCORES_FILE, micrograph_key

    path = pick_dir / SCORES_FILE
    if not path.is_file():
        return table
    scores = pd.read_parquet(path)
    out = table.copy()
    ncc = np.full(len(out), np.nan)
    power = np.full(len(out), np.nan)
    diameter = np.full(len(out), np.nan)
    keys = out["micrograph"].astype(str).map(micrograph_key).to_numpy()
    skeys = scores["micrograph"].astype(str).map(micrograph_key).to_numpy()
    for key in pd.unique(keys):
        mine = np.flatnonzero(keys == key)
        theirs = scores[skeys == key]
        if not len(theirs):
            continue
        sxy = theirs[["x_px", "y_px"]].to_numpy(np.float64)
        xy = out.loc[mine, ["x_px", "y_px"]].to_numpy(np.float64)
        d2 = ((xy[:, None, :] - sxy[None, :, :]) ** 2).sum(-1)
        j = d2.argmin(axis=1)
        close = d2[np.arange(len(mine)), j] <= 0.25
        for col, dest in (("ncc", ncc), ("power", power), ("diameter_px", diameter)):
            if col in theirs.columns:
                dest[mine[close]] = theirs[col].to_numpy(np.float64)[j[close]]
    out["ncc_score"] = ncc
    out["power"] = power
    if "diameter_px" in scores.columns:  # coordinate files may not carry it
        have = pd.to_numeric(out["diameter_px"], errors="coerce") if "diameter_px" in out.columns else None
        out["diameter_px"] = diameter if have is None else have.fillna(pd.Series(diameter, index=out.index))
    return out


def mark_duplicates(table: pd.DataFrame, min_distance_a: float) -> pd.DataFrame:
    """Label kept particles within ``min_distance_a`` of a better-scored kept one as duplicates.

    Per micrograph, kept particles are taken in order of decreasing ``score`` (ties: table
    order); one closer than the distance (micrograph pixels: ``min_distance_a /
    micrograph_pixel_size_a``) to a particle already taken gets ``kept`` 0 and
    ``rejected_reason`` ``duplicate``. A copy is returned.

    Examples
    --------
    >>> t = pd.DataFrame({"micrograph": ["m"] * 3, "x_px": [0.0, 3.0, 50.0], "y_px": [0.0] * 3,
    ...                   "score": [1.0, 2.0, 1.0], "micrograph_pixel_size_a": [1.0] * 3,
    ...                   "kept": [1, 1, 1], "rejected_reason": [""] * 3})
    >>> mark_duplicates(t, 10.0)["rejected_reason"].tolist()
    ['duplicate', '', '']
    """
    out = table.copy()
    if not min_distance_a > 0 or not len(out):
        return out
    kept = out["kept"].to_numpy(np.int64) == 1
    xy = out[["x_px", "y_px"]].to_numpy(np.float64)
    score = pd.to_numeric(out["score"], errors="coerce").fillna(-np.inf).to_numpy(np.float64)
    px = out["micrograph_pixel_size_a"].to_numpy(np.float64)
    names = out["micrograph"].astype(str).to_numpy()
    dup = np.zeros(len(out), bool)
    for name in pd.unique(names):
        rows = np.flatnonzero((names == name) & kept)
        rows = rows[np.argsort(-score[rows], kind="stable")]
        taken: list[int] = []
        for i in rows:
            limit = min_distance_a / px[i]
            if any(np.hypot(*(xy[i] - xy[t])) < limit for t in taken):
                dup[i] = True
            else:
                taken.append(int(i))
    out.loc[dup, "kept"] = 0
    out.loc[dup, "rejected_reason"] = DUPLICATE
    return out
