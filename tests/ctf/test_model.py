"""The CTF model: physics invariants and agreement with RELION 3.1's own CTF images."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pytest

import cryoset.ctf.model as model
from cryoset.ctf.model import (
    CTFParams,
    ctf_1d,
    ctf_2d,
    ctf_2d_batch,
    ctf_phase_2d,
    electron_wavelength_a,
    frequency_grid,
)
from cryoset.testing import require_program


def test_wavelength_known_values() -> None:
    # Textbook relativistic wavelengths: 300 kV 0.01969 Å, 200 kV 0.02508 Å, 100 kV 0.03701 Å.
    assert electron_wavelength_a(300.0) == pytest.approx(0.019687, abs=2e-6)
    assert electron_wavelength_a(200.0) == pytest.approx(0.025079, abs=2e-6)
    assert electron_wavelength_a(100.0) == pytest.approx(0.037014, abs=2e-6)
    with pytest.raises(ValueError, match="voltage_kv"):
        electron_wavelength_a(-1.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("defocus_u_a", float("nan")),
        ("voltage_kv", 0.0),
        ("cs_mm", -1.0),
        ("amplitude_contrast", 1.0),
        ("bfactor_a2", float("inf")),
    ],
)
def test_params_validation_names_the_parameter(field: str, value: float) -> None:
    kwargs = {"defocus_u_a": 1e4, "defocus_v_a": 1e4, "defocus_angle_deg": 0.0, field: value}
    with pytest.raises(ValueError, match=field):
        CTFParams(**kwargs)


def test_1d_zeros_at_analytic_positions() -> None:
    # With Cs = 0, A = 0: χ = π λ Δf s², zeros at s_k = sqrt(k / (λ Δf)).
    p = CTFParams(20000.0, 20000.0, 0.0, cs_mm=0.0, amplitude_contrast=0.0)
    lam = electron_wavelength_a(300.0)
    s_zero = np.sqrt(np.arange(1, 8) / (lam * 20000.0))
    assert np.max(np.abs(ctf_1d(p, s_zero))) < 1e-4
    # Peaks between zeros: |CTF| = 1 at χ = (k + ½)π.
    s_peak = np.sqrt((np.arange(0, 7) + 0.5) / (lam * 20000.0))
    assert np.allclose(np.abs(ctf_1d(p, s_peak)), 1.0, atol=1e-5)
    # With Cs and A: zeros where π λ Δf s² − π/2 Cs λ³ s⁴ + w = kπ (solve the quadratic in s²).
    p = CTFParams(15000.0, 15000.0, 0.0, cs_mm=2.7, amplitude_contrast=0.1)
    cs = 2.7e7
    w = math.atan(0.1 / math.sqrt(1 - 0.01))
    for k in range(1, 10):
        a, b, c = -0.5 * math.pi * cs * lam**3, math.pi * lam * 15000.0, w - k * math.pi
        s2 = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
        assert abs(float(ctf_1d(p, math.sqrt(s2)))) < 1e-4


def test_sign_at_low_frequency_is_plus_amplitude_contrast() -> None:
    # RELION's convention: CTF = −sin(γ), γ = −χ, so CTF(0) = +A and the CTF stays positive
    # up to the first zero for underfocus (white-particle convention). Checked against
    # relion_ctf_toolbox below.
    p = CTFParams(20000.0, 20000.0, 0.0, amplitude_contrast=0.1)
    assert float(ctf_1d(p, 0.0)) == pytest.approx(0.1, abs=1e-6)
    c = ctf_2d(p, (128, 128), 2.0)
    assert c[0, 0] == pytest.approx(0.1, abs=1e-6)
    assert c[0, 1] > 0.1 and c[1, 0] > 0.1
    lam = electron_wavelength_a(300.0)
    s_first_zero = math.sqrt(1.0 / (lam * 20000.0))
    s = np.linspace(0, 0.95 * s_first_zero, 50)
    assert np.all(ctf_1d(p, s) > 0)


def test_astigmatism_angle_rotation_symmetry() -> None:
    n, pix = 96, 1.5
    p = CTFParams(22000.0, 18000.0, 0.0)
    q = CTFParams(22000.0, 18000.0, 90.0)
    # U along x, V along y: rotating the astigmatism by 90° swaps the axes (transpose).
    assert np.allclose(ctf_2d(p, (n, n), pix), ctf_2d(q, (n, n), pix).T, atol=1e-5)
    # Swapping U and V is the same as rotating by 90°.
    r = CTFParams(18000.0, 22000.0, 0.0)
    assert np.allclose(ctf_2d(q, (n, n), pix), ctf_2d(r, (n, n), pix), atol=1e-5)
    # The angle is periodic with 180° and the CTF is centrosymmetric.
    a = CTFParams(22000.0, 18000.0, 37.0)
    b = CTFParams(22000.0, 18000.0, 217.0)
    ca = ctf_2d(a, (n, n), pix, centered=True)
    assert np.allclose(ca, ctf_2d(b, (n, n), pix, centered=True), atol=1e-5)
    assert np.allclose(ca[1:, 1:], ca[1:, 1:][::-1, ::-1], atol=1e-5)
    # Along the angle direction the defocus is U: compare with the 1D CTF at defocus U.
    s, ang = frequency_grid((n, n), pix)
    chi = ctf_phase_2d(a, (n, n), pix)
    lam = electron_wavelength_a(300.0)
    on_axis = np.isclose(ang, np.deg2rad(37.0), atol=0.02) & (s > 0)
    w = math.atan(0.1 / math.sqrt(0.99))
    expected = np.pi * lam * 22000.0 * s**2 - 0.5 * np.pi * 2.7e7 * lam**3 * s**4 + w
    dfz_err = (chi - expected)[on_axis] / (np.pi * lam * s[on_axis] ** 2)
    assert np.max(np.abs(dfz_err)) < 4000.0 * (1 - math.cos(2 * 0.02)) + 1e-6


def test_rfft_layout_matches_full_grid() -> None:
    p = CTFParams(15000.0, 12000.0, 63.0, bfactor_a2=80.0, phase_shift_deg=30.0)
    full = ctf_2d(p, (50, 64), 1.2)
    half = ctf_2d(p, (50, 64), 1.2, rfft=True)
    assert half.shape == (50, 33)
    assert np.array_equal(full[:, :32], half[:, :32])
    # numpy puts the Nyquist column at −s_x in the full grid and +s_x in the half grid;
    # the CTF is centrosymmetric, so it equals the half grid mirrored in y (except the
    # corner at (−Nyquist, −Nyquist), which has no mirror partner on the grid).
    mirrored = np.roll(half[::-1, 32], 1)
    rows = np.arange(50) != 25
    assert np.allclose(full[rows, 32], mirrored[rows], atol=1e-6)
    assert half.dtype == np.float32
    centered = ctf_2d(p, (50, 64), 1.2, centered=True)
    assert np.array_equal(np.fft.fftshift(full), centered)


def test_bfactor_envelope() -> None:
    p0 = CTFParams(15000.0, 15000.0, 0.0)
    p1 = CTFParams(15000.0, 15000.0, 0.0, bfactor_a2=100.0)
    s = np.linspace(0.0, 0.3, 31)
    env = np.exp(-100.0 * s**2 / 4)
    assert np.allclose(ctf_1d(p1, s), ctf_1d(p0, s) * env, atol=1e-6)


def test_batch_equals_single() -> None:
    u = np.array([[10000.0, 20000.0, 30000.0], [5000.0, 7000.0, 9000.0]])
    v = u - 800.0
    ang = np.array([0.0, 45.0, 170.0])
    batch = ctf_2d_batch(u, v, ang, (40, 48), 1.3, phase_shift_deg=10.0, bfactor_a2=50.0, rfft=True)
    assert batch.shape == (2, 3, 40, 25)
    for i in range(2):
        for j in range(3):
            p = CTFParams(u[i, j], v[i, j], ang[j], phase_shift_deg=10.0, bfactor_a2=50.0)
            assert np.allclose(batch[i, j], ctf_2d(p, (40, 48), 1.3, rfft=True), atol=1e-6)
    with pytest.raises(ValueError, match="defocus_v_a"):
        ctf_2d_batch(1e4, np.nan, 0.0, (8, 8), 1.0)


def _relion_ctf(tmp_path: Path, name: str, p: CTFParams, box: int, pix: float) -> np.ndarray:
    exe = require_program("relion_ctf_toolbox")
    out = tmp_path / f"{name}.mrc"
    args = [
        exe, "--simulate", str(out), "--angpix", str(pix), "--box", str(box),
        "--kV", str(p.voltage_kv), "--Cs", str(p.cs_mm), "--Q0", str(p.amplitude_contrast),
        "--defU", str(p.defocus_u_a), "--defV", str(p.defocus_v_a),
        "--defAng", str(p.defocus_angle_deg), "--phase_shift", str(p.phase_shift_deg),
    ]  # fmt: skip
    subprocess.run(args, check=True, capture_output=True, cwd=tmp_path, timeout=60)
    with mrcfile.open(out) as m:
        return np.asarray(m.data, dtype=np.float32).copy()


@pytest.mark.relion
@pytest.mark.parametrize(
    ("p", "box", "pix"),
    [
        (CTFParams(20000.0, 18000.0, 30.0), 64, 1.5),
        (CTFParams(15000.0, 14000.0, 120.0, 200.0, 0.01, 0.07, 40.0), 65, 1.1),
        (CTFParams(8000.0, 9500.0, -75.0, 300.0, 2.7, 0.1, 0.0), 96, 0.9),
    ],
)
def test_matches_relion_ctf_toolbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, p: CTFParams, box: int, pix: float
) -> None:
    ref = _relion_ctf(tmp_path, "ctf", p, box, pix)
    ours = ctf_2d(p, (box, box), pix, centered=True)
    # RELION writes the full, centred (fftshift) CTF image; zero frequency at (box//2, box//2).
    assert ref.shape == ours.shape
    # At zero frequency both give sin(phase shift + arctan(A/√(1−A²))): +A without phase plate.
    w = math.atan(p.amplitude_contrast / math.sqrt(1 - p.amplitude_contrast**2))
    expected_dc = math.sin(math.radians(p.phase_shift_deg) + w)
    assert ref[box // 2, box // 2] == pytest.approx(expected_dc, abs=1e-5)
    assert ours[box // 2, box // 2] == pytest.approx(expected_dc, abs=1e-6)
    # Our exact CODATA wavelength differs from RELION's rounded constants by ~6e-6 relative,
    # which moves χ by < 3e-3 rad at Nyquist in these cases.
    assert np.max(np.abs(ours - ref)) < 3e-3
    # With RELION's wavelength formula the two agree to float32 precision.
    monkeypatch.setattr(
        model,
        "electron_wavelength_a",
        lambda kv: 12.2643247 / math.sqrt(kv * 1e3 * (1.0 + kv * 1e3 * 0.978466e-6)),
    )
    ours = ctf_2d(p, (box, box), pix, centered=True)
    assert np.max(np.abs(ours - ref)) < 5e-5
