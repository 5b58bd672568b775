"""Gold-standard refinement (cryoset.recon.refine) on noise-free projections of blob volumes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from cryoset.geometry import (
    angular_distance_deg,
    matrix_to_rotvec,
    random_rotations,
    rotvec_to_matrix,
)
from cryoset.recon.align import search_poses
from cryoset.recon.fsc import fourier_shell_correlation
from cryoset.recon.refine import RefineSettings, auto_refine, split_halves
from cryoset.recon.symmetry import symmetry_operators
from cryoset.simulate.projection import project_fourier

BOX = 24
PIXEL_A = 2.0


def blob_volume(box: int, seed: int = 1, n_blobs: int = 10, rotation: np.ndarray | None = None,
                symmetry: str = "C1") -> np.ndarray:
    """Seeded Gaussian blobs (centres rotated by ``rotation``, repeated by the point group)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:box, :box, :box] - box // 2
    vol = np.zeros((box, box, box), np.float32)
    q = np.eye(3) if rotation is None else rotation
    for _ in range(n_blobs):
        c = rng.uniform(-1, 1, 3)
        c = c / np.linalg.norm(c) * rng.uniform(0, box * 0.28)
        s, a = rng.uniform(1.0, 2.0), rng.uniform(0.5, 1.0)
        for op in symmetry_operators(symmetry):
            cx, cy, cz = q @ op @ c
            vol += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s * s))
    return vol


