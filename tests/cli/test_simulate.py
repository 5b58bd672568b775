"""``cryoset simulate …`` end to end at tiny sizes: outputs, truth files, provenance, errors."""

from __future__ import annotations

import json
from pathlib import Path

import gemmi
import numpy as np
import pandas as pd
import pytest

from cryoset.io.mrc import read_map, read_stack
from cryoset.io.star import read_star
from cryoset.provenance import read_provenance


def test_protein(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p.pdb"
    code, stdout, _ = run_cli("simulate", "protein", "--protein-length", 40, "--seed", 3, "--out", out, "--json")
    assert code == 0
    summary = json.loads(stdout)
    st = gemmi.read_structure(str(out))
    assert len(st[0][0]) == 40 == summary["residues"]
    assert gemmi.one_letter_code([r.name for r in st[0][0]]).upper() == summary["sequence"]
    assert read_provenance(out)["parameters"] == {"length": 40, "seed": 3}
    code2, stdout2, _ = run_cli("simulate", "protein", "--protein-length", 40, "--seed", 3,
                                "--out", tmp_path / "q.cif", "--json")
    assert code2 == 0 and json.loads(stdout2)["sequence"] == summary["sequence"]


def test_micrographs(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "mics"
    code, stdout, _ = run_cli("simulate", "micrographs", "--micrographs", 2, "--size-px", 192, "--pixel-size-a", 2.0,
                              "--particles-per-micrograph", 4, "--protein-length", 50, "--defocus-min-a", 10000,
                              "--defocus-max-a", 20000, "--dose-e-per-a2", 30, "--seed", 1, "--out", out, "--json")
    assert code == 0, stdout
    summary = json.loads(stdout)
    assert summary["micrographs"] == 2 and summary["particles"] == 8
    img = read_stack(out / "micrographs" / "micrograph_0001.mrc", mmap=False)
    assert np.asarray(img.data).shape == (1, 192, 192) and img.pixel_size_a == pytest.approx(2.0)
    picks = pd.read_csv(out / "truth_picks.csv")
    assert set(picks.micrograph) == {"micrograph_0000.mrc", "micrograph_0001.mrc"}
    coords = read_star(out / "coords" / "micrograph_0000.star")
    table = next(iter(coords.values()))
    mine = picks[picks.micrograph == "micrograph_0000.mrc"]
    assert np.allclose(table["rlnCoordinateX"], mine.x_px) and np.allclose(table["rlnAngleTilt"], mine.tilt_deg)
    assert np.allclose(table["rlnDefocusU"], mine.defocus_u_a)
    mics = read_star(out / "micrographs_ctf.star")
    assert list(mics["micrographs"]["rlnMicrographName"]) == [
        "micrographs/micrograph_0000.mrc", "micrographs/micrograph_0001.mrc"]
    d = mics["micrographs"]["rlnDefocusU"]
    assert np.all((d >= 1e4 - 300) & (d <= 2e4 + 300))
    assert (out / "model.pdb").is_file()
    assert read_provenance(out)["parameters"]["seed"] == 1
    # same seed, same data (micrograph k's seed does not depend on --micrographs)
    code, _, _ = run_cli("simulate", "micrographs", "--micrographs", 1, "--size-px", 192, "--pixel-size-a", 2.0,
                         "--particles-per-micrograph", 4, "--protein-length", 50, "--defocus-min-a", 10000,
                         "--defocus-max-a", 20000, "--dose-e-per-a2", 30, "--seed", 1, "--out", tmp_path / "again")
    again = read_stack(tmp_path / "again" / "micrographs" / "micrograph_0000.mrc", mmap=False)
    first = read_stack(out / "micrographs" / "micrograph_0000.mrc", mmap=False)
    assert np.array_equal(np.asarray(again.data), np.asarray(first.data))


def test_particles_and_map_from_model_file(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, _ = run_cli("simulate", "protein", "--protein-length", 45, "--out", tmp_path / "m.pdb")
    assert code == 0
    out = tmp_path / "parts"
    code, stdout, _ = run_cli("simulate", "particles", "--particles", 20, "--box-px", 40, "--pixel-size-a", 2.5,
                              "--junk-fraction", 0.3, "--model", tmp_path / "m.pdb", "--out", out, "--json")
    assert code == 0, stdout
    summary = json.loads(stdout)
    assert summary["kinds"] == {"particle": 14, "noise": 2, "ice": 2, "pair": 2}
    assert read_stack(out / "particles.mrcs", mmap=False).data.shape == (20, 40, 40)
    truth = pd.read_csv(out / "truth.csv")
    assert len(truth) == 20 and "kind" in truth.columns
    prov = read_provenance(out)
    assert prov["inputs"][0]["path"].endswith("m.pdb")
    code, stdout, _ = run_cli("simulate", "map", "--model", tmp_path / "m.pdb", "--resolution-a", 6,
                              "--voxel-size-a", 2.0, "--out", tmp_path / "map.mrc", "--json")
    assert code == 0
    m = read_map(tmp_path / "map.mrc")
    box = json.loads(stdout)["box_px"]
    assert m.data.shape == (box,) * 3 and m.data.max() > 0
    # the model's centroid is at the box centre
    xx = np.indices(m.data.shape)[2]
    w = np.clip(m.data, 0, None)
    assert (w * xx).sum() / w.sum() == pytest.approx(box // 2, abs=1.5)


def test_bad_input(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_cli("simulate", "particles", "--particles", 5, "--box-px", 33, "--out", tmp_path / "x")
    assert code == 2 and "box" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("simulate", "micrographs", "--model", tmp_path / "missing.pdb", "--out", tmp_path / "y")
    assert code == 2 and "missing.pdb" in err
    code, _, err = run_cli("simulate", "protein", "--protein-length", 2, "--out", tmp_path / "p.pdb")
    assert code == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.relion
def test_relion_reads_the_truth_star_files(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    from cryoset.testing import require_program

    exe = require_program("relion_star_printtable")
    out = tmp_path / "m"
    code, _, _ = run_cli("simulate", "micrographs", "--size-px", 128, "--particles-per-micrograph", 2,
                         "--protein-length", 30, "--out", out)
    assert code == 0
    res = subprocess.run([exe, str(out / "micrographs_ctf.star"), "data_micrographs",
                          "rlnMicrographName", "rlnDefocusU"], capture_output=True, text=True,
                         check=True, timeout=60)
    name, defocus = res.stdout.split()
    star = read_star(out / "micrographs_ctf.star")["micrographs"]
    assert name == "micrographs/micrograph_0000.mrc"
    assert float(defocus) == pytest.approx(float(star["rlnDefocusU"].iloc[0]))
    res = subprocess.run([exe, str(out / "coords" / "micrograph_0000.star"), "data_",
                          "rlnCoordinateX", "rlnAngleTilt"], capture_output=True, text=True,
                         check=True, timeout=60)
    values = np.array(res.stdout.split(), dtype=float).reshape(-1, 2)
    picks = pd.read_csv(out / "truth_picks.csv")
    assert np.allclose(values[:, 0], picks.x_px) and np.allclose(values[:, 1], picks.tilt_deg)


@pytest.mark.parametrize(("command", "argv", "option"), [
    ("micrographs", ["--voltage-kv", "0"], "--voltage-kv"),
    ("particles", ["--voltage-kv", "nan"], "--voltage-kv"),
    ("micrographs", ["--voltage-kv", "-300"], "--voltage-kv"),
])
def test_impossible_optics_are_one_line(run_cli, tmp_path: Path, command: str, argv: list[str],  # type: ignore[no-untyped-def]
                                        option: str) -> None:
    """Issue #16 review: ``--voltage-kv 0`` ended in a traceback from deep inside the CTF model."""
    code, out, err = run_cli("simulate", command, "--out", tmp_path / "out", *argv)
    assert code == 2 and "Traceback" not in out + err
    assert err.strip().startswith(f"error: {option}: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
