"""Simulated particle stacks with known poses, CTFs and junk, for classification,
reconstruction and learning tests.

Forward model (RELION's): a particle image is
``X = IFT[CTF · FT(P_A,t)] + n`` where ``P_A,t`` is the projected potential (V·Å) of the
structure in pose ``A`` shifted by ``t``
(:func:`cryoset.simulate.potential.project_atoms`), ``CTF`` is
:func:`cryoset.ctf.model.ctf_2d` (positive at low frequency: particles are white, as in
RELION's contrast-inverted particles) at the particle's own defocus, and ``n`` is white
Gaussian noise. The noise variance is ``mean_j var(signal_j) / snr`` (one value for the whole
stack, signal variance over the full box), and every image is divided by the noise standard
deviation so the noise has unit variance.

Junk images (``kind`` column): ``noise`` (noise only), ``ice`` (an irregular smooth blob of
potential, CTF-filtered), ``pair`` (two particles overlapping, centres 0.4–0.8 diameters
apart; the pose columns describe the centred one). Real particles have ``kind ==
"particle"``. Shifts follow RELION 3.1: a particle whose centre is at ``(dx, dy)`` Å from the
box centre has ``shift_x_a = −dx``, ``shift_y_a = −dy``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.fft
from numpy.typing import NDArray

from cryoset.ctf.model import CTFParams, check_optics, ctf_2d
from cryoset.errors import InputError
from cryoset.geometry import matrix_to_euler, random_rotations
from cryoset.simulate import noise
from cryoset.simulate.micrograph import AtomSet

KINDS = ("particle", "noise", "ice", "pair")
JUNK_KINDS = ("noise", "ice", "pair")


@dataclass(frozen=True)
class ParticleSettings:
    """Parameters of a simulated particle stack.

    Attributes
    ----------
    n
        Number of images (particles and junk).
    box_px, pixel_size_a
        Image size and pixel size.
    defocus_range_a
        Per-particle mean defocus, uniform in this range (Å, positive = underfocus).
    astigmatism_a
        ``|U − V|`` uniform in ``[0, astigmatism_a]`` at a random angle.
    voltage_kv, cs_mm, amplitude_contrast, ctf_bfactor_a2
        Microscope and CTF envelope.
    snr
        Signal-to-noise variance ratio; ``inf`` gives noise-free images.
    junk_fraction
        Fraction of images that are junk, split evenly among ``junk_kinds``.
    junk_kinds
        Subset of ``("noise", "ice", "pair")``.
    max_shift_a
        Particle centres are uniform in a disc of this radius around the box centre.
    """

    n: int = 100
    box_px: int = 96
    pixel_size_a: float = 1.5
    defocus_range_a: tuple[float, float] = (10000.0, 25000.0)
    astigmatism_a: float = 300.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    ctf_bfactor_a2: float = 0.0
    snr: float = 0.1
    junk_fraction: float = 0.0
    junk_kinds: tuple[str, ...] = JUNK_KINDS
    max_shift_a: float = 2.0

    def check(self) -> None:
        """Raise :class:`InputError` naming the first parameter that makes no sense."""
        if self.n < 1:
            raise InputError("n", f"must be >= 1, got {self.n}")
        if self.box_px < 16 or self.box_px % 2:
            raise InputError("box", f"must be even and >= 16, got {self.box_px}")
        if not self.pixel_size_a > 0:
            raise InputError("pixel-size", f"must be > 0, got {self.pixel_size_a}")
        if not self.snr > 0:
            raise InputError("snr", f"must be > 0, got {self.snr}")
        check_optics(self.voltage_kv, self.cs_mm, self.amplitude_contrast)
        if not 0 <= self.junk_fraction <= 1:
            raise InputError("junk-fraction", f"must be in [0, 1], got {self.junk_fraction}")
        bad = [k for k in self.junk_kinds if k not in JUNK_KINDS]
        if bad or not self.junk_kinds:
            raise InputError("junk-kinds", f"must be a non-empty subset of {JUNK_KINDS}, got {self.junk_kinds}")
        lo, hi = self.defocus_range_a
        if not 0 <= lo <= hi:
            raise InputError("defocus-range", f"need 0 <= min <= max, got {lo}, {hi}")
        if self.max_shift_a < 0:
            raise InputError("max-shift", f"must be >= 0, got {self.max_shift_a}")


@dataclass
class SimulatedParticles:
    """A simulated stack and its truth.

    Attributes
    ----------
    images : ndarray of float32, shape (n, box, box)
        Images, noise normalised to unit variance (with finite SNR).
    table : DataFrame
        One row per image: ``image_index``, ``kind``, ``pixel_size_a``, ``image_size_px``,
        ``voltage_kv``, ``cs_mm``, ``amplitude_contrast``, ``defocus_u_a``, ``defocus_v_a``,
        ``defocus_angle_deg``, ``phase_shift_deg``, ``ctf_bfactor_a2``, ``rot_deg``,
        ``tilt_deg``, ``psi_deg``, ``shift_x_a``, ``shift_y_a`` (poses NaN for ``noise``
        and ``ice``).
    noise_sigma
        Standard deviation of the added noise before normalisation (V·Å units of the signal).
    """

    images: NDArray[np.float32]
    table: pd.DataFrame
    noise_sigma: float


def _kinds(settings: ParticleSettings, rng: np.random.Generator) -> list[str]:
    n_junk = round(settings.n * settings.junk_fraction)
    kinds = ["particle"] * (settings.n - n_junk)
    kinds += [settings.junk_kinds[k % len(settings.junk_kinds)] for k in range(n_junk)]
    order = rng.permutation(settings.n)
    return [kinds[i] for i in order]


def _ice_blob(box: int, scale: float, rng: np.random.Generator) -> NDArray[np.float32]:
    """An irregular smooth blob of projected potential, peak ``scale``."""
    field = noise.smooth_random_field((box, box), box / 8, rng)
    yy, xx = np.mgrid[0:box, 0:box].astype(np.float32)
    c = rng.uniform(0.3, 0.7, 2) * box
    r = rng.uniform(0.15, 0.3) * box
    envelope = np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * r * r))
    blob = np.clip(field + 1.0, 0, None) * envelope
    peak = float(blob.max())
    return (blob * np.float32(scale / peak if peak > 0 else 0.0)).astype(np.float32)


def simulate_particles(atoms: AtomSet, settings: ParticleSettings, seed: int, *,
                       progress: Callable[[int], None] | None = None) -> SimulatedParticles:
    """Simulate a particle stack (see the module docstring for the model).

    Parameters
    ----------
    atoms
        The structure (centred on its centroid before projection).
    settings
        Stack parameters.
    seed
        Seed: the same seed and settings give the same stack, bit for bit.
    progress
        Called with the number of images done after each image (for progress bars).

    Returns
    -------
    SimulatedParticles
    """
    from cryoset.simulate.potential import project_atoms

    settings.check()
    rng = np.random.default_rng(seed)
    atoms = atoms.centred()
    n, box, px = settings.n, settings.box_px, settings.pixel_size_a
    kinds = _kinds(settings, rng)
    rotations = random_rotations(n, rng)
    eulers = matrix_to_euler(rotations)
    radius = settings.max_shift_a * np.sqrt(rng.uniform(0, 1, n))
    angle = rng.uniform(0, 2 * np.pi, n)
    shifts = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)  # particle centre
    d_mean = rng.uniform(*settings.defocus_range_a, size=n)
    astig = rng.uniform(0, settings.astigmatism_a, size=n)
    astig_angle = rng.uniform(-90, 90, size=n)
    diameter_a = atoms.diameter_a

    def project(rot: NDArray[np.float64], shift_xy: NDArray[np.float64]) -> NDArray[np.float32]:
        return project_atoms(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, rot, (box, box), px,
                             center_xyz_a=np.zeros(3), shift_xy_a=tuple(shift_xy), permissive=True)

    clean = np.zeros((n, box, box), dtype=np.float32)
    ctfs: list[CTFParams] = []
    # ice blobs get the peak projected potential of the particle (seen along z)
    ice_peak = float(project(np.eye(3), np.zeros(2)).max()) if "ice" in kinds else 0.0
    for j in range(n):
        ctf = CTFParams(float(d_mean[j] + astig[j] / 2), float(d_mean[j] - astig[j] / 2),
                        float(astig_angle[j]), settings.voltage_kv, settings.cs_mm,
                        settings.amplitude_contrast, 0.0, settings.ctf_bfactor_a2)
        ctfs.append(ctf)
        kind = kinds[j]
        if progress is not None:
            progress(j + 1)
        if kind == "noise":
            continue
        if kind in ("particle", "pair"):
            proj = project(rotations[j], shifts[j])
            if kind == "pair":
                sep = rng.uniform(0.4, 0.8) * diameter_a
                phi = rng.uniform(0, 2 * np.pi)
                other = random_rotations(1, rng)[0]
                proj = proj + project(other, shifts[j] + sep * np.array([math.cos(phi), math.sin(phi)]))
        else:  # ice
            proj = _ice_blob(box, ice_peak, rng)
        spec = scipy.fft.rfft2(proj)
        spec *= ctf_2d(ctf, (box, box), px, rfft=True)
        clean[j] = scipy.fft.irfft2(spec, s=(box, box)).astype(np.float32)

    is_particle = np.array([k == "particle" for k in kinds])
    if math.isinf(settings.snr):
        images = clean
        sigma = 0.0
    else:
        ref = clean[is_particle] if is_particle.any() else clean
        signal_var = float(np.mean(np.var(ref, axis=(1, 2))))
        sigma = math.sqrt(signal_var / settings.snr) if signal_var > 0 else 1.0
        images = (clean + rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma))
        images /= np.float32(sigma)

    has_pose = np.array([k in ("particle", "pair") for k in kinds])
    table = pd.DataFrame({
        "image_index": np.arange(n, dtype=np.int64),
        "kind": kinds,
        "pixel_size_a": np.full(n, px),
        "image_size_px": np.full(n, box, dtype=np.int64),
        "voltage_kv": np.full(n, settings.voltage_kv),
        "cs_mm": np.full(n, settings.cs_mm),
        "amplitude_contrast": np.full(n, settings.amplitude_contrast),
        "defocus_u_a": [c.defocus_u_a for c in ctfs],
        "defocus_v_a": [c.defocus_v_a for c in ctfs],
        "defocus_angle_deg": [c.defocus_angle_deg for c in ctfs],
        "phase_shift_deg": np.zeros(n),
        "ctf_bfactor_a2": np.full(n, settings.ctf_bfactor_a2),
        "rot_deg": np.where(has_pose, eulers[:, 0], np.nan),
        "tilt_deg": np.where(has_pose, eulers[:, 1], np.nan),
        "psi_deg": np.where(has_pose, eulers[:, 2], np.nan),
        "shift_x_a": np.where(has_pose, -shifts[:, 0], np.nan),
        "shift_y_a": np.where(has_pose, -shifts[:, 1], np.nan),
    })
    return SimulatedParticles(np.ascontiguousarray(images, dtype=np.float32), table, sigma)
