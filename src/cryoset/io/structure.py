"""Atomic models (PDB, mmCIF, optionally gzipped) read through gemmi into tables.

:func:`read_structure` returns an :class:`AtomicModel`: one row per atom of the **first
model** (later models of NMR/ensemble files are ignored; ``n_models`` says how many there
were), with chain, residue, atom, coordinates in Å and what the residue is (polymer or
not, entity type, polymer type). Alternate locations: each atom keeps its
highest-occupancy alternative (the first one on ties), unless ``all_altlocs=True``.

Polymer residues are those gemmi assigns to a polymer entity, plus standard amino acids
and nucleotides written as ``ATOM`` records after a stray ``TER`` (PDB 1J6Z has one after
residue 72, which would otherwise turn 299 residues into ligands). Sequences use the
one-letter code of the parent residue (MSE → M); unknown residues are ``X``.

:func:`write_ca_model` writes a Cα-only model (one CA atom per residue) as PDB or mmCIF.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gemmi
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_path
from cryoset.io.provenance import write_provenance

#: Columns of `AtomicModel.atoms`, in order.
ATOM_COLUMNS: tuple[str, ...] = (
    "model",
    "chain",
    "residue_number",
    "insertion_code",
    "residue_name",
    "atom_name",
    "element",
    "x_a",
    "y_a",
    "z_a",
    "b_factor",
    "occupancy",
    "altloc",
    "is_polymer",
    "entity_type",
    "polymer_type",
)

#: Backbone atom names of an amino-acid residue, in order.
BACKBONE_ATOMS: tuple[str, ...] = ("N", "CA", "C", "O")

HELIX_COLUMNS: tuple[str, ...] = (
    "chain",
    "start_residue_number",
    "start_insertion_code",
    "end_residue_number",
    "end_insertion_code",
    "helix_class",
    "helix_class_name",
    "length",
)
SHEET_COLUMNS: tuple[str, ...] = (
    "sheet_id",
    "strand",
    "chain",
    "start_residue_number",
    "start_insertion_code",
    "end_residue_number",
    "end_insertion_code",
    "sense",
)

_ENTITY_NAMES = {
    gemmi.EntityType.Polymer: "polymer",
    gemmi.EntityType.NonPolymer: "non-polymer",
    gemmi.EntityType.Branched: "branched",
    gemmi.EntityType.Water: "water",
    gemmi.EntityType.Unknown: "unknown",
}
_PROTEIN_KINDS = {gemmi.ResidueKind.AA, gemmi.ResidueKind.AAD, gemmi.ResidueKind.PAA,
                  gemmi.ResidueKind.MAA}


def _polymer_type_name(ptype: Any) -> str:
    if ptype in (gemmi.PolymerType.PeptideL, gemmi.PolymerType.PeptideD):
        return "protein"
    if ptype == gemmi.PolymerType.Dna:
        return "dna"
    if ptype == gemmi.PolymerType.Rna:
        return "rna"
    if ptype == gemmi.PolymerType.DnaRnaHybrid:
        return "dna/rna"
    return ""


def _kind_polymer_type(kind: Any) -> str:
    if kind in _PROTEIN_KINDS:
        return "protein"
    if kind == gemmi.ResidueKind.DNA:
        return "dna"
    if kind == gemmi.ResidueKind.RNA:
        return "rna"
    return ""


def _one_letter(name: str) -> str:
    info = gemmi.find_tabulated_residue(name)
    if info is None:
        return "X"
    code = str(info.one_letter_code).strip()
    return code.upper() if len(code) == 1 and code.isalpha() else "X"


def _tabulated_kind(name: str) -> Any:
    info = gemmi.find_tabulated_residue(name)
    return None if info is None else info.kind


@dataclass
class AtomicModel:
    """An atomic model as tables.

    Attributes
    ----------
    atoms : DataFrame
        One row per atom of the first model, columns `ATOM_COLUMNS`: ``model`` (model
        number), ``chain`` (author chain name), ``residue_number`` (int, author
        numbering), ``insertion_code`` (str, ``""`` if none), ``residue_name``,
        ``atom_name``, ``element`` (upper case), ``x_a``, ``y_a``, ``z_a`` (Å),
        ``b_factor`` (Å²), ``occupancy``, ``altloc`` (``""`` if none), ``is_polymer``
        (bool), ``entity_type`` (``"polymer"``, ``"non-polymer"``, ``"water"``,
        ``"branched"``, ``"unknown"``), ``polymer_type`` (``"protein"``, ``"dna"``,
        ``"rna"``, ``"dna/rna"`` or ``""``).
    helices, sheets : DataFrame
        HELIX / SHEET records (mmCIF ``struct_conf`` / ``struct_sheet_range``), columns
        `HELIX_COLUMNS` / `SHEET_COLUMNS`; empty when the file has none.
    entity_sequences_by_chain : dict
        Chain → one-letter SEQRES / ``entity_poly_seq`` sequence of its polymer entity.
    n_models : int
        Number of models in the file (only the first is in ``atoms``).
    path : Path or None
        The file read.
    structure : gemmi.Structure
        The parsed structure (all models), for anything not tabulated here.
    """

    atoms: pd.DataFrame
    helices: pd.DataFrame
    sheets: pd.DataFrame
    entity_sequences_by_chain: dict[str, str] = field(default_factory=dict)
    n_models: int = 1
    path: Path | None = None
    structure: Any = None

    def chains(self) -> list[str]:
        """Chain names in file order."""
        return list(dict.fromkeys(self.atoms["chain"].tolist()))

    def _residues(self, polymer_only: bool = True) -> pd.DataFrame:
        atoms = self.atoms.loc[self.atoms["is_polymer"]] if polymer_only else self.atoms
        keys = ["chain", "residue_number", "insertion_code", "residue_name"]
        return atoms.drop_duplicates(keys)[keys]

    def modelled_sequences(self) -> dict[str, str]:
        """Chain → one-letter sequence of the polymer residues present, in file order.

        Residues with no atoms in the file (disordered, unmodelled) are absent, so this
        can be shorter than `entity_sequences`. Chains with no polymer residue are left out.
        """
        out: dict[str, list[str]] = {}
        for chain, name in self._residues()[["chain", "residue_name"]].itertuples(index=False):
            out.setdefault(str(chain), []).append(_one_letter(str(name)))
        return {k: "".join(v) for k, v in out.items()}

    def sequences(self) -> dict[str, str]:
        """Alias of :meth:`modelled_sequences`."""
        return self.modelled_sequences()

    def entity_sequences(self) -> dict[str, str]:
        """Chain → one-letter SEQRES / ``entity_poly_seq`` sequence; ``{}`` when absent."""
        return dict(self.entity_sequences_by_chain)

    def ca_positions(self, chain: str | None = None) -> NDArray[np.float64]:
        """Cα coordinates of the protein residues, in file order.

        Parameters
        ----------
        chain
            Only this chain (all chains when None).

        Returns
        -------
        ndarray, shape (n, 3)
            ``(x, y, z)`` in Å, one row per protein polymer residue that has a CA atom.
        """
        a = self.atoms
        mask = a["is_polymer"] & (a["polymer_type"] == "protein") & (a["atom_name"] == "CA")
        if chain is not None:
            mask &= a["chain"] == chain
        return a.loc[mask, ["x_a", "y_a", "z_a"]].to_numpy(dtype=np.float64)

    def backbone(self) -> pd.DataFrame:
        """The N, CA, C, O atoms of protein polymer residues (rows of ``atoms``, file order)."""
        a = self.atoms
        mask = a["is_polymer"] & (a["polymer_type"] == "protein") & a["atom_name"].isin(BACKBONE_ATOMS)
        return a.loc[mask].reset_index(drop=True)


def _one_line(text: str) -> str:
    """gemmi messages span lines (the offending line is quoted below the reason): join them."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _read_gemmi(path: Path) -> Any:
    name = path.name.lower().removesuffix(".gz")
    known = name.endswith((".pdb", ".ent", ".cif", ".mmcif", ".pdbx"))
    fmt = gemmi.CoorFormat.Unknown if known else gemmi.CoorFormat.Detect
    try:
        return gemmi.read_structure(str(path), format=fmt)
    except (RuntimeError, ValueError, OSError) as exc:
        text = _one_line(str(exc).replace(str(path), "")).strip(": ")
        raise InputError(path, f"cannot be read as a PDB/mmCIF model ({text})") from None


