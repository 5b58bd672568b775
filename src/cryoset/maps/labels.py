"""Voxel labels from an atomic model on a map grid (Cryo2StructData label maps).

Label codes
-----------
* ``backbone``: 0 none, 1 Cα, 2 N, 3 C (the carbonyl carbon).
* ``ca``: 0 none, 1 Cα.
* ``amino``: 0 none or unknown, 1-20 the standard amino acids in :data:`AMINO_ACIDS` order
  (alphabetical by three-letter code: ALA=1, ARG=2, … VAL=20; the paper gives codes 1-20
  but no order). Selenomethionine (MSE) counts as MET; any other residue name is 0.
* ``secondary``: 0 none, 1 coil, 2 helix, 3 strand (the paper's codes) on Cα voxels.

Rounding rule
-------------
Voxel ``data[k, j, i]`` has its centre at ``origin_a + (k, j, i) * voxel_size_a`` (z, y, x).
An atom at ``p`` goes to the voxel whose centre is nearest:
``index = floor((p - origin_a) / voxel_size_a + 0.5)`` per axis (halves round up). The voxel
centre is then within half a voxel of the atom on each axis, which is what makes the round
trip (voxel → coordinate → nearest Cα) exact (:func:`cryoset.maps.validate.ca_round_trip`).
Atoms whose index falls outside the grid are counted in the report, never wrapped; when some
are outside, ``report["warnings"]`` says how many, and when none of the backbone atoms is
inside, :func:`label_maps` raises :class:`cryoset.errors.InputError` (a model that is not in
the map's frame would otherwise give empty label maps without a word).

Collisions
----------
When several atoms of one label map fall in the same voxel, the one whose position is
nearest the voxel centre wins (ties: the first in file order); in the ``backbone`` map a Cα
always beats N and C. Every collision is counted and listed, none is silent.

Formula 1 (``rule="cryo2struct"``)
----------------------------------
Cryo2StructData's published label files use the paper's Formula 1 instead:
``index = ceil(floor(p - origin_a) / voxel_size_a)`` per axis, in float32 (Biopython's
coordinates and the MRC header's origin are float32), on every atom named ``CA``/``N``/``C``
in file order whatever its residue (a calcium ion named CA included, as Biopython iterates
it), the later atom overwriting the earlier in a shared voxel (no Cα priority), the amino
code of a Cα from the 20 names only (MSE and other names → 0, which also overwrites), and a
negative index ``-n ≤ k < 0`` wrapping to ``n + k`` as numpy indexing does in their scripts
(an index ``≥ n`` or ``< -n`` is skipped). With a 1 Å grid the formula is ``floor(p - origin)``:
the voxel whose *corner* is below the atom, so half of the atoms land one voxel lower than
under the nearest-centre rule; ``label_maps(..., rule="cryo2struct")`` reproduces the
published files voxel for voxel (tests/maps/test_labels.py, tests/datasets/test_cryo2struct.py).
Wrapped atoms are counted in ``report["n_wrapped"]`` and named in the warnings.

Which atoms
-----------
Only atoms of amino-acid residues (gemmi's residue table; standard and modified amino acids)
named ``CA``, ``N`` and ``C`` are labelled; nucleic acids, ligands (e.g. a calcium ion named
CA), waters and hydrogens are ignored. Of atoms repeated within a residue (alternate
locations) the first is used. Residues are identified by chain, number and insertion code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gemmi
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cryoset.errors import InputError

__all__ = [
    "AMINO_ACIDS",
    "BACKBONE_CODES",
    "SECONDARY_CODES",
    "LabelMaps",
    "amino_acid_code",
    "backbone_atoms",
    "label_maps",
    "rasterise",
    "voxel_indices",
    "voxel_indices_formula1",
]

#: Amino-acid order of the ``amino`` labels: code = position + 1.
AMINO_ACIDS: tuple[str, ...] = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
)  # fmt: skip
_AMINO_ALIASES: Mapping[str, str] = {"MSE": "MET"}
BACKBONE_CODES: Mapping[str, int] = {"CA": 1, "N": 2, "C": 3}
#: Secondary-structure codes; DSSP letters map H, G, I → helix and E, B → strand.
SECONDARY_CODES: Mapping[str, int] = {"coil": 1, "helix": 2, "strand": 3}
_RESIDUE_KEYS = ["chain", "residue_number", "insertion_code"]


def amino_acid_code(residue_name: str) -> int:
    """Label code of a residue name (0 when not one of the 20 standard amino acids).

    Examples
    --------
    >>> amino_acid_code("ALA"), amino_acid_code("VAL"), amino_acid_code("MSE"), amino_acid_code("HOH")
    (1, 20, 13, 0)
    """
    name = _AMINO_ALIASES.get(residue_name.strip().upper(), residue_name.strip().upper())
    return AMINO_ACIDS.index(name) + 1 if name in AMINO_ACIDS else 0


def _is_amino_acid(name: str) -> bool:
    info = gemmi.find_tabulated_residue(name)
    return bool(info is not None and info.is_amino_acid())


def backbone_atoms(atoms: pd.DataFrame) -> pd.DataFrame:
    """The Cα, N and C atoms of amino-acid residues, first alternate location only.

    Parameters
    ----------
    atoms : DataFrame
        The :mod:`cryoset.io.structure` atoms table.

    Returns
    -------
    DataFrame
        The selected rows (original index kept), in file order.
    """
    codes, uniques = pd.factorize(atoms["residue_name"].astype(str).to_numpy(dtype=object))
    amino = np.array([_is_amino_acid(str(n)) for n in uniques], dtype=bool)[codes]
    sel = atoms[amino & atoms["atom_name"].isin(list(BACKBONE_CODES)).to_numpy()]
    return sel.drop_duplicates([*_RESIDUE_KEYS, "atom_name"], keep="first")


def voxel_indices(
    xyz_a: ArrayLike, origin_a: ArrayLike, voxel_size_a: ArrayLike
) -> NDArray[np.int64]:
    """Nearest-voxel ``(k, j, i)`` indices of points given as ``(x, y, z)`` in Å.

    Parameters
    ----------
    xyz_a : array, shape (n, 3)
        Atom coordinates, PDB ``(x, y, z)`` order.
    origin_a, voxel_size_a
        The grid, ``(z, y, x)`` order.

    Returns
    -------
    int64 ndarray, shape (n, 3)
        ``(k, j, i)`` = ``floor((p - origin) / voxel + 0.5)``; may lie outside the grid.

    Examples
    --------
    >>> voxel_indices([[1.49, 0.5, -0.51]], (0, 0, 0), (1, 1, 1)).tolist()
    [[-1, 1, 1]]
    """
    pts = np.asarray(xyz_a, dtype=np.float64).reshape(-1, 3)[:, ::-1]
    o = np.asarray(origin_a, dtype=np.float64).reshape(3)
    v = np.asarray(voxel_size_a, dtype=np.float64).reshape(3)
    return np.floor((pts - o) / v + 0.5).astype(np.int64)


def voxel_indices_formula1(
    xyz_a: ArrayLike, origin_a: ArrayLike, voxel_size_a: ArrayLike
) -> NDArray[np.int64]:
    """Cryo2StructData's Formula 1 ``(k, j, i)`` indices: ``ceil(floor(p - origin) / voxel)``
    per axis, computed in float32 as their scripts do (see the module notes).

    Examples
    --------
    >>> voxel_indices_formula1([[1.99, 0.5, -0.5]], (0, 0, 0), (1, 1, 1)).tolist()
    [[-1, 0, 1]]
    """
    pts = np.asarray(xyz_a, dtype=np.float32).reshape(-1, 3)[:, ::-1]
    o = np.asarray(origin_a, dtype=np.float32).reshape(3)
    v = np.asarray(voxel_size_a, dtype=np.float32).reshape(3)
    return np.ceil(np.floor(pts - o) / v).astype(np.int64)


def rasterise(
    indices: NDArray[np.int64],
    values: ArrayLike,
    shape: Sequence[int],
    *,
    priority: ArrayLike | None = None,
    distance: ArrayLike | None = None,
    dtype: type[np.integer] = np.uint8,
) -> tuple[NDArray[np.integer], NDArray[np.int64], NDArray[np.int64]]:
    """Write integer ``values`` at voxel ``indices``; resolve collisions deterministically.

    Parameters
    ----------
    indices : int ndarray, shape (n, 3)
        ``(k, j, i)`` voxel indices (points outside ``shape`` are skipped).
    values : int array, shape (n,)
    shape : (z, y, x)
    priority : array, shape (n,), optional
        Higher wins a shared voxel (default all equal).
    distance : array, shape (n,), optional
        Among equal priority, the smaller distance to the voxel centre wins; then file order.

    Returns
    -------
    volume : ndarray, shape ``shape``
    winners : int ndarray
        Row numbers (into the inputs) written to the volume.
    losers : int ndarray
        Row numbers inside the grid that lost a collision.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, 3)
    vals = np.asarray(values)
    n = idx.shape[0]
    shp = np.asarray(shape, dtype=np.int64)
    vol = np.zeros(tuple(int(s) for s in shp), dtype=dtype)
    inside = np.all((idx >= 0) & (idx < shp), axis=1)
    rows = np.flatnonzero(inside)
    if rows.size == 0:
        return vol, rows, rows
    flat = np.ravel_multi_index(tuple(idx[rows].T), vol.shape)
    prio = np.zeros(n) if priority is None else np.asarray(priority, dtype=np.float64)
    dist = np.zeros(n) if distance is None else np.asarray(distance, dtype=np.float64)
    # sort by voxel, then best first: higher priority, smaller distance, earlier row
    order = np.lexsort((rows, dist[rows], -prio[rows], flat))
    flat_sorted = flat[order]
    first = np.r_[True, flat_sorted[1:] != flat_sorted[:-1]]
    winners = rows[order[first]]
    losers = np.sort(rows[order[~first]])
    vol.reshape(-1)[flat_sorted[first]] = vals[winners]
    return vol, np.sort(winners), losers


