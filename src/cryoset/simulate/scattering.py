"""Elastic electron scattering factors of neutral atoms (5-Gaussian fit of Peng et al. 1996).

The electron scattering factor of an atom is parameterised as

.. math:: f_e(s) = \\sum_{i=1}^{5} a_i \\exp(-b_i s^2), \\qquad s = \\sin\\theta/\\lambda = q/2,

with :math:`f_e` in Å, :math:`b_i` in Å² and :math:`q = 1/d` the spatial frequency (Å⁻¹).
The coefficients are those of

    L.-M. Peng, G. Ren, S. L. Dudarev & M. J. Whelan (1996). "Robust parameterization of
    elastic and absorptive electron atomic scattering factors". *Acta Cryst.* A52, 257–276,
    Table 1 (fit for 0 ≤ s ≤ 2 Å⁻¹),

reprinted as International Tables for Crystallography Vol. C (2006), Table 4.3.2.2. The
numbers for C, N, O, P and S were cross-checked against two independent transcriptions
(the ITC Vol. C table as distributed with cctbx, ``cctbx/eltbx/e_scattering.py``, and
Bsoft's ``scat_peng.star``). The ``s ≤ 2 Å⁻¹`` fit is the right one for cryo-EM, where
``s = 1/(2d)`` stays far below 2 Å⁻¹ (d ≥ 0.25 Å).

Real-space potential
--------------------
With the Fourier convention ``F(q) = ∫ f(r) exp(-2πi q·r) d³r`` the electrostatic potential
of an isolated atom is ``V(r) = (h² / (2π m₀ e)) ∫ f_e(q/2) exp(2πi q·r) d³q``. Each
Gaussian term transforms analytically:

.. math:: V(r) = K \\sum_i a_i \\left(\\frac{4\\pi}{b_i}\\right)^{3/2} \\exp\\left(-\\frac{4\\pi^2 r^2}{b_i}\\right),
   \\qquad K = \\frac{h^2}{2\\pi m_0 e} = 47.878\\ \\mathrm{V\\,Å^2}

(:data:`POTENTIAL_PREFACTOR_V_A2`), a volt-valued potential whose integral over space is
``K f_e(0)`` V·Å³. An isotropic B-factor multiplies ``f_e`` by ``exp(-B s²)``, i.e. replaces
``b_i`` by ``b_i + B``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Planck constant (J s), electron rest mass (kg), elementary charge (C): CODATA 2018 exact/recommended.
_PLANCK_J_S = 6.62607015e-34
_ELECTRON_MASS_KG = 9.1093837015e-31
_ELEMENTARY_CHARGE_C = 1.602176634e-19

#: ``h² / (2π m₀ e)`` in V·Å² (≈ 47.878): turns a scattering factor (Å) into a potential.
POTENTIAL_PREFACTOR_V_A2: float = (
    _PLANCK_J_S**2 / (2.0 * math.pi * _ELECTRON_MASS_KG * _ELEMENTARY_CHARGE_C) * 1e20
)

# Peng et al. (1996) Table 1 / ITC Vol. C Table 4.3.2.2 (0 <= s <= 2 Å⁻¹):
# element -> ((a1..a5) in Å, (b1..b5) in Å²).
_PENG_1996_TABLE: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "H": ((0.0349, 0.1201, 0.1970, 0.0573, 0.1195), (0.5347, 3.5867, 12.3471, 18.9525, 38.6269)),
    "He": ((0.0317, 0.0838, 0.1526, 0.1334, 0.0164), (0.2507, 1.4751, 4.4938, 12.6646, 31.1653)),
    "Li": ((0.0750, 0.2249, 0.5548, 1.4954, 0.9354), (0.3864, 2.9383, 15.3829, 53.5545, 138.7337)),
    "Be": ((0.0780, 0.2210, 0.6740, 1.3867, 0.6925), (0.3131, 2.2381, 10.1517, 30.9061, 78.3273)),
    "B": ((0.0909, 0.2551, 0.7738, 1.2136, 0.4606), (0.2995, 2.1155, 8.3816, 24.1292, 63.1314)),
    "C": ((0.0893, 0.2563, 0.7570, 1.0487, 0.3575), (0.2465, 1.7100, 6.4094, 18.6113, 50.2523)),
    "N": ((0.1022, 0.3219, 0.7982, 0.8197, 0.1715), (0.2451, 1.7481, 6.1925, 17.3894, 48.1431)),
    "O": ((0.0974, 0.2921, 0.6910, 0.6990, 0.2039), (0.2067, 1.3815, 4.6943, 12.7105, 32.4726)),
    "F": ((0.1083, 0.3175, 0.6487, 0.5846, 0.1421), (0.2057, 1.3439, 4.2788, 11.3932, 28.7881)),
    "Ne": ((0.1269, 0.3535, 0.5582, 0.4674, 0.1460), (0.2200, 1.3779, 4.0203, 9.4934, 23.1278)),
    "Na": ((0.2142, 0.6853, 0.7692, 1.6589, 1.4482), (0.3334, 2.3446, 10.0830, 48.3037, 138.2700)),
    "Mg": ((0.2314, 0.6866, 0.9677, 2.1882, 1.1339), (0.3278, 2.2720, 10.9241, 39.2898, 101.9748)),
    "Al": ((0.2390, 0.6573, 1.2011, 2.5586, 1.2312), (0.3138, 2.1063, 10.4163, 34.4552, 98.5344)),
    "Si": ((0.2519, 0.6372, 1.3795, 2.5082, 1.0500), (0.3075, 2.0174, 9.6746, 29.3744, 80.4732)),
    "P": ((0.2548, 0.6106, 1.4541, 2.3204, 0.8477), (0.2908, 1.8740, 8.5176, 24.3434, 63.2996)),
    "S": ((0.2497, 0.5628, 1.3899, 2.1865, 0.7715), (0.2681, 1.6711, 7.0267, 19.5377, 50.3888)),
    "Cl": ((0.2443, 0.5397, 1.3919, 2.0197, 0.6621), (0.2468, 1.5242, 6.1537, 16.6687, 42.3086)),
    "Ar": ((0.2385, 0.5017, 1.3428, 1.8899, 0.6079), (0.2289, 1.3694, 5.2561, 14.0928, 35.5361)),
    "K": ((0.4115, 1.4031, 2.2784, 2.6742, 2.2162), (0.3703, 3.3874, 13.1029, 68.9592, 194.4329)),
    "Ca": ((0.4054, 1.3880, 2.1602, 3.7532, 2.2063), (0.3499, 3.0991, 11.9608, 53.9353, 142.3892)),
    "Mn": ((0.3796, 1.2094, 1.7815, 2.5420, 1.5937), (0.2699, 2.0455, 7.4726, 31.0604, 91.5622)),
    "Fe": ((0.3946, 1.2725, 1.7031, 2.3140, 1.4795), (0.2717, 2.0443, 7.6007, 29.9714, 86.2265)),
    "Co": ((0.4118, 1.3161, 1.6493, 2.1930, 1.2830), (0.2742, 2.0372, 7.7205, 29.9680, 84.9383)),
    "Ni": ((0.3860, 1.1765, 1.5451, 2.0730, 1.3814), (0.2478, 1.7660, 6.3107, 25.2204, 74.3146)),
    "Cu": ((0.4314, 1.3208, 1.5236, 1.4671, 0.8562), (0.2694, 1.9223, 7.3474, 28.9892, 90.6246)),
    "Zn": ((0.4288, 1.2646, 1.4472, 1.8294, 1.0934), (0.2593, 1.7998, 6.7500, 25.5860, 73.5284)),
    "Se": ((0.4477, 1.1678, 1.5843, 2.8087, 1.1956), (0.2405, 1.5442, 6.3231, 19.4610, 52.0233)),
    "Br": ((0.4798, 1.1948, 1.8695, 2.6953, 0.8203), (0.2504, 1.5963, 6.9653, 19.8492, 50.3233)),
    "I": ((0.7047, 1.9484, 2.5940, 4.1526, 1.5057), (0.2455, 1.8638, 6.7639, 21.8007, 56.4395)),
}

#: Read-only view of the table: element symbol -> ``((a1..a5) Å, (b1..b5) Å²)``.
PENG_1996: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = MappingProxyType(
    _PENG_1996_TABLE
)

#: Element used for unknown symbols when ``permissive=True``.
FALLBACK_ELEMENT = "C"

_ALIASES = MappingProxyType({"D": "H", "T": "H"})
_CHARGE = re.compile(r"^([A-Za-z]{1,2})\s*(?:\d*[+-]|[+-]\d*)?$")


def normalize_element(symbol: str) -> str:
    """Canonical capitalisation of an element symbol (``"FE"`` → ``"Fe"``, ``"ZN2+"`` → ``"Zn"``).

    Deuterium/tritium map to ``"H"``. Charges are dropped (the table holds neutral atoms).
    The result is not checked against the table.
    """
    text = str(symbol).strip()
    m = _CHARGE.match(text)
    core = m.group(1) if m else text
    canonical = core[:1].upper() + core[1:].lower()
    return _ALIASES.get(canonical, canonical)


@dataclass(frozen=True)
class ScatteringParameters:
    """Per-atom Gaussian coefficients.

    Attributes
    ----------
    a_a : ndarray, float64, shape (N, 5)
        Amplitudes ``a_i`` in Å.
    b_a2 : ndarray, float64, shape (N, 5)
        Widths ``b_i`` in Å² (without B-factor).
    substituted : dict
        Unknown element symbol → number of atoms replaced by carbon (empty unless permissive).
    """

    a_a: NDArray[np.float64]
    b_a2: NDArray[np.float64]
    substituted: dict[str, int] = field(default_factory=dict)


def scattering_parameters(elements: Iterable[str] | ArrayLike, *, permissive: bool = False
                          ) -> ScatteringParameters:
    """Look up the Peng 1996 coefficients for every atom.

    Parameters
    ----------
    elements : sequence of str, shape (N,)
        Element symbols (any capitalisation, charges allowed: ``"FE"``, ``"Zn2+"``).
    permissive
        If False (default), an unknown element raises ``ValueError`` naming it; if True it is
        replaced by carbon and counted in :attr:`ScatteringParameters.substituted`.

    Returns
    -------
    ScatteringParameters
    """
    symbols = np.asarray(elements, dtype=object).reshape(-1)
    uniq, inverse = np.unique(symbols.astype(str), return_inverse=True)
    a_tab = np.empty((len(uniq), 5), dtype=np.float64)
    b_tab = np.empty((len(uniq), 5), dtype=np.float64)
    substituted: dict[str, int] = {}
    counts = np.bincount(inverse, minlength=len(uniq)) if len(uniq) else np.zeros(0, int)
    for k, raw_symbol in enumerate(uniq):
        raw = str(raw_symbol)
        name = normalize_element(raw)
        if name not in _PENG_1996_TABLE:
            if not permissive:
                known = ", ".join(sorted(_PENG_1996_TABLE))
                raise ValueError(
                    f"no electron scattering factor for element {raw!r}; known: {known}"
                )
            substituted[raw] = substituted.get(raw, 0) + int(counts[k])
            name = FALLBACK_ELEMENT
        a, b = _PENG_1996_TABLE[name]
        a_tab[k] = a
        b_tab[k] = b
    return ScatteringParameters(a_a=a_tab[inverse], b_a2=b_tab[inverse], substituted=substituted)


def scattering_factor(element: str, s_per_a: ArrayLike) -> NDArray[np.float64]:
    """Electron scattering factor ``f_e(s) = Σ a_i exp(-b_i s²)`` in Å.

    Parameters
    ----------
    element
        Element symbol (see :func:`normalize_element`).
    s_per_a : array
        ``s = sin θ / λ = 1 / (2 d)`` in Å⁻¹, any shape.

    Returns
    -------
    ndarray, same shape as ``s_per_a``

    Raises
    ------
    ValueError
        Unknown element.

    Examples
    --------
    >>> round(float(scattering_factor("C", 0.0)), 4)
    2.5088
    """
    params = scattering_parameters([element])
    s2 = np.square(np.asarray(s_per_a, dtype=np.float64))
    out = np.zeros_like(s2)
    for a, b in zip(params.a_a[0], params.b_a2[0], strict=True):
        out += a * np.exp(-b * s2)
    return out
