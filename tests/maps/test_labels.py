"""Voxel labels: codes, rounding rule, collisions, atoms outside, exact Cα round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoset.maps.labels import AMINO_ACIDS, amino_acid_code, label_maps, rasterise, voxel_indices
from cryoset.maps.validate import ca_round_trip

COLUMNS = ["chain", "residue_number", "insertion_code", "residue_name", "atom_name", "x_a", "y_a", "z_a"]


def _atoms(rows: list[tuple]) -> pd.DataFrame:  # type: ignore[type-arg]
    return pd.DataFrame(rows, columns=COLUMNS)


def _residue(num: int, name: str, ca_xyz: tuple[float, float, float], chain: str = "A", icode: str = "") -> list[tuple]:  # type: ignore[type-arg]
    x, y, z = ca_xyz
    return [
        (chain, num, icode, name, "N", x - 1.2, y, z),
        (chain, num, icode, name, "CA", x, y, z),
        (chain, num, icode, name, "C", x + 1.2, y + 0.6, z),
        (chain, num, icode, name, "O", x + 1.2, y + 1.8, z),
    ]


def test_amino_acid_codes_follow_the_documented_order() -> None:
    assert len(AMINO_ACIDS) == 20 and len(set(AMINO_ACIDS)) == 20
    assert [amino_acid_code(n) for n in ("ALA", "GLY", "TRP", "VAL")] == [1, 8, 18, 20]
    assert amino_acid_code("MSE") == amino_acid_code("MET") == 13
    assert amino_acid_code("UNK") == amino_acid_code("HOH") == amino_acid_code("DA") == 0


def test_rounding_rule_is_nearest_voxel_centre_half_up() -> None:
    idx = voxel_indices([[0.5, 1.49, -0.51], [2.0, 2.0, 2.0]], origin_a=(1.0, 0.0, 0.0), voxel_size_a=(2.0, 1.0, 1.0))
    # (x, y, z) in → (k, j, i) out; z: (-0.51-1)/2=-0.755 → -1; y: 1.49 → 1; x: 0.5 → 1
    assert idx.tolist() == [[-1, 1, 1], [1, 2, 2]]


def test_codes_and_physical_positions() -> None:
    atoms = _atoms(_residue(1, "ALA", (5.0, 6.0, 7.0)) + _residue(2, "VAL", (10.0, 6.0, 7.0)))
    ss = pd.DataFrame({"chain": ["A", "A"], "residue_number": [1, 2], "insertion_code": ["", ""], "dssp": ["H", "E"]})
    lab = label_maps(atoms, (20, 20, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), secondary=ss)
    assert lab.ca[7, 6, 5] == 1 and lab.ca[7, 6, 10] == 1 and lab.ca.sum() == 2
    assert lab.backbone[7, 6, 5] == 1 and lab.backbone[7, 6, 4] == 2 and lab.backbone[7, 7, 6] == 3
    assert lab.amino[7, 6, 5] == 1 and lab.amino[7, 6, 10] == 20
    assert lab.secondary[7, 6, 5] == 2 and lab.secondary[7, 6, 10] == 3
    assert lab.report["n_outside"] == {"CA": 0, "N": 0, "C": 0}


def test_atoms_outside_are_counted_never_wrapped() -> None:
    atoms = _atoms(_residue(1, "GLY", (-2.0, 2.0, 2.0)) + _residue(2, "GLY", (1.0, 2.0, 2.0)))
    lab = label_maps(atoms, (6, 6, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert lab.report["n_outside"] == {"CA": 1, "N": 1, "C": 1}
    assert lab.ca.sum() == 1 and lab.ca[2, 2, 1] == 1
    # residue 1 maps to x indices -3..-1: wrapping would put it at 3..5
    assert not lab.backbone[:, :, 3:].any() and np.count_nonzero(lab.backbone) == 3


def test_ligands_waters_nucleic_acids_and_altlocs() -> None:
    atoms = _atoms(
        [
            *_residue(1, "SER", (4.0, 4.0, 4.0)),
            ("A", 1, "", "SER", "CA", 4.0, 5.6, 4.0),  # alternate location B of the Cα: ignored
            ("B", 501, "", "CA", "CA", 8.0, 8.0, 8.0),  # calcium ion named CA
            ("W", 601, "", "HOH", "O", 9.0, 9.0, 9.0),
            ("N", 1, "", "DA", "C1'", 1.0, 1.0, 1.0),
            ("N", 1, "", "DA", "N9", 1.0, 1.0, 2.0),
            *_residue(2, "MSE", (8.0, 4.0, 4.0), icode="A"),
        ]
    )
    lab = label_maps(atoms, (12, 12, 12), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert lab.report["n_ca"] == 2
    assert lab.ca[4, 4, 4] == 1 and lab.ca[4, 6, 4] == 0 and lab.ca[8, 8, 8] == 0
    assert lab.amino[4, 4, 8] == 13


def test_collisions_are_detected_counted_and_nearest_centre_wins() -> None:
    atoms = _atoms(
        [("A", 1, "", "ALA", "CA", 2.4, 2.0, 2.0), ("A", 2, "", "GLY", "CA", 1.9, 2.1, 2.0)]
    )
    lab = label_maps(atoms, (5, 5, 5), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert lab.report["n_collisions"]["ca"] == 1
    assert lab.amino[2, 2, 2] == amino_acid_code("GLY")  # GLY's Cα is nearer the centre
    assert lab.collisions["residue_number"].tolist() == [1, 1]  # lost in 'backbone' and 'ca'
    trip = ca_round_trip(lab.ca, lab.ca_table[["x_a", "y_a", "z_a"]].to_numpy(), (1, 1, 1), (0, 0, 0))
    assert trip["n_labelled"] == 1 and trip["n_exact"] == 1 and trip["n_ca_lost"] == 1


def test_rasterise_priority_beats_distance() -> None:
    vol, win, lose = rasterise(np.array([[0, 0, 0], [0, 0, 0], [9, 9, 9]]), [2, 1, 3], (2, 2, 2),
                               priority=[0, 1, 0], distance=[0.0, 0.4, 0.0])
    assert vol[0, 0, 0] == 1 and win.tolist() == [1] and lose.tolist() == [0]


def _protein_like_ca(rng: np.random.Generator, n: int) -> np.ndarray:
    """A self-avoiding Cα trace: 3.8 Å steps, no two Cα closer than 3.5 Å."""
    pts = [np.zeros(3)]
    while len(pts) < n:
        step = rng.normal(size=3)
        cand = pts[-1] + 3.8 * step / np.linalg.norm(step)
        if np.min(np.linalg.norm(np.asarray(pts) - cand, axis=1)) >= 3.5:
            pts.append(cand)
    return np.asarray(pts)


@pytest.mark.parametrize("voxel", [(1.0, 1.0, 1.0), (1.7, 0.9, 1.3)])
def test_ca_round_trip_is_exact(rng: np.random.Generator, voxel: tuple[float, float, float]) -> None:
    ca = _protein_like_ca(rng, 400) + rng.uniform(-5, 5, size=3)
    lo, hi = ca.min(axis=0)[::-1], ca.max(axis=0)[::-1]  # (z, y, x)
    origin = tuple(lo + 1.3)  # a few atoms fall outside on both sides
    shape = tuple(int(n) for n in np.ceil((hi - lo) / np.asarray(voxel)) - 1)
    rows = [("A", k + 1, "", AMINO_ACIDS[k % 20], "CA", *p) for k, p in enumerate(ca)]
    lab = label_maps(_atoms(rows), shape, voxel, origin)
    trip = ca_round_trip(lab.ca, ca, voxel, origin)
    inside = int(lab.ca_table["inside"].sum())
    assert trip["n_ca_inside"] == inside and 300 < inside < 400
    assert trip["exact_fraction"] == 1.0
    assert trip["n_ca_recovered"] + lab.report["n_collisions"]["ca"] == inside
    assert trip["max_distance_a"] <= 0.5 * float(np.linalg.norm(voxel)) + 1e-9


def test_nucleic_acid_only_model_gives_empty_labels() -> None:
    atoms = _atoms([("A", 1, "", "DA", "P", 1.0, 2.0, 3.0), ("A", 1, "", "DA", "C1'", 1.5, 2.0, 3.0),
                    ("A", 2, "", "HOH", "O", 5.0, 5.0, 5.0)])
    lab = label_maps(atoms, (8, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert lab.report["n_ca"] == 0 and lab.collisions.empty
    assert not any(v.any() for v in lab.volumes().values())


def test_some_atoms_outside_are_a_warning_with_the_count() -> None:
    atoms = _atoms(_residue(1, "GLY", (-2.0, 2.0, 2.0)) + _residue(2, "GLY", (1.0, 2.0, 2.0)))
    lab = label_maps(atoms, (6, 6, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert lab.report["warnings"] == [
        "3 of 6 backbone atoms (Cα, N, C) lie outside the 6×6×6 map grid and are not labelled"]
    inside = label_maps(_atoms(_residue(1, "GLY", (2.0, 2.0, 2.0))), (6, 6, 6), (1.0,) * 3, (0.0,) * 3)
    assert inside.report["warnings"] == []


def test_a_model_entirely_outside_the_map_is_refused_not_zero_labels() -> None:
    """Issue #16: a model in another frame gave empty label maps and no word."""
    from cryoset.errors import InputError

    atoms = _atoms(_residue(1, "GLY", (50.0, 2.0, 2.0)) + _residue(2, "ALA", (54.0, 2.0, 2.0)))
    with pytest.raises(InputError, match=r"^m\.pdb: none of the 6 backbone atoms .* inside the 6×6×6 map grid"):
        label_maps(atoms, (6, 6, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), source="m.pdb")
