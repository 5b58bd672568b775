"""Atomic models: every real file loads with consistent invariants; Cα writer round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.io.structure import ATOM_COLUMNS, read_structure, residue_table, write_ca_model
from cryoset.provenance import make_provenance, read_provenance
from cryoset.testing import require_shared_data, shared_data_root

_ROOT = shared_data_root()
_FILES = sorted(
    [*(_ROOT / "structures").glob("*.pdb"), *(_ROOT / "structures").glob("*.cif.gz"),
     *(_ROOT / "structures" / "dssp").glob("*.pdb.gz"), _ROOT / "maps" / "emd_5168" / "3MFP.pdb"]
) if (_ROOT / "structures").exists() else []
_IDS = [p.name for p in _FILES]


def _structures() -> Path:
    return require_shared_data("structures")


@pytest.mark.shared_data
def test_all_real_files_are_present() -> None:
    _structures()
    # 32 DSSP reference chains + 1mr1D_failing, 7 structures, 3MFP
    assert len([p for p in _FILES if p.parent.name == "dssp"]) == 33
    assert len(_FILES) == 33 + 7 + 1


@pytest.mark.shared_data
@pytest.mark.parametrize("path", _FILES, ids=_IDS)
def test_real_file_invariants(path: Path) -> None:
    _structures()
    m = read_structure(path)
    a = m.atoms
    assert list(a.columns) == list(ATOM_COLUMNS) and len(a) > 0 and m.n_models == 1
    assert np.isfinite(a[["x_a", "y_a", "z_a"]].to_numpy()).all()
    assert a["residue_number"].dtype == np.int64 and a["is_polymer"].dtype == bool
    assert (a["element"] != "").all()  # blank element columns are inferred from the name
    # one atom per (residue, name): alternate locations are resolved
    keys = ["chain", "residue_number", "insertion_code", "residue_name", "atom_name"]
    assert not a.duplicated(keys).any()
    protein = a.loc[a["is_polymer"] & (a["polymer_type"] == "protein")]
    residues_with_ca = protein.loc[protein["atom_name"] == "CA"].drop_duplicates(keys[:4])
    assert len(m.ca_positions()) == len(residues_with_ca) > 0
    assert sum(len(m.ca_positions(c)) for c in m.chains()) == len(m.ca_positions())
    seqs = m.modelled_sequences()
    assert sum(len(s) for s in seqs.values()) == len(residue_table(m))
    bb = m.backbone()
    assert set(bb["atom_name"]) <= {"N", "CA", "C", "O"} and len(bb) <= 4 * len(residue_table(m))
    dssp = path.with_name(path.name.replace(".pdb.gz", ".pdb.dssp"))
    if path.parent.name == "dssp" and dssp.exists():
        # the reference DSSP string has one letter per residue: an independent count
        (only,) = seqs.values()
        assert len(only) == len(dssp.read_text().split()[0])


@pytest.mark.shared_data
def test_3mfp_matches_its_readme() -> None:
    m = read_structure(require_shared_data("maps", "emd_5168", "3MFP.pdb"))
    assert m.chains() == ["A"]
    numbers = residue_table(m)["residue_number"].to_numpy()
    # README: "chain A, 370 residues". The file holds residues 4–375 with 133, 267 and 351
    # missing: 369 residues, each with a Cα; no SEQRES, no HELIX/SHEET (MODELLER header).
    assert (numbers[0], numbers[-1]) == (4, 375)
    assert sorted(set(range(4, 376)) - set(numbers.tolist())) == [133, 267, 351]
    assert len(m.modelled_sequences()["A"]) == 369 == len(m.ca_positions("A"))
    assert m.entity_sequences() == {} and m.helices.empty and m.sheets.empty


@pytest.mark.shared_data
def test_1j6z_seqres_helix_sheet_and_stray_ter() -> None:
    m = read_structure(_structures() / "1J6Z.pdb")
    seqres = m.entity_sequences()["A"]
    modelled = m.modelled_sequences()["A"]
    assert (len(seqres), len(modelled)) == (375, 368)
    # every modelled residue n is SEQRES letter n (SEQRES starts at residue 1)
    res = residue_table(m)
    letters = list(modelled)
    assert all(seqres[n - 1] == c for n, c in zip(res["residue_number"], letters, strict=True))
    # a TER after residue 72 must not turn residues 74… into ligands
    assert m.atoms["is_polymer"].all() and (m.atoms["polymer_type"] == "protein").all()
    assert len(m.helices) == 20 and len(m.sheets) == 13
    h = m.helices.iloc[0]
    assert (h["chain"], h["start_residue_number"], h["end_residue_number"], h["helix_class"],
            h["length"]) == ("A", 41, 46, 1, 6)
    assert set(m.sheets["sense"]) <= {-1, 0, 1}


@pytest.mark.shared_data
def test_mmcif_gz_entities_helices_sheets() -> None:
    m = read_structure(_structures() / "3KPR.cif.gz")
    assert m.chains() == list("ABCDEFGHIJ")
    seqres = m.entity_sequences()
    assert seqres["A"] == seqres["F"] and len(seqres["A"]) == 276  # one entity, two chains
    assert len(m.helices) == 25 and len(m.sheets) == 150
    assert "water" in set(m.atoms["entity_type"]) and not m.atoms.loc[
        m.atoms["entity_type"] == "water", "is_polymer"].any()


@pytest.mark.shared_data
def test_adk_has_blank_chain_and_no_records() -> None:
    # adk_open.pdb (4AKE) is a CHARMM-written file: no chain id, no SEQRES, no HELIX/SHEET.
    m = read_structure(_structures() / "adk_open.pdb")
    assert m.chains() == [""] and len(m.modelled_sequences()[""]) == 214
    assert m.entity_sequences() == {} and m.helices.empty
    assert (m.atoms["element"] == "H").sum() > 0  # hydrogens are kept


@pytest.mark.shared_data
def test_altlocs_keep_highest_occupancy() -> None:
    path = _structures() / "4E43.pdb"
    chosen = read_structure(path).atoms
    every = read_structure(path, all_altlocs=True).atoms
    keys = ["chain", "residue_number", "insertion_code", "residue_name", "atom_name"]
    with_alt = every.loc[every["altloc"] != ""]
    assert len(with_alt) > len(chosen.loc[chosen["altloc"] != ""]) > 0
    best = with_alt.groupby(keys, sort=False)["occupancy"].max().rename("best")
    merged = chosen.merge(best.reset_index(), on=keys)
    assert len(merged) > 0 and (merged["occupancy"] == merged["best"]).all()


@pytest.mark.shared_data
def test_failing_chain_with_missing_backbone_atoms() -> None:
    d = _structures() / "dssp"
    ok, broken = read_structure(d / "1mr1D.pdb.gz"), read_structure(d / "1mr1D_failing.pdb.gz")
    assert ok.modelled_sequences() == broken.modelled_sequences()
    assert len(ok.backbone()) - len(broken.backbone()) == 2  # residue 219 lacks C and O
    np.testing.assert_array_equal(ok.ca_positions(), broken.ca_positions())


# --------------------------------------------------------------------------------------
# Cα writer
# --------------------------------------------------------------------------------------


def test_write_ca_model_round_trips_in_both_formats(tmp_path: Path, rng: np.random.Generator) -> None:
    seq_a = "ACDEFGHIKLMNPQRSTVWY" * 3
    xyz_a = rng.uniform(-500.0, 900.0, (len(seq_a), 3))
    seq_b = "GXSM"
    xyz_b = rng.normal(size=(4, 3)) * 10
    chains = {"A": (seq_a, xyz_a), "B": (seq_b, xyz_b)}
    expect = np.array([[float(f"{v:.3f}") for v in row] for row in np.vstack([xyz_a, xyz_b])])
    models = {}
    for fmt in ("pdb", "cif"):
        p = write_ca_model(tmp_path / f"m.{fmt}", chains, fmt=fmt,
                           provenance=make_provenance("trace", {"fmt": fmt}))
        m = read_structure(p)
        models[fmt] = m
        assert m.chains() == ["A", "B"]
        assert m.modelled_sequences() == {"A": seq_a, "B": seq_b}
        assert m.entity_sequences() == {"A": seq_a, "B": seq_b}  # SEQRES / entity_poly_seq
        np.testing.assert_array_equal(m.ca_positions(), expect)
        assert np.abs(m.ca_positions() - np.vstack([xyz_a, xyz_b])).max() <= 0.0005
        assert (m.atoms["atom_name"] == "CA").all() and (m.atoms["element"] == "C").all()
        assert residue_table(m)["residue_number"].tolist() == [*range(1, 61), *range(1, 5)]
        assert read_provenance(p)["parameters"] == {"fmt": fmt}
    cols = ["chain", "residue_number", "residue_name", "atom_name", "x_a", "y_a", "z_a",
            "occupancy", "b_factor", "is_polymer", "entity_type", "polymer_type"]
    pd.testing.assert_frame_equal(models["pdb"].atoms[cols], models["cif"].atoms[cols])


def test_write_ca_model_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        write_ca_model(tmp_path / "x.pdb", {"A": ("AAA", np.zeros((2, 3)))})
    with pytest.raises(ValueError, match="chain id"):
        write_ca_model(tmp_path / "x.pdb", {"AB": ("A", np.zeros((1, 3)))})
    with pytest.raises(ValueError, match="non-finite"):
        write_ca_model(tmp_path / "x.cif", {"A": ("A", [[np.nan, 0, 0]])}, fmt="cif")
    with pytest.raises(ValueError, match="too large"):
        write_ca_model(tmp_path / "x.pdb", {"A": ("A", [[-1000.0, 0, 0]])})
    with pytest.raises(ValueError, match="fmt"):
        write_ca_model(tmp_path / "x.pdb", {"A": ("A", [[0, 0, 0]])}, fmt="xyz")
    assert not list(tmp_path.iterdir())
    # mmCIF takes long chain ids and coordinates PDB cannot hold
    p = write_ca_model(tmp_path / "x.cif", {"AB": ("A", [[-1000.0, 0, 0]])}, fmt="cif")
    assert read_structure(p).chains() == ["AB"]


# --------------------------------------------------------------------------------------
# bad files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.pdb", b""), ("words.pdb", b"REMARK nothing here\nEND\n"),
     ("broken.cif", b"data_x\n_a 1\nloop_ garbage '\n"), ("junk.pdb.gz", b"not gzip at all")],
)
def test_corrupt_or_empty_files_raise_input_error(tmp_path: Path, name: str, content: bytes) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_structure(p)
    assert str(p) in str(info.value)


def test_missing_directory_and_permissive_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_structure(tmp_path / "none.pdb")
    with pytest.raises(InputError, match="directory"):
        read_structure(tmp_path)
    p = tmp_path / "empty.pdb"
    p.write_text("END\n")
    m = read_structure(p, permissive=True)
    assert len(m.atoms) == 0 and m.chains() == [] and m.ca_positions().shape == (0, 3)


_ATOM = "ATOM  {n:5d}  CA  ALA A{n:4d}    {x:>8s}{y:>8s}{z:>8s}  1.00  0.00           C\n"


def test_non_numeric_pdb_coordinates_are_refused_not_read_as_zero(tmp_path: Path) -> None:
    """Issue #16: gemmi reads ``abc.def`` in a PDB coordinate column as 0.000; the reader
    must refuse the file, naming the line, instead of putting the atom at the origin."""
    p = tmp_path / "garbage.pdb"
    p.write_text(_ATOM.format(n=1, x="1.000", y="2.000", z="3.000")
                 + _ATOM.format(n=2, x="4.000", y="abc.def", z="6.000") + "END\n")
    with pytest.raises(InputError, match=r"line 2: the y coordinate 'abc.def' .*is not a number"):
        read_structure(p)
    import gzip

    gz = tmp_path / "garbage.pdb.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    with pytest.raises(InputError, match="line 2"):
        read_structure(gz)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_nan_coordinates_are_refused_naming_the_atom(tmp_path: Path, value: str) -> None:
    p = tmp_path / "nan.pdb"
    p.write_text(_ATOM.format(n=1, x="1.000", y="2.000", z="3.000")
                 + _ATOM.format(n=2, x=value, y="5.000", z="6.000") + "END\n")
    with pytest.raises(InputError, match=r"1 atom\(s\) have NaN.*first: CA of ALA A2"):
        read_structure(p)


def test_gemmi_multi_line_messages_become_one_line(tmp_path: Path) -> None:
    p = tmp_path / "cut.pdb"
    p.write_text(_ATOM.format(n=1, x="1.000", y="2.000", z="3.000")[:45])
    with pytest.raises(InputError) as info:
        read_structure(p)
    assert len(str(info.value).splitlines()) == 1 and "too short" in str(info.value)
