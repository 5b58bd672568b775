"""Benchmark: projecting a 400-residue procedural protein into a 96² box (1 Å/px) many times.

cryoset routes, timed per projection after a warm-up (numba compilation/cache loading is not
counted): the analytic atom projector one pose at a time (``project_atoms``) and batched in
parallel (``project_atoms_batch``); the 3D potential once, then Fourier-slice projection
(``project_fourier``: trilinear on the padded grid, trilinear cropped in Fourier space, and
the 4-tap gridding kernel). Baseline in the same run: the naive real-space route, rotating
the potential map with ``scipy.ndimage.map_coordinates`` (trilinear) and summing along z
(``project_real``).

Usage: ``python benchmarks/bench_simulate_physics.py [--quick]`` (``--quick``: 20 poses).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cryoset.geometry import random_rotations
from cryoset.simulate.potential import (
    center_of_mass,
    potential_volume,
    project_atoms,
    project_atoms_batch,
)
from cryoset.simulate.projection import fourier_volume, project_fourier, project_real
from cryoset.simulate.protein import build_protein


def _best(fn: Callable[[], Any], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(quick: bool = False) -> dict[str, Any]:
    n_poses, box, pixel = (20 if quick else 200), 96, 1.0
    protein = build_protein(400, seed=0)
    xyz, elements, b = protein.xyz_a, protein.elements, protein.b_factors_a2
    centre = center_of_mass(xyz, elements)
    rots = random_rotations(n_poses, np.random.default_rng(0))
    origin = tuple(centre[::-1] - (box // 2) * pixel)
    # warm-up (compilation / cache loading)
    project_atoms(xyz, elements, b, rots[0], (box, box), pixel)
    project_atoms_batch(xyz, elements, b, rots[:2], (box, box), pixel)
    vol = potential_volume(xyz, elements, b, (box,) * 3, pixel, origin)
    for order in (1, 3):
        project_fourier(np.zeros((8, 8, 8)), rots[:2], order=order)
        project_fourier(np.zeros((8, 8, 8)), rots[:2], order=order, crop_in_fourier=True)

    per: dict[str, float] = {}
    per["project_atoms"] = _best(lambda: [project_atoms(xyz, elements, b, r, (box, box), pixel)
                                          for r in rots]) / n_poses
    per["project_atoms_batch"] = _best(lambda: project_atoms_batch(
        xyz, elements, b, rots, (box, box), pixel)) / n_poses
    t_volume = _best(lambda: potential_volume(xyz, elements, b, (box,) * 3, pixel, origin))
    setup: dict[str, float] = {}
    for label, order, crop in (("fourier_o1", 1, False), ("fourier_o1_crop", 1, True),
                               ("fourier_o3_crop", 3, True)):
        setup[label] = _best(lambda o=order: fourier_volume(vol, order=o), repeats=1)
        fvol = fourier_volume(vol, order=order)
        per[label] = _best(lambda f=fvol, c=crop: project_fourier(
            f, rots, voxel_size_a=pixel, crop_in_fourier=c)) / n_poses
    n_base = min(n_poses, 20)
    per["baseline_project_real"] = _best(lambda: [project_real(vol, r, voxel_size_a=pixel)
                                                  for r in rots[:n_base]], repeats=1) / n_base
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result: dict[str, Any] = {
        "atoms": len(xyz), "box_px": box, "pixel_size_a": pixel, "poses": n_poses,
        "potential_volume_s": round(t_volume, 4),
        "fourier_volume_setup_s": {k: round(v, 3) for k, v in setup.items()},
        "ms_per_projection": {k: round(v * 1e3, 2) for k, v in per.items()},
        "ratio_baseline_over": {k: round(per["baseline_project_real"] / v, 1)
                                for k, v in per.items() if k != "baseline_project_real"},
        "load_average_1min": round(load, 2),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