def _check_pdb_coordinates(path: Path) -> None:
    """Refuse ATOM/HETATM records whose x, y, z columns (31-54) are not numbers.

    gemmi reads such a field as 0 (``abc.def`` → 0.000) without complaint, which would put
    an atom at the origin; mmCIF fields that are not numbers come back as NaN and are caught
    by the finite-coordinate check instead.
    """
    import gzip

    with open(path, "rb") as fh:
        compressed = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="latin-1") as text:  # type: ignore[operator]
        for number, line in enumerate(text, start=1):
            if not line.startswith(("ATOM  ", "HETATM")):
                continue
            for axis, field in zip("xyz", (line[30:38], line[38:46], line[46:54]), strict=True):
                try:
                    float(field)
                except ValueError:
                    raise InputError(
                        path, f"line {number}: the {axis} coordinate {field.strip()!r} (columns "
                        f"31-54) is not a number"
                    ) from None


def _choose_altlocs(residue: Any, all_altlocs: bool) -> list[Any]:
    atoms = list(residue)
    if all_altlocs or len({a.name for a in atoms}) == len(atoms):
        return atoms
    best: dict[str, Any] = {}
    order: list[str] = []
    for atom in atoms:
        key = atom.name
        if key not in best:
            best[key] = atom
            order.append(key)
        elif atom.occ > best[key].occ:
            best[key] = atom
    return [best[k] for k in order]


