"""Projection matching (cryoset.recon.align): grids, noise-free pose recovery, CTF, symmetry."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from cryoset.geometry import angular_distance_deg, random_rotations
from cryoset.recon.align import local_grid, search_poses, shift_grid, so3_grid
from cryoset.recon.symmetry import symmetry_operators
from cryoset.simulate.projection import project_fourier

BOX = 24
PIXEL_A = 2.0


def blob_volume(box: int, seed: int = 1, n_blobs: int = 10) -> np.ndarray:
    """An asymmetric volume: seeded Gaussian blobs inside radius 0.28 box."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:box, :box, :box] - box // 2
    vol = np.zeros((box, box, box), np.float32)
    for _ in range(n_blobs):
        c = rng.uniform(-1, 1, 3)
        c = c / np.linalg.norm(c) * rng.uniform(0, box * 0.28)
        s, a = rng.uniform(1.0, 2.0), rng.uniform(0.5, 1.0)
        vol += a * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
    return vol


def shifted_projections(vol: np.ndarray, rots: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """Projections whose particle centre sits at ``-shift`` (RELION 3.1 origin convention)."""
    b = vol.shape[0]
    imgs = project_fourier(vol, rots)
    f = scipy.fft.rfft2(np.fft.ifftshift(imgs, axes=(-2, -1)))
    ky = np.fft.fftfreq(b)[:, None]
    kx = np.fft.rfftfreq(b)[None, :]
    f *= np.exp(2j * np.pi * (kx * shifts_px[:, 0, None, None] + ky * shifts_px[:, 1, None, None]))
    return np.fft.fftshift(scipy.fft.irfft2(f, s=(b, b)), axes=(-2, -1)).astype(np.float32)


def refine_locally(imgs: np.ndarray, vol: np.ndarray, res, **kw):  # type: ignore[no-untyped-def]
    step, sr = 7.5, 1.0
    for _ in range(4):
        step, sr = step / 2, sr / 2
        res = search_poses(imgs, vol, PIXEL_A, max_resolution_a=4.5, angular_step_deg=step,
                           shift_range_px=2 * sr, shift_step_px=sr, prior_rotations=res.rotations,
                           prior_shifts_px=res.shifts_px, local_range_deg=2 * step, **kw)
    return res


def test_so3_grid_covers_so3_and_the_asymmetric_unit() -> None:
    rng = np.random.default_rng(0)
    probe = random_rotations(300, rng)
    grid = so3_grid(15.0)
    assert grid.shape == (183 * 24, 3, 3)  # round(4π / (15°)²) directions × 24 in-plane angles
    assert np.allclose(grid @ np.swapaxes(grid, 1, 2), np.eye(3), atol=1e-12)
    d = angular_distance_deg(probe[:, None], grid[None]).min(axis=1)
    assert d.max() < 15.0 and np.median(d) < 8.0
    for sym, order in (("C2", 2), ("D2", 4), ("T", 12), ("O", 24), ("I", 60)):
        g = so3_grid(15.0, sym)
        assert abs(g.shape[0] * order / grid.shape[0] - 1) < 0.05
        ops = symmetry_operators(sym)
        mates = np.stack([probe @ op for op in ops], axis=1)  # (300, s, 3, 3)
        dm = angular_distance_deg(mates[:, :, None], g[None, None]).min(axis=(1, 2))
        assert dm.max() < 15.0
        # no two grid points are symmetry mates
        tr = np.einsum("mab,sba->ms", g, ops)
        assert (tr[:, 0] >= tr.max(axis=1) - 1e-9).all()


def test_local_and_shift_grids() -> None:
    centre = random_rotations(1, np.random.default_rng(3))[0]
    g = local_grid(centre, 3.0, 1.0)
    assert np.allclose(g[0], centre)
    d = angular_distance_deg(g, centre)
    assert d.max() <= 3.0 + 1e-9 and g.shape[0] == 123
    many = local_grid(np.stack([centre, np.eye(3)]), 3.0, 1.0)
    assert many.shape == (2, 123, 3, 3) and np.allclose(many[0], g)
    s = shift_grid(1.0, 0.5)
    assert np.array_equal(s[0], [0.0, 0.0]) and s.shape == (13, 2)
    assert np.hypot(s[:, 0], s[:, 1]).max() <= 1.0


def test_noise_free_poses_and_shifts_are_recovered() -> None:
    rng = np.random.default_rng(0)
    vol = blob_volume(BOX)
    rots = random_rotations(40, rng)
    shifts = rng.uniform(-2, 2, (40, 2))
    imgs = shifted_projections(vol, rots, shifts)
    res = search_poses(imgs, vol, PIXEL_A, max_resolution_a=8.0, angular_step_deg=7.5,
                       shift_range_px=3.0, shift_step_px=1.0)
    err = angular_distance_deg(res.rotations, rots)
    assert np.median(err) < 6.0  # the 7.5° grid's nearest point
    assert res.rotations.shape == (40, 3, 3) and res.shifts_px.shape == (40, 2)
    assert ((res.max_probability > 0) & (res.max_probability <= 1)).all()
    res = refine_locally(imgs, vol, res)
    err = angular_distance_deg(res.rotations, rots)
    assert np.median(err) < 1.0
    assert np.median(np.hypot(*(res.shifts_px - shifts).T)) < 0.1
    assert np.all(np.isfinite(res.angular_error_deg)) and np.median(res.angular_error_deg) < 2.0


def test_truth_scores_at_least_as_well_as_a_wrong_pose_and_posterior_is_consistent() -> None:
    rng = np.random.default_rng(5)
    vol = blob_volume(BOX)
    rots = random_rotations(8, rng)
    imgs = shifted_projections(vol, rots, np.zeros((8, 2)))
    kw = dict(max_resolution_a=5.0, shift_range_px=0.0, shift_step_px=1.0, local_range_deg=0.0)
    at_truth = search_poses(imgs, vol, PIXEL_A, prior_rotations=rots, **kw)  # type: ignore[arg-type]
    wrong = random_rotations(8, rng)
    at_wrong = search_poses(imgs, vol, PIXEL_A, prior_rotations=wrong, **kw)  # type: ignore[arg-type]
    assert (at_truth.log_likelihood > at_wrong.log_likelihood).all()
    assert np.allclose(at_truth.max_probability, 1.0) and np.allclose(at_truth.angular_error_deg, 0.0, atol=1e-4)


@pytest.mark.parametrize("flipped", [False, True])
def test_ctf_modulated_and_phase_flipped_particles(flipped: bool) -> None:
    from cryoset.ctf.model import ctf_2d_batch

    rng = np.random.default_rng(2)
    n = 24
    vol = blob_volume(BOX)
    rots = random_rotations(n, rng)
    imgs = shifted_projections(vol, rots, np.zeros((n, 2)))
    defocus = rng.uniform(8000, 16000, n)
    ctf = ctf_2d_batch(defocus, defocus, np.zeros(n), (BOX, BOX), PIXEL_A, rfft=True)
    if flipped:
        ctf = np.abs(ctf)
    f = scipy.fft.rfft2(np.fft.ifftshift(imgs, axes=(-2, -1))) * ctf
    imgs = np.fft.fftshift(scipy.fft.irfft2(f, s=(BOX, BOX)), axes=(-2, -1)).astype(np.float32)
    params = {"defocus_u_a": defocus, "defocus_v_a": defocus, "defocus_angle_deg": np.zeros(n),
              "phase_shift_deg": np.zeros(n), "bfactor_a2": np.zeros(n), "voltage_kv": np.full(n, 300.0),
              "cs_mm": np.full(n, 2.7), "amplitude_contrast": np.full(n, 0.1)}
    res = search_poses(imgs, vol, PIXEL_A, ctf_params=params, max_resolution_a=8.0, angular_step_deg=7.5,
                       shift_range_px=1.0, phase_flipped=flipped)
    res = refine_locally(imgs, vol, res, ctf_params=params, phase_flipped=flipped)
    assert np.median(angular_distance_deg(res.rotations, rots)) < 1.0
    if flipped:  # the per-particle flag says the same as the argument
        flagged = refine_locally(imgs, vol, res, ctf_params={**params, "phase_flipped": np.ones(n)})
        assert np.median(angular_distance_deg(flagged.rotations, rots)) < 1.0


def test_symmetric_reference_poses_match_up_to_a_symmetry_mate() -> None:
    rng = np.random.default_rng(4)
    half = blob_volume(BOX, seed=7, n_blobs=6)
    ops = symmetry_operators("C2")
    vol = half + np.rot90(half, 2, axes=(1, 2))  # C2 about z: (x, y) -> (-x, -y)
    n = 24
    rots = random_rotations(n, rng)
    imgs = shifted_projections(vol, rots, np.zeros((n, 2)))
    res = search_poses(imgs, vol, PIXEL_A, max_resolution_a=8.0, angular_step_deg=7.5,
                       shift_range_px=1.0, symmetry="C2")
    grid = so3_grid(7.5, "C2")
    tr = np.einsum("nab,sba->ns", res.rotations, ops)
    assert (tr[:, 0] >= tr.max(axis=1) - 1e-9).all()  # global poses lie in the asymmetric unit
    assert grid.shape[0] < so3_grid(7.5).shape[0] * 0.55
    res = refine_locally(imgs, vol, res, symmetry="C2")
    err = np.min([angular_distance_deg(res.rotations @ op, rots) for op in ops], axis=0)
    assert np.median(err) < 1.0
    assert np.median(res.angular_error_deg) < 2.0


def test_bad_arguments() -> None:
    vol = blob_volume(BOX)
    imgs = np.zeros((2, BOX, BOX), np.float32)
    with pytest.raises(ValueError, match="reference shape"):
        search_poses(imgs, vol[:-2, :-2, :-2], PIXEL_A, max_resolution_a=8.0)
    with pytest.raises(ValueError, match="prior_rotations"):
        search_poses(imgs, vol, PIXEL_A, max_resolution_a=8.0, local_range_deg=3.0)


def test_n_best_keeps_the_best_pose_fields_and_returns_normalised_top_poses() -> None:
    rng = np.random.default_rng(6)
    n = 12
    vol = blob_volume(BOX)
    rots = random_rotations(n, rng)
    imgs = shifted_projections(vol, rots, rng.uniform(-1, 1, (n, 2)))
    imgs += rng.normal(0, 2.0 * imgs.std(), imgs.shape).astype(np.float32)  # a broad posterior
    kw = dict(max_resolution_a=8.0, angular_step_deg=15.0, shift_range_px=1.0)
    hard = search_poses(imgs, vol, PIXEL_A, **kw)  # type: ignore[arg-type]
    one = search_poses(imgs, vol, PIXEL_A, n_best=1, **kw)  # type: ignore[arg-type]
    soft = search_poses(imgs, vol, PIXEL_A, n_best=5, **kw)  # type: ignore[arg-type]
    assert hard.top_rotations is None and hard.top_shifts_px is None and hard.top_weights is None
    for a in (one, soft):  # the best-pose fields do not depend on n_best
        for f in ("rotations", "shifts_px", "max_probability", "angular_error_deg", "log_likelihood"):
            assert np.array_equal(getattr(a, f), getattr(hard, f))
    assert soft.top_rotations is not None and soft.top_shifts_px is not None and soft.top_weights is not None
    assert soft.top_rotations.shape == (n, 5, 3, 3) and soft.top_shifts_px.shape == (n, 5, 2)
    w = soft.top_weights
    assert w.shape == (n, 5) and (w >= 0).all() and np.allclose(w.sum(axis=1), 1.0)
    assert (np.diff(w, axis=1) <= 1e-12).all()  # most probable first
    assert (w[:, 1] > 0).any()  # noisy data: more than one pose carries weight
    grid = so3_grid(15.0)
    d = angular_distance_deg(soft.top_rotations.reshape(-1, 1, 3, 3), grid[None]).min(axis=1)
    assert d.max() < 1e-4  # grid orientations (arccos precision), at shifts on the shift grid
    assert np.abs(np.abs(soft.top_shifts_px) - np.round(np.abs(soft.top_shifts_px))).max() < 1e-12
    # local search: the top orientation's renormalised marginal is at least the posterior of
    # the single best (orientation, shift) pair
    local = search_poses(imgs, vol, PIXEL_A, n_best=3, max_resolution_a=8.0, angular_step_deg=15.0,
                         shift_range_px=1.0, prior_rotations=hard.rotations, local_range_deg=15.0)
    assert local.top_weights is not None and local.top_rotations is not None
    assert np.allclose(local.top_weights.sum(axis=1), 1.0)
    assert (local.top_weights[:, 0] >= local.max_probability - 1e-9).all()
    assert angular_distance_deg(local.top_rotations, hard.rotations[:, None]).max() <= 15.0 + 1e-6
    with pytest.raises(ValueError, match="n_best"):
        search_poses(imgs, vol, PIXEL_A, n_best=0, **kw)  # type: ignore[arg-type]
