"""Simulated micrographs: particles in vitreous ice with a CTF, a carbon edge, contaminations,
shot noise and a detector MTF, together with the exact truth (positions, poses, local defocus).

Image formation (weak-phase approximation, all in float32)
---------------------------------------------------------
For every particle ``j`` with pose ``A_j`` the projected Coulomb potential ``V_j(x, y)``
(V·Å) is the analytic line integral of the atoms' potentials
(:func:`cryoset.simulate.potential.project_atoms`). In a padded box around its centre it is
shifted to its sub-pixel position and filtered with the CTF at the particle's *local*
defocus (micrograph defocus plus the plane ``tan(tilt) · distance`` of a tilted specimen):
``s_j = −2 σ · IFT[CTF_j · FT(V_j)]`` where ``σ`` is the interaction constant (rad/(V·Å))
and ``CTF`` is :func:`cryoset.ctf.model.ctf_2d` (positive at low frequency, so the minus
sign makes particles **dark** on a light background, as in a raw underfocused image).
Global effects act on the whole image:

* solvent/carbon structural noise: a white random phase (std ∝ √thickness) filtered by the
  micrograph-centre CTF — it gives the Thon rings of the power spectrum;
* transmission ``T = exp(−t_ice/Λ_ice − t_carbon/Λ_carbon − t_contamination/Λ_ice)``
  with a smoothly varying ice thickness (inelastic mean free paths ``Λ``);
* expected counts ``N = D · p² · T · (1 + Σ s_j + s_bg)`` with dose ``D`` (e/Å²) and pixel
  ``p`` (Å). The optional detector MTF filters the contrast terms ``s_j`` and ``s_bg`` (in
  the same Fourier pass as their CTF); the transmission ``T`` varies over hundreds of
  pixels, where the MTF is ≈ 1, so it is left unfiltered;
* Poisson shot noise.

Particles are placed uniformly at random, at least one particle diameter apart (centre to
centre; the diameter is that of the sphere with the structure's radius of gyration), away from the image edge, the carbon and the contaminations; orientations are
uniform on SO(3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft
from numpy.typing import NDArray

from cryoset.ctf.model import (
    CTFParams,
    amplitude_contrast_phase_rad,
    check_optics,
    electron_wavelength_a,
)
from cryoset.errors import InputError
from cryoset.geometry import matrix_to_euler, random_rotations
from cryoset.simulate import noise

_WORKERS = 2
#: Inelastic mean free paths (Å) at 300 kV; scaled ∝ (β² of the voltage) for other voltages.
MFP_ICE_300KV_A = 3500.0
MFP_CARBON_300KV_A = 1700.0


@dataclass(frozen=True)
class AtomSet:
    """The atoms of a structure, as used by the image simulators.

    Attributes
    ----------
    xyz_a : ndarray, shape (n, 3)
        Positions (Å), ``(x, y, z)``.
    elements : ndarray of str, shape (n,)
    b_factors_a2 : ndarray, shape (n,)
    """

    xyz_a: NDArray[np.float64]
    elements: NDArray[np.str_]
    b_factors_a2: NDArray[np.float64]

    def centred(self) -> AtomSet:
        """The same atoms with their centroid moved to the origin."""
        return AtomSet(self.xyz_a - self.xyz_a.mean(axis=0), self.elements, self.b_factors_a2)

    @property
    def diameter_a(self) -> float:
        """Diameter of the sphere with the same radius of gyration, ``2 √(5/3) R_g`` (Å)."""
        c = self.xyz_a - self.xyz_a.mean(axis=0)
        rg = float(np.sqrt((c**2).sum(axis=1).mean())) if len(c) else 0.0
        return 2.0 * math.sqrt(5.0 / 3.0) * rg

    @property
    def radius_a(self) -> float:
        """Largest distance of an atom from the centroid (Å)."""
        c = self.xyz_a - self.xyz_a.mean(axis=0)
        return float(np.sqrt((c**2).sum(axis=1).max())) if len(c) else 0.0


def atoms_from_protein(protein: Any) -> AtomSet:
    """An :class:`AtomSet` from a :class:`cryoset.simulate.protein.Protein`."""
    return AtomSet(np.asarray(protein.xyz_a, dtype=np.float64), np.asarray(protein.elements),
                   np.asarray(protein.b_factors_a2, dtype=np.float64))


def atoms_from_file(path: str) -> AtomSet:
    """Read the polymer and ligand atoms (no water, no hydrogens) of a PDB/mmCIF file.

    Read strictly through :func:`cryoset.io.structure.read_structure` (every alternate
    location kept): a file with no atoms or with non-numeric, NaN or infinite coordinates
    raises :class:`InputError` naming the file.
    """
    from cryoset.io.structure import read_structure

    atoms = read_structure(path, all_altlocs=True).atoms
    keep = (atoms["entity_type"] != "water") & ~atoms["element"].isin(["H", "D"])
    atoms = atoms.loc[keep]
    if atoms.empty:
        raise InputError(path, "the structure has no atoms other than water and hydrogen")
    return AtomSet(atoms[["x_a", "y_a", "z_a"]].to_numpy(np.float64), atoms["element"].to_numpy(str),
                   atoms["b_factor"].to_numpy(np.float64))


def interaction_constant_rad_per_v_a(voltage_kv: float) -> float:
    """Interaction constant ``σ = 2π m e λ / h²`` in rad/(V·Å).

    Written as ``σ = (2π / (λ V)) · (m₀c² + eV) / (2 m₀c² + eV)``; 6.53e-4 at 300 kV.
    """
    volts = voltage_kv * 1e3
    rest_ev = 510998.95
    lam = electron_wavelength_a(voltage_kv)
    return 2 * math.pi / (lam * volts) * (rest_ev + volts) / (2 * rest_ev + volts)


def _mfp_scale(voltage_kv: float) -> float:
    """(β² at voltage) / (β² at 300 kV): inelastic mean free paths scale about as β²."""
    def beta2(kv: float) -> float:
        gamma = 1 + kv / 510.99895
        return 1 - 1 / gamma**2
    return beta2(voltage_kv) / beta2(300.0)


@dataclass(frozen=True)
class MicrographSettings:
    """Parameters of a simulated micrograph (all lengths in Å unless ``_px``).

    Attributes
    ----------
    shape_px
        ``(ny, nx)``.
    pixel_size_a
        Pixel size.
    n_particles
        Number of particles.
    defocus_range_a
        The micrograph's mean defocus is uniform in this range (positive = underfocus).
    astigmatism_a
        ``|U − V|`` is uniform in ``[0, astigmatism_a]``, at a random angle.
    tilt_deg, tilt_axis_deg
        Specimen tilt giving a defocus plane ``Δf = Δf₀ + tan(tilt) · d`` with ``d`` the
        signed distance (Å) from the image centre perpendicular to the tilt axis (the axis
        at ``tilt_axis_deg`` from +x towards +y).
    voltage_kv, cs_mm, amplitude_contrast, ctf_bfactor_a2
        Microscope and CTF envelope.
    dose_e_per_a2
        Total dose.
    ice_thickness_a, ice_variation
        Mean ice thickness and its relative standard deviation (smooth field).
    carbon_fraction, carbon_thickness_a
        Fraction of the image covered by carbon beyond a curved hole edge (0 = none).
    n_contaminations
        Number of dark blobs (ice crystals / contamination).
    solvent_phase_std_rad
        Per-pixel std of the random solvent phase for 300 Å ice at 1 Å/px (scales with
        ``√(thickness) / pixel``); carbon gets three times as much per √Å.
    mtf
        Apply the detector MTF (:func:`cryoset.simulate.noise.detector_mtf`).
    max_pad_px
        Upper bound of the padded box used to apply each particle's CTF.
    """

    shape_px: tuple[int, int] = (1024, 1024)
    pixel_size_a: float = 1.0
    n_particles: int = 50
    defocus_range_a: tuple[float, float] = (10000.0, 25000.0)
    astigmatism_a: float = 300.0
    tilt_deg: float = 0.0
    tilt_axis_deg: float = 0.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    ctf_bfactor_a2: float = 0.0
    dose_e_per_a2: float = 40.0
    ice_thickness_a: float = 300.0
    ice_variation: float = 0.1
    carbon_fraction: float = 0.15
    carbon_thickness_a: float = 150.0
    n_contaminations: int = 2
    solvent_phase_std_rad: float = 0.08
    mtf: bool = True
    max_pad_px: int = 1024

    def check(self) -> None:
        """Raise :class:`InputError` naming the first parameter that makes no sense."""
        ny, nx = self.shape_px
        if ny < 32 or nx < 32:
            raise InputError("size", f"micrograph must be at least 32×32 pixels, got {ny}×{nx}")
        if not self.pixel_size_a > 0:
            raise InputError("pixel-size", f"must be > 0, got {self.pixel_size_a}")
        if self.n_particles < 0:
            raise InputError("particles", f"must be >= 0, got {self.n_particles}")
        lo, hi = self.defocus_range_a
        if not 0 <= lo <= hi:
            raise InputError("defocus-range", f"need 0 <= min <= max, got {lo}, {hi}")
        if not self.dose_e_per_a2 > 0:
            raise InputError("dose", f"must be > 0, got {self.dose_e_per_a2}")
        check_optics(self.voltage_kv, self.cs_mm, self.amplitude_contrast)
        if not 0 <= self.carbon_fraction < 0.9:
            raise InputError("carbon-fraction", f"must be in [0, 0.9), got {self.carbon_fraction}")
        if self.ice_thickness_a < 0:
            raise InputError("ice-thickness", f"must be >= 0, got {self.ice_thickness_a}")
        if not -80 < self.tilt_deg < 80:
            raise InputError("tilt", f"must be in (-80, 80) degrees, got {self.tilt_deg}")


@dataclass
class SimulatedMicrograph:
    """A simulated micrograph and its truth.

    Attributes
    ----------
    image : ndarray of float32, shape (ny, nx)
        Electron counts per pixel (after MTF and shot noise).
    picks : DataFrame
        One row per particle: the canonical picks columns (``micrograph``, ``x_px``,
        ``y_px``, ``score`` = NaN, ``diameter_px``) plus ``rot_deg``, ``tilt_deg``,
        ``psi_deg`` (RELION ZYZ pose of the projection), ``defocus_u_a``, ``defocus_v_a``,
        ``defocus_angle_deg`` (local CTF at the particle centre).
    ctf : CTFParams
        The micrograph's CTF (defocus at the image centre).
    carbon_mask, contamination_mask : ndarray of bool, shape (ny, nx)
    expected_counts_per_pixel : float
        Dose × pixel area.
    name : str
        Micrograph file name (as in the picks table).
    """

    image: NDArray[np.float32]
    picks: pd.DataFrame
    ctf: CTFParams
    carbon_mask: NDArray[np.bool_]
    contamination_mask: NDArray[np.bool_]
    expected_counts_per_pixel: float
    name: str = "micrograph_0000.mrc"


# --- scene layout ------------------------------------------------------------------------

def carbon_mask(shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> NDArray[np.bool_]:
    """A region outside a large circular hole covering about ``fraction`` of the image.

    The hole centre lies in a random direction from the image centre; its radius is chosen
    (by bisection on a coarse grid) so the carbon covers ``fraction`` of the image.
    """
    ny, nx = shape
    if fraction <= 0:
        return np.zeros(shape, dtype=bool)
    angle = rng.uniform(0, 2 * np.pi)
    big = 2.0 * max(ny, nx)
    cy = ny / 2 + math.sin(angle) * big
    cx = nx / 2 + math.cos(angle) * big
    gy = np.linspace(0, ny - 1, 96)[:, None]
    gx = np.linspace(0, nx - 1, 96)[None, :]
    dist = np.hypot(gy - cy, gx - cx)
    lo, hi = float(dist.min()), float(dist.max())
    for _ in range(40):
        r = 0.5 * (lo + hi)
        if float(np.mean(dist > r)) > fraction:
            lo = r
        else:
            hi = r
    radius = 0.5 * (lo + hi)
    yy = np.arange(ny, dtype=np.float32)[:, None]
    xx = np.arange(nx, dtype=np.float32)[None, :]
    return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 > radius**2)


def contamination_thickness(shape: tuple[int, int], n: int, pixel_size_a: float,
                            rng: np.random.Generator) -> NDArray[np.float32]:
    """Extra ice thickness (Å) of ``n`` soft-edged irregular blobs, 1000–3000 Å thick.

    Radii are 2–6 % of the image's smaller side (so the blobs cover a similar fraction of
    small and large images).
    """
    ny, nx = shape
    out = np.zeros(shape, dtype=np.float32)
    for _ in range(n):
        radius_px = rng.uniform(0.02, 0.06) * min(ny, nx)
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        thick = rng.uniform(1000, 3000)
        r = math.ceil(radius_px * 1.5) + 1
        y0, y1 = max(0, int(cy) - r), min(ny, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(nx, int(cx) + r + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        # irregular outline: the radius varies with angle
        phase = rng.uniform(0, 2 * np.pi, 3)
        theta = np.arctan2(yy, xx)
        rad = radius_px * (1 + 0.15 * np.sin(2 * theta + phase[0]) + 0.1 * np.sin(3 * theta + phase[1]))
        d = np.sqrt(yy**2 + xx**2) / rad
        profile = np.clip(1 - d**2, 0, None) ** 0.5
        out[y0:y1, x0:x1] += (thick * profile).astype(np.float32)
    return out


def place_particles(shape: tuple[int, int], n: int, diameter_px: float, rng: np.random.Generator,
                    forbidden: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
    """Random non-overlapping particle centres (random sequential addition).

    Parameters
    ----------
    shape
        ``(ny, nx)``.
    n
        Number of particles.
    diameter_px
        Centres are at least this far apart and at least half of it from the edges.
    rng
        Seeded generator.
    forbidden : ndarray of bool, shape ``shape``, optional
        Pixels where no part of a particle may lie (carbon, contamination).

    Returns
    -------
    ndarray, shape (n, 2)
        ``(x_px, y_px)`` of each centre (float, pixel centres on integers).

    Raises
    ------
    InputError
        When ``n`` particles do not fit.
    """
    ny, nx = shape
    half = diameter_px / 2
    if n == 0:
        return np.zeros((0, 2))
    if 2 * half >= min(ny, nx) - 2:
        raise InputError("particles", f"a particle of {diameter_px:.0f} px does not fit a {ny}×{nx} image")
    allowed = None
    if forbidden is not None and forbidden.any():
        from scipy import ndimage

        step = max(1, int(half // 4))
        coarse = forbidden[::step, ::step]
        dist = ndimage.distance_transform_edt(~coarse) * step
        allowed = (dist > half + step, step)
    accepted: list[tuple[float, float]] = []
    pos = np.zeros((0, 2))
    tries = 0
    max_tries = 200 * n + 2000
    while len(accepted) < n and tries < max_tries:
        batch = rng.uniform((half, half), (nx - 1 - half, ny - 1 - half), size=(256, 2))
        for x, y in batch:
            tries += 1
            if allowed is not None:
                ok_mask, step = allowed
                if not ok_mask[round(y) // step, round(x) // step]:
                    continue
            if len(pos) and float(np.min((pos[:, 0] - x) ** 2 + (pos[:, 1] - y) ** 2)) < diameter_px**2:
                continue
            accepted.append((float(x), float(y)))
            pos = np.array(accepted)
            if len(accepted) == n:
                break
    if len(accepted) < n:
        raise InputError("particles", f"only {len(accepted)} of {n} particles of {diameter_px:.0f} px "
                         f"fit the free area of a {ny}×{nx} image without overlapping")
    return np.array(accepted)


def local_defocus_a(x_px: NDArray[np.float64], y_px: NDArray[np.float64], shape: tuple[int, int],
                    defocus_a: float, pixel_size_a: float, tilt_deg: float,
                    tilt_axis_deg: float) -> NDArray[np.float64]:
    """Defocus at positions of a tilted specimen: ``Δf₀ + tan(tilt) · d``.

    ``d`` (Å) is the signed distance from the image centre perpendicular to the tilt axis
    (axis direction ``(cos a, sin a)`` in (x, y); ``d`` positive towards ``(−sin a, cos a)``).
    """
    ny, nx = shape
    a = math.radians(tilt_axis_deg)
    dx = (np.asarray(x_px) - (nx - 1) / 2) * pixel_size_a
    dy = (np.asarray(y_px) - (ny - 1) / 2) * pixel_size_a
    d = -math.sin(a) * dx + math.cos(a) * dy
    return np.asarray(defocus_a + math.tan(math.radians(tilt_deg)) * d, dtype=np.float64)


# --- projections -------------------------------------------------------------------------

ProjectFn = Callable[[AtomSet, NDArray[np.float64], int, float], NDArray[np.float32]]


def template_box_px(atoms: AtomSet, pixel_size_a: float) -> int:
    """An even box (pixels) holding the structure in any orientation, with a 10 Å margin."""
    size = 2 * (atoms.radius_a + 10.0) / pixel_size_a
    return int(2 * math.ceil(size / 2))


def _run_chunks(fn: Callable[[range], None], n: int, workers: int) -> None:
    """Call ``fn`` on ``workers`` interleaved index ranges in threads (numba, numpy and
    scipy.fft release the GIL), or directly for one worker."""
    if workers <= 1 or n < 2:
        fn(range(n))
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, range(k, n, workers)) for k in range(workers)]
        for f in futures:
            f.result()


def project_structure(atoms: AtomSet, rotations: NDArray[np.float64], box_px: int,
                      pixel_size_a: float, *, workers: int = _WORKERS) -> NDArray[np.float32]:
    """Projected potential (V·Å) of ``atoms`` for every pose, centred at pixel ``box // 2``.

    Each projection is the analytic line integral of the atoms' Gaussian potentials
    (:func:`cryoset.simulate.potential.project_atoms`): exact, no map interpolation.

    Parameters
    ----------
    atoms
        Atoms; the origin ``(0, 0, 0)`` lands on pixel ``[box // 2, box // 2]``.
    rotations : ndarray, shape (n, 3, 3)
        RELION rotation matrices ``A`` (reference → image frame).
    box_px
        Box size.
    pixel_size_a
        Pixel size.
    workers
        Threads.

    Returns
    -------
    ndarray of float32, shape (n, box_px, box_px)
    """
    from cryoset.simulate.potential import project_atoms

    out = np.empty((len(rotations), box_px, box_px), dtype=np.float32)

    def work(idx: range) -> None:
        for k in idx:
            out[k] = project_atoms(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, rotations[k],
                                   (box_px, box_px), pixel_size_a, center_xyz_a=np.zeros(3),
                                   permissive=True)

    _run_chunks(work, len(rotations), workers)
    return out


def project_structure_rotate(atoms: AtomSet, rotations: NDArray[np.float64], box_px: int,
                             pixel_size_a: float, *, workers: int = 1) -> NDArray[np.float32]:
    """The naive route: rotate the potential map in real space for every pose and sum along z.

    Same output contract as :func:`project_structure` (trilinear interpolation, so slightly
    blurred); used as the benchmark baseline.
    """
    from scipy import ndimage

    from cryoset.simulate.potential import potential_volume

    c = box_px // 2
    origin = -c * pixel_size_a
    vol = potential_volume(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, (box_px,) * 3,
                           pixel_size_a, (origin,) * 3, permissive=True)
    out = np.empty((len(rotations), box_px, box_px), dtype=np.float32)
    centre = np.full(3, float(c))
    # image-frame voxel (k, j, i) = (z, y, x) samples the map at A.T @ (x, y, z)
    rev = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float64)

    def work(idx: range) -> None:
        for k in idx:
            m = rev @ rotations[k].T @ rev
            rotated = ndimage.affine_transform(vol, m, offset=centre - m @ centre, order=1)
            out[k] = rotated.sum(axis=0) * np.float32(pixel_size_a)

    _run_chunks(work, len(rotations), workers)
    return out


# --- image formation ---------------------------------------------------------------------

class CTFGrid:
    """Fast float32 evaluation of many CTFs that share a grid, voltage, Cs and A.

    Precomputes ``s²``, ``s² cos 2θ``, ``s² sin 2θ`` and ``s⁴`` on the ``rfft2`` grid so one
    CTF costs four multiply-adds and a sine. Same formula and sign as
    :func:`cryoset.ctf.model.ctf_2d` (checked to 1e-4 in the tests), optionally multiplied by
    a detector MTF.

    Parameters
    ----------
    shape
        ``(ny, nx)`` real-space box.
    pixel_size_a
        Pixel size.
    voltage_kv, cs_mm, amplitude_contrast
        Shared microscope parameters.
    transfer : ndarray, shape (ny, nx // 2 + 1), optional
        Extra factor (e.g. the detector MTF) multiplied into every CTF.
    """

    def __init__(self, shape: tuple[int, int], pixel_size_a: float, voltage_kv: float,
                 cs_mm: float, amplitude_contrast: float,
                 transfer: NDArray[np.float32] | None = None) -> None:
        # s² cos 2θ = sx² − sy² and s² sin 2θ = 2 sx sy: no trigonometry on the grid
        sy = scipy.fft.fftfreq(shape[0], d=pixel_size_a).astype(np.float32)[:, None]
        sx = scipy.fft.rfftfreq(shape[1], d=pixel_size_a).astype(np.float32)[None, :]
        self.shape = shape
        self.s2 = sx * sx + sy * sy
        self.s2_cos = sx * sx - sy * sy
        self.s2_sin = np.float32(2.0) * sx * sy
        self.s4 = self.s2 * self.s2
        self.wavelength_a = electron_wavelength_a(voltage_kv)
        self.cs_a = cs_mm * 1e7
        self.offset_rad = amplitude_contrast_phase_rad(amplitude_contrast)
        self.transfer = transfer

    def __call__(self, params: CTFParams) -> NDArray[np.float32]:
        """The CTF (times ``transfer``) of ``params`` on the grid, float32."""
        k = math.pi * self.wavelength_a
        mean = 0.5 * (params.defocus_u_a + params.defocus_v_a)
        half = 0.5 * (params.defocus_u_a - params.defocus_v_a)
        phi2 = 2 * math.radians(params.defocus_angle_deg)
        chi = self.s2 * np.float32(k * mean)
        chi += self.s2_cos * np.float32(k * half * math.cos(phi2))
        chi += self.s2_sin * np.float32(k * half * math.sin(phi2))
        chi -= self.s4 * np.float32(0.5 * math.pi * self.cs_a * self.wavelength_a**3)
        chi += np.float32(self.offset_rad + math.radians(params.phase_shift_deg))
        out = np.sin(chi, out=chi)
        if params.bfactor_a2 != 0.0:
            out *= np.exp(self.s2 * np.float32(-0.25 * params.bfactor_a2))
        if self.transfer is not None:
            out *= self.transfer
        return out


def padded_box_px(box_px: int, settings: MicrographSettings, max_defocus_a: float) -> int:
    """Box size that holds the CTF delocalisation ``λ Δf s_Nyquist`` on both sides."""
    lam = electron_wavelength_a(settings.voltage_kv)
    s_nyq = 1 / (2 * settings.pixel_size_a)
    deloc_px = lam * max_defocus_a * s_nyq / settings.pixel_size_a
    want = box_px + 2 * math.ceil(deloc_px)
    limit = min(settings.max_pad_px, 2 * max(settings.shape_px))
    return int(scipy.fft.next_fast_len(max(box_px, min(want, limit)), real=True))


def add_particles(signal: NDArray[np.float32], projections: NDArray[np.float32],
                  xy_px: NDArray[np.float64], ctfs: list[CTFParams], pixel_size_a: float,
                  pad_px: int, scale: float, *, transfer: NDArray[np.float32] | None = None,
                  workers: int = _WORKERS) -> None:
    """Add ``scale · IFT[CTF_j · T · FT(shifted projection_j)]`` into ``signal`` in place.

    Parameters
    ----------
    signal : ndarray of float32, shape (ny, nx)
        Accumulator (modified in place).
    projections : ndarray, shape (n, b, b)
        Projections centred at pixel ``b // 2``.
    xy_px : ndarray, shape (n, 2)
        Particle centres ``(x_px, y_px)`` in the micrograph; the sub-pixel part is applied
        as a Fourier phase ramp.
    ctfs
        One CTF per particle (all with the voltage, Cs and amplitude contrast of ``ctfs[0]``).
    pixel_size_a
        Pixel size.
    pad_px
        Size of the padded box in which the CTF is applied (>= b).
    scale
        Multiplies the filtered projection (``−2σ`` for a micrograph).
    transfer : ndarray, shape (pad, pad // 2 + 1), optional
        Extra transfer function (detector MTF) on the padded box's rfft grid.
    workers
        Threads.
    """
    ny, nx = signal.shape
    n, b, _ = projections.shape
    if n == 0:
        return
    p = pad_px
    c0 = ctfs[0]
    half_shape = (p, p // 2 + 1)
    factor = np.full(half_shape, scale, dtype=np.float32)
    if transfer is not None:
        factor *= transfer
    grid = CTFGrid((p, p), pixel_size_a, c0.voltage_kv, c0.cs_mm, c0.amplitude_contrast, factor)
    fy = scipy.fft.fftfreq(p)
    fx = scipy.fft.rfftfreq(p)
    off = p // 2 - b // 2

    def render(j: int) -> tuple[NDArray[np.float32], int, int]:
        padded = np.zeros((p, p), dtype=np.float32)
        x, y = float(xy_px[j, 0]), float(xy_px[j, 1])
        ix, iy = round(x), round(y)
        padded[off:off + b, off:off + b] = projections[j]
        spec = scipy.fft.rfft2(padded)
        spec *= grid(ctfs[j])
        spec *= np.exp(-2j * np.pi * (y - iy) * fy).astype(np.complex64)[:, None]
        spec *= np.exp(-2j * np.pi * (x - ix) * fx).astype(np.complex64)[None, :]
        return scipy.fft.irfft2(spec, s=(p, p)), iy - p // 2, ix - p // 2

    def accumulate(box: NDArray[np.float32], y0: int, x0: int) -> None:
        sy0, sx0 = max(0, y0), max(0, x0)
        sy1, sx1 = min(ny, y0 + p), min(nx, x0 + p)
        if sy0 < sy1 and sx0 < sx1:
            signal[sy0:sy1, sx0:sx1] += box[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]

    # Boxes are computed in threads but added in particle order, so overlapping particles sum
    # in the same order whatever the number of workers: the result is the same bit for bit.
    if workers <= 1 or n < 2:
        for j in range(n):
            accumulate(*render(j))
        return
    from concurrent.futures import ThreadPoolExecutor

    batch = 8 * workers
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, n, batch):
            for rendered in pool.map(render, range(start, min(n, start + batch))):
                accumulate(*rendered)


def simulate_micrograph(atoms: AtomSet, settings: MicrographSettings, seed: int, *,
                        name: str = "micrograph_0000.mrc",
                        project: ProjectFn = project_structure) -> SimulatedMicrograph:
    """Simulate one micrograph of copies of ``atoms``.

    Parameters
    ----------
    atoms
        The structure (any centre; it is centred).
    settings
        Scene and microscope parameters.
    seed
        Seed: the same seed and settings give the same image, bit for bit.
    name
        Micrograph name written in the picks table.
    project
        Function making the projection templates (default: analytic atom projection).

    Returns
    -------
    SimulatedMicrograph
    """
    settings.check()
    rng = np.random.default_rng(seed)
    shape = settings.shape_px
    ny, nx = shape
    px = settings.pixel_size_a
    atoms = atoms.centred()

    # CTF of the micrograph (at the image centre)
    d_mean = float(rng.uniform(*settings.defocus_range_a))
    astig = float(rng.uniform(0, settings.astigmatism_a))
    astig_angle = float(rng.uniform(-90, 90))
    ctf0 = CTFParams(d_mean + astig / 2, d_mean - astig / 2, astig_angle, settings.voltage_kv,
                     settings.cs_mm, settings.amplitude_contrast, 0.0, settings.ctf_bfactor_a2)

    # scene: carbon, contaminations, particle positions
    carbon = carbon_mask(shape, settings.carbon_fraction, rng)
    contam = contamination_thickness(shape, settings.n_contaminations, px, rng)
    contam_mask = contam > 0
    diameter_px = atoms.diameter_a / px
    xy = place_particles(shape, settings.n_particles, diameter_px, rng,
                         forbidden=carbon | contam_mask)
    rotations = random_rotations(len(xy), rng)
    eulers = matrix_to_euler(rotations)
    dfs = local_defocus_a(xy[:, 0], xy[:, 1], shape, 0.0, px, settings.tilt_deg,
                          settings.tilt_axis_deg)
    ctfs = [CTFParams(ctf0.defocus_u_a + d, ctf0.defocus_v_a + d, ctf0.defocus_angle_deg,
                      ctf0.voltage_kv, ctf0.cs_mm, ctf0.amplitude_contrast, 0.0, ctf0.bfactor_a2)
            for d in dfs]

    # contrast = −2σ (CTF ⊛ projected potential), particles and solvent, times the MTF
    sigma = interaction_constant_rad_per_v_a(settings.voltage_kv)
    signal = np.zeros(shape, dtype=np.float32)
    if len(xy):
        box = template_box_px(atoms, px)
        templates = project(atoms, rotations, box, px)
        max_df = max(c.defocus_u_a for c in ctfs) + abs(ctf0.defocus_u_a - ctf0.defocus_v_a)
        pad = padded_box_px(box, settings, max_df)
        add_particles(signal, templates, xy, ctfs, px, pad, -2.0 * sigma,
                      transfer=noise.detector_mtf((pad, pad)) if settings.mtf else None)
        del templates

    # ice thickness and transmission
    mfp_scale = _mfp_scale(settings.voltage_kv)
    ice = noise.smooth_random_field(shape, min(ny, nx) / 4, rng)
    ice *= np.float32(settings.ice_variation)
    ice += np.float32(1.0)
    ice *= np.float32(settings.ice_thickness_a)
    np.clip(ice, 0, None, out=ice)
    carbon_t = carbon.astype(np.float32) * np.float32(settings.carbon_thickness_a)

    # structural noise of the solvent and carbon, imaged with the micrograph's CTF
    if settings.solvent_phase_std_rad > 0:
        thick = ice + contam
        thick += np.float32(9.0) * carbon_t
        thick *= np.float32(1.0 / 300.0)
        std = np.sqrt(thick, out=thick)
        std *= np.float32(settings.solvent_phase_std_rad / px)
        phase = rng.standard_normal(shape, dtype=np.float32)
        phase *= std
        del std, thick
        spec = scipy.fft.rfft2(phase, workers=_WORKERS)
        del phase
        grid = CTFGrid(shape, px, settings.voltage_kv, settings.cs_mm,
                       settings.amplitude_contrast,
                       noise.detector_mtf(shape) if settings.mtf else None)
        spec *= grid(ctf0)
        del grid
        spec *= np.float32(-2.0)
        signal += scipy.fft.irfft2(spec, s=shape, workers=_WORKERS).astype(np.float32, copy=False)
        del spec

    # expected counts N = D p² T (1 + contrast), T = exp(−Σ t/Λ)
    log_t = ice + contam
    log_t *= np.float32(-1.0 / (MFP_ICE_300KV_A * mfp_scale))
    carbon_t *= np.float32(1.0 / (MFP_CARBON_300KV_A * mfp_scale))
    log_t -= carbon_t
    del ice, carbon_t
    expected = np.exp(log_t, out=log_t)
    counts_per_px = settings.dose_e_per_a2 * px * px
    expected *= np.float32(counts_per_px)
    signal += np.float32(1.0)
    expected *= signal
    del signal
    image = noise.poisson_counts(expected, rng)
    del expected

    picks = pd.DataFrame({
        "micrograph": [name] * len(xy),
        "x_px": xy[:, 0],
        "y_px": xy[:, 1],
        "score": np.full(len(xy), np.nan),
        "diameter_px": np.full(len(xy), diameter_px),
        "rot_deg": eulers[:, 0],
        "tilt_deg": eulers[:, 1],
        "psi_deg": eulers[:, 2],
        "defocus_u_a": [c.defocus_u_a for c in ctfs],
        "defocus_v_a": [c.defocus_v_a for c in ctfs],
        "defocus_angle_deg": [c.defocus_angle_deg for c in ctfs],
    })
    return SimulatedMicrograph(image, picks, ctf0, carbon, contam_mask, counts_per_px, name)
