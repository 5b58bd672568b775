"""Simulation: physics (potentials, projections, density maps) and scenes built on it.

Physics API (see docs/simulate-physics.md):

* :mod:`cryoset.simulate.scattering` — Peng 1996 electron scattering factors.
* :mod:`cryoset.simulate.potential` — :func:`potential_volume` (3D, volts),
  :func:`project_atoms` / :func:`project_atoms_batch` (2D, V·Å) from atomic models.
* :mod:`cryoset.simulate.projection` — :func:`project_fourier` (batched Fourier-slice),
  :func:`project_real` (reference).
* :mod:`cryoset.simulate.density` — :func:`simulate_map` at a target resolution.

The files a simulation writes (``cryoset simulate …``) are written by
:mod:`cryoset.workflows.simulate`.
"""

from cryoset.fourier.slices import central_slice_coordinates
from cryoset.simulate.density import simulate_map
from cryoset.simulate.potential import (
    center_of_mass,
    potential_volume,
    project_atoms,
    project_atoms_batch,
)
from cryoset.simulate.projection import (
    FourierVolume,
    fourier_volume,
    project_fourier,
    project_real,
)
from cryoset.simulate.scattering import scattering_factor, scattering_parameters

__all__ = [
    "FourierVolume",
    "center_of_mass",
    "central_slice_coordinates",
    "fourier_volume",
    "potential_volume",
    "project_atoms",
    "project_atoms_batch",
    "project_fourier",
    "project_real",
    "scattering_factor",
    "scattering_parameters",
    "simulate_map",
]
