"""CTF estimation on synthetic micrographs with known truth, bad input, real data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoset.ctf.estimate import (
    EstimateOptions,
    _fit_resolution,
    estimate_ctf,
    tiled_power_spectrum,
)
from cryoset.ctf.model import CTFParams
from cryoset.ctf.synthetic import synthetic_micrograph
from cryoset.errors import InputError
from cryoset.testing import require_shared_data


def _angle_error_deg(a: float, b: float) -> float:
    return abs((a - b + 90.0) % 180.0 - 90.0)


# (mean defocus Å, |U − V| Å, angle °, pixel Å, seed): spans 0.5–4 µm, 0–1500 Å, 0.7–2 Å.
CASES = [
    (5000.0, 300.0, 20.0, 1.0, 1),
    (8000.0, 1500.0, -60.0, 2.0, 2),
    (15000.0, 0.0, 0.0, 0.7, 3),
    (22000.0, 800.0, 75.0, 1.4, 4),
    (30000.0, 1200.0, -20.0, 1.0, 5),
    (40000.0, 400.0, 45.0, 1.7, 6),
]


@pytest.mark.slow
def test_accuracy_on_synthetic_micrographs() -> None:
    # Measured on these 1536² synthetic micrographs (docs/ctf.md has the 2048² table).
    d_err, a_err = [], []
    for d, astig, angle, pix, seed in CASES:
        truth = CTFParams(d + astig / 2, d - astig / 2, angle)
        img = synthetic_micrograph(truth, (1536, 1536), pix, seed=seed)
        est = estimate_ctf(img, pix)
        p = est.params
        d_err.append(abs(p.defocus_mean_a - d) / d)
        assert p.defocus_u_a >= p.defocus_v_a
        assert -90.0 < p.defocus_angle_deg <= 90.0
        if astig >= 300:
            a_err.append(_angle_error_deg(p.defocus_angle_deg, angle))
            assert p.astigmatism_a == pytest.approx(astig, abs=max(0.25 * astig, 150.0))
        else:
            assert p.astigmatism_a < 250.0
        assert 0.1 < est.figure_of_merit <= 1.0
        assert est.band_a[0] == 30.0
    assert float(np.median(d_err)) <= 0.005
    assert max(d_err) < 0.012
    # Median angle error within 3°; at 0.5 µm with only 300 Å astigmatism the angle is
    # weakly determined (measured 6.8° for that case), hence the looser maximum.
    assert float(np.median(a_err)) <= 3.0
    assert max(a_err) < 10.0


def test_quick_fit_and_fit_resolution() -> None:
    truth = CTFParams(18400.0, 17600.0, 30.0)
    img = synthetic_micrograph(truth, (1024, 1024), 1.5, seed=11, snr=0.5)
    est = estimate_ctf(img, 1.5)
    assert abs(est.params.defocus_mean_a - 18000.0) / 18000.0 < 0.005
    assert _angle_error_deg(est.params.defocus_angle_deg, 30.0) < 4.0
    # The envelope (B = 150 Å²) and noise limit the rings: the fit resolution lies inside
    # the band, and the shell correlation is above 0.3 up to it.
    assert 4.0 < est.fit_resolution_a < 15.0
    d = est.diagnostics
    s, cc = d["s_per_a"], d["cc_1d"]
    inside = (s > 1 / 20.0) & (s < 0.9 / est.fit_resolution_a)
    assert np.all(cc[inside] > 0.3 - 0.05)
    # Ice-ring indicator: sampled (Nyquist 3 Å), no ice ring in this image.
    assert est.ice_ring_ratio == pytest.approx(1.0, abs=0.1)


def test_phase_shift_fit() -> None:
    truth = CTFParams(9000.0, 9000.0, 0.0, phase_shift_deg=60.0)
    img = synthetic_micrograph(truth, (1024, 1024), 1.2, seed=5, snr=0.5)
    est = estimate_ctf(img, 1.2, options=EstimateOptions(fit_phase_shift=True))
    assert est.params.phase_shift_deg == pytest.approx(60.0, abs=10.0)
    assert abs(est.params.defocus_mean_a - 9000.0) / 9000.0 < 0.02


def test_noise_only_has_low_figure_of_merit(rng: np.random.Generator) -> None:
    img = rng.standard_normal((768, 768)).astype(np.float32)
    est = estimate_ctf(img, 1.3)
    assert est.figure_of_merit < 0.1
    assert est.fit_resolution_a == pytest.approx(30.0)  # never reached 0.3


def test_fit_resolution_rule() -> None:
    s = np.linspace(0, 0.5, 101)
    cc = np.where(s < 0.2, 0.8, 0.1)
    cc[:5] = -0.2  # low-frequency shells below the threshold are skipped
    assert _fit_resolution(cc, s, 0.03) == pytest.approx(1 / 0.2, rel=0.05)
    assert _fit_resolution(np.full(101, 0.9), s, 0.03) == pytest.approx(2.0)
    assert _fit_resolution(np.zeros(101), s, 0.03) == pytest.approx(1 / 0.03)


def test_fit_resolution_ignores_a_brief_dip() -> None:
    s = np.linspace(0.0, 0.5, 101)
    cc = np.where(s < 0.3, 0.8, 0.1)
    cc[20:22] = 0.1  # a two-shell dip at s ≈ 0.1 (e.g. beside a strong solvent ring)
    assert _fit_resolution(cc, s, 0.03) == pytest.approx(1 / 0.3, rel=0.03)
    # a sustained drop is the fit resolution, wherever it starts
    cc[20:40] = 0.1
    assert _fit_resolution(cc, s, 0.03) == pytest.approx(1 / 0.1, rel=0.05)
    # a dip at the very last shells still ends the fit there
    cc2 = np.full(101, 0.8)
    cc2[-2:] = 0.1
    assert _fit_resolution(cc2, s, 0.03) == pytest.approx(1 / s[-2], rel=0.03)


def test_power_spectrum_welch_and_binning(rng: np.random.Generator) -> None:
    white = rng.standard_normal((1024, 1024))
    spec = tiled_power_spectrum(white, 0.5, tile_px=256)
    assert spec.bin_factor == 2 and spec.pixel_size_a == 1.0
    assert spec.tile_px == 256 and spec.n_tiles == 9  # 512² binned, 50 % overlap: 3 × 3
    # White noise has a flat spectrum (away from the DC term removed by mean subtraction).
    p = spec.power
    assert p[5:60, 5:60].mean() == pytest.approx(p[60:120, 60:120].mean(), rel=0.1)
    small = tiled_power_spectrum(rng.standard_normal((300, 400)), 2.0, tile_px=512)
    assert small.tile_px == 256


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((512, 512), 3.0, dtype=np.float32), "blank"),
        (np.zeros((64, 900), dtype=np.float32), "too small"),
        (np.zeros((3, 256, 256), dtype=np.float32), "2D"),
    ],
)
def test_bad_images_raise_input_error(image: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        estimate_ctf(image, 1.0)


def test_nan_image_raises(rng: np.random.Generator) -> None:
    img = rng.standard_normal((300, 300)).astype(np.float32)
    img[10, 20] = np.nan
    with pytest.raises(InputError, match="1 NaN"):
        estimate_ctf(img, 1.0)
    with pytest.raises(InputError, match="pixel size"):
        estimate_ctf(rng.standard_normal((300, 300)), -1.0)


@pytest.mark.slow
def test_on_simulated_micrograph_from_cryoset_simulate() -> None:
    # Full image formation (particles, ice, MTF, shot noise) from the simulator engineer.
    sim = pytest.importorskip("cryoset.simulate.micrograph")
    pdb = require_shared_data("maps", "emd_5168", "3MFP.pdb")
    atoms = sim.atoms_from_file(str(pdb))
    settings = sim.MicrographSettings(
        shape_px=(1024, 1024), pixel_size_a=1.5, n_particles=20,
        defocus_range_a=(8000.0, 30000.0), astigmatism_a=1000.0, carbon_fraction=0.0,
    )  # fmt: skip
    m = sim.simulate_micrograph(atoms, settings, 1)
    est = estimate_ctf(m.image, 1.5, amplitude_contrast=settings.amplitude_contrast)
    t = m.ctf
    assert abs(est.params.defocus_mean_a - t.defocus_mean_a) / t.defocus_mean_a < 0.005
    assert _angle_error_deg(est.params.defocus_angle_deg, t.defocus_angle_deg) < 3.0
    assert math.isfinite(est.fit_resolution_a) and est.fit_resolution_a < 12.0


@pytest.mark.shared_data
def test_real_empiar_10028_png_has_recoverable_thon_rings() -> None:
    # 1024² 8-bit PNG resampled to ~5.36 Å/px (Nyquist 10.7 Å). Measured on the 7 images:
    # mean defocus 17.4–22.8 k Å, |U − V| < 370 Å, FOM 0.45–0.52, fit resolution 11.4–12.9 Å.
    from cryoset.io.images import read_image

    root = require_shared_data("micrographs", "empiar_10028", "images")
    image = read_image(root / "061_10028.png", pixel_size_a=5.36)
    assert image.bit_depth == 8
    est = estimate_ctf(image.data, 5.36)
    p = est.params
    assert 15000.0 < p.defocus_mean_a < 26000.0
    assert p.astigmatism_a < 800.0
    assert est.figure_of_merit > 0.35
    assert est.fit_resolution_a < 14.0
    assert math.isnan(est.ice_ring_ratio)  # 3.7 Å is far beyond Nyquist
    # A second micrograph of the same session gives a similar defocus.
    other = estimate_ctf(read_image(root / "062_10028.png", pixel_size_a=5.36).data, 5.36)
    assert abs(other.params.defocus_mean_a - p.defocus_mean_a) < 4000.0
