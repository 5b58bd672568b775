"""Per-particle 3D poses out of a refined (or ab initio) particle STAR into the other formats.

:func:`export_poses` is ``cryoset poses export``. It reads the RELION 3.1 particle STAR that
``cryoset refine`` (``run_data.star``) or ``cryoset abinitio`` (``particles.star``) wrote and
writes into ``OUT/`` (each file atomically, with a provenance sidecar):

* ``particles.cs`` — cryoSPARC: ``alignments3D/pose`` (rotation vector ``r``, radians, with
  ``euler_to_matrix(rot, tilt, psi) = rotvec_to_matrix(r).T``), ``alignments3D/shift``
  (pixels = Å / ``alignments3D/psize_A``), ``alignments3D/split`` (half set − 1),
  ``alignments3D/class`` (class − 1, when the STAR has classes) and the other fields cryoSPARC
  always writes; the angular error and the maximum posterior probability, which have no
  cryoSPARC field (cryoSPARC's ``alignments3D/error`` is a residual, not an angle), go to
  ``cryoset/angular_error_deg`` and ``cryoset/max_prob``;
* ``particles_poses.csv`` — CryoVirusDB's collective particles CSV (the layout ``cryoset
  classify2d`` writes): the published layout has ``Angle-Psi`` and ``Origin X/Y (Ang)`` but no
  rot, tilt, error or half-set column, so those three are what it carries (not written when the
  particles name no micrograph or a micrograph's height, needed for its flipped y, is unknown);
* ``poses.parquet`` — one row per particle: :data:`POSE_COLUMNS`;
* ``summary.json``.

With ``store`` and ``experiment_id``, the poses are also written into the particle store
(:meth:`cryoset.store.ParticleStore.write_poses`, the ``poses`` view), each STAR row matched to
the stored particle at the same micrograph and coordinates (within ``match_tolerance_px``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.errors import InputError
from cryoset.workflows.params import PosesParams

__all__ = [
    "ANGULAR_ERROR_FIELD",
    "CSV_FILE",
    "CS_FILE",
    "MAX_PROB_FIELD",
    "POSES_FILE",
    "POSE_COLUMNS",
    "PosesParams",
    "export_poses",
    "pose_table",
    "store_particle_index",
]

#: ``.cs`` fields for what cryoSPARC has no field for (cryoset's namespace, as ``cryoset/ctf_phase_flipped``).
ANGULAR_ERROR_FIELD = "cryoset/angular_error_deg"
MAX_PROB_FIELD = "cryoset/max_prob"
#: STAR label of the angular error written by ``cryoset refine`` (``workflows/refine.py``).
ANGULAR_ERROR_LABEL = "rlnCryosetAngularErrorDeg"
#: The per-particle pose columns (store and ``poses.parquet``); units in the names.
POSE_COLUMNS: tuple[str, ...] = ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a",
                                 "alignment_error_deg", "max_prob", "random_subset")
CS_FILE = "particles.cs"
CSV_FILE = "particles_poses.csv"
POSES_FILE = "poses.parquet"


def pose_table(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The :data:`POSE_COLUMNS` of a particle table (missing optional ones are NaN / 0).

    Raises
    ------
    InputError
        When rot, tilt or psi is missing or not finite.
    """
    need = ("rot_deg", "tilt_deg", "psi_deg")
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise InputError(path, "has no 3D poses (rlnAngleRot, rlnAngleTilt, rlnAnglePsi); "
                               "export the STAR of cryoset refine or cryoset abinitio")
    t = table.reset_index(drop=True)
    out = pd.DataFrame({c: t[c].to_numpy(np.float64) for c in need})
    for c in ("shift_x_a", "shift_y_a"):
        out[c] = t[c].to_numpy(np.float64) if c in t.columns else 0.0
    if not np.isfinite(out.to_numpy()).all():
        raise InputError(path, "holds non-finite angles or origins")
    out["alignment_error_deg"] = (t[ANGULAR_ERROR_LABEL].to_numpy(np.float64) if ANGULAR_ERROR_LABEL in t.columns
                                  else np.nan)
    out["max_prob"] = t["max_prob"].to_numpy(np.float64) if "max_prob" in t.columns else np.nan
    subset = (pd.to_numeric(t["random_subset"], errors="coerce").fillna(0).to_numpy(np.int64)
              if "random_subset" in t.columns else np.zeros(len(t), np.int64))
    out["random_subset"] = subset.astype(np.int8)
    return out