def _entity_sequences(st: Any, model: Any) -> dict[str, str]:
    by_subchain: dict[str, Any] = {}
    for ent in st.entities:
        if ent.entity_type == gemmi.EntityType.Polymer and len(ent.full_sequence):
            for sub in ent.subchains:
                by_subchain[sub] = ent
    out: dict[str, str] = {}
    for ch in model:
        for res in ch:
            ent = by_subchain.get(res.subchain)
            if ent is not None:
                names = [gemmi.Entity.first_mon(m) for m in ent.full_sequence]
                out[ch.name] = "".join(_one_letter(n) for n in names)
                break
    return out


def _helices(st: Any) -> pd.DataFrame:
    rows = []
    for h in st.helices:
        cls = h.pdb_helix_class
        rows.append(
            (
                h.start.chain_name,
                int(h.start.res_id.seqid.num),
                h.start.res_id.seqid.icode.strip(),
                int(h.end.res_id.seqid.num),
                h.end.res_id.seqid.icode.strip(),
                int(cls.value) if hasattr(cls, "value") else int(cls),
                str(getattr(cls, "name", cls)),
                int(h.length),
            )
        )
    return pd.DataFrame(rows, columns=list(HELIX_COLUMNS)).astype(
        {"start_residue_number": np.int64, "end_residue_number": np.int64, "helix_class": np.int64,
         "length": np.int64}
    )


def _sheets(st: Any) -> pd.DataFrame:
    rows = []
    for sheet in st.sheets:
        for k, s in enumerate(sheet.strands, start=1):
            rows.append(
                (
                    sheet.name,
                    s.name or str(k),
                    s.start.chain_name,
                    int(s.start.res_id.seqid.num),
                    s.start.res_id.seqid.icode.strip(),
                    int(s.end.res_id.seqid.num),
                    s.end.res_id.seqid.icode.strip(),
                    int(s.sense),
                )
            )
    return pd.DataFrame(rows, columns=list(SHEET_COLUMNS)).astype(
        {"start_residue_number": np.int64, "end_residue_number": np.int64, "sense": np.int64}
    )


