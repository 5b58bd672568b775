"""Benchmark: a 4096² micrograph (1 Å/px) with 300 copies of a 400-residue procedural protein.

cryoset: analytic atom projection per pose (numba), per-particle CTF in a padded box with a
precomputed float32 CTF grid, two threads. Baseline in the same run: the same scene, but every
particle is projected the naive way — its potential map rotated in real space
(``scipy.ndimage.affine_transform``, trilinear) and summed along z. Target: < 15 s on 2 cores.

Usage: ``python benchmarks/bench_simulate.py [--quick]`` (``--quick``: 1024², 30 particles).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from cryoset.simulate.micrograph import (
    MicrographSettings,
    atoms_from_protein,
    project_structure_rotate,
    simulate_micrograph,
)
from cryoset.simulate.protein import build_protein


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(quick: bool = False) -> dict[str, Any]:
    size, n_particles, length = (1024, 30, 400) if quick else (4096, 300, 400)
    protein, t_protein, _ = _timed(lambda: build_protein(length, seed=0))
    atoms = atoms_from_protein(protein)
    settings = MicrographSettings(shape_px=(size, size), pixel_size_a=1.0, n_particles=n_particles)
    # warm-up: numba compilation / cache loading is not part of the per-micrograph cost
    simulate_micrograph(atoms, MicrographSettings(shape_px=(256, 256), n_particles=1), seed=0)
    mic, t_ours, cpu_ours = _timed(lambda: simulate_micrograph(atoms, settings, seed=1))
    _, t_base, cpu_base = _timed(lambda: simulate_micrograph(
        atoms, settings, seed=1, project=project_structure_rotate))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result = {
        "micrograph_px": size, "particles": len(mic.picks), "residues": length,
        "atoms": protein.n_atoms, "protein_build_s": round(t_protein, 2),
        "cryoset_wall_s": round(t_ours, 2), "cryoset_cpu_s": round(cpu_ours, 2),
        "baseline_wall_s": round(t_base, 2), "baseline_cpu_s": round(cpu_base, 2),
        "ratio_wall": round(t_base / t_ours, 2), "load_average_1min": round(load, 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    print(f"cryoset {t_ours:.1f} s, naive baseline {t_base:.1f} s: ratio {t_base / t_ours:.1f}×")
    return result


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