def store_particle_index(table: pd.DataFrame, annotations: pd.DataFrame, path: Path,
                         tolerance_px: float = 0.01) -> np.ndarray:
    """The store ``particle_index`` of each particle of ``table``: the stored particle of the
    same micrograph (by :func:`cryoset.workflows.pick.micrograph_key`) nearest to its
    ``(x_px, y_px)``, which must be within ``tolerance_px`` (float32 store coordinates).

    Raises
    ------
    InputError
        A particle without micrograph or coordinates, one with no stored particle within the
        tolerance, or two particles matched to the same stored one.
    """
    from scipy.spatial import cKDTree

    from cryoset.workflows.pick import micrograph_key

    for name, frame in (("the STAR file", table), ("the store experiment", annotations)):
        lack = [c for c in ("micrograph", "x_px", "y_px") if c not in frame.columns]
        if lack:
            raise InputError(path, f"{name} lacks {', '.join(lack)} needed to match particles to the store")
    ann_keys = annotations["micrograph"].astype(str).map(micrograph_key).to_numpy()
    keys = table["micrograph"].astype(str).map(micrograph_key).to_numpy()
    xy = table[["x_px", "y_px"]].to_numpy(np.float64)
    ann_xy = annotations[["x_px", "y_px"]].to_numpy(np.float64)
    ann_idx = annotations["particle_index"].to_numpy(np.int64)
    result = np.full(len(table), -1, np.int64)
    for key in dict.fromkeys(keys.tolist()):
        rows = np.flatnonzero(keys == key)
        cand = np.flatnonzero(ann_keys == key)
        if cand.size == 0:
            raise InputError(path, f"micrograph {key!r} has no particle in the store experiment")
        dist, near = cKDTree(ann_xy[cand]).query(xy[rows])
        bad = ~(np.asarray(dist) <= tolerance_px)
        if bad.any():
            r = rows[np.flatnonzero(bad)[0]]
            raise InputError(path, f"particle {r + 1} ({key}, x {xy[r, 0]:g}, y {xy[r, 1]:g}) has no stored "
                                   f"particle within {tolerance_px:g} px")
        result[rows] = ann_idx[cand[np.asarray(near)]]
    if len(np.unique(result)) != len(result):
        raise InputError(path, "two particles match the same stored particle")
    return result


def _write_csv(table: pd.DataFrame, star: Path, path: Path,
               micrograph_heights: Mapping[str, int] | None) -> tuple[Path | None, str | None]:
    """CryoVirusDB collective CSV (psi, origins) or why it was not written."""
    from cryoset.io.cryovirusdb import write_cryovirusdb
    from cryoset.workflows.classify2d import micrograph_heights as find_heights
    from cryoset.workflows.pick import micrograph_key

    if "micrograph" not in table.columns or {"x_px", "y_px"} - set(table.columns):
        return None, "not written: the particles name no micrograph and coordinates (rlnMicrographName)"
    heights, missing = find_heights(table, star, micrograph_heights)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return None, (f"not written: no height for micrograph(s) {', '.join(missing[:3])}{more} "
                      "(the CSV's y axis is flipped per micrograph)")
    write_cryovirusdb(path, table, variant="collective",
                      micrograph_heights=lambda m: float(heights.get(micrograph_key(m), np.nan)))
    return path, None


