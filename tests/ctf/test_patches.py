"""Local defocus: surface fitting, patch estimation on a tilted synthetic specimen, tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoset.ctf.model import CTFParams
from cryoset.ctf.patches import (
    DefocusSurface,
    LocalCTF,
    add_local_defocus,
    estimate_patches,
    fit_surface,
    parse_patch_grid,
)
from cryoset.ctf.synthetic import synthetic_micrograph
from cryoset.errors import InputError


def test_parse_patch_grid() -> None:
    assert parse_patch_grid("3x2") == (3, 2)
    assert parse_patch_grid("4X4") == (4, 4)
    for bad in ("3", "0x3", "1x1", "ax2", "40x40"):
        with pytest.raises(InputError, match="--patches"):
            parse_patch_grid(bad)


def test_fit_surface_recovers_plane_and_rejects_outlier(rng: np.random.Generator) -> None:
    shape = (1000, 2000)
    x = rng.uniform(0, 2000, 16)
    y = rng.uniform(0, 1000, 16)
    truth = 15000.0 + 0.8 * x - 1.5 * y
    d = truth.copy()
    d[3] += 3000.0  # a failed patch
    surf, used = fit_surface(x, y, d, np.ones(16), shape, kind="plane")
    assert surf.kind == "plane"
    assert not used[3] and used.sum() == 15
    assert np.allclose(surf(x, y), truth, atol=1e-6)
    gx, gy = surf.gradient_a_per_px()
    assert gx == pytest.approx(0.8) and gy == pytest.approx(-1.5)
    # Quadratic surface exactly recovered; too few points fall back to lower orders.
    q = 1e4 + 2e-4 * (x - 999.5) ** 2
    surf_q, _ = fit_surface(x, y, q, np.ones(16), shape, kind="quadratic")
    assert np.allclose(surf_q(x, y), q, atol=1e-6)
    surf_c, _ = fit_surface(x[:2], y[:2], d[:2], np.ones(2), shape, kind="plane")
    assert surf_c.kind == "constant"


@pytest.mark.slow
def test_patches_recover_defocus_gradient() -> None:
    # A tilted specimen: +1.0 Å/px along x, −0.6 Å/px along y (6×6 blocks, 2×2 per patch).
    n, pix = 1024, 1.5
    truth = CTFParams(20400.0, 19600.0, 30.0)
    img = synthetic_micrograph(
        truth, (n, n), pix, seed=3, defocus_gradient_a_per_px=(1.0, -0.6), n_gradient_blocks=6
    )
    fit = estimate_patches(img, pix, (3, 3))
    gx, gy = fit.local.surface.gradient_a_per_px()
    # Measured 1.10 / −0.71 Å/px (patch defoci scatter by ~100 Å on 1024² at 1.5 Å).
    assert gx == pytest.approx(1.0, abs=0.2)
    assert gy == pytest.approx(-0.6, abs=0.2)
    assert fit.patches["used"].sum() >= 8
    centre = (n - 1) / 2
    u, v, a = fit.local.at([centre, 100.0], [centre, 900.0])
    expected_mean = 20000.0 + np.array([0.0, 1.0 * (100 - centre) - 0.6 * (900 - centre)])
    assert np.allclose(0.5 * (u + v), expected_mean, atol=150.0)
    assert np.allclose(u - v, fit.global_estimate.params.astigmatism_a)
    assert np.all(a == fit.global_estimate.params.defocus_angle_deg)


def test_add_local_defocus_matches_names_and_marks_unknown() -> None:
    params = CTFParams(21000.0, 20000.0, 15.0, voltage_kv=200.0)
    surf = DefocusSurface("plane", (20500.0, 1000.0, 0.0), (100, 200))
    local = {"Movies/mic_001.mrc": LocalCTF(params, surf)}
    picks = pd.DataFrame(
        {
            "micrograph": ["mic_001.mrc", "mic_001", "other.mrc"],
            "x_px": [99.5, 199.5, 5.0],
            "y_px": [10.0, 10.0, 5.0],
            "score": [0.9, 0.8, 0.7],
        }
    )
    out = add_local_defocus(picks, local)
    assert list(out["score"]) == [0.9, 0.8, 0.7]  # other columns kept
    # u = (x − 99.5) / 200: D = 20500 at the centre column, 21000 at x = 199.5.
    assert out["defocus_u_a"].iloc[0] == pytest.approx(21000.0)
    assert out["defocus_v_a"].iloc[0] == pytest.approx(20000.0)
    assert out["defocus_u_a"].iloc[1] == pytest.approx(21500.0)
    assert out["defocus_angle_deg"].iloc[1] == 15.0
    assert out["voltage_kv"].iloc[0] == 200.0
    assert np.isnan(out["defocus_u_a"].iloc[2])
    with pytest.raises(InputError, match="y_px"):
        add_local_defocus(picks.drop(columns="y_px"), local)