@dataclass
class LabelMaps:
    """The four label volumes of one map and what happened while making them.

    Attributes
    ----------
    backbone, ca, amino, secondary : uint8 ndarray, shape (z, y, x)
    report : dict
        ``n_backbone_atoms``, ``n_ca``, ``n_outside`` (per atom name), ``n_collisions``
        (per label map), ``secondary_source`` ("file" or "dssp"), label counts and
        ``warnings`` (sentences: atoms outside the grid).
    collisions : DataFrame
        One row per losing atom: ``map``, ``chain``, ``residue_number``, ``insertion_code``,
        ``atom_name``, ``k``, ``j``, ``i``.
    ca_table : DataFrame
        The Cα atoms with their ``k, j, i`` indices and ``inside`` flag (for validation).
    """

    backbone: NDArray[np.uint8]
    ca: NDArray[np.uint8]
    amino: NDArray[np.uint8]
    secondary: NDArray[np.uint8]
    report: dict[str, Any] = field(default_factory=dict)
    collisions: pd.DataFrame = field(default_factory=pd.DataFrame)
    ca_table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def volumes(self) -> dict[str, NDArray[np.uint8]]:
        """The label volumes by name."""
        return {"backbone": self.backbone, "ca": self.ca, "amino": self.amino, "secondary": self.secondary}


