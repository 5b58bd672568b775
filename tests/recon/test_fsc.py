"""FRC/FSC on analytic cases and the threshold crossing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoset.recon.fsc import fourier_ring_correlation, fourier_shell_correlation, resolution_at


def test_identical_and_opposite_images(rng: np.random.Generator) -> None:
    a = rng.standard_normal((32, 32))
    same = fourier_ring_correlation(a, 3.0 * a + 0.0)
    np.testing.assert_allclose(same.correlation[1:], 1.0, atol=1e-12)
    neg = fourier_ring_correlation(a, -a)
    np.testing.assert_allclose(neg.correlation, -1.0, atol=1e-12)


def test_shell_frequencies_and_counts() -> None:
    n, pixel = 16, 2.0
    curve = fourier_ring_correlation(np.ones((n, n)), np.ones((n, n)), pixel_size_a=pixel)
    np.testing.assert_allclose(curve.freq_per_a, np.arange(n // 2 + 1) / (n * pixel))
    assert curve.n_coefficients[0] == 1
    assert curve.n_coefficients[1] == 8  # |k| rounds to 1: (±1,0),(0,±1),(±1,±1)
    assert curve.correlation[0] == 1.0 and np.all(np.isnan(curve.correlation[1:]))


def test_noise_only_is_uncorrelated(rng: np.random.Generator) -> None:
    n = 128
    curve = fourier_ring_correlation(rng.standard_normal((n, n)), rng.standard_normal((n, n)))
    z = curve.correlation[4:] * np.sqrt(curve.n_coefficients[4:] / 2.0)  # Friedel mates counted twice
    assert np.abs(z).max() < 5.0
    assert abs(float(np.mean(curve.correlation[4:]))) < 0.02


@pytest.mark.parametrize("noise_var", [0.25, 1.0, 4.0])
def test_signal_plus_noise_gives_snr_over_one_plus_snr(rng: np.random.Generator, noise_var: float) -> None:
    n = 128
    s = rng.standard_normal((n, n))
    a = s + math.sqrt(noise_var) * rng.standard_normal((n, n))
    b = s + math.sqrt(noise_var) * rng.standard_normal((n, n))
    expected = 1.0 / (1.0 + noise_var)
    corr = fourier_ring_correlation(a, b).correlation[8:]
    assert float(np.mean(corr)) == pytest.approx(expected, abs=0.02)


def test_fsc_of_volumes(rng: np.random.Generator) -> None:
    n = 32
    s = rng.standard_normal((n, n, n))
    a = s + rng.standard_normal((n, n, n))
    b = s + rng.standard_normal((n, n, n))
    curve = fourier_shell_correlation(a, b, voxel_size_a=1.5)
    assert curve.freq_per_a[-1] == pytest.approx(1 / 3.0)
    assert float(np.mean(curve.correlation[4:])) == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(fourier_shell_correlation(s, s).correlation[1:], 1.0, atol=1e-12)


def test_resolution_at_interpolates_first_crossing() -> None:
    freqs = np.array([0.0, 0.05, 0.10, 0.15, 0.20])
    curve = np.array([1.0, 0.9, 0.5, 0.0, 0.6])  # dips below 0.143 once, comes back
    f_cross = 0.10 + (0.5 - 0.143) / 0.5 * 0.05
    assert resolution_at(curve, freqs, 0.143) == pytest.approx(1 / f_cross)
    assert resolution_at(curve, freqs, 0.5) == pytest.approx(10.0)  # exactly at a shell
    assert resolution_at([1.0, 0.9, 0.8], [0.0, 0.1, 0.2], 0.5) == pytest.approx(5.0)  # never crosses
    assert resolution_at([0.1, 0.05, 0.0], [0.0, 0.1, 0.2], 0.5) == math.inf
    assert resolution_at([1.0, 0.9, np.nan], [0.0, 0.1, 0.2], 0.5) == pytest.approx(10.0)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        fourier_ring_correlation(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="square"):
        fourier_ring_correlation(np.zeros((4, 5)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="cubic"):
        fourier_shell_correlation(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="equal length"):
        resolution_at([1.0, 0.5], [0.0, 0.1, 0.2])
