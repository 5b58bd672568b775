"""Peng 1996 electron scattering factors: published numbers and physics they must obey."""

from __future__ import annotations

import numpy as np
import pytest

from cryoset.simulate.scattering import (
    PENG_1996,
    POTENTIAL_PREFACTOR_V_A2,
    normalize_element,
    scattering_factor,
    scattering_parameters,
)

BOHR_A = 0.529177210903
#: Mott–Bethe constant m₀e²/(8π h² ε₀) in Å⁻¹: f_e(s) = C (Z - f_x(s)) / s².
MOTT_BETHE_PER_A = 1.0 / (8.0 * np.pi**2 * BOHR_A)


def test_published_coefficients_spot_check() -> None:
    # Peng et al. 1996 Table 1 (= ITC Vol. C Table 4.3.2.2), carbon and sulfur rows.
    a, b = PENG_1996["C"]
    assert a == (0.0893, 0.2563, 0.7570, 1.0487, 0.3575)
    assert b == (0.2465, 1.7100, 6.4094, 18.6113, 50.2523)
    assert PENG_1996["S"][1][-1] == 50.3888
    for element in ("H", "C", "N", "O", "S", "P", "Na", "Mg", "K", "Ca", "Mn", "Fe", "Zn", "Cl"):
        assert element in PENG_1996


def test_prefactor_is_h2_over_2pi_m0_e() -> None:
    assert POTENTIAL_PREFACTOR_V_A2 == pytest.approx(47.878, abs=1e-3)


def test_hydrogen_forward_scattering_equals_bohr_radius() -> None:
    # Mott–Bethe at s → 0: f_e(0) = Σ<r²> / (3 a0); hydrogen 1s has <r²> = 3 a0², so f_e(0) = a0.
    assert float(scattering_factor("H", 0.0)) == pytest.approx(BOHR_A, rel=2e-3)


@pytest.mark.parametrize("s", [0.3, 0.5, 0.8, 1.0])
def test_hydrogen_obeys_mott_bethe(s: float) -> None:
    # Exact X-ray form factor of hydrogen 1s: f_x = 1 / (1 + (2π a0 s)²)².
    fx = 1.0 / (1.0 + (2.0 * np.pi * BOHR_A * s) ** 2) ** 2
    expected = MOTT_BETHE_PER_A * (1.0 - fx) / s**2
    assert float(scattering_factor("H", s)) == pytest.approx(expected, rel=0.02)


def test_factors_decrease_and_keep_shape() -> None:
    s = np.linspace(0.0, 2.0, 41).reshape(41, 1)
    for element in PENG_1996:
        f = scattering_factor(element, s)
        assert f.shape == (41, 1)
        assert np.all(np.diff(f[:, 0]) < 0), element
        assert f[0, 0] == pytest.approx(sum(PENG_1996[element][0]))


def test_normalize_element() -> None:
    assert normalize_element("FE") == "Fe"
    assert normalize_element(" zn2+ ") == "Zn"
    assert normalize_element("Cl-") == "Cl"
    assert normalize_element("D") == "H"


def test_unknown_element_raises_with_its_name() -> None:
    with pytest.raises(ValueError, match="'Xe'"):
        scattering_parameters(["C", "Xe"])
    with pytest.raises(ValueError, match="Uuo"):
        scattering_factor("Uuo", 0.1)


def test_permissive_falls_back_to_carbon_and_counts() -> None:
    params = scattering_parameters(["N", "Xe", "C", "Xe", "Hg"], permissive=True)
    assert params.substituted == {"Xe": 2, "Hg": 1}
    np.testing.assert_array_equal(params.a_a[1], PENG_1996["C"][0])
    np.testing.assert_array_equal(params.b_a2[0], PENG_1996["N"][1])
    assert params.a_a.shape == (5, 5)
