"""The Cryo2StructData layout and what preparing a map needs besides files.

The file names of a prepared map (:data:`NORMALISED_NAME`, :data:`LABEL_FILES`), the label
rules, :class:`PrepareOptions`, reading a model with its secondary structure
(:func:`load_model`) and the seeded, resolution-stratified train/validation split
(:func:`split_dataset`). The files-in, files-out steps (``map prepare``, ``map build``,
sub-grid stores, the metadata table) are in :mod:`cryoset.workflows.maps`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from cryoset.maps.dssp import secondary_structure_from_atoms
from cryoset.maps.resample import ResampleMethod

__all__ = [
    "LABEL_FILES",
    "LABEL_RULES",
    "NORMALISED_NAME",
    "RESOLUTION_BINS_A",
    "LabelRule",
    "LoadedModel",
    "PrepareOptions",
    "load_model",
    "split_dataset",
]

PathLike = str | os.PathLike[str]
NORMALISED_NAME = "emd_normalized_map.mrc"
#: Label map name → file name (the paper's names).
LABEL_FILES: Mapping[str, str] = {
    "backbone": "atom_emd_normalized_map.mrc",
    "ca": "atom_ca_emd_normalized_map.mrc",
    "amino": "amino_emd_normalized_map.mrc",
    "secondary": "sec_struc_emd_normalized_map.mrc",
}
#: Resolution strata (Å) of the train/validation split: [0,2), [2,3), [3,4), [4,∞), unknown.
RESOLUTION_BINS_A: tuple[float, ...] = (0.0, 2.0, 3.0, 4.0, math.inf)
#: The voxel-assignment rules of :func:`cryoset.maps.labels.label_maps`.
LabelRule = Literal["nearest", "cryo2struct"]
LABEL_RULES: tuple[LabelRule, ...] = ("nearest", "cryo2struct")


@dataclass(frozen=True)
class PrepareOptions:
    """Parameters of :func:`cryoset.workflows.maps.prepare_map` (recorded in provenance)."""

    voxel_size_a: float = 1.0
    method: ResampleMethod = "trilinear"
    percentile: float = 95.0
    clip: tuple[float, float] | None = (0.0, 1.0)
    box: int = 32
    overlap: int = 6
    subgrids: bool = True
    #: Voxel assignment of the label maps: ``"nearest"`` (nearest voxel centre) or
    #: ``"cryo2struct"`` (the paper's Formula 1; :func:`cryoset.maps.labels.label_maps`).
    label_rule: LabelRule = "nearest"


@dataclass
class LoadedModel:
    """Atoms table (:mod:`cryoset.io.structure` columns) and per-residue secondary structure.

    ``secondary`` has ``chain, residue_number, insertion_code, dssp``; ``source`` is
    ``"file"`` (HELIX/SHEET records) or ``"dssp"`` (computed).
    """

    atoms: pd.DataFrame
    secondary: pd.DataFrame
    source: str


def _secondary_from_records(helices: pd.DataFrame, sheets: pd.DataFrame, atoms: pd.DataFrame) -> pd.DataFrame | None:
    """Per-residue letters (H / E / -) from HELIX and SHEET tables; None when both are empty.

    A record covers every residue between its start and end residue in file order (so
    insertion codes are handled); records naming residues absent from the model are skipped.
    """
    if len(helices) == 0 and len(sheets) == 0:
        return None
    keys = atoms[["chain", "residue_number", "insertion_code"]].drop_duplicates().reset_index(drop=True)
    table = keys.copy()
    letters = np.full(len(table), "-", dtype="<U1")
    order = {
        (str(c), int(n), str(i)): k
        for k, (c, n, i) in enumerate(zip(table["chain"], table["residue_number"], table["insertion_code"], strict=True))
    }

    def mark(records: pd.DataFrame, letter: str) -> None:
        for rec in records.itertuples(index=False):
            chain = str(rec.chain)
            start: Any = rec.start_residue_number
            end: Any = rec.end_residue_number
            k0 = order.get((chain, int(start), str(rec.start_insertion_code or "").strip()))
            k1 = order.get((chain, int(end), str(rec.end_insertion_code or "").strip()))
            if k0 is not None and k1 is not None:
                lo, hi = sorted((k0, k1))
                letters[lo : hi + 1] = letter

    mark(sheets, "E")
    mark(helices, "H")
    table["dssp"] = letters
    return table


def load_model(path: PathLike) -> LoadedModel:
    """Read a model with :func:`cryoset.io.structure.read_structure`; add secondary structure.

    Secondary structure comes from the file's HELIX/SHEET records when it has any
    (``source="file"``), otherwise from :func:`cryoset.maps.dssp.secondary_structure_from_atoms`
    (``source="dssp"``).
    """
    from cryoset.io.structure import read_structure

    model = read_structure(path)
    atoms = model.atoms.copy()
    atoms["insertion_code"] = atoms["insertion_code"].fillna("").astype(str).str.strip()
    secondary = _secondary_from_records(model.helices, model.sheets, atoms)
    if secondary is not None:
        return LoadedModel(atoms, secondary, "file")
    return LoadedModel(atoms, secondary_structure_from_atoms(atoms), "dssp")


def split_dataset(
    table: pd.DataFrame,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    test_ids: Iterable[str] = (),
    bins_a: Sequence[float] = RESOLUTION_BINS_A,
) -> pd.Series:
    """Assign ``train`` / ``validation`` / ``test`` per row, stratified by resolution.

    Rows whose ``emdb_id`` is in ``test_ids`` are ``test``. The others are grouped by
    resolution bin (``bins_a``; unknown resolution is its own group) and, within each group,
    ``round(validation_fraction * n)`` rows chosen with ``np.random.default_rng(seed)``
    become ``validation``.

    Returns
    -------
    Series of str, aligned with ``table``.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    rng = np.random.default_rng(seed)
    test = set(test_ids)
    out = pd.Series("train", index=table.index, dtype=object)
    ids = table["emdb_id"].astype(str)
    out[ids.isin(test)] = "test"
    res = pd.to_numeric(table["resolution_a"], errors="coerce").to_numpy(dtype=float)
    stratum = np.where(np.isnan(res), -1, np.digitize(np.nan_to_num(res, nan=0.0), bins_a[1:-1]))
    for s in np.unique(stratum):
        rows = np.flatnonzero((stratum == s) & ~ids.isin(test).to_numpy())
        n_val = round(validation_fraction * rows.size)
        if n_val:
            chosen = rng.choice(rows, size=n_val, replace=False)
            out.iloc[np.sort(chosen)] = "validation"
    return out
