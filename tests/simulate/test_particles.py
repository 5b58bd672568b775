"""Simulated particle stacks: truth table reproduces every image, junk kinds, SNR control,
RELION 3.1 output read back (and reconstructed by RELION when installed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.fft

from cryoset.ctf.model import CTFParams, ctf_2d
from cryoset.errors import InputError
from cryoset.geometry import euler_to_matrix
from cryoset.simulate.micrograph import AtomSet, atoms_from_protein
from cryoset.simulate.particles import ParticleSettings, simulate_particles
from cryoset.simulate.potential import project_atoms
from cryoset.simulate.protein import build_protein
from cryoset.testing import require_program
from cryoset.workflows.simulate import write_particle_set


@pytest.fixture(scope="module")
def atoms() -> AtomSet:
    return atoms_from_protein(build_protein(70, seed=2)).centred()


def test_truth_table_reproduces_noise_free_images(atoms: AtomSet) -> None:
    s = ParticleSettings(n=12, box_px=48, pixel_size_a=2.0, snr=float("inf"), max_shift_a=4.0)
    res = simulate_particles(atoms, s, seed=3)
    t = res.table
    assert (t.kind == "particle").all() and t.image_index.tolist() == list(range(12))
    assert t.defocus_u_a.nunique() == 12  # per-particle defocus
    for row in t.itertuples():
        rot = euler_to_matrix(row.rot_deg, row.tilt_deg, row.psi_deg)
        # RELION 3.1: the particle centre sits at -rlnOriginX/YAngst
        proj = project_atoms(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, rot, (48, 48), 2.0,
                             center_xyz_a=np.zeros(3), shift_xy_a=(-row.shift_x_a, -row.shift_y_a))
        ctf = CTFParams(row.defocus_u_a, row.defocus_v_a, row.defocus_angle_deg, row.voltage_kv,
                        row.cs_mm, row.amplitude_contrast, row.phase_shift_deg, row.ctf_bfactor_a2)
        ref = scipy.fft.irfft2(scipy.fft.rfft2(proj) * ctf_2d(ctf, (48, 48), 2.0, rfft=True), s=(48, 48))
        img = res.images[row.image_index]
        assert np.abs(img - ref).max() <= 1e-4 * np.abs(ref).max()
        assert np.hypot(row.shift_x_a, row.shift_y_a) <= 4.0


def test_junk_kinds_and_snr(atoms: AtomSet) -> None:
    s = ParticleSettings(n=60, box_px=48, pixel_size_a=2.0, snr=0.5, junk_fraction=0.3)
    res = simulate_particles(atoms, s, seed=5)
    t = res.table
    counts = t.kind.value_counts().to_dict()
    assert counts == {"particle": 42, "noise": 6, "ice": 6, "pair": 6}
    junk_no_pose = t[t.kind.isin(["noise", "ice"])]
    assert junk_no_pose[["rot_deg", "tilt_deg", "psi_deg", "shift_x_a"]].isna().all().all()
    assert t[t.kind.isin(["particle", "pair"])].rot_deg.notna().all()
    imgs = res.images
    noise_only = imgs[(t.kind == "noise").to_numpy()]
    assert noise_only.std() == pytest.approx(1.0, rel=0.03)  # noise normalised to unit variance
    part = imgs[(t.kind == "particle").to_numpy()]
    # signal variance / noise variance = snr, so a particle image has variance 1 + snr
    assert float(np.mean(part.var(axis=(1, 2)))) == pytest.approx(1.5, rel=0.05)
    # pairs carry about twice the signal of single particles
    pair = imgs[(t.kind == "pair").to_numpy()]
    assert float(np.mean(pair.var(axis=(1, 2)))) > float(np.mean(part.var(axis=(1, 2))))


def test_reproducible(atoms: AtomSet) -> None:
    s = ParticleSettings(n=6, box_px=32, pixel_size_a=3.0, junk_fraction=0.5)
    a, b = simulate_particles(atoms, s, 1), simulate_particles(atoms, s, 1)
    assert np.array_equal(a.images, b.images) and a.table.equals(b.table)
    with pytest.raises(InputError):
        simulate_particles(atoms, ParticleSettings(box_px=33), 1)
    with pytest.raises(InputError):
        simulate_particles(atoms, ParticleSettings(junk_kinds=("dust",)), 1)


def test_written_star_and_stack_read_back(atoms: AtomSet, tmp_path: Path) -> None:
    from cryoset.io.mrc import read_stack
    from cryoset.io.particles import read_particles

    res = simulate_particles(atoms, ParticleSettings(n=10, box_px=32, pixel_size_a=3.0,
                                                     junk_fraction=0.2), seed=2)
    summary = write_particle_set(tmp_path, res)
    assert summary["images"] == 10
    stack = read_stack(tmp_path / "particles.mrcs", mmap=False)
    assert np.array_equal(np.asarray(stack.data), res.images)
    assert stack.pixel_size_a == pytest.approx(3.0)
    table = read_particles(tmp_path / "particles.star").table
    assert table.image_index.tolist() == list(range(10))
    for col in ("defocus_u_a", "defocus_v_a", "defocus_angle_deg", "voltage_kv"):
        assert np.allclose(table[col], res.table[col], rtol=1e-5)
    pose = res.table.kind.isin(["particle", "pair"]).to_numpy()
    for col in ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a"):
        assert np.allclose(table[col][pose], res.table[col][pose], atol=1e-5)
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert truth.kind.tolist() == res.table.kind.tolist()


@pytest.mark.relion
@pytest.mark.slow
def test_relion_reconstructs_the_structure(atoms: AtomSet, tmp_path: Path) -> None:
    """relion_reconstruct on our stack + STAR (poses, CTF) gives back the structure's map."""
    exe = require_program("relion_reconstruct")
    from cryoset.io.mrc import read_map
    from cryoset.simulate.density import simulate_map

    res = simulate_particles(atoms, ParticleSettings(n=400, box_px=40, pixel_size_a=2.0, snr=1.0,
                                                     defocus_range_a=(8000.0, 15000.0)), seed=8)
    write_particle_set(tmp_path, res)
    subprocess.run([exe, "--i", "particles.star", "--o", "rec.mrc", "--ctf", "--angpix", "2.0"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=300)
    rec = read_map(tmp_path / "rec.mrc").data
    ref = simulate_map(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, shape=(40, 40, 40),
                       voxel_size_a=2.0, origin_a=(-40.0, -40.0, -40.0), resolution_a=8.0)
    corr = np.corrcoef(rec.ravel(), ref.ravel())[0, 1]
    mirror = np.corrcoef(rec[::-1].ravel(), ref.ravel())[0, 1]
    assert corr > 0.7  # measured 0.81 (noise and CTF zeros at full resolution)
    assert mirror < 0.5  # the hand is right: poses follow RELION's convention