def _ss_code(letters: pd.Series) -> NDArray[np.uint8]:
    s = letters.fillna("-").astype(str).to_numpy()
    out = np.full(s.shape, SECONDARY_CODES["coil"], dtype=np.uint8)
    out[np.isin(s, ["H", "G", "I"])] = SECONDARY_CODES["helix"]
    out[np.isin(s, ["E", "B"])] = SECONDARY_CODES["strand"]
    return out


def label_maps(
    atoms: pd.DataFrame,
    shape: Sequence[int],
    voxel_size_a: Sequence[float],
    origin_a: Sequence[float],
    *,
    secondary: pd.DataFrame | None = None,
    secondary_source: str = "dssp",
    source: str | os.PathLike[str] | None = None,
    rule: str = "nearest",
) -> LabelMaps:
    """Label a grid from an atoms table.

    Parameters
    ----------
    atoms : DataFrame
        The :mod:`cryoset.io.structure` atoms table (``chain``, ``residue_number``,
        ``insertion_code``, ``residue_name``, ``atom_name``, ``x_a``, ``y_a``, ``z_a``).
    shape, voxel_size_a, origin_a
        The grid, ``(z, y, x)`` order (see :mod:`cryoset.maps.labels` for the rounding rule).
    secondary : DataFrame, optional
        Per-residue secondary structure: ``chain, residue_number, insertion_code, dssp``
        (a DSSP letter; H/G/I helix, E/B strand, else coil). Residues absent from it are
        coil. When None, the secondary map holds only Cα positions labelled coil.
    secondary_source
        Recorded in the report ("file" for HELIX/SHEET records, "dssp" when computed).
    source
        The model file, named in errors and warnings.
    rule
        ``"nearest"`` (default: nearest voxel centre, Cα priority, nearest atom wins) or
        ``"cryo2struct"`` (the paper's Formula 1, last atom wins; see the module notes).

    Returns
    -------
    LabelMaps
        ``report["warnings"]`` holds one sentence when some backbone atoms lie outside the grid.

    Raises
    ------
    InputError
        The model has backbone atoms but none of them lies inside the grid (the model is not
        in the map's frame).
    """
    if rule not in ("nearest", "cryo2struct"):
        raise ValueError(f"rule: must be 'nearest' or 'cryo2struct', got {rule!r}")
    formula1 = rule == "cryo2struct"
    shp = tuple(int(s) for s in shape)
    vox = np.asarray(voxel_size_a, dtype=np.float64).reshape(3)
    org = np.asarray(origin_a, dtype=np.float64).reshape(3)
    if formula1:  # every atom named CA/N/C, any residue, file order
        bb = atoms[atoms["atom_name"].astype(str).isin(list(BACKBONE_CODES)).to_numpy()].reset_index(drop=True)
    else:
        bb = backbone_atoms(atoms).reset_index(drop=True)
    xyz = bb[["x_a", "y_a", "z_a"]].to_numpy(dtype=np.float64)
    n_wrapped = 0
    if formula1:
        idx = voxel_indices_formula1(xyz, org, vox)
        wrap = (idx < 0) & (idx >= -np.asarray(shp))
        n_wrapped = int(np.count_nonzero(wrap.any(axis=1) & np.all(idx >= -np.asarray(shp), axis=1)
                                         & np.all(idx < np.asarray(shp), axis=1)))
        idx = np.where(wrap, idx + np.asarray(shp), idx)
        dist = np.zeros(len(bb))
    else:
        idx = voxel_indices(xyz, org, vox)
        centre = org + idx * vox
        dist = np.linalg.norm(xyz[:, ::-1] - centre, axis=1)
    names = bb["atom_name"].astype(str).to_numpy()
    codes = np.zeros(names.size, dtype=np.uint8)
    for atom_name, code in BACKBONE_CODES.items():
        codes[names == atom_name] = code
    inside = np.all((idx >= 0) & (idx < np.asarray(shp)), axis=1)
    is_ca = names == "CA"
    n_outside = int(np.count_nonzero(~inside))
    grid = "×".join(map(str, shp))
    if len(bb) and n_outside == len(bb):
        raise InputError(
            source, f"none of the {len(bb)} backbone atoms (Cα, N, C) lies inside the {grid} map grid "
            f"(origin {tuple(round(float(o), 3) for o in org)} Å, voxel {tuple(float(v) for v in vox)} Å): "
            "the model is not in the map's frame"
        )
    warnings: list[str] = []
    if n_outside:
        warnings.append(f"{n_outside} of {len(bb)} backbone atoms (Cα, N, C) lie outside the {grid} "
                        "map grid and are not labelled")

    if n_wrapped:
        warnings.append(f"{n_wrapped} atoms have a negative Formula-1 index and wrap to the far side of the "
                        "grid, as in the published label files")
    # Formula 1: the later atom wins a shared voxel (priority = file order); else Cα first
    order = np.arange(len(bb), dtype=np.float64)
    backbone, _, lost_bb = rasterise(idx, codes, shp, priority=order if formula1 else is_ca.astype(float),
                                     distance=dist)
    ca_rows = np.flatnonzero(is_ca)
    ca_prio = order[ca_rows] if formula1 else None
    ca_vol, _, lost_ca_local = rasterise(idx[ca_rows], np.ones(ca_rows.size, np.uint8), shp,
                                         priority=ca_prio, distance=dist[ca_rows])
    res_codes, res_names = pd.factorize(bb.loc[is_ca, "residue_name"].astype(str).to_numpy(dtype=object))
    code_of = ((lambda n: AMINO_ACIDS.index(n) + 1 if n in AMINO_ACIDS else 0) if formula1 else amino_acid_code)
    aa = np.array([code_of(str(n).strip().upper()) for n in res_names], dtype=np.uint8)[res_codes]
    amino, _, _ = rasterise(idx[ca_rows], aa, shp, priority=ca_prio, distance=dist[ca_rows])
    ca_frame = bb.loc[is_ca, _RESIDUE_KEYS].copy()
    if secondary is not None and len(secondary):
        sec = secondary[[*_RESIDUE_KEYS, "dssp"]].drop_duplicates(_RESIDUE_KEYS)
        merged = ca_frame.merge(sec, on=_RESIDUE_KEYS, how="left")
        ss = _ss_code(merged["dssp"])
    else:
        ss = np.full(ca_rows.size, SECONDARY_CODES["coil"], dtype=np.uint8)
    sec_vol, _, _ = rasterise(idx[ca_rows], ss, shp, priority=ca_prio, distance=dist[ca_rows])

    lost_rows = np.concatenate([lost_bb, ca_rows[lost_ca_local]]).astype(np.int64)
    collisions = bb.iloc[lost_rows][_RESIDUE_KEYS].reset_index(drop=True)
    collisions.insert(0, "map", ["backbone"] * lost_bb.size + ["ca"] * lost_ca_local.size)
    collisions["atom_name"] = names[lost_rows]
    collisions["k"], collisions["j"], collisions["i"] = idx[lost_rows].T
    ca_table = ca_frame.reset_index(drop=True)
    ca_table["x_a"], ca_table["y_a"], ca_table["z_a"] = xyz[ca_rows].T
    ca_table["k"], ca_table["j"], ca_table["i"] = idx[ca_rows].T
    ca_table["inside"] = inside[ca_rows]
    report: dict[str, Any] = {
        "n_backbone_atoms": len(bb),
        "n_ca": int(ca_rows.size),
        "n_outside": {a: int(np.sum(~inside & (names == a))) for a in BACKBONE_CODES},
        "n_collisions": {"backbone": int(lost_bb.size), "ca": int(lost_ca_local.size)},
        "secondary_source": secondary_source if secondary is not None else "none",
        "rule": rule,
        "n_wrapped": n_wrapped,
        "warnings": warnings,
        "label_counts": {
            "ca": int(np.count_nonzero(ca_vol)),
            "n": int(np.count_nonzero(backbone == BACKBONE_CODES["N"])),
            "c": int(np.count_nonzero(backbone == BACKBONE_CODES["C"])),
            "helix": int(np.count_nonzero(sec_vol == SECONDARY_CODES["helix"])),
            "strand": int(np.count_nonzero(sec_vol == SECONDARY_CODES["strand"])),
            "coil": int(np.count_nonzero(sec_vol == SECONDARY_CODES["coil"])),
            "amino_unknown": int(np.count_nonzero(ca_vol & (amino == 0))),
        },
    }
    return LabelMaps(
        backbone.astype(np.uint8), ca_vol.astype(np.uint8), amino.astype(np.uint8),
        sec_vol.astype(np.uint8), report, collisions, ca_table,
    )
