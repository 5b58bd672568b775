"""Simulated micrographs: scene layout, local defocus, image formation against an independent
forward model, physically sensible contrast, shot-noise statistics, detector MTF."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import scipy.fft
from scipy import ndimage

from cryoset.ctf.model import CTFParams, ctf_2d
from cryoset.errors import InputError
from cryoset.geometry import euler_to_matrix
from cryoset.simulate import micrograph as M
from cryoset.simulate import noise
from cryoset.simulate.potential import project_atoms
from cryoset.simulate.protein import build_protein


@pytest.fixture(scope="module")
def atoms() -> M.AtomSet:
    return M.atoms_from_protein(build_protein(60, seed=3)).centred()


QUIET = M.MicrographSettings(
    shape_px=(256, 256), pixel_size_a=1.5, n_particles=4, defocus_range_a=(8000.0, 12000.0),
    astigmatism_a=0.0, dose_e_per_a2=40.0, ice_thickness_a=0.0, ice_variation=0.0,
    carbon_fraction=0.0, n_contaminations=0, solvent_phase_std_rad=0.0, mtf=False)


def test_place_particles_non_overlapping(rng: np.random.Generator) -> None:
    forbidden = np.zeros((400, 600), dtype=bool)
    forbidden[:, :150] = True
    xy = M.place_particles((400, 600), 25, 40.0, rng, forbidden=forbidden)
    assert xy.shape == (25, 2)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(25) * 1e9
    assert d.min() >= 40.0
    assert np.all(xy[:, 0] >= 150 + 20) and np.all(xy[:, 0] <= 599 - 20)
    assert np.all(xy[:, 1] >= 20) and np.all(xy[:, 1] <= 399 - 20)
    with pytest.raises(InputError):
        M.place_particles((100, 100), 50, 40.0, rng)


def test_local_defocus_is_a_tilted_plane() -> None:
    x = np.array([0.0, 99.0, 49.5, 49.5])
    y = np.array([49.5, 49.5, 0.0, 99.0])
    flat = M.local_defocus_a(x, y, (100, 100), 15000.0, 2.0, 0.0, 0.0)
    assert np.all(flat == 15000.0)
    tilted = M.local_defocus_a(x, y, (100, 100), 15000.0, 2.0, 20.0, 0.0)
    # axis along x: defocus changes along y only, by tan(20°) per Å
    assert tilted[0] == pytest.approx(15000.0) and tilted[1] == pytest.approx(15000.0)
    assert tilted[3] - tilted[2] == pytest.approx(math.tan(math.radians(20)) * 99 * 2.0)


def test_add_particles_position_convention(atoms: M.AtomSet) -> None:
    """A particle at (x_px, y_px) has its projected centre at image[y, x] (pixel centres on integers)."""
    one = M.AtomSet(np.zeros((1, 3)), np.array(["C"]), np.array([80.0]))
    tmpl = M.project_structure(one, np.eye(3)[None], 32, 1.0)
    # Cs = 0 and defocus 0: the CTF is the constant A, so the box is A·(shifted projection)
    ctf = CTFParams(0.0, 0.0, 0.0, 300.0, 0.0, 0.1, 0.0, 0.0)
    for x, y in [(40.0, 50.0), (60.3, 31.75)]:
        sig = np.zeros((96, 96), dtype=np.float32)
        M.add_particles(sig, tmpl, np.array([[x, y]]), [ctf], 1.0, 64, 1.0)
        yy, xx = np.mgrid[0:96, 0:96]
        assert sig.sum() == pytest.approx(0.1 * tmpl.sum(), rel=1e-4)
        assert (sig * xx).sum() / sig.sum() == pytest.approx(x, abs=1e-3)
        assert (sig * yy).sum() / sig.sum() == pytest.approx(y, abs=1e-3)


def test_overlapping_particles_sum_identically_with_any_number_of_workers(rng: np.random.Generator) -> None:
    """Particles are rendered in threads but added in index order: the same bits for 1, 2, 3
    workers (crowded overlaps, so a different summation order would change low bits)."""
    n = 60
    projections = rng.standard_normal((n, 24, 24)).astype(np.float32)
    xy = rng.uniform(10, 50, (n, 2))  # 60 particles in a 60 × 60 field: heavy overlap
    ctfs = [CTFParams(float(d), float(d) * 0.95, 30.0, 300.0, 2.7, 0.1, 0.0, 0.0)
            for d in rng.uniform(8000, 20000, n)]
    results = []
    for workers in (1, 2, 3):
        sig = np.zeros((60, 60), dtype=np.float32)
        M.add_particles(sig, projections, xy, ctfs, 1.5, 48, -2.0, workers=workers)
        results.append(sig)
    assert np.abs(results[0]).max() > 0
    assert all(r.tobytes() == results[0].tobytes() for r in results[1:])


def test_micrograph_matches_forward_model_from_truth(atoms: M.AtomSet) -> None:
    """Rebuild each particle from the truth table alone (pose, position, local defocus) with
    ``project_atoms`` + ``ctf_2d`` and compare with the noise-free micrograph contrast."""
    settings = replace(QUIET, dose_e_per_a2=1e6, tilt_deg=30.0, tilt_axis_deg=20.0)
    mic = M.simulate_micrograph(atoms, settings, seed=4)
    picks = mic.picks
    assert len(picks) == 4
    assert list(picks.columns[:5]) == ["micrograph", "x_px", "y_px", "score", "diameter_px"]
    expected_df = M.local_defocus_a(picks.x_px.to_numpy(), picks.y_px.to_numpy(), (256, 256),
                                    mic.ctf.defocus_u_a, 1.5, 30.0, 20.0)
    assert np.allclose(picks.defocus_u_a, expected_df)
    assert picks.defocus_u_a.nunique() == 4  # the gradient gives every particle its own defocus
    contrast = mic.image / mic.expected_counts_per_pixel - 1.0  # = −2σ Σ CTF⊛V (+ shot noise)
    sigma = M.interaction_constant_rad_per_v_a(300.0)
    b = 64
    for row in picks.itertuples():
        ix, iy = round(row.x_px), round(row.y_px)
        rot = euler_to_matrix(row.rot_deg, row.tilt_deg, row.psi_deg)
        proj = project_atoms(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, rot, (b, b), 1.5,
                             center_xyz_a=np.zeros(3),
                             shift_xy_a=((row.x_px - ix) * 1.5, (row.y_px - iy) * 1.5))
        ctf = CTFParams(row.defocus_u_a, row.defocus_v_a, row.defocus_angle_deg, 300.0, 2.7, 0.07)
        model = -2 * sigma * scipy.fft.irfft2(scipy.fft.rfft2(proj) * ctf_2d(ctf, (b, b), 1.5, rfft=True), s=(b, b))
        y0, x0 = iy - b // 2, ix - b // 2
        ys, xs = slice(max(y0, 0), min(y0 + b, 256)), slice(max(x0, 0), min(x0 + b, 256))
        got = contrast[ys, xs]
        ref = model[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        c = ref.shape[0] // 2, ref.shape[1] // 2
        core = (slice(max(c[0] - 16, 0), c[0] + 16), slice(max(c[1] - 16, 0), c[1] + 16))
        assert np.corrcoef(got[core].ravel(), ref[core].ravel())[0, 1] > 0.9


def test_particles_are_dark_on_light_background(atoms: M.AtomSet) -> None:
    settings = replace(QUIET, shape_px=(384, 384), n_particles=12, dose_e_per_a2=100.0,
                       ice_thickness_a=300.0, solvent_phase_std_rad=0.05, mtf=True,
                       defocus_range_a=(15000.0, 25000.0))
    mic = M.simulate_micrograph(atoms, settings, seed=1)
    low = ndimage.gaussian_filter(mic.image.astype(np.float64), 4.0)
    yy, xx = np.mgrid[0:384, 0:384]
    inside = np.zeros((384, 384), dtype=bool)
    for row in mic.picks.itertuples():
        inside |= (xx - row.x_px) ** 2 + (yy - row.y_px) ** 2 < (row.diameter_px / 3) ** 2
    assert low[inside].mean() < low[~inside].mean() - 0.2  # darker by > 0.2 e/px (noise ~0.01)


def test_shot_noise_and_transmission(atoms: M.AtomSet) -> None:
    """No particles, no structure: counts are Poisson with mean D p² exp(−t/Λ)."""
    settings = replace(QUIET, n_particles=0, ice_thickness_a=350.0, dose_e_per_a2=30.0)
    img = M.simulate_micrograph(atoms, settings, seed=2).image
    mean = 30.0 * 1.5**2 * math.exp(-350.0 / M.MFP_ICE_300KV_A)
    assert img.mean() == pytest.approx(mean, rel=0.005)
    assert img.var() == pytest.approx(mean, rel=0.03)  # Poisson: variance = mean
    assert np.all(img == np.round(img))


def test_scene_features_and_reproducibility(atoms: M.AtomSet) -> None:
    settings = replace(QUIET, shape_px=(512, 512), n_particles=6, carbon_fraction=0.25,
                       n_contaminations=2, ice_thickness_a=300.0, ice_variation=0.1, mtf=True,
                       solvent_phase_std_rad=0.05)
    a = M.simulate_micrograph(atoms, settings, seed=9)
    b = M.simulate_micrograph(atoms, settings, seed=9)
    assert np.array_equal(a.image, b.image) and a.picks.equals(b.picks)
    assert a.image.dtype == np.float32 and a.image.shape == (512, 512)
    assert 0.2 < a.carbon_mask.mean() < 0.3
    assert a.contamination_mask.any()
    # carbon and contamination absorb: darker than the open ice; no particle on them
    free = ~a.carbon_mask & ~a.contamination_mask
    assert a.image[a.carbon_mask].mean() < a.image[free].mean()
    assert a.image[a.contamination_mask].mean() < a.image[a.carbon_mask].mean()
    for row in a.picks.itertuples():
        assert not a.carbon_mask[round(row.y_px), round(row.x_px)]
    c = M.simulate_micrograph(atoms, settings, seed=10)
    assert not np.array_equal(a.image, c.image)


def test_detector_mtf(rng: np.random.Generator) -> None:
    mtf = noise.detector_mtf((128, 128))
    assert mtf.shape == (128, 65) and mtf[0, 0] == pytest.approx(1.0)
    radial = mtf[0, :]
    assert np.all(np.diff(radial) < 0)
    assert 0.2 < radial[-1] < 0.5
    white = rng.standard_normal((128, 128)).astype(np.float32)
    out = noise.apply_transfer(white, mtf)
    full = np.concatenate([mtf, mtf[:, 1:-1][:, ::-1]], axis=1)  # approximate full-plane mean
    assert out.var() == pytest.approx(white.var() * float(np.mean(full**2)), rel=0.05)


def test_smooth_random_field(rng: np.random.Generator) -> None:
    f = noise.smooth_random_field((300, 200), 20.0, rng)
    assert f.shape == (300, 200)
    assert abs(float(f.mean())) < 0.3 and 0.7 < float(f.std()) < 1.3
    # smooth: neighbouring pixels are strongly correlated
    assert np.corrcoef(f[:, :-1].ravel(), f[:, 1:].ravel())[0, 1] > 0.95


def test_bad_settings(atoms: M.AtomSet) -> None:
    with pytest.raises(InputError):
        M.simulate_micrograph(atoms, replace(QUIET, dose_e_per_a2=0.0), seed=0)
    with pytest.raises(InputError):
        M.simulate_micrograph(atoms, replace(QUIET, defocus_range_a=(2.0, 1.0)), seed=0)


@pytest.mark.parametrize("shape", [(64, 64), (50, 36)])
def test_ctf_grid_equals_ctf_2d(shape: tuple[int, int]) -> None:
    """The fast float32 CTF used per particle is cryoset.ctf.model.ctf_2d (sign, astigmatism)."""
    params = CTFParams(21000.0, 18500.0, 33.0, 300.0, 2.7, 0.07, 20.0, 40.0)
    grid = M.CTFGrid(shape, 1.3, 300.0, 2.7, 0.07)
    ref = ctf_2d(params, shape, 1.3, rfft=True)
    assert grid.s2.shape == ref.shape
    assert np.abs(grid(params) - ref).max() < 2e-4
    mtf = noise.detector_mtf(shape)
    with_mtf = M.CTFGrid(shape, 1.3, 300.0, 2.7, 0.07, mtf)(params)
    assert np.abs(with_mtf - ref * mtf).max() < 2e-4
