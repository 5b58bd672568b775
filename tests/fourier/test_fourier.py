"""cryoset.fourier (issue #17, item 3): the shared Fourier-space helpers are bit-identical to
the per-module code they replaced (the replaced expressions are written out here)."""

from __future__ import annotations

import numpy as np
import pytest

import cryoset.particles.fourier as particles_fourier
from cryoset.fourier import crop, shells
from cryoset.fourier.slices import (
    check_rotations,
    extract_slices_trilinear,
    insert_slices_trilinear,
)
from cryoset.geometry import random_rotations
from cryoset.simulate.projection import fourier_slices, fourier_volume


@pytest.mark.parametrize("n", [2, 3, 8, 15, 16, 33, 64])
def test_shell_index_equals_each_replaced_formula(n: int) -> None:
    k = np.fft.fftfreq(n) * n
    kx = np.arange(n // 2 + 1)
    # recon/reconstruct.py _shell_index (3D half grid)
    r3 = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2)
    np.testing.assert_array_equal(shells.shell_index(n, 3), np.rint(r3).astype(np.int64))
    # classify/em2d.py _radial_index (2D half grid, hypot)
    r2 = np.rint(np.hypot(k[:, None], kx[None, :])).astype(np.int64)
    np.testing.assert_array_equal(shells.shell_index(n, 2), r2)
    # recon/fsc.py (full grids)
    for ndim in (2, 3):
        grids = np.meshgrid(*([k] * ndim), indexing="ij", sparse=True)
        full = np.rint(np.sqrt(sum(g * g for g in grids))).astype(np.int64)
        np.testing.assert_array_equal(shells.shell_index(n, ndim, half=False), full)
    # ctf/estimate.py _Grid.rbin
    gy, gx = np.meshgrid(k, kx.astype(np.float64), indexing="ij")
    np.testing.assert_array_equal(shells.shell_index(n, 2), np.rint(np.sqrt(gx * gx + gy * gy)).astype(np.intp))


def test_shell_sums_equal_the_bincounts_they_replaced(rng: np.random.Generator) -> None:
    n = 20
    s = shells.shell_index(n, 3)
    v = rng.normal(size=s.shape)
    nshell = n // 2 + 1
    keep = s < nshell
    assert shells.shell_sum(v, s, nshell).tobytes() == np.bincount(s[keep], v[keep], minlength=nshell).tobytes()
    assert np.array_equal(shells.shell_count(s, nshell), np.bincount(s[keep], minlength=nshell))
    s2 = shells.shell_index(n, 2)
    v2 = rng.normal(size=(3, *s2.shape))
    onehot = np.zeros((s2.size, nshell))
    k2 = s2.ravel() < nshell
    onehot[np.flatnonzero(k2), s2.ravel()[k2]] = 1.0
    expected = (v2.reshape(3, -1) @ onehot) / np.maximum(onehot.sum(axis=0), 1.0)
    assert shells.shell_mean(v2, s2, nshell).tobytes() == expected.tobytes()


def test_rfft_multiplicity_is_parseval(rng: np.random.Generator) -> None:
    for n in (7, 8):
        x = rng.normal(size=n)
        f = np.fft.rfft(x)
        assert np.isclose((shells.rfft_multiplicity(n) * np.abs(f) ** 2).sum() / n, (x * x).sum())


def test_fourier_crop_lives_in_one_place() -> None:
    assert particles_fourier.fourier_crop is crop.fourier_crop
    assert particles_fourier.resampled_pixel_size_a is crop.resampled_pixel_size_a


def test_projection_slices_are_the_shared_kernel(rng: np.random.Generator) -> None:
    fvol = fourier_volume(rng.normal(size=(12, 12, 12)))
    rots = random_rotations(5, rng=rng)
    out = np.empty((5, fvol.n_pad, fvol.n_pad // 2 + 1), np.complex64)
    extract_slices_trilinear(fvol.data, np.ascontiguousarray(rots), 1.0, out)
    assert out.tobytes() == fourier_slices(fvol, rots, workers=1).tobytes()


def test_insertion_is_the_adjoint_of_extraction(rng: np.random.Generator) -> None:
    """<E v, s> = <v, I s> for real inner products: the two kernels walk the same slice."""
    n = 16
    rots = np.ascontiguousarray(random_rotations(3, rng=rng))
    v = (rng.normal(size=(n, n, n // 2 + 1)) + 1j * rng.normal(size=(n, n, n // 2 + 1)))
    v[:, :, 0] = 0  # the kx = 0 plane is folded by Friedel symmetry in one direction only
    s = (rng.normal(size=(3, n, n // 2 + 1)) + 1j * rng.normal(size=(3, n, n // 2 + 1))).astype(np.complex64)
    s[:, :, 0] = 0
    r = n // 2 - 1
    ky = np.fft.fftfreq(n) * n
    s[:, np.hypot(ky[:, None], np.arange(n // 2 + 1)[None, :]) > r] = 0
    ev = np.empty_like(s)
    extract_slices_trilinear(v.astype(np.complex64), rots, 1.0, ev)
    data = np.zeros((n, n, n // 2 + 1), np.complex128)
    weight = np.zeros((n, n, n // 2 + 1))
    insert_slices_trilinear(s, np.ones(s.shape, np.float32), rots, data, weight)
    lhs = np.sum((ev * np.conj(s)).real)
    rhs = np.sum((v * np.conj(data)).real)
    assert lhs == pytest.approx(rhs, rel=1e-4)


def test_check_rotations() -> None:
    with pytest.raises(ValueError, match="rotations"):
        check_rotations(np.eye(2))
