"""Map validation kernels against analytic truth: FSC of signal + independent noise, masking,
phase-randomisation correction, reference alignment, Guinier B-factor, sharpening, views."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from cryoset.geometry import random_rotations
from cryoset.recon.fsc import fourier_shell_correlation
from cryoset.recon.masks import soft_extend
from cryoset.recon.validate import (
    align_reference,
    angular_distribution,
    corrected_fsc,
    guinier_fit,
    lowpass,
    masked_fsc,
    radial_amplitude,
    randomise_phases,
    reference_fsc,
    resolutions,
    sharpen,
)

N = 48


def _radius(n: int) -> NDArray[np.float64]:
    k = np.fft.fftfreq(n) * n
    kx = np.arange(n // 2 + 1, dtype=np.float64)
    return np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2)


def _filtered_noise(rng: np.random.Generator, profile: NDArray[np.float64], n: int = N) -> NDArray[np.float64]:
    """White noise whose amplitude at index radius r is ``profile(r)`` (interpolated)."""
    f = np.fft.rfftn(rng.standard_normal((n, n, n)))
    r = _radius(n)
    return np.fft.irfftn(f * np.interp(r, np.arange(profile.size), profile), s=(n, n, n), axes=(0, 1, 2))


def _blob(n: int = N, centre: tuple[float, float, float] | None = None, radius: float = 8.0) -> NDArray[np.float64]:
    c = (n // 2,) * 3 if centre is None else centre
    z, y, x = np.mgrid[:n, :n, :n]
    return ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius ** 2).astype(np.float64)


def test_fsc_of_signal_plus_independent_noise_matches_snr_over_1_plus_snr() -> None:
    rng = np.random.default_rng(1)
    shells = np.arange(N // 2 + 1, dtype=np.float64)
    snr = 20.0 * np.exp(-shells / 4.0)  # per-coefficient spectral SNR, 20 → 0.05
    truth = _filtered_noise(rng, np.sqrt(snr))
    h1 = truth + rng.standard_normal(truth.shape)
    h2 = truth + rng.standard_normal(truth.shape)
    curve = fourier_shell_correlation(h1, h2)
    expected = 1.0 / (1.0 + 1.0 / snr)
    sigma = 1.0 / np.sqrt(curve.n_coefficients / 2.0)  # independent coefficients per shell
    err = np.abs(curve.correlation - expected)[2:]
    assert np.all(err < 4.0 * sigma[2:] + 0.01), np.max(err / sigma[2:])
    # the 0.143 crossing where SNR = 1/6: r = 4 ln(120) = 19.15 shells
    res = resolutions(curve)["0.143"]
    assert 1.0 / res == pytest.approx(4.0 * np.log(120.0) / N, abs=1.0 / N)


def test_mask_excluding_pure_noise_raises_the_fsc() -> None:
    """Signal inside a sphere, white noise everywhere: a mask around the sphere removes noise
    volume, so the SNR inside rises by about box volume / mask volume."""
    rng = np.random.default_rng(2)
    blob = _blob(radius=9.0)
    signal = lowpass(blob * rng.standard_normal(blob.shape) * 3.0 + 4.0 * blob, 1.0, 3.0)
    h1 = signal + rng.standard_normal(blob.shape)
    h2 = signal + rng.standard_normal(blob.shape)
    mask = soft_extend(blob > 0, 2.0, 3.0)
    plain = fourier_shell_correlation(h1, h2).correlation
    masked = masked_fsc(h1, h2, mask, 1.0).correlation
    band = slice(4, 14)
    assert np.all(masked[band] > plain[band])
    assert resolutions(fourier_shell_correlation(h1 * mask, h2 * mask))["0.143"] < resolutions(
        fourier_shell_correlation(h1, h2))["0.143"]


def test_randomise_phases_keeps_amplitudes_and_low_shells() -> None:
    rng = np.random.default_rng(3)
    v = rng.standard_normal((N, N, N))
    r = randomise_phases(v, 10, np.random.default_rng(0))
    fv, fr = np.fft.rfftn(v), np.fft.rfftn(r)
    np.testing.assert_allclose(np.abs(fr), np.abs(fv), rtol=1e-9, atol=1e-9)
    low = np.rint(_radius(N)) < 10
    np.testing.assert_allclose(fr[low], fv[low], atol=1e-9)
    assert abs(np.corrcoef(fr[~low].real, fv[~low].real)[0, 1]) < 0.05


def test_corrected_fsc_is_zero_beyond_cutoff_for_noise_and_leaves_a_true_signal() -> None:
    rng = np.random.default_rng(4)
    blob = _blob(radius=10.0)
    mask = soft_extend(_blob(radius=7.0) > 0, 1.0, 4.0)
    # (a) pure noise beyond shell ~6: the signal is only low-resolution; outside it independent noise
    low_signal = lowpass(blob * 5.0, 1.0, N / 5.0)
    h1 = low_signal + 0.2 * rng.standard_normal(blob.shape)
    h2 = low_signal + 0.2 * rng.standard_normal(blob.shape)
    res = corrected_fsc(h1, h2, mask, 1.0, seed=0)
    assert res.randomise_from_shell is not None
    beyond = slice(res.randomise_from_shell + 4, N // 2)
    sigma = 1.0 / np.sqrt(res.masked.n_coefficients[beyond] / 2.0)
    assert np.all(np.abs(res.corrected.correlation[beyond]) < 5.0 * sigma + 0.03)
    # (b) a real signal at all resolutions, inside the mask: the correction changes it little
    truth = _filtered_noise(rng, np.full(N // 2 + 1, 3.0)) * _blob(radius=6.0)
    g1 = truth + 0.3 * rng.standard_normal(blob.shape)
    g2 = truth + 0.3 * rng.standard_normal(blob.shape)
    good = corrected_fsc(g1, g2, mask, 1.0, seed=0)
    i_r = good.randomise_from_shell
    assert i_r is not None
    shells = slice(i_r + 2, N // 2)
    np.testing.assert_allclose(good.corrected.correlation[shells], good.masked.correlation[shells], atol=0.08)
    # and the corrected curve removes what the randomised (mask-only) correlation adds
    assert np.all(good.randomised.correlation[shells] < good.masked.correlation[shells])


def test_reference_on_another_grid_with_subvoxel_offset_is_aligned() -> None:
    rng = np.random.default_rng(5)
    n, v = 40, 2.0
    truth = lowpass(_filtered_noise(rng, np.ones(n // 2 + 1), n) * _blob(n, radius=12.0), v, 5.0)
    # the reference: the same density sampled at 1.6 Å on a 50-voxel box (same extent), its
    # voxel 0 0.37 Å (0.23 target voxels) away along x
    ref_v = 1.6
    shift_a = np.array([0.0, 0.0, 0.74])
    kx = np.fft.rfftfreq(n)
    phase = np.exp(2j * np.pi * kx[None, None, :] * shift_a[2] / v)
    shifted = np.fft.irfftn(np.fft.rfftn(truth) * phase, s=truth.shape, axes=(0, 1, 2))  # truth at x + 0.37 voxels
    from cryoset.maps.resample import resample

    ref = resample(shifted, v, ref_v, method="fourier")
    assert ref.shape == (50, 50, 50)
    aligned = align_reference(ref, ref_v, n, v, reference_origin_a=tuple(shift_a), origin_a=(0.0, 0.0, 0.0))
    curve = reference_fsc(truth, aligned, v)
    assert np.nanmin(curve.correlation[1:16]) > 0.99
    naive = align_reference(ref, ref_v, n, v)  # centres coincide: off by the shift
    assert np.nanmin(reference_fsc(truth, naive, v).correlation[1:16]) < np.nanmin(curve.correlation[1:16])


def _atoms_map(rng: np.random.Generator, n: int = 64, count: int = 3000) -> NDArray[np.float64]:
    """Point atoms at random voxels of the (periodic) box: a flat amplitude spectrum (Wilson
    statistics; a restricted region would add its own transform's fall-off)."""
    v = np.zeros((n, n, n))
    pts = rng.integers(0, n, size=(count, 3))
    np.add.at(v, (pts[:, 0], pts[:, 1], pts[:, 2]), 1.0)
    return v


def test_guinier_recovers_a_known_bfactor_and_sharpening_restores_amplitudes() -> None:
    rng = np.random.default_rng(6)
    n, vs, b_true = 64, 1.0, 80.0
    atoms = _atoms_map(rng, n)
    blurred = sharpen(atoms, vs, bfactor_a2=b_true)  # amplitudes × exp(−80 s²/4)
    fit = guinier_fit(blurred, vs, high_a=3.0, low_a=10.0)
    assert fit.bfactor_a2 == pytest.approx(-b_true, rel=0.1)
    assert fit.correlation < -0.95
    restored = sharpen(blurred, vs, bfactor_a2=fit.bfactor_a2)
    _, a0 = radial_amplitude(atoms, vs)
    _, a1 = radial_amplitude(restored, vs)
    band = slice(6, int(n * vs / 3.0) + 1)  # 10 Å … 3 Å
    np.testing.assert_allclose(a1[band] / a0[band], 1.0, atol=0.1)


def test_sharpen_fsc_weighting_and_lowpass() -> None:
    rng = np.random.default_rng(7)
    v = rng.standard_normal((32, 32, 32))
    fsc = np.linspace(1.0, -0.1, 17)
    out = sharpen(v, 1.0, fsc=fsc, lowpass_a=4.0)
    _, a0 = radial_amplitude(v, 1.0)
    _, a1 = radial_amplitude(out, 1.0)
    w = np.sqrt(2 * fsc[:6] / (1 + fsc[:6]))
    np.testing.assert_allclose(a1[1:6] / a0[1:6], w[1:6], rtol=1e-3)  # below the low-pass edge (shell 7–9)
    assert np.all(a1[10:] < 1e-6 * a0[10:])


def test_angular_distribution_of_uniform_rotations_is_flat() -> None:
    from scipy.stats import chi2

    rot = random_rotations(20000, np.random.default_rng(8))
    hist = angular_distribution(rot, n_azimuth=12, n_tilt=8)
    assert hist.counts.sum() == 20000
    e = hist.expected_per_bin
    stat = float(((hist.counts - e) ** 2 / e).sum())
    assert chi2.sf(stat, hist.counts.size - 1) > 1e-3
    # all views from one direction land in one bin
    from cryoset.geometry import euler_to_matrix

    one = euler_to_matrix(np.full(50, 30.0), np.full(50, 90.0), np.linspace(0, 300, 50))
    h = angular_distribution(one, n_azimuth=12, n_tilt=8)
    assert h.counts.max() == 50 and h.summary()["empty_bin_fraction"] == pytest.approx(1 - 1 / 96)


def test_local_resolution_follows_the_local_noise() -> None:
    """Signal of one spectrum everywhere; 6× more noise in the right half of the box: the local
    resolution is worse there; with uniform noise it is uniform and near the global value."""
    from cryoset.recon.validate import local_resolution

    rng = np.random.default_rng(9)
    n, v = 48, 2.0
    shells = np.arange(n // 2 + 1, dtype=np.float64)
    signal = _filtered_noise(rng, 4.0 * np.exp(-shells / 4.0), n)
    sigma = np.where(np.arange(n)[None, None, :] < n // 2, 0.05, 0.3) * np.ones((n, n, n))
    h1 = signal + sigma * rng.standard_normal(signal.shape)
    h2 = signal + sigma * rng.standard_normal(signal.shape)
    loc = local_resolution(h1, h2, v, window_px=16, step_px=4)
    x = loc.centres[:, 2]
    left = np.median(loc.resolution_a[(x >= 8) & (x < 16)])
    right = np.median(loc.resolution_a[(x >= 32) & (x < 40)])
    assert left < right - 1.0, (left, right)
    assert loc.map_a.shape == (n, n, n) and loc.map_a.min() > 0
    # uniform noise: the local values agree with each other and with the global FSC
    g1 = signal + 0.1 * rng.standard_normal(signal.shape)
    g2 = signal + 0.1 * rng.standard_normal(signal.shape)
    uni = local_resolution(g1, g2, v, window_px=16, step_px=8)
    glob = resolutions(fourier_shell_correlation(g1, g2, voxel_size_a=v))["0.143"]
    assert np.ptp(uni.resolution_a) < 0.35 * np.median(uni.resolution_a)
    assert np.median(uni.resolution_a) == pytest.approx(glob, rel=0.2)
    # a mask restricts the windows
    mask = _blob(n, radius=10.0)
    masked = local_resolution(g1, g2, v, window_px=16, step_px=4, mask=mask)
    assert len(masked.centres) < len(loc.centres) and np.all(masked.map_a[mask == 0] == 0)
