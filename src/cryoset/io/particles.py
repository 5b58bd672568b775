"""Particle tables: RELION STAR 3.0 / 3.1, cryoSPARC ``.cs`` and CryoVirusDB CSV ↔ one canonical table.

:func:`read_particles` returns a :class:`ParticleSet` whose ``table`` uses the canonical
column names of :mod:`cryoset.io.schema` (``defocus_u_a``, ``rot_deg``, ``shift_x_a``…);
:func:`write_particles` converts back out. The mapping tables, units and sign conventions
are documented in ``docs/formats-particles.md``. In short:

* RELION 3.1: the ``optics`` block is merged into the particle table on
  ``rlnOpticsGroup``; on write, columns constant within each optics group go back to it.
* RELION 3.0: pixel size = ``rlnDetectorPixelSize`` (µm) × 1e4 / ``rlnMagnification``;
  ``rlnOriginX/Y`` (pixels) × pixel size = ``shift_x_a``/``shift_y_a`` (Å).
* ``rlnImageName`` ``"000001@stack.mrcs"`` → ``image_index`` 0 (RELION counts from 1),
  ``image_path`` ``"stack.mrcs"``.
* cryoSPARC: ``alignments3D/pose`` is a rotation vector ``r`` (radians) with
  ``euler_to_matrix(rot, tilt, psi) = rotvec_to_matrix(r).T``; ``alignments3D/shift``
  (pixels) × ``alignments3D/psize_A`` = ``shift_x_a``, ``shift_y_a``; ``alignments2D/pose``
  (radians) = ``psi_deg`` in radians; 0-based ``class``, ``split``, ``exp_group_id`` become
  1-based ``class_number``, ``random_subset``, ``optics_group``.

* Phase flipping: ``rlnCtfDataArePhaseFlipped`` (3.1: optics block; 3.0: per particle) and the
  ``.cs`` field ``cryoset/ctf_phase_flipped`` ↔ ``ctf_phase_flipped`` (0/1).
* ``.mrc`` stacks are named ``N@x.mrc:mrcs`` (RELION 3.1 reads ``.mrc`` files as stacks only
  so); image names are resolved as RELION does (:func:`resolve_image_path`) and written
  relative to the project directory (:func:`relion_path`).

Columns with no canonical name keep their source name (``rlnGroupNumber``, ``blob/sign``);
vector ``.cs`` fields are split into ``name[0]``, ``name[1]``… columns.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from cryoset.errors import InputError
from cryoset.geometry import euler_to_matrix, matrix_to_euler, matrix_to_rotvec, rotvec_to_matrix
from cryoset.io import schema as S
from cryoset.io.cryosparc import CS_DEFAULT_FIELDS, PHASE_FLIPPED_FIELD, read_cs, write_cs
from cryoset.io.lean import PathStyle as PathStyle  # re-exported
from cryoset.io.lean import relion_path as relion_path  # re-exported
from cryoset.io.relion_labels import (
    CANONICAL_TO_PARTICLE_STAR,
    INTEGER_LABELS,
    OPTICS_LABELS,
    PARTICLE_STAR_TO_CANONICAL,
)
from cryoset.io.star import LOOP_ATTR, describe_blocks, read_star, write_star

SourceFormat = Literal["star3.0", "star3.1", "cs", "cryovirusdb"]


@dataclass
class ParticleSet:
    """Particles in the canonical table plus what a writer needs to restore the source layout.

    Attributes
    ----------
    table
        One row per particle, canonical columns (:data:`cryoset.io.schema.PARTICLE_COLUMNS`)
        first, then columns under their source names.
    optics
        The RELION 3.1 ``optics`` block as read (STAR labels), or None.
    source_format
        ``"star3.0"``, ``"star3.1"``, ``"cs"`` or ``"cryovirusdb"``.
    extra
        Other information: ``"star_blocks"`` (the other blocks of a STAR file, by name),
        ``"particle_block"`` (its block name), ``"source_path"``.
    """

    table: pd.DataFrame
    optics: pd.DataFrame | None = None
    source_format: SourceFormat = "star3.1"
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# RELION STAR
# ------------------------------------------------------------------------------------------

# The label tables live in cryoset.io.relion_labels; these names stay importable from here.
STAR_TO_CANONICAL: dict[str, str] = PARTICLE_STAR_TO_CANONICAL
CANONICAL_TO_STAR: dict[str, str] = CANONICAL_TO_PARTICLE_STAR
STAR_INT_LABELS: frozenset[str] = INTEGER_LABELS

#: Labels that mark a STAR table as holding particles or picks.
_PARTICLE_MARKERS = ("rlnImageName", "rlnCoordinateX", "rlnMicrographName")


#: RELION's file-type suffix that makes it read an ``.mrc`` file as an image stack: RELION 3.1
#: refuses ``N@file.mrc`` (".mrc extensions are reserved for 3D maps") but reads
#: ``N@file.mrc:mrcs``.
MRC_STACK_TYPE = ":mrcs"


def _strip_stack_type(name: str) -> str:
    """``x.mrc:mrcs`` → ``x.mrc`` (the file's name); other names unchanged."""
    if name.endswith(MRC_STACK_TYPE) and name[: -len(MRC_STACK_TYPE)].lower().endswith(".mrc"):
        return name[: -len(MRC_STACK_TYPE)]
    return name


def relion_stack_name(path: str) -> str:
    """The name RELION 3.1 reads as an image stack: ``x.mrc`` → ``x.mrc:mrcs``, others unchanged.

    Examples
    --------
    >>> relion_stack_name("J19/extract/a_particles.mrc"), relion_stack_name("b.mrcs")
    ('J19/extract/a_particles.mrc:mrcs', 'b.mrcs')
    """
    return path + MRC_STACK_TYPE if path.lower().endswith(".mrc") else path


def _basename(name: str) -> str:
    return posixpath.basename(name.replace("\\", "/"))


def _basenames(names: Iterable[object]) -> list[str]:
    """``_basename`` of every name, computed once per distinct name."""
    cache: dict[str, str] = {}
    out: list[str] = []
    for name in names:
        text = str(name)
        base = cache.get(text)
        if base is None:
            base = cache[text] = _basename(text)
        out.append(base)
    return out


def _round12(values: np.ndarray) -> np.ndarray:
    """Round to 12 significant digits (undoes the last-bit error of ×p then ÷p)."""
    arr = np.asarray(values, dtype=np.float64)
    return np.array([float(f"{v:.12g}") for v in arr.tolist()], dtype=np.float64)


def _pixel_size_from_detector(detector_um: np.ndarray, magnification: np.ndarray) -> np.ndarray:
    """RELION 3.0 pixel size in Å: detector pixel (µm) × 1e4 / magnification.

    Evaluated as ``detector / (magnification / 1e4)`` so that the ``magnification = 10000``
    convention returns the detector value bit for bit.
    """
    return np.asarray(detector_um, dtype=np.float64) / (np.asarray(magnification, np.float64) / 1e4)


def _pick_particle_block(blocks: dict[str, pd.DataFrame], path: Path) -> str:
    if "particles" in blocks:
        return "particles"
    candidates = [
        name for name, df in blocks.items()
        if name != "optics" and any(m in df.columns for m in _PARTICLE_MARKERS)
    ]
    if not candidates:
        raise InputError(
            path,
            "no particle table: no block has rlnImageName, rlnCoordinateX or "
            f"rlnMicrographName; it is a {describe_blocks(blocks)}",
        )
    return candidates[0]


def _merge_optics(particles: pd.DataFrame, optics: pd.DataFrame, path: Path) -> pd.DataFrame:
    if "rlnOpticsGroup" not in optics.columns:
        raise InputError(path, "data_optics lacks rlnOpticsGroup")
    if "rlnOpticsGroup" not in particles.columns:
        if len(optics) != 1:
            raise InputError(
                path, f"particles lack rlnOpticsGroup but data_optics has {len(optics)} groups"
            )
        particles = particles.copy()
        particles["rlnOpticsGroup"] = optics["rlnOpticsGroup"].iloc[0]
    if optics["rlnOpticsGroup"].duplicated().any():
        raise InputError(path, "data_optics lists an optics group more than once")
    unknown = sorted(set(particles["rlnOpticsGroup"].tolist()) - set(optics["rlnOpticsGroup"].tolist()))
    if unknown:
        raise InputError(path, f"particles refer to optics group(s) {unknown} absent from data_optics")
    add = [c for c in optics.columns if c not in particles.columns]
    lookup = optics.set_index("rlnOpticsGroup")[add]
    merged = particles.join(lookup, on="rlnOpticsGroup")
    return merged


def _star_to_canonical(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Rename and convert RELION labels to canonical columns (3.0 and 3.1)."""
    out = df.copy()
    out.attrs = {}
    if "rlnImageName" in out.columns:
        names = [str(v).strip() for v in out["rlnImageName"].tolist()]
        split = [n.partition("@") for n in names]
        numbered = [bool(sep) and head.isdigit() for head, sep, _ in split]
        index = pd.Series(
            [int(head) - 1 if ok else pd.NA for (head, _, _), ok in zip(split, numbered, strict=True)],
            dtype="Int64", index=out.index,
        )
        if bool((index.dropna() < 0).any()):
            raise InputError(path, "rlnImageName index must be >= 1 (RELION counts from 1)")
        out[S.IMAGE_INDEX] = index
        out[S.IMAGE_PATH] = [
            _strip_stack_type(tail) if ok else name
            for (_, _, tail), ok, name in zip(split, numbered, names, strict=True)
        ]
        digits = [len(head) for (head, _, _), ok in zip(split, numbered, strict=True) if ok]
        out.attrs["image_name_width"] = 6 if digits and min(digits) >= 6 else 0
        out = out.drop(columns="rlnImageName")
    if "rlnMicrographName" in out.columns:
        out[S.MICROGRAPH] = _basenames(out["rlnMicrographName"].tolist())
    out = out.rename(columns={k: v for k, v in STAR_TO_CANONICAL.items() if k in out.columns})
    if S.PIXEL_SIZE_A not in out.columns and {
        S.DETECTOR_PIXEL_SIZE_UM, S.MAGNIFICATION
    } <= set(out.columns):
        mag = out[S.MAGNIFICATION].to_numpy(dtype=np.float64)
        if (mag <= 0).any():
            raise InputError(path, "rlnMagnification must be > 0")
        out[S.PIXEL_SIZE_A] = _pixel_size_from_detector(
            out[S.DETECTOR_PIXEL_SIZE_UM].to_numpy(dtype=np.float64), mag)
    for axis in ("X", "Y"):
        label = f"rlnOrigin{axis}"
        target = S.SHIFT_X_A if axis == "X" else S.SHIFT_Y_A
        if label in out.columns and target not in out.columns:
            if S.PIXEL_SIZE_A not in out.columns:
                raise InputError(
                    path,
                    f"{label} is in pixels but the pixel size is unknown (needs rlnImagePixelSize "
                    "or rlnDetectorPixelSize and rlnMagnification)",
                )
            out[target] = out[label].to_numpy(dtype=np.float64) * out[S.PIXEL_SIZE_A].to_numpy(
                dtype=np.float64
            )
            out = out.drop(columns=label)
    for col in (S.SCORE, S.DIAMETER_PX):
        if col not in out.columns and S.X_PX in out.columns:
            out[col] = np.nan
    return S.canonical_first(S.validate_particles(out, path))


def _read_star_particles(path: Path, permissive: bool) -> ParticleSet:
    blocks = read_star(path, permissive=permissive)
    name = _pick_particle_block(blocks, path)
    particles = blocks[name]
    optics = blocks.get("optics") if name != "optics" else None
    extra: dict[str, Any] = {
        "particle_block": name,
        "block_order": list(blocks),
        "star_blocks": {k: v for k, v in blocks.items() if k not in (name, "optics")},
        "source_path": str(path),
        "particle_columns": list(particles.columns),
    }
    if optics is not None:
        merged = _merge_optics(particles, optics, path)
        fmt: SourceFormat = "star3.1"
    else:
        merged = particles
        fmt = "star3.1" if "rlnOriginXAngst" in particles.columns or (
            "rlnImagePixelSize" in particles.columns
        ) else "star3.0"
    table = _star_to_canonical(merged, path)
    extra["image_name_width"] = table.attrs.pop("image_name_width", 6)
    return ParticleSet(table=table, optics=optics, source_format=fmt, extra=extra)


def _star_series(table: pd.DataFrame, column: str, label: str) -> pd.Series:
    s = table[column]
    if column == S.CTF_PHASE_FLIPPED:  # unknown reads as not flipped everywhere (RELION's default)
        return pd.Series(S.phase_flipped(table).astype(np.int64), index=table.index)
    if label in STAR_INT_LABELS and not s.isna().any():
        return s.astype(np.int64)
    return s


def _canonical_to_star(
    table: pd.DataFrame, version: str, path: Path, image_name_width: int = 6
) -> pd.DataFrame:
    """The particle table with RELION labels (one merged table, no optics split)."""
    cols: dict[str, pd.Series] = {}
    t = table
    if S.IMAGE_PATH in t.columns or S.IMAGE_INDEX in t.columns:
        missing = [c for c in (S.IMAGE_PATH, S.IMAGE_INDEX) if c not in t.columns]
        if missing:
            raise InputError(path, f"cannot write rlnImageName without {', '.join(missing)}")
        idx = pd.to_numeric(t[S.IMAGE_INDEX]).astype("Int64")
        if (idx.dropna() < 0).any():
            raise InputError(path, "image_index must be >= 0")
        cols["rlnImageName"] = pd.Series(
            [p if pd.isna(i) else f"{int(i) + 1:0{image_name_width}d}@{relion_stack_name(p)}"
             for i, p in zip(idx.tolist(), t[S.IMAGE_PATH].astype(str).tolist(), strict=True)],
            index=t.index, dtype=str,
        )
    if S.MICROGRAPH in t.columns:
        if "rlnMicrographName" in t.columns:
            orig = t["rlnMicrographName"].astype(str).tolist()
            mics = t[S.MICROGRAPH].astype(str).tolist()
            cols["rlnMicrographName"] = pd.Series(
                [o if b == m else m for o, b, m in zip(orig, _basenames(orig), mics, strict=True)],
                index=t.index, dtype=str,
            )
        else:
            cols["rlnMicrographName"] = t[S.MICROGRAPH].astype(str)
    elif "rlnMicrographName" in t.columns:
        cols["rlnMicrographName"] = t["rlnMicrographName"].astype(str)
    skip = {S.MICROGRAPH, S.IMAGE_PATH, S.IMAGE_INDEX, "rlnMicrographName"}
    if version == "3.0":
        skip |= {S.PIXEL_SIZE_A, S.SHIFT_X_A, S.SHIFT_Y_A, S.DETECTOR_PIXEL_SIZE_UM, S.MAGNIFICATION}
    for column in t.columns:
        if column in skip:
            continue
        if column in CANONICAL_TO_STAR:
            label = CANONICAL_TO_STAR[column]
            if column in (S.SCORE, S.DIAMETER_PX) and t[column].isna().all():
                continue
            cols[label] = _star_series(t, column, label)
        elif isinstance(column, str) and column.startswith("rln"):
            cols[column] = _star_series(t, column, column)
        # other columns (cryoSPARC fields, CSV extras) have no RELION label: dropped.
    if version == "3.0":
        if S.DETECTOR_PIXEL_SIZE_UM in t.columns and S.MAGNIFICATION in t.columns:
            cols["rlnMagnification"] = t[S.MAGNIFICATION]
            cols["rlnDetectorPixelSize"] = t[S.DETECTOR_PIXEL_SIZE_UM]
            psize = _pixel_size_from_detector(t[S.DETECTOR_PIXEL_SIZE_UM].to_numpy(np.float64),
                                              t[S.MAGNIFICATION].to_numpy(np.float64))
            if S.PIXEL_SIZE_A in t.columns and not np.allclose(
                psize, t[S.PIXEL_SIZE_A].to_numpy(np.float64), rtol=1e-9, equal_nan=True
            ):
                cols["rlnMagnification"] = pd.Series(10000.0, index=t.index)
                cols["rlnDetectorPixelSize"] = t[S.PIXEL_SIZE_A].astype(np.float64)
                psize = t[S.PIXEL_SIZE_A].to_numpy(np.float64)
        elif S.PIXEL_SIZE_A in t.columns:
            cols["rlnMagnification"] = pd.Series(10000.0, index=t.index)
            cols["rlnDetectorPixelSize"] = t[S.PIXEL_SIZE_A].astype(np.float64)
            psize = t[S.PIXEL_SIZE_A].to_numpy(np.float64)
        else:
            psize = None
        for axis, column in (("X", S.SHIFT_X_A), ("Y", S.SHIFT_Y_A)):
            if column in t.columns:
                if psize is None:
                    raise InputError(
                        path, "cannot write RELION 3.0 rlnOriginX/Y (pixels) without pixel_size_a"
                    )
                cols[f"rlnOrigin{axis}"] = pd.Series(
                    _round12(t[column].to_numpy(np.float64) / psize), index=t.index
                )
    return pd.DataFrame(cols, index=t.index).reset_index(drop=True)


def _split_optics(
    merged: pd.DataFrame, previous: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a merged RELION table into (optics, particles) blocks."""
    df = merged.copy()
    if "rlnOpticsGroup" not in df.columns:
        keys = [c for c in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
                            "rlnImagePixelSize", "rlnImageSize", "rlnCtfDataArePhaseFlipped")
                if c in df.columns]
        if keys:
            codes = df.groupby(keys, sort=False, dropna=False).ngroup().to_numpy() + 1
        else:
            codes = np.ones(len(df), dtype=np.int64)
        df["rlnOpticsGroup"] = codes.astype(np.int64)
    if "rlnOpticsGroupName" not in df.columns:
        df["rlnOpticsGroupName"] = [f"opticsGroup{g}" for g in df["rlnOpticsGroup"].tolist()]
    if "rlnImageSize" in df.columns and "rlnImageDimensionality" not in df.columns:
        df["rlnImageDimensionality"] = np.int64(2)
    candidates = list(OPTICS_LABELS)
    if previous is not None:
        candidates = [*list(previous.columns), *[c for c in candidates if c not in previous.columns]]
    groups = df.groupby("rlnOpticsGroup", sort=False)
    if "rlnOpticsGroup" not in candidates:
        candidates.insert(0, "rlnOpticsGroup")
    optics_cols = [
        label for label in candidates
        if label == "rlnOpticsGroup"
        or (label in df.columns and bool((groups[label].nunique(dropna=False) <= 1).all()))
    ]
    optics = df[optics_cols].drop_duplicates("rlnOpticsGroup").reset_index(drop=True)
    if previous is not None and "rlnOpticsGroup" in previous.columns and set(
        optics_cols
    ) == set(previous.columns):
        missing = previous[~previous["rlnOpticsGroup"].isin(optics["rlnOpticsGroup"])]
        optics = pd.concat([optics, missing[optics_cols]], ignore_index=True)
        order = {g: i for i, g in enumerate(previous["rlnOpticsGroup"].tolist())}
        optics = optics.sort_values(
            "rlnOpticsGroup", key=lambda s: s.map(lambda g: order.get(g, len(order) + g))
        ).reset_index(drop=True)
    else:
        optics = optics.sort_values("rlnOpticsGroup").reset_index(drop=True)
    for label in optics.columns:
        if label in STAR_INT_LABELS:
            optics[label] = optics[label].astype(np.int64)
    particles = df[[c for c in df.columns if c not in optics_cols or c == "rlnOpticsGroup"]]
    return optics, particles


def _order_like(df: pd.DataFrame, order: Sequence[str] | None) -> pd.DataFrame:
    if not order:
        return df
    first = [c for c in order if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def _write_star_particles(
    path: Path, particles: ParticleSet, version: str, provenance: dict[str, Any] | None
) -> Path:
    width = int(particles.extra.get("image_name_width", 6))
    merged = _canonical_to_star(particles.table, version, path, width)
    comment = _provenance_comment(provenance)
    other: dict[str, pd.DataFrame] = dict(particles.extra.get("star_blocks", {}))
    order_hint = particles.extra.get("particle_columns")
    block_name = str(particles.extra.get("particle_block", "particles"))
    if version == "3.0":
        merged = merged.drop(
            columns=[c for c in ("rlnOpticsGroup", "rlnOpticsGroupName", "rlnImageSize",
                                 "rlnImageDimensionality", "rlnImagePixelSize") if c in merged.columns]
        )
        merged = _order_like(merged, order_hint)
        merged.attrs[LOOP_ATTR] = True
        name = "" if block_name == "particles" else block_name
        blocks30: dict[str, pd.DataFrame] = {**other, name: merged}
        order30 = particles.extra.get("block_order")
        if order30 and set(order30) == set(blocks30):
            blocks30 = {k: blocks30[k] for k in order30}
        return write_star(path, blocks30, comment=comment)
    optics, table = _split_optics(merged, particles.optics)
    table = _order_like(table, order_hint)
    optics.attrs[LOOP_ATTR] = True
    table.attrs[LOOP_ATTR] = True
    name = "particles" if block_name == "" else block_name
    blocks: dict[str, pd.DataFrame] = {"optics": optics, name: table, **other}
    order = particles.extra.get("block_order")
    if order and set(order) == set(blocks):
        blocks = {k: blocks[k] for k in order}
    return write_star(path, blocks, comment=comment, version=30001)


# ------------------------------------------------------------------------------------------
# cryoSPARC .cs
# ------------------------------------------------------------------------------------------

#: cryoSPARC scalar field → (canonical column, factor applied on read).
CS_SCALARS: dict[str, tuple[str, float]] = {
    "blob/psize_A": (S.PIXEL_SIZE_A, 1.0),
    "ctf/accel_kv": (S.VOLTAGE_KV, 1.0),
    "ctf/cs_mm": (S.CS_MM, 1.0),
    "ctf/amp_contrast": (S.AMPLITUDE_CONTRAST, 1.0),
    "ctf/df1_A": (S.DEFOCUS_U_A, 1.0),
    "ctf/df2_A": (S.DEFOCUS_V_A, 1.0),
    "ctf/df_angle_rad": (S.DEFOCUS_ANGLE_DEG, 180.0 / np.pi),
    "ctf/phase_shift_rad": (S.PHASE_SHIFT_DEG, 180.0 / np.pi),
    "ctf/bfactor": (S.CTF_BFACTOR_A2, 1.0),
    "ctf/scale": (S.CTF_SCALE, 1.0),
}

#: Fields that must accompany any field of their group for the group to be converted.
CS_REQUIRED: dict[str, tuple[str, ...]] = {
    "blob": ("blob/path", "blob/idx", "blob/psize_A"),
    "ctf": ("ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad"),
    "alignments3D": ("alignments3D/pose", "alignments3D/shift"),
    "alignments2D": ("alignments2D/pose", "alignments2D/shift"),
    "location": ("location/center_x_frac", "location/center_y_frac", "location/micrograph_shape"),
}


def cs_pose_to_euler(pose_rad: np.ndarray) -> np.ndarray:
    """cryoSPARC ``alignments3D/pose`` rotation vectors → RELION Euler angles.

    Parameters
    ----------
    pose_rad : array, shape (n, 3)
        Rotation vectors (axis × angle, radians).

    Returns
    -------
    ndarray, shape (n, 3)
        ``(rot, tilt, psi)`` in degrees, with ``euler_to_matrix(...) = rotvec_to_matrix(pose).T``.
    """
    mats = rotvec_to_matrix(np.asarray(pose_rad, dtype=np.float64))
    return matrix_to_euler(np.swapaxes(mats, -1, -2))


def euler_to_cs_pose(angles_deg: np.ndarray) -> np.ndarray:
    """RELION Euler angles ``(rot, tilt, psi)`` in degrees, shape (n, 3) → cryoSPARC rotation vectors (n, 3)."""
    a = np.asarray(angles_deg, dtype=np.float64)
    mats = euler_to_matrix(a[..., 0], a[..., 1], a[..., 2])
    return matrix_to_rotvec(np.swapaxes(mats, -1, -2))


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", errors="replace") for v in values.tolist()]


def _check_cs_groups(arr: np.ndarray, path: Path, permissive: bool) -> set[str]:
    """Return the groups that can be converted; raise (strict) naming missing fields."""
    names = set(arr.dtype.names or ())
    ok: set[str] = set()
    problems: list[str] = []
    for group, needed in CS_REQUIRED.items():
        present = [n for n in names if n.startswith(group + "/")]
        if not present:
            continue
        missing = [n for n in needed if n not in names]
        if missing:
            problems.append(", ".join(missing))
        else:
            ok.add(group)
    if problems and not permissive:
        raise InputError(path, f"cryoSPARC table lacks field(s) {'; '.join(problems)}")
    if not ({"blob", "location"} & ok) and not permissive:
        raise InputError(
            path, "not a particle table: needs blob/path, blob/idx, blob/psize_A or location/* fields"
        )
    return ok


def cs_to_table(arr: np.ndarray, path: str | os.PathLike[str] | None = None, *,
                permissive: bool = False) -> pd.DataFrame:
    """Convert a cryoSPARC particle structured array to the canonical particle table.

    Parameters
    ----------
    arr : ndarray, shape (n,)
        Structured array as returned by :func:`cryoset.io.cryosparc.read_cs`.
    path
        Named in errors.
    permissive
        Convert the complete groups only instead of raising on incomplete ones.

    Returns
    -------
    DataFrame
        Canonical columns plus every unconverted field under its own name (vector fields
        as ``name[i]``, bytes decoded as UTF-8).
    """
    p = Path(path) if path is not None else Path("<array>")
    ok = _check_cs_groups(arr, p, permissive)
    names = list(arr.dtype.names or ())
    cols: dict[str, Any] = {}
    used: set[str] = set()
    if "blob" in ok:
        cols[S.IMAGE_PATH] = _decode(arr["blob/path"])
        cols[S.IMAGE_INDEX] = arr["blob/idx"].astype(np.int64)
        used |= {"blob/path", "blob/idx"}
        if "blob/shape" in names:
            shape = arr["blob/shape"].reshape(len(arr), -1)
            if shape.shape[1] == 2 and np.array_equal(shape[:, 0], shape[:, 1]):
                cols[S.IMAGE_SIZE_PX] = shape[:, 0].astype(np.int64)
                used.add("blob/shape")
    for fname, (column, factor) in CS_SCALARS.items():
        group = fname.split("/")[0]
        if fname in names and (group in ok or group not in CS_REQUIRED):
            values = arr[fname].astype(np.float64)
            cols[column] = values * factor if factor != 1.0 else values
            used.add(fname)
    if "ctf/exp_group_id" in names:
        cols[S.OPTICS_GROUP] = arr["ctf/exp_group_id"].astype(np.int64) + 1
        used.add("ctf/exp_group_id")
    if PHASE_FLIPPED_FIELD in names:
        cols[S.CTF_PHASE_FLIPPED] = arr[PHASE_FLIPPED_FIELD].astype(np.int64)
        used.add(PHASE_FLIPPED_FIELD)
    if "location" in ok:
        shape = arr["location/micrograph_shape"].reshape(len(arr), -1).astype(np.float64)
        cols[S.X_PX] = arr["location/center_x_frac"].astype(np.float64) * shape[:, 1]
        cols[S.Y_PX] = arr["location/center_y_frac"].astype(np.float64) * shape[:, 0]
        cols[S.SCORE] = np.full(len(arr), np.nan)
        cols[S.DIAMETER_PX] = np.full(len(arr), np.nan)
        used |= {"location/center_x_frac", "location/center_y_frac"}
        if "location/micrograph_path" in names:
            cols[S.MICROGRAPH] = _basenames(_decode(arr["location/micrograph_path"]))
    align = "alignments3D" if "alignments3D" in ok else (
        "alignments2D" if "alignments2D" in ok else None
    )
    if align is not None:
        pose = arr[f"{align}/pose"].astype(np.float64)
        if align == "alignments3D":
            euler = cs_pose_to_euler(pose.reshape(len(arr), 3))
            cols[S.ROT_DEG], cols[S.TILT_DEG], cols[S.PSI_DEG] = euler[:, 0], euler[:, 1], euler[:, 2]
        else:
            cols[S.PSI_DEG] = np.rad2deg(pose.reshape(len(arr)))
        psize_field = f"{align}/psize_A" if f"{align}/psize_A" in names else "blob/psize_A"
        if psize_field not in names:
            raise InputError(p, f"{align}/shift is in pixels but neither {align}/psize_A nor "
                                "blob/psize_A is present")
        psize = arr[psize_field].astype(np.float64)
        shift = arr[f"{align}/shift"].reshape(len(arr), 2).astype(np.float64)
        cols[S.SHIFT_X_A] = shift[:, 0] * psize
        cols[S.SHIFT_Y_A] = shift[:, 1] * psize
        used |= {f"{align}/pose", f"{align}/shift"}
        for sub, column, offset in (("class", S.CLASS_NUMBER, 1), ("split", S.RANDOM_SUBSET, 1)):
            if f"{align}/{sub}" in names:
                cols[column] = arr[f"{align}/{sub}"].astype(np.int64) + offset
                used.add(f"{align}/{sub}")
        for sub, column in (("pose_ess", S.ESS), ("class_ess", S.ECA)):
            if f"{align}/{sub}" in names:
                cols[column] = arr[f"{align}/{sub}"].astype(np.float64)
                used.add(f"{align}/{sub}")
    for name in names:
        if name in used:
            continue
        values = arr[name]
        if values.dtype.kind == "S":
            cols[name] = _decode(values)
        elif values.ndim > 1:
            flat = values.reshape(len(arr), -1)
            for i in range(flat.shape[1]):
                cols[f"{name}[{i}]"] = flat[:, i]
        else:
            cols[name] = values
    table = pd.DataFrame(cols)
    return S.canonical_first(S.validate_particles(table, p))


_VECTOR = re.compile(r"^(.*)\[(\d+)\]$")


def _import_signature(path: str) -> int:
    """A stable 64-bit ``blob/import_sig`` for a stack path (cryoSPARC writes one per import)."""
    return int.from_bytes(hashlib.blake2b(path.encode("utf-8"), digest_size=8).digest(), "little")


def _add_default_fields(fields: dict[str, np.ndarray], n: int, align: str | None) -> None:
    """Add the fields cryoSPARC always writes (:data:`CS_DEFAULT_FIELDS`) to the groups present.

    A group is present when its defining fields are: ``blob/path``, ``ctf/df1_A`` or the
    ``{align}/pose``; fields already in ``fields`` are kept.
    """
    present = {"blob": "blob/path" in fields, "ctf": "ctf/df1_A" in fields,
               "alignments": align is not None and f"{align}/pose" in fields}
    for group, defaults in CS_DEFAULT_FIELDS.items():
        if not present[group]:
            continue
        prefix = f"{align}/" if group == "alignments" else f"{group}/"
        for name, dtype, shape, value in defaults:
            if name == "alpha_min" and align != "alignments2D":
                continue
            if prefix + name not in fields:
                fields[prefix + name] = np.full((n, *shape), value, dtype=dtype)


def _cs_pixel_size(t: pd.DataFrame, path: Path) -> np.ndarray:
    if S.PIXEL_SIZE_A not in t.columns:
        raise InputError(path, "cannot write cryoSPARC pixel shifts without pixel_size_a")
    return t[S.PIXEL_SIZE_A].to_numpy(np.float64)


def table_to_cs(table: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Convert a canonical particle table to a cryoSPARC structured array (inverse of :func:`cs_to_table`).

    Columns with a ``/`` in their name (cryoSPARC fields kept under their source name,
    ``name[i]`` for vector components) are written back as they were; other columns
    without a cryoSPARC field are dropped. ``uid`` is taken from the table when present,
    else drawn from ``np.random.default_rng(0)``.

    Returns
    -------
    ndarray, shape (n,)
    """
    p = Path(path) if path is not None else Path("<array>")
    t = table.reset_index(drop=True)
    n = len(t)
    fields: dict[str, np.ndarray] = {}
    if "uid" in t.columns:
        fields["uid"] = t["uid"].to_numpy(np.uint64)
    else:
        fields["uid"] = np.random.default_rng(0).integers(0, 2**63, size=n, dtype=np.uint64)
    if S.IMAGE_PATH in t.columns:
        if S.IMAGE_INDEX not in t.columns:
            raise InputError(p, "cannot write blob/path without image_index")
        if t[S.IMAGE_INDEX].isna().any():
            raise InputError(p, "images named without a stack index (one image per file, e.g. "
                                "subtomograms) have no cryoSPARC blob/idx")
        paths = t[S.IMAGE_PATH].astype(str).tolist()
        fields["blob/path"] = np.array([s.encode("utf-8") for s in paths], dtype=np.bytes_)
        fields["blob/idx"] = t[S.IMAGE_INDEX].to_numpy(np.uint32)
        if "blob/import_sig" not in t.columns:
            fields["blob/import_sig"] = np.array([_import_signature(s) for s in paths], np.uint64)
        if S.IMAGE_SIZE_PX in t.columns:
            size = t[S.IMAGE_SIZE_PX].to_numpy(np.uint32)
            fields["blob/shape"] = np.stack([size, size], axis=1)
    inverse = {col: (fname, factor) for fname, (col, factor) in CS_SCALARS.items()}
    for column, (fname, factor) in inverse.items():
        if column in t.columns:
            values = t[column].to_numpy(np.float64)
            fields[fname] = (values / factor if factor != 1.0 else values).astype(np.float32)
    if S.OPTICS_GROUP in t.columns:
        fields["ctf/exp_group_id"] = (t[S.OPTICS_GROUP].to_numpy(np.int64) - 1).astype(np.uint32)
    if S.CTF_PHASE_FLIPPED in t.columns:
        fields[PHASE_FLIPPED_FIELD] = S.phase_flipped(t).astype(np.uint8)
    has3d = {S.ROT_DEG, S.TILT_DEG, S.PSI_DEG} <= set(t.columns)
    align = "alignments3D" if has3d else ("alignments2D" if S.PSI_DEG in t.columns else None)
    if align is not None:
        if has3d:
            angles = t[[S.ROT_DEG, S.TILT_DEG, S.PSI_DEG]].to_numpy(np.float64)
            fields[f"{align}/pose"] = euler_to_cs_pose(angles).astype(np.float32)
        else:
            fields[f"{align}/pose"] = np.deg2rad(t[S.PSI_DEG].to_numpy(np.float64)).astype(np.float32)
        psize = (t[f"{align}/psize_A"].to_numpy(np.float64) if f"{align}/psize_A" in t.columns
                 else _cs_pixel_size(t, p))
        sx = t[S.SHIFT_X_A].to_numpy(np.float64) if S.SHIFT_X_A in t.columns else np.zeros(n)
        sy = t[S.SHIFT_Y_A].to_numpy(np.float64) if S.SHIFT_Y_A in t.columns else np.zeros(n)
        fields[f"{align}/shift"] = np.stack([sx / psize, sy / psize], axis=1).astype(np.float32)
        if f"{align}/psize_A" not in t.columns:
            fields[f"{align}/psize_A"] = psize.astype(np.float32)
        if S.CLASS_NUMBER in t.columns:
            fields[f"{align}/class"] = (t[S.CLASS_NUMBER].to_numpy(np.int64) - 1).astype(np.uint32)
        if S.RANDOM_SUBSET in t.columns:
            fields[f"{align}/split"] = (t[S.RANDOM_SUBSET].to_numpy(np.int64) - 1).astype(np.uint32)
        if S.ESS in t.columns:
            fields[f"{align}/pose_ess"] = t[S.ESS].to_numpy(np.float32)
        if S.ECA in t.columns:
            fields[f"{align}/class_ess"] = t[S.ECA].to_numpy(np.float32)
    if S.X_PX in t.columns and {"location/micrograph_shape[0]", "location/micrograph_shape[1]"} <= set(
        t.columns
    ):
        ny = t["location/micrograph_shape[0]"].to_numpy(np.float64)
        nx = t["location/micrograph_shape[1]"].to_numpy(np.float64)
        fields["location/center_x_frac"] = (t[S.X_PX].to_numpy(np.float64) / nx).astype(np.float32)
        fields["location/center_y_frac"] = (t[S.Y_PX].to_numpy(np.float64) / ny).astype(np.float32)
        if S.MICROGRAPH in t.columns and "location/micrograph_path" not in t.columns:
            fields["location/micrograph_path"] = np.array(
                [s.encode("utf-8") for s in t[S.MICROGRAPH].astype(str)], dtype=np.bytes_
            )
    vectors: dict[str, dict[int, np.ndarray]] = {}
    for column in t.columns:
        if not isinstance(column, str) or "/" not in column or column in fields:
            continue
        m = _VECTOR.match(column)
        if m:
            vectors.setdefault(m.group(1), {})[int(m.group(2))] = t[column].to_numpy()
            continue
        series = t[column]
        if series.dtype.kind in "biuf":
            fields[column] = series.to_numpy()
        else:
            fields[column] = np.array([s.encode("utf-8") for s in series.astype(str)], dtype=np.bytes_)
    for name, parts in vectors.items():
        if name in fields:
            continue
        fields[name] = np.stack([parts[i] for i in sorted(parts)], axis=1)
    _add_default_fields(fields, n, align)
    dtype = []
    for name, values in fields.items():
        sub = values.shape[1:]
        dtype.append((name, values.dtype, sub) if sub else (name, values.dtype))
    out = np.zeros(n, dtype=dtype)
    for name, values in fields.items():
        out[name] = values
    return out


# ------------------------------------------------------------------------------------------
# image paths: RELION's project-relative names
# ------------------------------------------------------------------------------------------

# PathStyle and relion_path live in the pandas-free cryoset.io.lean (the extract command's
# fast path writes the same names); they stay importable from here.


def image_path_candidates(name: str, star_path: str | os.PathLike[str] | None) -> list[Path]:
    """Where an image (stack) name of a particle file may point, in the order tried.

    RELION resolves relative names against the current directory (the project directory it
    runs in), so that comes first; then the STAR file's folder (the STAR-relative form, e.g.
    ``cryoset simulate particles`` output, or a file whose stacks sit beside it). Absolute
    names are used as they are.
    """
    p = Path(name)
    if p.is_absolute():
        return [p]
    out = [Path.cwd() / p]
    if star_path is not None:
        beside = Path(star_path).resolve().parent / p
        if beside != out[0]:
            out.append(beside)
    return out


def resolve_image_path(name: str, star_path: str | os.PathLike[str] | None) -> Path:
    """The existing file an image (stack) name points to (:func:`image_path_candidates`).

    Raises
    ------
    InputError
        Naming ``star_path`` and every place looked in.
    """
    candidates = image_path_candidates(name, star_path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = " or ".join(str(c) for c in candidates)
    raise InputError(star_path if star_path is not None else name,
                     f"image stack {name} not found (looked for {looked})")


def fill_image_geometry(particles: ParticleSet, star_path: str | os.PathLike[str] | None) -> list[str]:
    """Add ``image_size_px`` and ``rlnImageDimensionality`` from the stacks' MRC headers.

    RELION 3.1 needs both in ``data_optics``; a RELION 3.0 file has neither. Images named
    ``N@stack`` are 2D (``nx × ny`` slices of the stack); a name without ``@`` is one image per
    file, 3D when the file has ``nz > 1`` (subtomograms), else 2D. Nothing is changed when the
    table has ``image_size_px`` already (the writer then adds dimensionality 2), or unless every
    stack is found, readable and square.

    Parameters
    ----------
    particles
        Read with :func:`read_particles`; its ``table`` is updated in place.
    star_path
        The particle file (stack names are resolved by :func:`resolve_image_path`).

    Returns
    -------
    list of str
        Why nothing was filled (empty when filled or not needed).
    """
    from cryoset.io.mrc import read_header

    t = particles.table
    if S.IMAGE_PATH not in t.columns or S.IMAGE_SIZE_PX in t.columns:
        return []
    sizes: dict[str, tuple[int, int]] = {}
    problems: list[str] = []
    indexed = t[S.IMAGE_INDEX].notna() if S.IMAGE_INDEX in t.columns else pd.Series(False, index=t.index)
    for name, one_per_file in (
        pd.DataFrame({"name": t[S.IMAGE_PATH].astype(str), "single": ~indexed})
        .drop_duplicates("name").itertuples(index=False, name=None)
    ):
        try:
            header = read_header(resolve_image_path(str(name), star_path), permissive=True)
        except InputError as exc:
            problems.append(str(exc))
            continue
        nx, ny, nz = int(header["nx"]), int(header["ny"]), int(header["nz"])
        if nx != ny:
            problems.append(f"{name}: images are {nx} × {ny} pixels, not square")
            continue
        sizes[str(name)] = (nx, 3 if bool(one_per_file) and nz > 1 else 2)
    if problems:
        return problems
    names = t[S.IMAGE_PATH].astype(str)
    t[S.IMAGE_SIZE_PX] = names.map(lambda k: sizes[k][0]).astype(np.int64)
    if "rlnImageDimensionality" not in t.columns:
        t["rlnImageDimensionality"] = names.map(lambda k: sizes[k][1]).astype(np.int64)
    particles.table = S.canonical_first(t)
    return []


# ------------------------------------------------------------------------------------------
# dispatch
# ------------------------------------------------------------------------------------------

#: Canonical column → the source field that provides it, for error messages.
_SOURCE_OF: dict[str, dict[str, str]] = {
    "star": {S.IMAGE_PATH: "rlnImageName", S.IMAGE_INDEX: "rlnImageName",
             S.MICROGRAPH: "rlnMicrographName", **CANONICAL_TO_STAR,
             S.PIXEL_SIZE_A: "rlnImagePixelSize (or rlnDetectorPixelSize and rlnMagnification)",
             S.SHIFT_X_A: "rlnOriginXAngst (or rlnOriginX)",
             S.SHIFT_Y_A: "rlnOriginYAngst (or rlnOriginY)"},
    "cs": {S.IMAGE_PATH: "blob/path", S.IMAGE_INDEX: "blob/idx", S.X_PX: "location/center_x_frac",
           S.Y_PX: "location/center_y_frac", S.MICROGRAPH: "location/micrograph_path",
           S.ROT_DEG: "alignments3D/pose", S.TILT_DEG: "alignments3D/pose",
           S.PSI_DEG: "alignments3D/pose or alignments2D/pose",
           **{col: f for f, (col, _) in CS_SCALARS.items()}},
}


def detect_format(path: str | os.PathLike[str]) -> str:
    """``"star"``, ``"cs"`` or ``"cryovirusdb"`` from the file name suffix.

    Raises
    ------
    InputError
        For any other suffix.
    """
    suffix = Path(path).suffix.lower()
    kinds = {".star": "star", ".cs": "cs", ".csv": "cryovirusdb"}
    if suffix not in kinds:
        raise InputError(path, f"unknown particle file type {suffix!r} (expected .star, .cs or .csv)")
    return kinds[suffix]


def read_particles(
    path: str | os.PathLike[str],
    *,
    permissive: bool = False,
    require: Iterable[str] = (),
    micrograph_shape: tuple[int, int] | None = None,
    flip_y: bool = True,
) -> ParticleSet:
    """Read RELION STAR (3.0/3.1), cryoSPARC ``.cs`` or CryoVirusDB CSV particles.

    Parameters
    ----------
    path
        ``.star``, ``.cs`` or ``.csv`` file.
    permissive
        Passed to the format reader (skip malformed rows / incomplete field groups).
    require
        Canonical columns the caller needs, e.g. ``("image_path", "image_index")`` to
        extract images or ``("x_px", "y_px")`` for coordinates.

    Returns
    -------
    ParticleSet

    Raises
    ------
    InputError
        Naming the file and what is wrong or missing (source field names included).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    kind = detect_format(p)
    if kind == "star":
        result = _read_star_particles(p, permissive)
    elif kind == "cs":
        arr = read_cs(p, permissive=permissive)
        result = ParticleSet(cs_to_table(arr, p, permissive=permissive), None, "cs",
                             {"source_path": str(p)})
    else:
        from cryoset.io.cryovirusdb import read_cryovirusdb

        table = read_cryovirusdb(p, micrograph_shape=micrograph_shape, flip_y=flip_y,
                                 permissive=permissive)
        result = ParticleSet(table, None, "cryovirusdb",
                             {"source_path": str(p), "micrograph_shape": micrograph_shape})
    needed = list(require)
    missing = [c for c in needed if c not in result.table.columns]
    if missing:
        sources = _SOURCE_OF.get(kind, {})
        named = sorted({sources.get(c, c) for c in missing})
        raise InputError(
            p, f"lacks {', '.join(named)} (needed for {', '.join(missing)})"
        )
    return result


def _provenance_comment(provenance: dict[str, Any] | None) -> str | None:
    if provenance is None:
        return None
    return "cryoset provenance: " + json.dumps(provenance, sort_keys=True, default=str)


def write_particles(
    path: str | os.PathLike[str],
    particles: ParticleSet | pd.DataFrame,
    *,
    fmt: str | None = None,
    star_version: Literal["3.1", "3.0"] = "3.1",
    provenance: dict[str, Any] | None = None,
    micrograph_shape: tuple[int, int] | None = None,
    flip_y: bool = True,
) -> Path:
    """Write particles as RELION STAR 3.1 / 3.0, cryoSPARC ``.cs`` or CryoVirusDB CSV (atomic).

    Parameters
    ----------
    path
        Destination.
    particles
        A :class:`ParticleSet` (its ``optics`` and ``extra`` restore the source layout of a
        STAR file) or a bare canonical table.
    fmt
        ``"star"``, ``"cs"`` or ``"cryovirusdb"``; by default from the suffix of ``path``.
    star_version
        ``"3.1"`` (optics block, shifts in Å) or ``"3.0"`` (no optics, shifts in pixels,
        pixel size as ``rlnDetectorPixelSize``/``rlnMagnification``).
    provenance
        A record from :func:`cryoset.provenance.make_provenance`: embedded as a comment in
        STAR files, written as a ``.provenance.json`` sidecar for ``.cs`` and CSV.
    micrograph_shape, flip_y
        CryoVirusDB CSV only: the CSV frame is y-flipped, so ``(ny, nx)`` is needed unless
        ``flip_y=False``; defaults to the shape the set was read with.

    Returns
    -------
    Path
        ``path``.
    """
    from cryoset.io.provenance import write_provenance

    out = Path(path)
    ps = particles if isinstance(particles, ParticleSet) else ParticleSet(particles, None, "star3.1")
    kind = fmt or detect_format(out)
    if kind == "star":
        if star_version not in ("3.0", "3.1"):
            raise ValueError(f"star_version: expected '3.0' or '3.1', got {star_version!r}")
        return _write_star_particles(out, ps, star_version, provenance)
    if kind == "cs":
        write_cs(out, table_to_cs(ps.table, out))
    elif kind == "cryovirusdb":
        from cryoset.io.cryovirusdb import write_cryovirusdb

        shape = micrograph_shape or ps.extra.get("micrograph_shape")
        write_cryovirusdb(out, ps.table, micrograph_shape=shape, flip_y=flip_y)
    else:
        raise ValueError(f"fmt: expected 'star', 'cs' or 'cryovirusdb', got {kind!r}")
    if provenance is not None:
        write_provenance(out, provenance)
    return out
