"""``cryoset classify2d`` end to end: simulated STAR, particle store, real EMPIAR/RELION stacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryoset.io.mrc import read_stack
from cryoset.io.particles import read_particles
from cryoset.io.star import read_star
from cryoset.testing import require_shared_data


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.particles import ParticleSettings, simulate_particles
    from cryoset.simulate.protein import build_protein
    from cryoset.workflows.simulate import write_particle_set

    out = tmp_path_factory.mktemp("sim")
    atoms = atoms_from_protein(build_protein(120, 2))
    sim = simulate_particles(atoms, ParticleSettings(n=60, box_px=32, pixel_size_a=2.5, snr=0.2,
                                                     junk_fraction=0.2, max_shift_a=3.0), seed=1)
    write_particle_set(out, sim)
    return out


def test_classify2d_writes_relion_star_averages_gallery_and_stats(run_cli, sim_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "c2d"
    code, stdout, stderr = run_cli("classify2d", sim_dir / "particles.star", "--out", out, "-K", "3",
                                   "--n-iter", "3", "--psi-step-deg", "20", "--diameter-a", "60", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["particles"] == 60 and summary["box"] == 32
    star = read_star(out / "particles.star")
    labels = set(star["particles"].columns)
    for label in ("rlnClassNumber", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
                  "rlnMaxValueProbDistribution", "rlnCryosetPoseEss", "rlnCryosetClassEca", "rlnImageName"):
        assert label in labels, label
    table = read_particles(out / "particles.star").table
    assert set(table["class_number"]) <= {1, 2, 3}
    assert (out / table["image_path"].iloc[0]).resolve() == (sim_dir / "particles.mrcs").resolve()
    assert (table["max_prob"] <= 1.0).all() and (table["rlnCryosetPoseEss"] >= 1.0 - 1e-6).all()
    # windows recentred on each image's previous offset: the total shift is capped at box/4 (8 px)
    assert np.hypot(table["shift_x_a"], table["shift_y_a"]).max() <= 32 / 4 * 2.5 + 1e-6
    averages = read_stack(out / "class_averages.mrcs")
    assert averages.shape == (3, 32, 32) and averages.pixel_size_a == pytest.approx(2.5, rel=1e-4)
    assert (out / "class_averages.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "provenance.json").exists() and (out / "classes.csv").exists()
    kept = read_particles(out / "particles_kept.star").table
    assert len(kept) == summary["kept"] == int(table["rlnCryosetKept"].sum())
    pops = [row["population"] for row in summary["class_table"]]
    assert sum(pops) == 60
    import pandas as pd

    classes = pd.read_csv(out / "classes.csv")
    assert set(classes["verdict"]) <= {"good", "small", "low_power", "high_power", "resolution"}
    assert (classes["good"] == (classes["verdict"] == "good")).all()
    assert summary["good_classes"] == [int(c) for c in classes["class_number"][classes["good"]]]
    # CryoVirusDB's Table 3 statistic: population-weighted mean class resolution
    finite = classes[np.isfinite(classes["resolution_a"]) & (classes["population"] > 0)]
    expected = float((finite["resolution_a"] * finite["population"]).sum() / finite["population"].sum())
    assert summary["weighted_class_resolution_a"]["all"] == pytest.approx(expected)


def test_classify2d_from_store_query(run_cli, sim_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cryoset.store.dataset import ParticleStore
    from cryoset.store.exports import import_relion

    store = ParticleStore.create(tmp_path / "store")
    import_relion(sim_dir / "particles.star", store, "sim")
    out = tmp_path / "c2d"
    code, stdout, stderr = run_cli("classify2d", "--store", tmp_path / "store", "--query",
                                   "SELECT * FROM particles WHERE particle_index < 40", "--out", out,
                                   "-K", "2", "--n-iter", "2", "--psi-step-deg", "30", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["particles"] == 40
    assert read_stack(out / "particles.mrcs").shape == (40, 32, 32)
    assert len(read_particles(out / "particles.star").table) == 40


def test_bad_arguments_exit_2(run_cli, sim_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_cli("classify2d", "--out", tmp_path / "x")
    assert code == 2 and "STAR file or --store" in err
    code, _, err = run_cli("classify2d", sim_dir / "particles.star", "--out", tmp_path / "x", "-K", "0")
    assert code == 2 and err.startswith("error:")
    code, _, err = run_cli("classify2d", tmp_path / "missing.star", "--out", tmp_path / "x")
    assert code == 2
    code, _, err = run_cli("classify2d", sim_dir / "particles.star", "--out", tmp_path / "x",
                           "--power-fraction", "0.5", "--max-power-ratio", "0.4")
    assert code == 2 and "--max-power-ratio" in err
    code, _, err = run_cli("classify2d", sim_dir / "particles.star", "--out", tmp_path / "x", "--max-offset-px", "-1")
    assert code == 2 and "--max-offset-px" in err


@pytest.mark.shared_data
@pytest.mark.parametrize("star,extra", [("empiar_10076_7.star", []), ("relion31.star", ["--permissive"])])
def test_real_particles_classify(run_cli, tmp_path: Path, star: str, extra: list[str]) -> None:  # type: ignore[no-untyped-def]
    path = require_shared_data("star", "relion", star)
    out = tmp_path / "c2d"
    code, stdout, stderr = run_cli("classify2d", path, "--out", out, "-K", "2", "--n-iter", "2",
                                   "--psi-step-deg", "30", "--box-px", "64", "--json", *extra)
    assert code == 0, stderr
    summary = json.loads(stdout)
    n = len(read_particles(path).table)
    assert summary["particles"] == n
    original = read_particles(path).table["pixel_size_a"].iloc[0]
    b0 = read_stack(path.parent / read_particles(path).table["image_path"].iloc[0], permissive=True).shape[-1]
    assert summary["pixel_size_a"] == pytest.approx(original * b0 / 64)
    table = read_particles(out / "particles.star").table
    assert np.isfinite(table["psi_deg"]).all() and len(table) == n


def test_fixed_offset_window_option(run_cli, sim_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``--fixed-offset-window`` restores the search |t| ≤ --offset-range-px around the box centre."""
    out = tmp_path / "fixed"
    code, _, stderr = run_cli("classify2d", sim_dir / "particles.star", "--out", out, "-K", "2", "--n-iter", "2",
                              "--psi-step-deg", "30", "--diameter-a", "60", "--offset-range-px", "2",
                              "--fixed-offset-window", "--no-recover")
    assert code == 0, stderr
    table = read_particles(out / "particles.star").table
    assert np.hypot(table["shift_x_a"], table["shift_y_a"]).max() <= 2 * 2.5 + 1e-6
    assert '"offset_recentre": false' in (out / "provenance.json").read_text()
