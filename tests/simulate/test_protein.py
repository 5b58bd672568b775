"""Procedural protein builder: exact ideal geometry, no clashes, compactness, composition,
reproducibility and PDB/mmCIF output whose HELIX/SHEET records are the truth."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import gemmi
import numpy as np
import pytest
from scipy.spatial import cKDTree

from cryoset.errors import InputError
from cryoset.simulate import protein as P
from cryoset.testing import require_program
from cryoset.workflows.simulate import write_structure


@pytest.fixture(scope="module")
def prot() -> P.Protein:
    return P.build_protein(160, seed=7)


def _atom(p: P.Protein, res: int, name: str) -> np.ndarray:
    idx = np.flatnonzero((p.residue_numbers == res) & (p.atom_names == name))
    assert idx.size == 1
    return p.xyz_a[idx[0]]


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    u, v = a - b, c - b
    return math.degrees(math.acos(float(u @ v) / float(np.linalg.norm(u) * np.linalg.norm(v))))


def _dihedral(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> float:
    return math.degrees(gemmi.calculate_dihedral(*(gemmi.Position(*map(float, x)) for x in (a, b, c, d))))


def _torsion_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def test_bond_lengths_and_angles_are_ideal(prot: P.Protein) -> None:
    n = prot.n_residues
    for r in range(1, n + 1):
        N, CA, C, OX = (_atom(prot, r, a) for a in ("N", "CA", "C", "O"))
        assert np.linalg.norm(CA - N) == pytest.approx(P.BOND_N_CA_A, abs=1e-9)
        assert np.linalg.norm(C - CA) == pytest.approx(P.BOND_CA_C_A, abs=1e-9)
        assert np.linalg.norm(OX - C) == pytest.approx(P.BOND_C_O_A, abs=1e-9)
        assert _angle(N, CA, C) == pytest.approx(P.ANGLE_N_CA_C_DEG, abs=1e-6)
        if prot.sequence[r - 1] != "G":
            CB = _atom(prot, r, "CB")
            assert np.linalg.norm(CB - CA) == pytest.approx(P.BOND_CA_CB_A, abs=1e-9)
            assert _angle(N, CA, CB) == pytest.approx(P.ANGLE_N_CA_CB_DEG, abs=1e-6)
            # L-amino acid chirality: improper C-N-CA-CB = -122.5 degrees (as in real proteins)
            assert _dihedral(C, N, CA, CB) == pytest.approx(P.TORSION_C_N_CA_CB_DEG, abs=1e-6)
        else:
            assert not np.any((prot.residue_numbers == r) & (prot.atom_names == "CB"))
        if r < n:
            N2, CA2 = _atom(prot, r + 1, "N"), _atom(prot, r + 1, "CA")
            assert np.linalg.norm(N2 - C) == pytest.approx(P.BOND_C_N_A, abs=1e-9)
            assert _angle(CA, C, N2) == pytest.approx(P.ANGLE_CA_C_N_DEG, abs=1e-6)
            assert _angle(C, N2, CA2) == pytest.approx(P.ANGLE_C_N_CA_DEG, abs=1e-6)
            assert _angle(OX, C, N2) == pytest.approx(360 - P.ANGLE_CA_C_O_DEG - P.ANGLE_CA_C_N_DEG, abs=1e-6)
            assert _torsion_diff(_dihedral(CA, C, N2, CA2), 180.0) < 1e-6  # trans peptide


def test_ca_ca_distance(prot: P.Protein) -> None:
    ca = prot.xyz_a[prot.atom_names == "CA"]
    d = np.linalg.norm(np.diff(ca, axis=0), axis=1)
    assert len(d) == prot.n_residues - 1
    assert np.all(np.abs(d - 3.80) < 0.02)


def test_phi_psi_are_the_secondary_structure_truth(prot: P.Protein) -> None:
    """Torsions measured on the coordinates equal the recorded ones, and H/E residues have ideal values."""
    for i in range(1, prot.n_residues - 1):
        r = i + 1
        phi = _dihedral(_atom(prot, r - 1, "C"), _atom(prot, r, "N"), _atom(prot, r, "CA"), _atom(prot, r, "C"))
        psi = _dihedral(_atom(prot, r, "N"), _atom(prot, r, "CA"), _atom(prot, r, "C"), _atom(prot, r + 1, "N"))
        assert _torsion_diff(phi, prot.phi_deg[i]) < 1e-6
        assert _torsion_diff(psi, prot.psi_deg[i]) < 1e-6
        if prot.secondary_structure[i] == "H":
            assert (prot.phi_deg[i], prot.psi_deg[i]) == P.HELIX_PHI_PSI_DEG
        elif prot.secondary_structure[i] == "E":
            assert (prot.phi_deg[i], prot.psi_deg[i]) == P.STRAND_PHI_PSI_DEG
    assert set(prot.secondary_structure) == {"H", "E", "C"}


def test_helix_rise_i_to_i_plus_4(prot: P.Protein) -> None:
    ca = prot.xyz_a[prot.atom_names == "CA"]
    ss = prot.secondary_structure
    pairs = [i for i in range(len(ss) - 4) if ss[i:i + 5] == "HHHHH"]
    assert len(pairs) > 10
    d = np.linalg.norm(ca[pairs] - ca[[i + 4 for i in pairs]], axis=1)
    # ideal geometry at (-57, -47) gives 6.40 Å for every pair (real helices: about 6.2 Å)
    assert np.ptp(d) < 1e-6
    assert abs(d.mean() - 6.2) < 0.25
    strand = [i for i in range(len(ss) - 2) if ss[i:i + 3] == "EEE"]
    d2 = np.linalg.norm(ca[strand] - ca[[i + 2 for i in strand]], axis=1)
    assert np.all(d2 > 6.4)  # extended: about 6.7 Å per two residues


def test_no_clashes(prot: P.Protein) -> None:
    tree = cKDTree(prot.xyz_a)
    pairs = tree.query_pairs(P.CLASH_DISTANCE_A, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    far = np.abs(prot.residue_numbers[i] - prot.residue_numbers[j]) >= P.CLASH_MIN_SEPARATION
    names = prot.atom_names
    hbond = ((names[i] == "N") & (names[j] == "O")) | ((names[i] == "O") & (names[j] == "N"))
    d = np.linalg.norm(prot.xyz_a[i] - prot.xyz_a[j], axis=1)
    assert not np.any(far & ~hbond), "heavy atoms closer than 3 Å"
    assert np.all(d[far & hbond] >= P.HBOND_DISTANCE_A)


def test_compact_globule() -> None:
    p = P.build_protein(250, seed=11)
    rg_ca = float(np.sqrt(((p.xyz_a[p.atom_names == "CA"] - p.xyz_a[p.atom_names == "CA"].mean(0)) ** 2)
                          .sum(1).mean()))
    compact = 2.2 * 250**0.38  # Rg of globular proteins (Å)
    coil = 2.02 * 250**0.6  # Rg of a random-coil (denatured) chain
    assert rg_ca < 1.6 * compact
    assert rg_ca < 0.5 * coil


def test_composition_is_realistic() -> None:
    seq = P.build_protein(500, seed=1).sequence
    counts = np.array([seq.count(a) for a in P.BACKGROUND_FREQUENCY])
    freq = counts / counts.sum()
    bg = np.array(list(P.BACKGROUND_FREQUENCY.values())) / 100
    assert np.all(counts > 0)  # all 20 amino acids occur
    assert freq.max() < 0.15
    assert np.corrcoef(freq, bg)[0, 1] > 0.7
    assert 0.5 * np.abs(freq - bg).sum() < 0.2  # total variation distance to Swiss-Prot


def test_seeds_reproducible() -> None:
    a, b = P.build_protein(90, seed=5), P.build_protein(90, seed=5)
    assert np.array_equal(a.xyz_a, b.xyz_a)
    assert a.sequence == b.sequence and a.secondary_structure == b.secondary_structure
    c = P.build_protein(90, seed=6)
    assert a.sequence != c.sequence


def test_bad_length() -> None:
    with pytest.raises(InputError):
        P.build_protein(3)


@pytest.mark.parametrize("suffix", [".pdb", ".cif"])
def test_written_helix_sheet_records_match_truth(prot: P.Protein, tmp_path: Path, suffix: str) -> None:
    path = write_structure(prot, tmp_path / f"p{suffix}")
    st = gemmi.read_structure(str(path))
    assert P.secondary_structure_from_structure(st, prot.n_residues) == prot.secondary_structure
    n_helix = sum(k == "H" for k, _, _ in prot.segments())
    n_strand = sum(k == "E" for k, _, _ in prot.segments())
    assert len(st.helices) == n_helix and sum(len(s.strands) for s in st.sheets) == n_strand
    seq = gemmi.one_letter_code([r.name for r in st[0][0]])
    assert seq.upper() == prot.sequence
    xyz = np.array([a.pos.tolist() for r in st[0][0] for a in r])
    assert np.abs(xyz - prot.xyz_a).max() < 6e-4  # PDB keeps 3 decimals
    b = np.array([a.b_iso for r in st[0][0] for a in r])
    assert np.abs(b - prot.b_factors_a2).max() < 6e-3


def test_dssp_finds_the_helices(prot: P.Protein, tmp_path: Path) -> None:
    """mkdssp (an independent program) assigns H to the residues built as helix."""
    exe = require_program("mkdssp")
    pdb = write_structure(prot, tmp_path / "p.pdb")
    out = tmp_path / "p.dssp"
    subprocess.run([exe, "--output-format", "dssp", str(pdb), str(out)], check=True,
                   capture_output=True, timeout=60)
    lines = out.read_text().split("  #  RESIDUE")[1].splitlines()[1:]
    dssp = "".join(line[16] for line in lines if line[13] != "!")
    assert len(dssp) == prot.n_residues
    helix = [i for i, c in enumerate(prot.secondary_structure) if c == "H"]
    assert sum(dssp[i] == "H" for i in helix) / len(helix) > 0.9
    coil_h = sum(dssp[i] == "H" for i, c in enumerate(prot.secondary_structure) if c == "E")
    assert coil_h == 0
