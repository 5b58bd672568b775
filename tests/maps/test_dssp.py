"""DSSP: agreement with the 32 reference assignments and with mkdssp; broken input."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.maps.dataset import load_model
from cryoset.maps.dssp import (
    assign_dssp,
    hbond_energies,
    q3,
    to_three_state,
)
from cryoset.testing import require_program, require_shared_data

#: Measured: mean Q3 0.975, worst 0.902 (3nngA / 1h4aX) against the reference files.
MEAN_Q3_FLOOR = 0.97
MIN_Q3_FLOOR = 0.90


def _reference(ref: Path) -> str:
    return ref.read_text().split()[0]


def _ours(pdb: Path) -> pd.DataFrame:
    loaded = load_model(pdb)
    assert loaded.source == "dssp"  # no HELIX/SHEET records in these files
    return loaded.secondary


def test_q3_against_the_32_reference_assignments() -> None:
    folder = require_shared_data("structures", "dssp")
    refs = sorted(folder.glob("*.pdb.dssp"))
    assert len(refs) == 32
    scores = {}
    for ref in refs:
        ss = to_three_state(_ours(folder / ref.name.replace(".dssp", ".gz"))["dssp"].to_numpy())
        truth = _reference(ref)
        assert len(ss) == len(truth), ref.name
        scores[ref.name] = q3(ss, truth)
    assert np.mean(list(scores.values())) >= MEAN_Q3_FLOOR, scores
    assert min(scores.values()) >= MIN_Q3_FLOOR, scores


def test_failing_chain_with_missing_backbone_atoms() -> None:
    """1mr1D_failing lacks C and O of residue 219: that residue is coil and splits the chain."""
    folder = require_shared_data("structures", "dssp")
    failing = _ours(folder / "1mr1D_failing.pdb.gz")
    full = _ours(folder / "1mr1D.pdb.gz")
    assert len(failing) == len(full) == len(_reference(folder / "1mr1D.pdb.dssp"))
    row = failing[failing["residue_number"] == 219]
    assert row["dssp"].tolist() == ["-"]
    agree = q3(to_three_state(failing["dssp"].to_numpy()), to_three_state(full["dssp"].to_numpy()))
    assert agree >= 0.95
    assert q3(to_three_state(failing["dssp"].to_numpy()), _reference(folder / "1mr1D.pdb.dssp")) >= 0.9


def _mkdssp(exe: str, pdb_gz: Path, tmp: Path) -> dict[tuple[str, int, str], str]:
    pdb = tmp / "in.pdb"
    header = (
        "HEADER    TEST                                    01-JAN-00   XXXX              \n"
        "CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1          \n"
    )
    pdb.write_text(header + gzip.open(pdb_gz, "rt").read())
    subprocess.run([exe, "--output-format", "dssp", str(pdb), str(tmp / "out.dssp")],
                   check=True, capture_output=True, timeout=60)
    lines = (tmp / "out.dssp").read_text().splitlines()
    start = next(k for k, ln in enumerate(lines) if ln.startswith("  #  RESIDUE"))
    return {
        (ln[11], int(ln[5:10]), ln[10].strip()): (ln[16] if ln[16] != " " else "-")
        for ln in lines[start + 1 :]
        if ln[13] != "!"
    }


@pytest.mark.parametrize("name", ["4dkcA", "1mr1D_failing"])
def test_agreement_with_mkdssp(name: str, tmp_path: Path) -> None:
    """Measured over all 33 files: mean Q3 0.9994 (worst 0.988), 8-state agreement 0.998."""
    exe = require_program("mkdssp")
    pdb = require_shared_data("structures", "dssp", f"{name}.pdb.gz")
    theirs = _mkdssp(exe, pdb, tmp_path)
    ours = _ours(pdb)
    keys = list(zip(ours["chain"], ours["residue_number"].astype(int), ours["insertion_code"], strict=True))
    ref = "".join(theirs.get(k, "-") for k in keys)
    mine = "".join(ours["dssp"])
    assert q3(to_three_state(mine), to_three_state(ref)) >= 0.985
    assert np.mean([a == b for a, b in zip(mine, ref.replace("P", "-"), strict=True)]) >= 0.96


def test_hbond_energy_formula_on_an_ideal_geometry() -> None:
    """Linear C=O···H-N at 2.9 Å N-O: energy from the Kabsch-Sander formula by hand."""
    # residue 0 accepts (C, O), residue 2 donates (N, H); residue 1 carries the H direction
    c0, o0 = np.array([0.0, 0.0, 0.0]), np.array([1.23, 0.0, 0.0])
    n2 = np.array([1.23 + 2.9, 0.0, 0.0])
    # previous residue (1) C and O chosen so that H of residue 2 points at O0
    c1, o1 = np.array([10.0, 0.0, 0.0]), np.array([11.0, 0.0, 0.0])
    n = np.stack([[-1.0, 0, 0], [9.0, 0, 0], n2])
    ca = np.stack([[-0.5, 1.0, 0], [9.5, 1.0, 0], [n2[0] + 0.5, 1.0, 0]])
    c = np.stack([c0, c1, [n2[0] + 1.0, 1.0, 0]])
    o = np.stack([o0, o1, [n2[0] + 1.0, 2.2, 0]])
    acc, don, e = hbond_energies(n, ca, c, o, chain_break_before=np.array([True, True, False]),
                                 is_proline=np.zeros(3, bool))
    sel = (acc == 0) & (don == 2)
    h = n2 - np.array([1.0, 0, 0])
    r_on, r_ch, r_oh, r_cn = 2.9, np.linalg.norm(c0 - h), np.linalg.norm(o0 - h), np.linalg.norm(c0 - n2)
    expected = 0.084 * 332 * (1 / r_on + 1 / r_ch - 1 / r_oh - 1 / r_cn)
    assert sel.sum() == 1
    assert e[sel][0] == pytest.approx(round(expected, 3), abs=1e-9)
    assert e[sel][0] < -0.5


def test_empty_and_tiny_inputs() -> None:
    z = np.zeros((0, 3))
    assert assign_dssp(z, z, z, z).tolist() == []
    one = np.zeros((1, 3))
    assert assign_dssp(one, one + 1, one + 2, one + 3).tolist() == ["-"]
    assert to_three_state("HGIEBTS-P") == "HHHEE----"
