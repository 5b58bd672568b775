"""Cα models: the traced chains, and reading/writing them as PDB or mmCIF.

Format work is done by :mod:`cryoset.io.structure`; this module converts between its
tables and the tracer's chains. A written model has one ``CA`` atom per residue, chain ids
as given, three-letter residue names and residue numbers 1…T.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from cryoset.errors import InputError
from cryoset.trace.residues import one_letter_sequence

#: Formats accepted by :func:`write_traced_model`.
MODEL_FORMATS: tuple[str, ...] = ("pdb", "cif")


@dataclass(frozen=True)
class CaChain:
    """One traced chain.

    Attributes
    ----------
    chain_id
        Chain identifier.
    residue_names
        Three-letter names, length T (residue t is numbered t + 1).
    positions_a
        Shape (T, 3), ``(x, y, z)`` Å.
    """

    chain_id: str
    residue_names: tuple[str, ...]
    positions_a: npt.NDArray[np.float64]


def format_from_suffix(path: str | os.PathLike[str]) -> str:
    """``"pdb"`` or ``"cif"`` from a file name (``.pdb``/``.ent``, ``.cif``/``.mmcif``)."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith((".pdb", ".ent")):
        return "pdb"
    if name.endswith((".cif", ".mmcif")):
        return "cif"
    raise InputError(path, "cannot tell the model format from the suffix (use .pdb or .cif)")


def write_traced_model(
    path: str | os.PathLike[str],
    chains: list[CaChain],
    fmt: str | None = None,
    *,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write traced chains as a Cα-only PDB or mmCIF model (atomically).

    Uses :func:`cryoset.io.structure.write_ca_model`: residues are numbered 1…T per
    chain, every atom is ``CA``; residue names come from the chain sequence.

    Parameters
    ----------
    path
        Output file.
    chains
        The chains (ids must be unique; one character for PDB).
    fmt
        ``"pdb"`` or ``"cif"``; default from the suffix of ``path``.
    provenance
        Written as the ``<path>.provenance.json`` sidecar when given.
    """
    from cryoset.io.structure import write_ca_model

    kind = format_from_suffix(path) if fmt is None else fmt
    if kind not in MODEL_FORMATS:
        raise InputError(path, f"unknown model format {kind!r}; use one of {MODEL_FORMATS}")
    mapping: dict[str, tuple[str, npt.NDArray[np.float64]]] = {}
    for ch in chains:
        if ch.chain_id in mapping:
            raise InputError(path, f"chain id {ch.chain_id!r} is used twice")
        letters = one_letter_sequence(ch.residue_names)
        mapping[ch.chain_id] = (letters, np.asarray(ch.positions_a, dtype=np.float64))
    try:
        return write_ca_model(path, mapping, kind, provenance=provenance)
    except ValueError as exc:
        raise InputError(path, str(exc)) from exc


def read_ca_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The protein Cα atoms of the first model of a PDB/mmCIF file.

    Read with :func:`cryoset.io.structure.read_structure`.

    Returns
    -------
    DataFrame
        Columns ``chain``, ``residue_number``, ``insertion_code``, ``residue_name``,
        ``x_a``, ``y_a``, ``z_a``; one row per protein residue with a Cα, file order.
    """
    from cryoset.io.structure import read_structure

    atoms = read_structure(path).atoms
    mask = atoms["is_polymer"] & (atoms["polymer_type"] == "protein") & (atoms["atom_name"] == "CA")
    cols = ["chain", "residue_number", "insertion_code", "residue_name", "x_a", "y_a", "z_a"]
    return atoms.loc[mask, cols].reset_index(drop=True)


def model_sequences(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(chain id, one-letter sequence)`` of every protein chain of a model, file order."""
    table = read_ca_table(path)
    return [(str(cid), one_letter_sequence(rows["residue_name"]))
            for cid, rows in table.groupby("chain", sort=False)]
