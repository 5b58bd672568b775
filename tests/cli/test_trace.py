"""``cryoset trace`` and ``cryoset compare-models`` end to end on probability maps.

Probability maps are built from the Cα of real models on a 1 Å grid: a Gaussian blob
(σ 0.8 Å) at every Cα displaced by N(0, 0.3 Å) per coordinate, uniform noise up to 0.1,
and amino-acid probabilities ``softmax(2.5 · onehot + N(0, 1))`` mixed by the blobs.
The maps go through candidate extraction → HMM → PDB/mmCIF → compare-models.
Candidates picked from such maps are 0.56 Å RMS (3-D) from the true Cα, so the
transition width is set to Λ = 15 (σ = 0.54 Å); docs/trace.md shows that the default
Λ = 10 loses the register on some seeds at this error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryoset.io.mrc import write_map
from cryoset.provenance import read_provenance
from cryoset.testing import require_shared_data
from cryoset.trace.model import read_ca_table
from cryoset.trace.residues import AMINO_ACIDS, ONE_LETTER, three_to_index
from cryoset.trace.synthetic import noisy_aa_probabilities, probability_maps_from_ca


def _maps_from_model(
    model: Path, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], list[str]]:
    table = read_ca_table(model)
    xyz = table[["x_a", "y_a", "z_a"]].to_numpy()
    aa = np.array([three_to_index(n) for n in table["residue_name"]])
    probs = noisy_aa_probabilities(aa, rng, signal=2.5)
    lo = np.floor(xyz.min(axis=0)) - 4.0
    shape = tuple(int(v) for v in (np.ceil(xyz.max(axis=0) - lo) + 5)[::-1])
    origin = (float(lo[2]), float(lo[1]), float(lo[0]))
    noisy_xyz = xyz + rng.normal(0.0, 0.3, size=xyz.shape)
    ca, aa_map = probability_maps_from_ca(noisy_xyz, probs, shape, rng, origin_a=origin, noise=0.1)  # type: ignore[arg-type]
    seqs = [
        "".join(ONE_LETTER[k] if k < 20 else "X" for k in aa[(table["chain"] == c).to_numpy()])
        for c in dict.fromkeys(table["chain"].tolist())
    ]
    return ca, aa_map, origin, seqs


@pytest.mark.shared_data
def test_trace_maps_to_pdb_and_compare(tmp_path: Path, run_cli, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    ref = require_shared_data("maps", "emd_5168", "3MFP.pdb")
    ca, aa_map, origin, seqs = _maps_from_model(ref, rng)
    write_map(tmp_path / "ca.mrc", ca, 1.0, origin)
    np.save(tmp_path / "aa.npy", aa_map)
    (tmp_path / "seq.fasta").write_text(">3MFP_A\n" + seqs[0] + "\n")
    out = tmp_path / "trace.pdb"
    code, stdout, stderr = run_cli(
        "trace", tmp_path / "ca.mrc", "--aa-prob", tmp_path / "aa.npy",
        "--sequence", tmp_path / "seq.fasta", "-o", out, "--json", "--lambda", "15",
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["n_candidates"] >= 369
    assert summary["chains"][0]["n_residues"] == 369
    assert read_provenance(out)["parameters"]["lambda"] == 15.0
    traced = read_ca_table(out)
    assert len(traced) == 369 and set(traced["chain"]) == {"A"}
    assert traced["residue_number"].tolist() == list(range(1, 370))

    code, stdout, stderr = run_cli("compare-models", out, ref, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["n_reference"] == 369 and result["n_predicted"] == 369
    assert result["pct_matched"] >= 95.0
    assert result["pct_sequence_identity"] >= 90.0
    assert result["rmsd_a"] < 1.0  # 0.3 Å per coordinate of noise ≈ 0.52 Å in 3-D

    code, stdout, _ = run_cli("compare-models", out, ref)
    assert code == 0 and "sequence identity" in stdout


@pytest.mark.shared_data
def test_trace_mrc_folder_and_sequence_from_model(  # type: ignore[no-untyped-def]
    tmp_path: Path, run_cli, rng: np.random.Generator
) -> None:
    """Two chains (1HVR, 2 × 99 residues), 20 MRC maps, sequences from the model, mmCIF out."""
    ref = require_shared_data("structures", "1hvr.pdb")
    ca, aa_map, origin, _ = _maps_from_model(ref, rng)
    write_map(tmp_path / "ca.mrc", ca, 1.0, origin)
    folder = tmp_path / "aa"
    for k, name in enumerate(AMINO_ACIDS):
        write_map(folder / f"{name}.mrc", aa_map[k], 1.0, origin)
    out = tmp_path / "trace.cif"
    code, _, stderr = run_cli(
        "trace", tmp_path / "ca.mrc", "--aa-prob", folder, "--sequence-from-model", ref, "-o", out,
        "--lambda", "15",
    )
    assert code == 0, stderr
    traced = read_ca_table(out)
    assert traced.groupby("chain").size().to_dict() == {"A": 99, "B": 99}
    code, stdout, stderr = run_cli("compare-models", out, ref, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["pct_matched"] >= 90.0 and result["pct_sequence_identity"] >= 90.0


def test_trace_cli_errors(tmp_path: Path, run_cli, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    ca = np.zeros((10, 10, 10), np.float32)
    ca[5, 5, 2], ca[5, 5, 6] = 0.9, 0.9
    np.save(tmp_path / "ca.npy", ca)
    np.save(tmp_path / "aa.npy", np.full((20, 10, 10, 10), 0.05, np.float32))
    np.save(tmp_path / "aa_bad.npy", np.full((19, 10, 10, 10), 0.05, np.float32))
    (tmp_path / "s.fasta").write_text(">a\nMKV\n")
    base = ("trace", tmp_path / "ca.npy", "-o", tmp_path / "o.pdb")
    code, _, err = run_cli(*base, "--aa-prob", tmp_path / "aa.npy")
    assert code == 2 and "--sequence" in err
    code, _, err = run_cli(*base, "--aa-prob", tmp_path / "aa.npy", "--sequence", tmp_path / "s.fasta")
    assert code == 2 and "2 Cα candidates" in err and "3 residues" in err
    code, _, err = run_cli(*base, "--aa-prob", tmp_path / "aa_bad.npy", "--sequence", tmp_path / "s.fasta")
    assert code == 2 and "expected shape (20, 10, 10, 10)" in err
    (tmp_path / "s2.fasta").write_text(">a\nMK\n")
    code, _, err = run_cli(
        "trace", tmp_path / "ca.npy", "-o", tmp_path / "o.txt", "--aa-prob", tmp_path / "aa.npy",
        "--sequence", tmp_path / "s2.fasta",
    )
    assert code == 2 and "suffix" in err
    code, out, err = run_cli(
        *base, "--aa-prob", tmp_path / "aa.npy", "--sequence", tmp_path / "s2.fasta", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["chains"][0]["n_residues"] == 2
    code, _, err = run_cli("compare-models", tmp_path / "absent.pdb", tmp_path / "o.pdb")
    assert code == 2 and err.startswith("error:")
    assert not (tmp_path / "o.txt").exists()
