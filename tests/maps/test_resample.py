"""Resampling: exactness against scipy, physical frame, band-limited truth, RELION agreement."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, map_coordinates

from cryoset.maps.resample import fourier_matrix, resample, resampled_shape
from cryoset.testing import require_program, require_shared_data


def test_trilinear_equals_scipy_map_coordinates_anisotropic(rng: np.random.Generator) -> None:
    a = rng.normal(size=(13, 17, 11)).astype(np.float32)
    v = (1.3, 0.9, 1.7)
    out = resample(a, v, 1.0)
    assert out.shape == resampled_shape(a.shape, v, 1.0) == (17, 15, 19)
    grid = np.meshgrid(
        *[np.clip(np.arange(n) * 1.0 / vv, 0, m - 1) for n, vv, m in zip(out.shape, v, a.shape, strict=True)],
        indexing="ij",
    )
    ref = map_coordinates(a.astype(np.float64), grid, order=1)
    np.testing.assert_allclose(out, ref, atol=2e-6)


def test_linear_ramp_in_physical_frame_is_reproduced() -> None:
    """A map linear in physical coordinates is resampled exactly (voxel 0 keeps its position)."""
    v = np.array([2.0, 1.5, 0.8])
    shape = (10, 12, 30)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    coeff = np.array([0.3, -0.2, 0.1])
    ramp = (coeff[0] * k * v[0] + coeff[1] * j * v[1] + coeff[2] * i * v[2]).astype(np.float32)
    out = resample(ramp, tuple(v), 1.0)
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij")
    truth = coeff[0] * kk + coeff[1] * jj + coeff[2] * ii
    inside = (kk <= (shape[0] - 1) * v[0]) & (jj <= (shape[1] - 1) * v[1]) & (ii <= (shape[2] - 1) * v[2])
    np.testing.assert_allclose(out[inside], truth[inside], atol=1e-4)


def test_chunking_and_memmap_do_not_change_the_result(rng: np.random.Generator, tmp_path: Path) -> None:
    a = rng.normal(size=(20, 21, 22)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float32, shape=a.shape)
    mm[:] = a
    mm.flush()
    ro = np.load(tmp_path / "a.npy", mmap_mode="r")
    for method in ("trilinear", "fourier"):
        whole = resample(a, 1.3, 1.0, method=method)  # type: ignore[arg-type]
        chunked = resample(ro, 1.3, 1.0, method=method, chunk_bytes=1)  # type: ignore[arg-type]
        np.testing.assert_allclose(chunked, whole, atol=1e-5)  # BLAS summation order


def _bandlimited(n: int, t: np.ndarray) -> np.ndarray:
    return np.cos(2 * np.pi * 3 * t / n) + 0.5 * np.sin(2 * np.pi * 5 * t / n)


def test_fourier_upsampling_is_exact_for_bandlimited_maps() -> None:
    n = 24
    f = _bandlimited(n, np.arange(n))
    vol = (f[:, None, None] * f[None, :, None] * f[None, None, :]).astype(np.float32)
    up = resample(vol, 2.0, 0.75, method="fourier")
    assert up.shape == (64, 64, 64)
    t = np.arange(64) * 0.75 / 2.0
    g = _bandlimited(n, t)
    np.testing.assert_allclose(up, g[:, None, None] * g[None, :, None] * g[None, None, :], atol=2e-5)


def test_fourier_matrix_is_identity_at_the_same_size() -> None:
    for n in (1, 2, 7, 16):
        np.testing.assert_allclose(fourier_matrix(n, n, 1.0), np.eye(n), atol=1e-12)


def test_fourier_downsampling_removes_frequencies_above_new_nyquist() -> None:
    n = 32
    x = np.arange(n)
    low = np.cos(2 * np.pi * 2 * x / n)
    high = np.cos(2 * np.pi * 12 * x / n)  # above the Nyquist of a 2x coarser grid (8 cycles)
    vol = np.broadcast_to((low + high)[None, None, :], (4, 4, n)).astype(np.float32)
    down = resample(vol, 1.0, (1.0, 1.0, 2.0), method="fourier")
    np.testing.assert_allclose(down[0, 0], np.cos(2 * np.pi * 2 * np.arange(16) * 2 / n), atol=1e-5)


def test_tiny_real_map_emd_3197() -> None:
    from cryoset.io.mrc import read_map

    m = read_map(require_shared_data("maps", "emd_3197", "EMD-3197.map"))
    out = resample(m.data, m.voxel_size_a, 1.0)
    assert m.data.shape == (20, 20, 20)
    assert out.shape == (228, 228, 228)
    assert np.isfinite(out).all()
    assert out.min() >= m.data.min() - 1e-5 and out.max() <= m.data.max() + 1e-5  # trilinear is convex


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="3D"):
        resample(np.zeros((3, 3)), 1.0)
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros((3, 3, 3)), 0.0)
    with pytest.raises(ValueError, match="method"):
        resample(np.zeros((3, 3, 3)), 1.0, method="cubic")  # type: ignore[arg-type]


@pytest.mark.relion
@pytest.mark.parametrize(("target_a", "min_corr", "max_rel_rms"), [(2.0, 0.9999, 0.01), (1.0, 0.999, 0.03)])
def test_fourier_agrees_with_relion_rescale_angpix(
    tmp_path: Path, rng: np.random.Generator, target_a: float, min_corr: float, max_rel_rms: float
) -> None:
    exe = require_program("relion_image_handler")
    a = gaussian_filter(rng.normal(size=(64, 64, 64)), 2).astype(np.float32)
    with mrcfile.new(tmp_path / "in.mrc") as m:
        m.set_data(a)
        m.voxel_size = 1.5
    subprocess.run(
        [exe, "--i", str(tmp_path / "in.mrc"), "--o", str(tmp_path / "out.mrc"),
         "--rescale_angpix", str(target_a)],
        check=True, capture_output=True, timeout=120,
    )
    with mrcfile.open(tmp_path / "out.mrc") as m:
        theirs = m.data.astype(np.float64)
    ours = resample(a, 1.5, target_a, method="fourier").astype(np.float64)
    assert ours.shape == theirs.shape
    corr = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]
    rel_rms = np.sqrt(np.mean((ours - theirs) ** 2)) / theirs.std()
    assert corr > min_corr
    assert rel_rms < max_rel_rms
