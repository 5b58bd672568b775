"""Spectral falloff of maps: white noise is flat, a low-passed map falls off at its cut-off."""

from __future__ import annotations

import numpy as np
import pytest

from cryoset.maps.spectrum import (
    falloff_resolution_a,
    local_falloff_resolutions_a,
    radial_power_spectrum,
)
from cryoset.simulate.density import lowpass_filter


def test_frequency_axis_and_white_noise_is_flat() -> None:
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(48, 48, 48))
    f, p = radial_power_spectrum(vol, 1.5)
    assert f[1] == pytest.approx(1 / (48 * 1.5))
    assert f[-1] == pytest.approx(0.5 / 1.5)
    assert p[0] == pytest.approx(0.0, abs=1e-12 * p[1:].mean())
    # flat within sampling noise beyond the first few shells
    assert np.std(p[4:]) / np.mean(p[4:]) < 0.1
    assert falloff_resolution_a(f, p) == pytest.approx(3.0)  # never falls: Nyquist


@pytest.mark.parametrize("cutoff_a", [4.0, 6.0, 9.0])
def test_lowpassed_noise_falls_off_at_its_cutoff(cutoff_a: float) -> None:
    rng = np.random.default_rng(1)
    vol = lowpass_filter(rng.normal(size=(64, 64, 64)).astype(np.float32), 1.0, cutoff_a)
    f, p = radial_power_spectrum(vol, 1.0)
    assert falloff_resolution_a(f, p) == pytest.approx(cutoff_a, rel=0.15)
    local = local_falloff_resolutions_a(vol + 5.0, 1.0, cube_a=max(32.0, 5 * cutoff_a))
    assert local.size > 0
    # the Hanning window's main lobe (two shells) makes the local value read sharper
    assert 0.6 * cutoff_a <= np.median(local) <= 1.1 * cutoff_a


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="3-D"):
        radial_power_spectrum(np.zeros((4, 4)), 1.0)
    with pytest.raises(ValueError, match="voxel_size_a"):
        radial_power_spectrum(np.zeros((8, 8, 8)), 0.0)
