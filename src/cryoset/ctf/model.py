"""The contrast transfer function (CTF) of a transmission electron microscope.

Conventions (identical to RELION 3.1 and CTFFIND 4; checked against
``relion_ctf_toolbox --simulate`` in ``tests/ctf/test_model.py``):

- Defocus is **positive for underfocus**, in Å. ``defocus_u_a`` is the defocus along the
  direction ``defocus_angle_deg`` (measured from the +x axis towards +y, i.e. towards
  increasing row index of a numpy image), ``defocus_v_a`` the one perpendicular to it.
  At spatial-frequency angle ``θ`` the defocus is::

      Δf(θ) = ½(U + V) + ½(U − V) cos(2(θ − φ))

- The phase (with ``s`` the spatial frequency in 1/Å, ``λ`` the relativistic electron
  wavelength in Å, ``Cs`` in Å, ``A`` the amplitude contrast, ``φ₀`` the phase shift)::

      χ(s, θ) = π λ Δf(θ) s² − (π/2) Cs λ³ s⁴ + φ₀ + w,   w = arctan(A / √(1 − A²))

- RELION writes its phase with the opposite sign, ``γ = −χ``, and its CTF as
  ``CTF = −sin(γ) = sin(χ)``; we return exactly that value, multiplied by the envelope
  ``exp(−B s² / 4)``. Consequently **the CTF is positive at low frequency**
  (``CTF(0) = A``), the sign RELION uses for images whose particles are white on a dark
  background (RELION expects contrast-inverted micrographs). The raw transmission
  image of an underfocused specimen has dark particles, i.e. it is modulated by ``−CTF``.
  Zeros lie where ``χ = kπ``.

Frequencies follow the numpy FFT layout (:func:`numpy.fft.fftfreq`, or
:func:`numpy.fft.rfftfreq` along x for ``rfft=True``); ``centered=True`` applies
:func:`numpy.fft.fftshift` on the full axes (the zero frequency lands on
``(ny // 2, nx // 2)``, which is also where RELION puts it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cryoset.errors import InputError

__all__ = [
    "CTFParams",
    "amplitude_contrast_phase_rad",
    "check_optics",
    "ctf_1d",
    "ctf_2d",
    "ctf_2d_batch",
    "ctf_phase_2d",
    "electron_wavelength_a",
    "frequency_grid",
]

# CODATA 2018 exact / recommended values (SI).
_PLANCK_J_S = 6.62607015e-34
_ELECTRON_MASS_KG = 9.1093837015e-31
_ELEMENTARY_CHARGE_C = 1.602176634e-19
_SPEED_OF_LIGHT_M_S = 299792458.0


def check_optics(voltage_kv: float, cs_mm: float, amplitude_contrast: float) -> None:
    """Refuse impossible microscope optics with one :class:`InputError` line naming the option."""
    if not 0 < voltage_kv < float("inf"):
        raise InputError("--voltage-kv", f"must be a positive number of kV, got {voltage_kv}")
    if not 0 <= cs_mm < float("inf"):
        raise InputError("--cs-mm", f"must be >= 0 mm, got {cs_mm}")
    if not 0 <= amplitude_contrast < 1:
        raise InputError("--amplitude-contrast", f"must be in [0, 1), got {amplitude_contrast}")


def electron_wavelength_a(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an accelerating voltage in kV.

    ``λ = h / √(2 m₀ e V (1 + e V / (2 m₀ c²)))``.

    Parameters
    ----------
    voltage_kv
        Accelerating voltage in kilovolts (> 0).

    Returns
    -------
    float
        Wavelength in Å (0.019687 Å at 300 kV, 0.025079 Å at 200 kV).

    Examples
    --------
    >>> round(electron_wavelength_a(300.0), 6)
    0.019687
    """
    if not math.isfinite(voltage_kv) or voltage_kv <= 0:
        raise ValueError(f"voltage_kv must be a positive finite number, got {voltage_kv!r}")
    volts = voltage_kv * 1e3
    energy_j = _ELEMENTARY_CHARGE_C * volts
    rest_j = _ELECTRON_MASS_KG * _SPEED_OF_LIGHT_M_S**2
    momentum = math.sqrt(2.0 * _ELECTRON_MASS_KG * energy_j * (1.0 + energy_j / (2.0 * rest_j)))
    return _PLANCK_J_S / momentum * 1e10