def export_poses(star: Path, out_dir: Path, *, store: Path | None = None, experiment_id: str | None = None,
                 micrograph_heights: Mapping[str, int] | None = None,
                 match_tolerance_px: float = PosesParams.match_tolerance_px,
                 permissive: bool = PosesParams.permissive) -> dict[str, Any]:
    """Write the poses of the particles of ``star`` as ``.cs``, CryoVirusDB CSV and Parquet (module docstring).

    Parameters
    ----------
    star
        Particle STAR with 3D poses (``cryoset refine`` / ``cryoset abinitio`` output).
    out_dir
        Output directory (created; the files named in the module docstring are replaced).
    store, experiment_id
        Also write the poses into this particle store experiment (both or neither).
    micrograph_heights
        Micrograph name → height (pixels), for the CSV's y flip where the micrograph files are
        not found.
    match_tolerance_px
        Largest distance between a STAR particle and its stored particle.
    permissive
        Passed to the STAR reader.

    Returns
    -------
    dict
        The summary (also ``summary.json``).
    """
    from cryoset.io.atomic import atomic_path, write_text_atomic
    from cryoset.io.jsontext import json_safe
    from cryoset.io.particles import read_particles, write_particles
    from cryoset.provenance import make_provenance, write_provenance

    if (store is None) != (experiment_id is None):
        raise InputError("--store", "give --store and --experiment together")
    if not match_tolerance_px >= 0:
        raise InputError("--match-tolerance-px", "must be >= 0")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a directory")
    ps = read_particles(star, permissive=permissive)
    t = ps.table.reset_index(drop=True)
    poses = pose_table(t, star)
    if "pixel_size_a" not in t.columns:
        raise InputError(star, "has no pixel size (rlnImagePixelSize): the .cs shifts are in pixels")
    index = None
    st = None
    if store is not None:
        from cryoset.store import ParticleStore

        if not store.is_dir():
            raise InputError(store, "no such store directory")
        st = ParticleStore.open(store)
        index = store_particle_index(t, st.annotations(str(experiment_id)), star, match_tolerance_px)
    record = {"star": str(star), "store": None if store is None else str(store), "experiment_id": experiment_id,
              "match_tolerance_px": match_tolerance_px}
    prov = make_provenance("poses export", record, [star])
    out_dir.mkdir(parents=True, exist_ok=True)

    cs_table = t.copy()
    cs_table[ANGULAR_ERROR_FIELD] = poses["alignment_error_deg"].to_numpy(np.float32)
    cs_table[MAX_PROB_FIELD] = poses["max_prob"].to_numpy(np.float32)
    if "random_subset" in cs_table.columns and not cs_table["random_subset"].isin([1, 2]).all():
        cs_table = cs_table.drop(columns="random_subset")  # cryoSPARC's split is 0/1
    write_particles(out_dir / CS_FILE, cs_table, fmt="cs", provenance=prov)
    csv_path, csv_note = _write_csv(t, star, out_dir / CSV_FILE, micrograph_heights)
    if csv_path is not None:
        write_provenance(csv_path, prov)
    frame = poses.copy()
    if index is not None:
        frame.insert(0, "particle_index", index)
        frame.insert(0, "experiment_id", str(experiment_id))
    with atomic_path(out_dir / POSES_FILE) as tmp:
        frame.to_parquet(tmp, index=False)
    write_provenance(out_dir / POSES_FILE, prov)
    stored = None
    if st is not None and index is not None:
        stored = st.write_poses(str(experiment_id), index, poses, provenance=prov)
    summary: dict[str, Any] = {
        "particles": len(t), "cs": str(out_dir / CS_FILE),
        "cryovirusdb_csv": None if csv_path is None else str(csv_path), "cryovirusdb_csv_note": csv_note,
        "poses": str(out_dir / POSES_FILE), "store": None if store is None else str(store),
        "experiment_id": experiment_id, "stored_poses": stored,
        "median_alignment_error_deg": float(np.nanmedian(poses["alignment_error_deg"]))
        if poses["alignment_error_deg"].notna().any() else None,
    }
    write_text_atomic(out_dir / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    return summary
