"""Cα model comparison (phenix.chain_comparison quantities) and PDB/mmCIF writing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cryoset.errors import InputError
from cryoset.provenance import read_provenance
from cryoset.trace.compare import compare_ca, match_ca
from cryoset.trace.fasta import read_fasta
from cryoset.trace.model import CaChain, read_ca_table, write_traced_model


def test_identical_and_shifted_models(rng: np.random.Generator) -> None:
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(5), np.arange(2), indexing="ij"), -1)
    ref = grid.reshape(-1, 3) * 5.0 + rng.normal(0, 0.1, size=(50, 3))
    names = rng.choice(["ALA", "GLY", "LEU", "SER"], size=50)
    same = compare_ca(ref, names, ref, names)
    assert (same.n_matched, same.pct_matched, same.pct_sequence_identity, same.rmsd_a) == (
        50, 100.0, 100.0, 0.0,
    )
    shift = np.array([0.6, 0.0, 0.8])
    shifted = compare_ca(ref + shift, names, ref, names)
    assert shifted.n_matched == 50 and math.isclose(shifted.rmsd_a, 1.0, rel_tol=1e-12)
    assert compare_ca(ref + shift, names, ref, names, max_distance_a=0.9).n_matched == 0
    far = compare_ca(ref + 100.0, names, ref, names)
    assert far.n_matched == 0 and math.isnan(far.rmsd_a) and far.pct_matched == 0.0
    assert far.to_dict()["rmsd_a"] is None and far.to_dict()["n_reference"] == 50
    mutated = names.copy()
    mutated[::2] = np.where(mutated[::2] == "TRP", "ALA", "TRP")
    half = compare_ca(ref, mutated, ref, names)
    assert half.pct_sequence_identity == 50.0
    # Half the model: 50 % of the reference is matched, all of it with the right residue.
    part = compare_ca(ref[:25], names[:25], ref, names)
    assert part.pct_matched == 50.0 and part.pct_sequence_identity == 100.0


def test_matching_is_one_to_one() -> None:
    ref = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    pred = np.array([[0.4, 0, 0], [0.5, 0, 0], [0.6, 0, 0]])
    pi, ri, d = match_ca(pred, ref, 3.0)
    assert len(set(pi.tolist())) == len(pi) == 2 and ri.tolist() == [0, 1]
    np.testing.assert_allclose(d, [0.4, 0.4])


@pytest.mark.parametrize("suffix", [".pdb", ".cif"])
def test_model_round_trip(tmp_path: Path, suffix: str, rng: np.random.Generator) -> None:
    chains = [
        CaChain("A", ("MET", "LYS", "TRP"), rng.uniform(-50, 50, (3, 3))),
        CaChain("B", ("GLY", "UNK"), rng.uniform(-50, 50, (2, 3))),
    ]
    path = write_traced_model(tmp_path / f"m{suffix}", chains, provenance={"command": "t"})
    table = read_ca_table(path)
    assert table["chain"].tolist() == ["A"] * 3 + ["B"] * 2
    assert table["residue_number"].tolist() == [1, 2, 3, 1, 2]
    assert table["residue_name"].tolist() == ["MET", "LYS", "TRP", "GLY", "UNK"]
    xyz = np.concatenate([c.positions_a for c in chains])
    np.testing.assert_allclose(table[["x_a", "y_a", "z_a"]].to_numpy(), xyz, atol=5e-4)
    assert read_provenance(path)["command"] == "t"
    assert not list(tmp_path.glob("*.part"))


def test_model_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="suffix"):
        write_traced_model(tmp_path / "m.txt", [])
    with pytest.raises(InputError, match="twice"):
        chain = CaChain("A", ("GLY",), np.zeros((1, 3)))
        write_traced_model(tmp_path / "m.pdb", [chain, chain])
    with pytest.raises(InputError):
        read_ca_table(tmp_path / "absent.pdb")


def test_fasta(tmp_path: Path) -> None:
    path = tmp_path / "s.fasta"
    path.write_text(">chain A\nMKV\nLA\n\n>B desc\nGWX*\n")
    assert read_fasta(path) == [("chain A", "MKVLA"), ("B desc", "GWX*")]
    path.write_text("MKV\n")
    with pytest.raises(InputError, match="before the first"):
        read_fasta(path)
    path.write_text(">a\nMK1\n")
    with pytest.raises(InputError, match="not an amino-acid letter"):
        read_fasta(path)
    path.write_text(">a\n")
    with pytest.raises(InputError, match="empty"):
        read_fasta(path)