def amplitude_contrast_phase_rad(amplitude_contrast: float) -> float:
    """The phase ``w = arctan(A / √(1 − A²))`` that adds amplitude contrast ``A`` to ``χ``."""
    return math.atan2(amplitude_contrast, math.sqrt(1.0 - amplitude_contrast**2))


@dataclass(frozen=True)
class CTFParams:
    """Parameters of one CTF.

    Attributes
    ----------
    defocus_u_a, defocus_v_a
        Defoci (Å, positive = underfocus) along ``defocus_angle_deg`` and perpendicular to it.
    defocus_angle_deg
        Astigmatism angle, degrees from the +x axis towards +y.
    voltage_kv
        Accelerating voltage (kV).
    cs_mm
        Spherical aberration (mm, ≥ 0).
    amplitude_contrast
        Amplitude contrast fraction ``A`` in [0, 1).
    phase_shift_deg
        Additional phase shift (phase plate), degrees.
    bfactor_a2
        Envelope B-factor (Å²); the CTF is multiplied by ``exp(−B s² / 4)``.

    Raises
    ------
    ValueError
        Naming the parameter, when a value is not finite or out of range.
    """

    defocus_u_a: float
    defocus_v_a: float
    defocus_angle_deg: float
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    phase_shift_deg: float = 0.0
    bfactor_a2: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "defocus_u_a",
            "defocus_v_a",
            "defocus_angle_deg",
            "voltage_kv",
            "cs_mm",
            "amplitude_contrast",
            "phase_shift_deg",
            "bfactor_a2",
        ):
            value = getattr(self, name)
            try:
                ok = math.isfinite(float(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.voltage_kv <= 0:
            raise ValueError(f"voltage_kv must be > 0, got {self.voltage_kv!r}")
        if self.cs_mm < 0:
            raise ValueError(f"cs_mm must be >= 0, got {self.cs_mm!r}")
        if not 0.0 <= self.amplitude_contrast < 1.0:
            raise ValueError(
                f"amplitude_contrast must be in [0, 1), got {self.amplitude_contrast!r}"
            )

    @classmethod
    def from_row(cls, row: Any, fallback: CTFParams | None = None) -> CTFParams:
        """The CTF of one row of a canonical table (``defocus_u_a``, ``defocus_v_a``…).

        The one place a :class:`CTFParams` is built from a table row (a dict, a pandas
        Series or anything with ``.get``). ``defocus_u_a`` is required; a missing or NaN
        ``defocus_v_a`` is ``defocus_u_a``, a missing ``defocus_angle_deg`` is 0; missing
        optics (``voltage_kv``, ``cs_mm``, ``amplitude_contrast``, ``phase_shift_deg``) come
        from ``fallback``, else from the defaults above. Raises ValueError like the
        constructor.

        >>> CTFParams.from_row({"defocus_u_a": 15000.0, "voltage_kv": 200.0}).defocus_v_a
        15000.0
        >>> CTFParams.from_row({"defocus_u_a": 1.0, "cs_mm": float("nan")}).cs_mm
        2.7
        """
        base = fallback if fallback is not None else _DEFAULTS

        def get(name: str, default: float) -> float:
            v = row.get(name, None)
            if v is None:
                return default
            try:
                f = float(v)
            except TypeError:  # pandas' NA
                return default
            return default if math.isnan(f) else f

        u = float(row["defocus_u_a"])
        return cls(
            u, get("defocus_v_a", u), get("defocus_angle_deg", 0.0),
            get("voltage_kv", base.voltage_kv), get("cs_mm", base.cs_mm),
            get("amplitude_contrast", base.amplitude_contrast),
            get("phase_shift_deg", base.phase_shift_deg),
        )  # fmt: skip

    @property
    def defocus_mean_a(self) -> float:
        """Mean defocus ``(U + V) / 2`` in Å."""
        return 0.5 * (self.defocus_u_a + self.defocus_v_a)

    @property
    def astigmatism_a(self) -> float:
        """Astigmatism ``|U − V|`` in Å (RELION's ``rlnCtfAstigmatism``)."""
        return abs(self.defocus_u_a - self.defocus_v_a)

    @property
    def wavelength_a(self) -> float:
        """Electron wavelength (Å)."""
        return electron_wavelength_a(self.voltage_kv)


#: The defaults of :class:`CTFParams` (what :meth:`CTFParams.from_row` falls back to).
_DEFAULTS = CTFParams(0.0, 0.0, 0.0)


def frequency_grid(
    shape: tuple[int, int], pixel_size_a: float, rfft: bool = False, centered: bool = False
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Spatial frequency magnitude and angle for every element of a 2D Fourier transform.

    Parameters
    ----------
    shape
        Real-space image shape ``(ny, nx)``.
    pixel_size_a
        Pixel size (Å).
    rfft
        If True the grid is ``(ny, nx // 2 + 1)`` as from :func:`numpy.fft.rfft2`.
    centered
        Apply ``fftshift`` (along y only when ``rfft``), zero frequency at ``(ny // 2, nx // 2)``.

    Returns
    -------
    s_per_a : ndarray, shape (ny, nx) or (ny, nx // 2 + 1)
        ``|s|`` in 1/Å.
    angle_rad : ndarray, same shape
        ``atan2(s_y, s_x)`` in radians (x is the column axis, y the row axis).
    """
    ny, nx = (int(shape[0]), int(shape[1]))
    if ny < 1 or nx < 1:
        raise ValueError(f"shape must be positive, got {shape!r}")
    if not math.isfinite(pixel_size_a) or pixel_size_a <= 0:
        raise ValueError(f"pixel_size_a must be a positive finite number, got {pixel_size_a!r}")
    sy = np.fft.fftfreq(ny, d=pixel_size_a)
    sx = np.fft.rfftfreq(nx, d=pixel_size_a) if rfft else np.fft.fftfreq(nx, d=pixel_size_a)
    if centered:
        sy = np.fft.fftshift(sy)
        if not rfft:
            sx = np.fft.fftshift(sx)
    gy, gx = np.meshgrid(sy, sx, indexing="ij")
    return np.hypot(gx, gy), np.arctan2(gy, gx)


def _phase(
    s_per_a: NDArray[np.float64],
    angle_rad: NDArray[np.float64],
    defocus_u_a: NDArray[np.float64],
    defocus_v_a: NDArray[np.float64],
    defocus_angle_deg: NDArray[np.float64],
    wavelength_a: float,
    cs_a: float,
    offset_rad: NDArray[np.float64],
) -> NDArray[np.float64]:
    """χ with broadcasting: defocus arrays of shape (..., 1, 1) against grids (ny, nx)."""
    mean = 0.5 * (defocus_u_a + defocus_v_a)
    half = 0.5 * (defocus_u_a - defocus_v_a)
    dfz = mean + half * np.cos(2.0 * (angle_rad - np.deg2rad(defocus_angle_deg)))
    s2 = s_per_a * s_per_a
    out: NDArray[np.float64] = (
        np.pi * wavelength_a * dfz * s2
        - 0.5 * np.pi * cs_a * wavelength_a**3 * s2 * s2
        + offset_rad
    )
    return out


def ctf_phase_2d(
    params: CTFParams,
    shape: tuple[int, int],
    pixel_size_a: float,
    *,
    rfft: bool = False,
    centered: bool = False,
) -> NDArray[np.float64]:
    """The phase ``χ`` (radians, float64) on a 2D Fourier grid; ``CTF = sin(χ)·envelope``."""
    s, ang = frequency_grid(shape, pixel_size_a, rfft=rfft, centered=centered)
    offset = np.deg2rad(params.phase_shift_deg) + amplitude_contrast_phase_rad(
        params.amplitude_contrast
    )
    return _phase(
        s,
        ang,
        np.asarray(params.defocus_u_a, dtype=np.float64),
        np.asarray(params.defocus_v_a, dtype=np.float64),
        np.asarray(params.defocus_angle_deg, dtype=np.float64),
        params.wavelength_a,
        params.cs_mm * 1e7,
        np.asarray(offset, dtype=np.float64),
    )


def ctf_2d(
    params: CTFParams,
    shape: tuple[int, int],
    pixel_size_a: float,
    *,
    rfft: bool = False,
    centered: bool = False,
) -> NDArray[np.float32]:
    """The 2D CTF ``sin(χ) · exp(−B s²/4)`` in RELION's sign convention.

    Parameters
    ----------
    params
        CTF parameters.
    shape
        Real-space image shape ``(ny, nx)``.
    pixel_size_a
        Pixel size (Å).
    rfft
        Return the half-plane ``(ny, nx // 2 + 1)`` matching :func:`numpy.fft.rfft2`.
    centered
        Zero frequency at ``(ny // 2, nx // 2)`` (``fftshift``) instead of ``(0, 0)``.

    Returns
    -------
    ndarray, float32, shape (ny, nx) or (ny, nx // 2 + 1)
    """
    chi = ctf_phase_2d(params, shape, pixel_size_a, rfft=rfft, centered=centered)
    ctf = np.sin(chi)
    if params.bfactor_a2 != 0.0:
        s, _ = frequency_grid(shape, pixel_size_a, rfft=rfft, centered=centered)
        ctf *= np.exp(-0.25 * params.bfactor_a2 * s * s)
    return ctf.astype(np.float32)


def ctf_2d_batch(
    defocus_u_a: ArrayLike,
    defocus_v_a: ArrayLike,
    defocus_angle_deg: ArrayLike,
    shape: tuple[int, int],
    pixel_size_a: float,
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.1,
    phase_shift_deg: ArrayLike = 0.0,
    bfactor_a2: ArrayLike = 0.0,
    rfft: bool = False,
    centered: bool = False,
) -> NDArray[np.float32]:
    """Many CTFs at once: the defocus arguments broadcast to a batch shape ``B``.

    Parameters
    ----------
    defocus_u_a, defocus_v_a, defocus_angle_deg, phase_shift_deg, bfactor_a2
        Scalars or arrays broadcastable to a common batch shape ``B`` (e.g. ``(n,)``).
    shape, pixel_size_a, voltage_kv, cs_mm, amplitude_contrast, rfft, centered
        As in :func:`ctf_2d` / :class:`CTFParams` (shared by the whole batch).

    Returns
    -------
    ndarray, float32, shape ``B + (ny, nx)`` (or ``B + (ny, nx // 2 + 1)`` with ``rfft``)
        Equal, element for element, to :func:`ctf_2d` of the corresponding parameters.
    """
    u, v, a, ps, bf = np.broadcast_arrays(
        *(
            np.asarray(x, dtype=np.float64)
            for x in (defocus_u_a, defocus_v_a, defocus_angle_deg, phase_shift_deg, bfactor_a2)
        )
    )
    for name, arr in (
        ("defocus_u_a", u),
        ("defocus_v_a", v),
        ("defocus_angle_deg", a),
        ("phase_shift_deg", ps),
        ("bfactor_a2", bf),
    ):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite")
    # Validate the shared scalars through CTFParams.
    CTFParams(0.0, 0.0, 0.0, voltage_kv, cs_mm, amplitude_contrast)
    s, ang = frequency_grid(shape, pixel_size_a, rfft=rfft, centered=centered)

    def expand(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return x[..., None, None]

    offset = np.deg2rad(expand(ps)) + amplitude_contrast_phase_rad(amplitude_contrast)
    chi = _phase(
        s,
        ang,
        expand(u),
        expand(v),
        expand(a),
        electron_wavelength_a(voltage_kv),
        cs_mm * 1e7,
        offset,
    )
    ctf = np.sin(chi)
    if np.any(bf != 0.0):
        ctf *= np.exp(-0.25 * expand(bf) * s * s)
    return ctf.astype(np.float32)


def ctf_1d(params: CTFParams, s_per_a: ArrayLike) -> NDArray[np.float32]:
    """The rotationally averaged-defocus CTF along a line of frequencies.

    Uses the mean defocus ``(U + V) / 2`` (no astigmatism).

    Parameters
    ----------
    params
        CTF parameters.
    s_per_a
        Spatial frequencies (1/Å), any shape.

    Returns
    -------
    ndarray, float32, same shape as ``s_per_a``
    """
    s = np.asarray(s_per_a, dtype=np.float64)
    lam = params.wavelength_a
    chi = (
        np.pi * lam * params.defocus_mean_a * s**2
        - 0.5 * np.pi * params.cs_mm * 1e7 * lam**3 * s**4
        + np.deg2rad(params.phase_shift_deg)
        + amplitude_contrast_phase_rad(params.amplitude_contrast)
    )
    ctf = np.sin(chi)
    if params.bfactor_a2 != 0.0:
        ctf *= np.exp(-0.25 * params.bfactor_a2 * s * s)
    out: NDArray[np.float32] = np.asarray(ctf, dtype=np.float32)
    return out