def read_structure(
    path: str | os.PathLike[str], *, permissive: bool = False, all_altlocs: bool = False
) -> AtomicModel:
    """Read a PDB or mmCIF file (optionally ``.gz``) into an :class:`AtomicModel`.

    Parameters
    ----------
    path
        ``.pdb``, ``.ent``, ``.cif``, ``.mmcif`` (optionally gzipped); the format is
        detected from the content when the suffix does not tell.
    permissive
        When True, a file with no atoms gives an empty model instead of raising.
    all_altlocs
        Keep every alternate location instead of the highest-occupancy one per atom.

    Returns
    -------
    AtomicModel
        Tables of the first model.

    Raises
    ------
    InputError
        When the file is missing, unreadable or corrupt, or (strict) holds no atoms.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ca.pdb"
    >>> _ = write_ca_model(p, {"A": ("GA", [[0, 0, 0], [3.8, 0, 0]])})
    >>> m = read_structure(p)
    >>> m.modelled_sequences(), m.ca_positions().shape
    ({'A': 'GA'}, (2, 3))
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a directory, not a PDB/mmCIF file")
    st = _read_gemmi(p)
    if st.input_format == gemmi.CoorFormat.Pdb:
        _check_pdb_coordinates(p)
    st.setup_entities()
    n_models = len(st)
    rows: list[tuple[Any, ...]] = []
    if n_models:
        model = st[0]
        model_number = int(model.num)
        for ch in model:
            chain_ptype = _polymer_type_name(ch.get_polymer().check_polymer_type())
            for res in ch:
                kind = _tabulated_kind(res.name)
                if res.is_water():
                    entity, is_poly = "water", False
                else:
                    entity = _ENTITY_NAMES.get(res.entity_type, "unknown")
                    is_poly = entity == "polymer"
                    if not is_poly and res.het_flag == "A" and _kind_polymer_type(kind):
                        entity, is_poly = "polymer", True
                ptype = (_kind_polymer_type(kind) or chain_ptype) if is_poly else ""
                number = int(res.seqid.num)
                icode = res.seqid.icode.strip()
                for atom in _choose_altlocs(res, all_altlocs):
                    pos = atom.pos
                    altloc = atom.altloc if atom.altloc not in ("\x00", " ") else ""
                    rows.append(
                        (
                            model_number,
                            ch.name,
                            number,
                            icode,
                            res.name,
                            atom.name,
                            atom.element.name.upper(),
                            pos.x,
                            pos.y,
                            pos.z,
                            atom.b_iso,
                            atom.occ,
                            altloc,
                            is_poly,
                            entity,
                            ptype,
                        )
                    )
    if not rows and not permissive:
        raise InputError(p, "holds no atoms (empty or not a PDB/mmCIF file)")
    atoms = pd.DataFrame(rows, columns=list(ATOM_COLUMNS))
    atoms = atoms.astype(
        {"model": np.int64, "residue_number": np.int64, "x_a": np.float64, "y_a": np.float64,
         "z_a": np.float64, "b_factor": np.float64, "occupancy": np.float64, "is_polymer": bool}
    )
    for col in ("chain", "insertion_code", "residue_name", "atom_name", "element", "altloc",
                "entity_type", "polymer_type"):
        atoms[col] = atoms[col].astype(str)
    finite = np.isfinite(atoms[["x_a", "y_a", "z_a"]].to_numpy()).all(axis=1)
    if not finite.all():
        first = atoms.loc[~finite].iloc[0]
        raise InputError(
            p, f"{int((~finite).sum())} atom(s) have NaN, infinite or non-numeric coordinates "
            f"(first: {first['atom_name']} of {first['residue_name']} {first['chain']}"
            f"{first['residue_number']})"
        )
    return AtomicModel(
        atoms=atoms,
        helices=_helices(st),
        sheets=_sheets(st),
        entity_sequences_by_chain=_entity_sequences(st, st[0]) if n_models else {},
        n_models=n_models,
        path=p,
        structure=st,
    )


def _ca_structure(chains: Mapping[str, tuple[str, ArrayLike]], fmt: str) -> Any:
    st = gemmi.Structure()
    st.name = "cryoset_ca_model"
    model = gemmi.Model(1)
    for chain_id, (sequence, xyz) in chains.items():
        cid = str(chain_id)
        if not cid or any(c.isspace() for c in cid) or len(cid) > (1 if fmt == "pdb" else 4):
            raise ValueError(f"chain id {chain_id!r}: 1 character for PDB, 1–4 for mmCIF, no spaces")
        seq = str(sequence).upper()
        pos = np.asarray(xyz, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) != len(seq):
            raise ValueError(
                f"chain {cid}: xyz must have shape ({len(seq)}, 3) for a {len(seq)}-residue "
                f"sequence, got {pos.shape}"
            )
        if not np.all(np.isfinite(pos)):
            raise ValueError(f"chain {cid}: non-finite coordinates")
        if fmt == "pdb" and (
            len(seq) > 9999 or pos.min(initial=0.0) <= -999.9995 or pos.max(initial=0.0) >= 9999.9995
        ):
            raise ValueError(f"chain {cid}: too large for the PDB format (write mmCIF, .cif)")
        # both formats store 0.001 Å: the same decimal text a PDB file would hold
        pos = np.array([[float(f"{v:.3f}") for v in row] for row in pos], dtype=np.float64).reshape(-1, 3)
        ch = gemmi.Chain(cid)
        for i, (letter, p) in enumerate(zip(seq, pos, strict=True), start=1):
            if not letter.isalpha():
                raise ValueError(f"chain {cid}: {letter!r} is not a one-letter residue code")
            res = gemmi.Residue()
            res.name = gemmi.expand_one_letter(letter, gemmi.ResidueKind.AA) or "UNK"
            res.seqid = gemmi.SeqId(i, " ")
            res.label_seq = i
            res.entity_type = gemmi.EntityType.Polymer
            res.het_flag = "A"
            atom = gemmi.Atom()
            atom.name = "CA"
            atom.element = gemmi.Element("C")
            atom.pos = gemmi.Position(float(p[0]), float(p[1]), float(p[2]))
            atom.occ = 1.0
            atom.b_iso = 0.0
            res.add_atom(atom)
            ch.add_residue(res)
        model.add_chain(ch)
    st.add_model(model)
    st.setup_entities()
    for ent in st.entities:  # SEQRES / entity_poly_seq = the residues written
        if ent.entity_type == gemmi.EntityType.Polymer:
            first = st[0].get_subchain(ent.subchains[0])
            ent.full_sequence = [r.name for r in first]
            ent.polymer_type = gemmi.PolymerType.PeptideL
    return st


def write_ca_model(
    path: str | os.PathLike[str],
    chains: Mapping[str, tuple[str, ArrayLike]],
    fmt: str = "pdb",
    *,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a Cα-only protein model as PDB or mmCIF, atomically.

    Parameters
    ----------
    path
        Destination file.
    chains
        Chain id → ``(sequence, xyz)``: a one-letter sequence of length n and the Cα
        positions, array_like of shape (n, 3) in Å. Residues are numbered 1…n; every
        atom is ``CA`` (element C, occupancy 1, B 0). Unknown letters become ``UNK``.
    fmt
        ``"pdb"`` (chain ids of one character, -999.999 … 9999.999 Å) or ``"cif"``.
        Both store coordinates rounded to 0.001 Å (PDB precision), so a model reads
        back identically from either.
    provenance
        When given, written as the ``<path>.provenance.json`` sidecar.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        When a chain's sequence and coordinates disagree in length, a coordinate is not
        finite, a chain id is not valid for the format, or ``fmt`` is unknown.
    """
    if fmt not in ("pdb", "cif"):
        raise ValueError(f"fmt must be 'pdb' or 'cif', got {fmt!r}")
    if not chains:
        raise ValueError("chains: at least one chain is needed")
    st = _ca_structure(chains, fmt)
    out = Path(path)
    with atomic_path(out) as tmp:
        if fmt == "pdb":
            st.write_pdb(str(tmp))
        else:
            st.make_mmcif_document().write_file(str(tmp))
    if provenance is not None:
        write_provenance(out, provenance)
    return out


def residue_table(model: AtomicModel, *, polymer_only: bool = True) -> pd.DataFrame:
    """One row per residue: chain, residue_number, insertion_code, residue_name (file order)."""
    return model._residues(polymer_only).reset_index(drop=True)


__all__: Sequence[str] = (
    "ATOM_COLUMNS",
    "BACKBONE_ATOMS",
    "AtomicModel",
    "read_structure",
    "residue_table",
    "write_ca_model",
)
