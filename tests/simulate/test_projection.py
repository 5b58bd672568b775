"""Fourier-slice projection: exact identities, agreement with real-space and atomic projections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cryoset.fourier.slices import central_slice_coordinates
from cryoset.geometry import euler_to_matrix, random_rotations
from cryoset.recon.fsc import fourier_ring_correlation
from cryoset.simulate.potential import center_of_mass, potential_volume, project_atoms
from cryoset.simulate.projection import (
    fourier_slices,
    fourier_volume,
    gridding_correction,
    project_fourier,
    project_real,
)
from cryoset.testing import require_shared_data


def _blob(n: int, center_zyx: tuple[float, float, float], sigma: float) -> np.ndarray:
    z, y, x = np.meshgrid(*([np.arange(n, dtype=np.float64)] * 3), indexing="ij")
    r2 = (z - center_zyx[0]) ** 2 + (y - center_zyx[1]) ** 2 + (x - center_zyx[2]) ** 2
    return np.exp(-r2 / (2 * sigma**2))


def _blob_volume(n: int, rng: np.random.Generator, spread_px: float,
                 sigma_range: tuple[float, float]) -> np.ndarray:
    """Six Gaussian blobs, centres uniform within ±spread_px of the centre on each axis."""
    vol = np.zeros((n, n, n))
    for _ in range(6):
        c = n // 2 + rng.uniform(-spread_px, spread_px, 3)
        vol += rng.uniform(0.5, 1.5) * _blob(n, (c[0], c[1], c[2]), rng.uniform(*sigma_range))
    return vol


def _smooth_volume(n: int, rng: np.random.Generator) -> np.ndarray:
    return _blob_volume(n, rng, n / 6, (1.5, 2.5))


def test_identity_projection_is_sum_of_gridding_corrected_volume(rng: np.random.Generator) -> None:
    # At the identity every slice sample is a grid point: no interpolation, so the result is
    # exactly the z-sum of the pre-corrected volume (a check of padding, centring and scaling).
    n = 24
    vol = _smooth_volume(n, rng)
    n_pad = 2 * n
    g = gridding_correction(n_pad)[n_pad // 2 - n // 2:n_pad // 2 - n // 2 + n]
    corrected = vol / (g[:, None, None] * g[None, :, None] * g[None, None, :])
    img = project_fourier(vol, np.eye(3), voxel_size_a=1.5)
    np.testing.assert_allclose(img, 1.5 * corrected.sum(axis=0), rtol=0, atol=1e-5 * img.max())


def test_delta_lands_on_centre_and_axes_follow_convention() -> None:
    n = 16
    vol = np.zeros((n, n, n))
    vol[8, 8, 11] = 1.0  # +3 voxels along x
    # rot = 90°: RELION A = Rz(90°) passive, image x of the reference +x axis is A[0,0]=0, y = A[1,0] = -1
    a = euler_to_matrix(90.0, 0.0, 0.0)
    img = project_fourier(vol, a)
    ref = project_real(vol, a, order=1)
    assert np.unravel_index(int(ref.argmax()), ref.shape) == (5, 8)
    assert np.unravel_index(int(img.argmax()), img.shape) == (5, 8)


def test_slices_match_numpy_trilinear_reference(rng: np.random.Generator) -> None:
    n = 12
    vol = rng.standard_normal((n, n, n))
    fvol = fourier_volume(vol)
    rots = random_rotations(3, rng)
    fast = fourier_slices(fvol, rots)
    # Reference: full complex FFT, wrap-around trilinear interpolation at Aᵀ (kx, ky, 0).
    n_pad = fvol.n_pad
    padded = np.zeros((n_pad,) * 3)
    o = n_pad // 2 - n // 2
    padded[o:o + n, o:o + n, o:o + n] = vol
    g = gridding_correction(n_pad)
    padded /= g[:, None, None] * g[None, :, None] * g[None, None, :]
    full = np.fft.fftn(np.fft.ifftshift(padded))
    coords = central_slice_coordinates(rots, n_pad)  # (3, N, N//2+1, 3) as (kx, ky, kz)
    assert coords.shape == (3, n_pad, n_pad // 2 + 1, 3)
    for m in range(3):
        zyx = np.moveaxis(coords[m][..., ::-1], -1, 0) % n_pad
        ref = (ndimage.map_coordinates(full.real, zyx, order=1, mode="grid-wrap")
               + 1j * ndimage.map_coordinates(full.imag, zyx, order=1, mode="grid-wrap"))
        inside = np.hypot(coords[m][..., 0] * 0 + np.arange(n_pad // 2 + 1),
                          (np.fft.fftfreq(n_pad) * n_pad)[:, None]) <= n_pad // 2
        np.testing.assert_allclose(fast[m][inside], ref[inside], rtol=0, atol=1e-3 * np.abs(ref).max())
        assert not fast[m][~inside].any()


def test_central_slice_coordinates_identity_and_norm(rng: np.random.Generator) -> None:
    c = central_slice_coordinates(np.eye(3), 8)
    assert c.shape == (8, 5, 3)
    np.testing.assert_array_equal(c[..., 2], 0.0)
    np.testing.assert_array_equal(c[3, 2], [2.0, 3.0, 0.0])
    np.testing.assert_array_equal(c[5, 1], [1.0, -3.0, 0.0])
    r = random_rotations(2, rng)
    rc = central_slice_coordinates(r, 8)
    np.testing.assert_allclose(np.linalg.norm(rc, axis=-1),
                               np.broadcast_to(np.linalg.norm(c, axis=-1), (2, 8, 5)), atol=1e-12)


def _compact_volume(n: int, rng: np.random.Generator) -> np.ndarray:
    return _blob_volume(n, rng, n / 8, (1.2, 1.8))


@pytest.mark.parametrize("order", [1, 3, 5])
def test_fourier_matches_real_space_projection(rng: np.random.Generator, order: int) -> None:
    n = 32
    vol = _smooth_volume(n, rng)
    rots = random_rotations(3, rng)
    imgs = project_fourier(vol, rots, order=order)
    for a, img in zip(rots, imgs, strict=True):
        ref = project_real(vol, a, order=3)
        frc = fourier_ring_correlation(img, ref).correlation
        assert frc[1:n // 3].min() > (0.999 if order == 1 else 0.9999)
        # trilinear: a few per cent position-dependent amplitude error; gridding kernels: < 0.5 %
        tol = 0.05 if order == 1 else 0.005
        assert np.abs(img - ref).max() < tol * ref.max()
        assert img.sum() == pytest.approx(ref.sum(), rel=0.03 if order == 1 else 1e-3)


def test_more_padding_is_more_accurate_for_trilinear(rng: np.random.Generator) -> None:
    n = 24
    vol = _smooth_volume(n, rng)
    a = random_rotations(1, rng)[0]
    ref = project_real(vol, a, order=3)
    err2 = np.abs(project_fourier(vol, a, pad=2) - ref).max()
    err4 = np.abs(project_fourier(vol, a, pad=4) - ref).max()
    assert err4 < 0.5 * err2


@pytest.mark.parametrize("order", [1, 3])
def test_batches_shapes_and_crop_in_fourier(rng: np.random.Generator, order: int) -> None:
    n = 32
    vol = _compact_volume(n, rng)
    rots = random_rotations(6, rng).reshape(2, 3, 3, 3)
    fvol = fourier_volume(vol, order=order)
    assert fvol.order == order
    full = project_fourier(fvol, rots)
    assert full.shape == (2, 3, n, n) and full.dtype == np.float32
    one = project_fourier(vol, rots[1, 2], order=order)
    np.testing.assert_allclose(full[1, 2], one, rtol=0, atol=1e-5 * one.max())
    fast = project_fourier(fvol, rots, crop_in_fourier=True)
    np.testing.assert_allclose(fast, full, rtol=0, atol=0.03 * full.max())
    # threads split the rotations; the result does not depend on how many
    np.testing.assert_array_equal(project_fourier(fvol, rots, workers=1),
                                  project_fourier(fvol, rots, workers=3))


def test_gridding_corrections() -> None:
    np.testing.assert_allclose(gridding_correction(8, 1)[4], 1.0)
    for order in (3, 5):
        c = gridding_correction(64, order)
        # even, maximal at the centre, smooth and positive over the central half
        np.testing.assert_allclose(c[1:], c[1:][::-1], rtol=1e-12)
        assert c.argmax() == 32 and np.all(c[16:49] > 0.1 * c[32])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="cubic"):
        project_fourier(np.zeros((4, 4, 5)), np.eye(3))
    with pytest.raises(ValueError, match="rotations"):
        project_fourier(np.zeros((4, 4, 4)), np.eye(2))
    with pytest.raises(ValueError, match="order"):
        project_fourier(np.zeros((4, 4, 4)), np.eye(3), order=2)
    with pytest.raises(ValueError, match="pad"):
        project_fourier(np.zeros((4, 4, 4)), np.eye(3), pad=0.5)


def _read_model(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    import gemmi

    st = gemmi.read_structure(str(path))
    atoms = [a for res in st[0][0] for a in res]
    xyz = np.array([[a.pos.x, a.pos.y, a.pos.z] for a in atoms])
    return xyz, [a.element.name for a in atoms], np.array([a.b_iso for a in atoms])


@pytest.mark.shared_data
def test_fourier_projection_of_map_agrees_with_atomic_projection() -> None:
    # A real model (PDB 3MFP, 2,882 atoms, its own B-factors), 1 Å pixels, 80³ box.
    xyz, elements, b = _read_model(require_shared_data("maps", "emd_5168", "3MFP.pdb"))
    n, pixel = 80, 1.0
    com = center_of_mass(xyz, elements)
    origin = tuple(com[::-1] - (n // 2) * pixel)
    vol = potential_volume(xyz, elements, b, (n, n, n), pixel, origin)
    rots = random_rotations(4, np.random.default_rng(5168))
    k = int(np.floor(2 / 3 * n / 2))
    for order in (1, 3):
        imgs = project_fourier(vol, rots, voxel_size_a=pixel, order=order)
        for a, img in zip(rots, imgs, strict=True):
            direct = project_atoms(xyz, elements, b, a, (n, n), pixel)
            frc = fourier_ring_correlation(img, direct, pixel_size_a=pixel).correlation
            assert frc[: k + 1].min() > 0.99
            # V·Å scale: trilinear overshoots by the gridding correction (≈3 % in this tight
            # box); the gridding kernel keeps the integral to 0.1 %
            assert img.sum() == pytest.approx(direct.sum(), rel=0.05 if order == 1 else 2e-3)


@pytest.mark.relion
def test_agrees_with_relion_project_including_origin_sign(tmp_path: Path) -> None:
    import subprocess

    import mrcfile

    from cryoset.io.mrc import write_map
    from cryoset.testing import require_program

    exe = require_program("relion_project")
    vol = _smooth_volume(40, np.random.default_rng(40))
    write_map(tmp_path / "vol.mrc", vol.astype(np.float32), 1.0)
    for rot, tilt, psi, xoff, yoff in ((0, 0, 0, 0, 0), (30, 60, -20, 3, -2), (100, 130, 45, 0, 0)):
        out = tmp_path / "proj.mrc"
        subprocess.run([exe, "--i", str(tmp_path / "vol.mrc"), "--o", str(out), "--angpix", "1",
                        "--rot", str(rot), "--tilt", str(tilt), "--psi", str(psi),
                        "--xoff", str(xoff), "--yoff", str(yoff)], check=True, capture_output=True)
        relion = mrcfile.read(out).astype(np.float64).reshape(40, 40)
        ours = project_fourier(vol, euler_to_matrix(rot, tilt, psi)).astype(np.float64)
        # RELION's origin (xoff, yoff) puts the particle centre at (-xoff, -yoff)
        moved = np.roll(ours, (-yoff, -xoff), axis=(0, 1))
        assert np.corrcoef(relion.ravel(), moved.ravel())[0, 1] > 0.9999
        # same sinc² pre-correction: identical at the identity; RELION's sums run ~2.7 % high
        # for rotated poses, ours < 1 % (trilinear) against a spline real-space projection
        assert relion.sum() == pytest.approx(ours.sum(), rel=0.03)
        if xoff:
            wrong = np.roll(ours, (yoff, xoff), axis=(0, 1))
            assert np.corrcoef(relion.ravel(), wrong.ravel())[0, 1] < 0.9