def shifted_projections(vol: np.ndarray, rots: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """Projections with the particle centre at ``-shift`` (RELION 3.1 origins)."""
    b = vol.shape[0]
    f = scipy.fft.rfft2(np.fft.ifftshift(project_fourier(vol, rots), axes=(-2, -1)))
    ky = np.fft.fftfreq(b)[:, None]
    kx = np.fft.rfftfreq(b)[None, :]
    f *= np.exp(2j * np.pi * (kx * shifts_px[:, 0, None, None] + ky * shifts_px[:, 1, None, None]))
    return np.fft.fftshift(scipy.fft.irfft2(f, s=(b, b)), axes=(-2, -1)).astype(np.float32)


def frame_rotation(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The map-frame rotation ``M`` with ``found ≈ truth @ M`` (median rotation vector)."""
    rel = np.einsum("nba,nbc->nac", truth, found)
    return rotvec_to_matrix(np.median(matrix_to_rotvec(rel), axis=0))


def per_half_errors(state, rots: np.ndarray, ops: np.ndarray) -> tuple[np.ndarray, float]:  # type: ignore[no-untyped-def]
    """Angular errors (closest symmetry mate) after removing each half's own frame rotation
    (each half is refined independently, so each fixes its own gauge), and the largest frame
    rotation (degrees)."""
    best = np.argmin([angular_distance_deg(state.rotations @ op, rots) for op in ops], axis=0)
    mates = np.einsum("nab,nbc->nac", state.rotations, ops[best])
    err = np.zeros(rots.shape[0])
    drift = 0.0
    for h in (1, 2):
        sel = state.subsets == h
        m = frame_rotation(mates[sel], rots[sel])
        err[sel] = angular_distance_deg(mates[sel], rots[sel] @ m)
        drift = max(drift, float(np.rad2deg(np.linalg.norm(matrix_to_rotvec(m)))))
    return err, drift


SETTINGS = RefineSettings(initial_lowpass_a=6.0, final_angular_step_deg=0.45, global_iterations=1,
                          max_iterations=16)


def test_noise_free_refinement_recovers_poses_and_map() -> None:
    rng = np.random.default_rng(0)
    vol = blob_volume(BOX)
    n = 200
    rots = random_rotations(n, rng)
    shifts = rng.uniform(-1.5, 1.5, (n, 2))
    imgs = shifted_projections(vol, rots, shifts)
    state = auto_refine(imgs, vol, PIXEL_A, settings=SETTINGS, seed=3)
    assert state.converged and state.iteration < SETTINGS.max_iterations
    assert state.history[0]["local"] is False and state.history[-1]["local"] is True
    assert state.history[-1]["angular_step_deg"] < 0.5
    assert np.array_equal(state.subsets, split_halves(n, 3))
    # each half's frame may rotate a little away from the starting reference's (its gauge is
    # fixed only by the first, coarse iterations)
    err, drift = per_half_errors(state, rots, np.eye(3)[None])
    assert drift < 3.0
    assert np.median(err) < 1.0
    m = frame_rotation(state.rotations, rots)
    assert np.median(np.hypot(*(state.shifts_px - shifts).T)) < 0.25
    # the map against the truth placed in the refined frame (blob centres moved by Mᵀ)
    truth = blob_volume(BOX, rotation=m.T)
    fsc = fourier_shell_correlation(state.volume, truth, voxel_size_a=PIXEL_A).correlation
    assert fsc[1:9].min() > 0.99  # to 5.3 Å (Nyquist 4 Å)
    assert state.resolution_a < 4.5


def test_rotated_reference_gives_truth_composed_with_the_rotation() -> None:
    """Reference V'(p) = V(Qᵀ p) (blob centres moved by Q): the poses are A Qᵀ."""
    rng = np.random.default_rng(1)
    q = rotvec_to_matrix(np.deg2rad([20.0, -35.0, 50.0]))
    vol = blob_volume(BOX)
    n = 40
    rots = random_rotations(n, rng)
    imgs = shifted_projections(vol, rots, np.zeros((n, 2)))
    ref = blob_volume(BOX, rotation=q)
    res = search_poses(imgs, ref, PIXEL_A, max_resolution_a=8.0, angular_step_deg=7.5, shift_range_px=1.0)
    step = 7.5
    for _ in range(4):
        step /= 2
        res = search_poses(imgs, ref, PIXEL_A, max_resolution_a=4.5, angular_step_deg=step,
                           shift_range_px=0.5, shift_step_px=0.25, prior_rotations=res.rotations,
                           prior_shifts_px=res.shifts_px, local_range_deg=2 * step)
    assert np.median(angular_distance_deg(res.rotations, rots @ q.T)) < 1.0
    assert np.median(angular_distance_deg(res.rotations, rots)) > 30.0


@pytest.mark.parametrize("n_best", [1, 8])
def test_halves_never_mix(n_best: int) -> None:
    """Replacing half 2's images by another volume's changes nothing in half 1: its poses, its
    noise spectrum and (with a fixed Wiener filter) its map are bit-identical. What both halves
    share is 1D and comes from the gold-standard FSC: the resolution limit of the next search and
    the default per-shell Wiener filter (RELION's τ²). Also with posterior-weighted
    back-projection (``n_best_poses`` 8): a half map holds only its own particles' poses."""
    rng = np.random.default_rng(2)
    vol_a, vol_b = blob_volume(BOX, seed=1), blob_volume(BOX, seed=9)
    n = 80
    rots = random_rotations(n, rng)
    subsets = np.where(np.arange(n) % 2 == 0, 1, 2)
    imgs_a = shifted_projections(vol_a, rots, np.zeros((n, 2)))
    imgs_mixed = np.where((subsets == 1)[:, None, None], imgs_a, shifted_projections(vol_b, rots, np.zeros((n, 2))))
    one = subsets == 1
    for wiener in (None, 0.01):
        settings = RefineSettings(initial_lowpass_a=8.0, global_iterations=1, max_iterations=1,
                                  wiener_constant=wiener, n_best_poses=n_best)
        runs = [auto_refine(imgs, vol_a, PIXEL_A, settings=settings, subsets=subsets)
                for imgs in (imgs_a, imgs_mixed)]
        assert np.array_equal(runs[0].rotations[one], runs[1].rotations[one])
        assert np.array_equal(runs[0].shifts_px[one], runs[1].shifts_px[one])
        assert np.array_equal(runs[0].max_probability[one], runs[1].max_probability[one])
        fsc = fourier_shell_correlation(runs[0].half2, runs[1].half2, voxel_size_a=PIXEL_A).correlation
        assert fsc[7:10].max() < 0.4  # half 2 followed its own (different) images
    assert np.array_equal(runs[0].half1, runs[1].half1)
    assert np.array_equal(runs[0].noise_power[0], runs[1].noise_power[0])


def test_symmetric_refinement_poses_and_map() -> None:
    rng = np.random.default_rng(4)
    for sym in ("C2", "D2"):
        vol = blob_volume(BOX, seed=7, n_blobs=4, symmetry=sym)
        n = 120
        rots = random_rotations(n, rng)
        imgs = shifted_projections(vol, rots, np.zeros((n, 2)))
        settings = RefineSettings(symmetry=sym, initial_lowpass_a=6.0, final_angular_step_deg=0.9,
                                  global_iterations=1, max_iterations=10)
        state = auto_refine(imgs, vol, PIXEL_A, settings=settings)
        ops = symmetry_operators(sym)
        # each pose matches the truth up to a symmetry mate (and the frame drift)
        err, drift = per_half_errors(state, rots, ops)
        assert np.median(err) < 1.5 and drift < 3.0, sym
        best = np.argmin([angular_distance_deg(state.rotations @ op, rots) for op in ops], axis=0)
        m = frame_rotation(np.einsum("nab,nbc->nac", state.rotations, ops[best]), rots)
        truth = blob_volume(BOX, seed=7, n_blobs=4, symmetry=sym, rotation=m.T)
        fsc = fourier_shell_correlation(state.volume, truth, voxel_size_a=PIXEL_A).correlation
        assert fsc[1:8].min() > 0.97, sym


def test_soft_iteration_back_projects_the_posterior_and_hard_its_best_pose() -> None:
    """One global iteration on noisy projections: with ``n_best_poses = 1`` the half maps are
    the reconstruction from the best poses; with 8 they are the posterior-weighted
    reconstruction over each particle's top poses (weights summing to 1 per particle), and
    the best poses written (STAR) are the same as the hard run's."""
    from cryoset.recon.align import search_poses
    from cryoset.recon.reconstruct import _Take, reconstruct
    from cryoset.recon.refine import initial_state, refine_iteration

    rng = np.random.default_rng(4)
    vol = blob_volume(BOX)
    n = 60
    rots = random_rotations(n, rng)
    imgs = shifted_projections(vol, rots, np.zeros((n, 2)))
    imgs = (imgs + rng.normal(0, 1.5 * imgs.std(), imgs.shape)).astype(np.float32)
    subsets = split_halves(n, 0)
    out = {}
    for k in (1, 8):
        s = RefineSettings(initial_lowpass_a=10.0, angular_step_deg=15.0, shift_range_px=0.0,
                           wiener_constant=0.05, n_best_poses=k)
        st0 = initial_state(imgs, vol, PIXEL_A, subsets=subsets, settings=s)
        out[k] = (st0, refine_iteration(st0, imgs, PIXEL_A, settings=s))
    st0, hard = out[1]
    soft = out[8][1]
    assert np.array_equal(hard.rotations, soft.rotations) and np.array_equal(hard.shifts_px, soft.shifts_px)
    rec = reconstruct(imgs, hard.rotations, hard.shifts_px, PIXEL_A, subsets=subsets, wiener_constant=0.05)
    assert np.array_equal(rec.half1, hard.half1) and np.array_equal(rec.half2, hard.half2)
    rows, rot, sh, w = [], [], [], []
    for h, ref in ((1, st0.half1), (2, st0.half2)):
        sel = np.flatnonzero(subsets == h)
        r = search_poses(imgs[sel], ref, PIXEL_A, max_resolution_a=10.0, angular_step_deg=15.0,
                         shift_range_px=0.0, noise_power=st0.noise_power[h - 1], n_best=8)
        assert r.top_weights is not None and r.top_rotations is not None and r.top_shifts_px is not None
        assert np.allclose(r.top_weights.sum(axis=1), 1.0)
        keep = r.top_weights > 0
        rows.append(np.broadcast_to(sel[:, None], keep.shape)[keep])
        rot.append(r.top_rotations[keep])
        sh.append(r.top_shifts_px[keep])
        w.append(r.top_weights[keep])
    assert sum(x.size for x in rows) > n  # noisy data: some particles go to several poses
    rr = np.concatenate(rows)
    direct = reconstruct(_Take(imgs, rr), np.concatenate(rot), np.concatenate(sh), PIXEL_A, subsets=subsets[rr],
                         wiener_constant=0.05, weights=np.concatenate(w))
    assert np.array_equal(direct.half1, soft.half1) and np.array_equal(direct.half2, soft.half2)
    assert not np.array_equal(soft.half1, hard.half1)
    assert soft.history[-1]["half_sizes"] == [int((subsets == 1).sum()), int((subsets == 2).sum())]
