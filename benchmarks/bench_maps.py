"""Benchmark: label and sub-grid a 300³ map (cryoset vs a per-atom Python loop), plus resampling.

Model: PDB 3MFP (369 residues, from ../shared/data) tiled 4×4×4 times across a 300 Å box
(23,616 residues, 70,848 backbone atoms; every copy is its own chain). Map: 300³ at 1 Å.

* cryoset: :func:`cryoset.maps.labels.label_maps` (four label maps, collision handling,
  outside counts) + :func:`cryoset.maps.subgrids.split` of the density and the four labels
  (32³ boxes, 6-voxel overlap).
* baseline: the paper's procedure written straightforwardly: a Python loop over atoms
  computing each index with Formula 1 and writing the label maps, then a Python loop over
  box positions slicing each 32³ sub-grid out of the zero-padded volumes.

DSSP on the whole model and a 600³ → 1 Å resample (time, peak traced memory) are reported
too. Run: ``python benchmarks/bench_maps.py``.
"""

from __future__ import annotations

import math
import os
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from cryoset.io.structure import read_structure
from cryoset.maps.dssp import secondary_structure_from_atoms
from cryoset.maps.labels import AMINO_ACIDS, label_maps
from cryoset.maps.resample import resample
from cryoset.maps.subgrids import split
from cryoset.testing import shared_data_root

SHAPE = (300, 300, 300)
TILES = 4


def _tiled_model() -> pd.DataFrame:
    atoms = read_structure(shared_data_root() / "maps" / "emd_5168" / "3MFP.pdb").atoms
    atoms = atoms[atoms["is_polymer"]].copy()
    xyz = atoms[["x_a", "y_a", "z_a"]].to_numpy()
    xyz = xyz - xyz.min(axis=0) + 2.0
    step = (SHAPE[0] - 4.0) / TILES
    parts = []
    n = 0
    for a in range(TILES):
        for b in range(TILES):
            for c in range(TILES):
                part = atoms.copy()
                part[["x_a", "y_a", "z_a"]] = xyz + np.array([a, b, c]) * step
                part["chain"] = f"C{n}"
                parts.append(part)
                n += 1
    return pd.concat(parts, ignore_index=True)


def _naive(atoms: pd.DataFrame, secondary: pd.DataFrame, density: np.ndarray) -> list[np.ndarray]:
    """The paper's procedure, one atom and one box at a time."""
    shape = density.shape
    atom_map = np.zeros(shape, np.uint8)
    ca_map = np.zeros(shape, np.uint8)
    aa_map = np.zeros(shape, np.uint8)
    ss_map = np.zeros(shape, np.uint8)
    ss_of = {
        (c, n, i): s
        for c, n, i, s in zip(secondary["chain"], secondary["residue_number"],
                              secondary["insertion_code"], secondary["dssp"], strict=True)
    }
    codes = {"CA": 1, "N": 2, "C": 3}
    for row in atoms.itertuples(index=False):
        name = row.atom_name
        if name not in codes:
            continue
        # Formula 1 (origin 0, voxel 1 Å): i = ceil(floor(z - origin_z) / voxel_z), …
        k = math.ceil(math.floor(row.z_a) / 1.0)
        j = math.ceil(math.floor(row.y_a) / 1.0)
        i = math.ceil(math.floor(row.x_a) / 1.0)
        if not (0 <= k < shape[0] and 0 <= j < shape[1] and 0 <= i < shape[2]):
            continue
        atom_map[k, j, i] = codes[name]
        if name == "CA":
            ca_map[k, j, i] = 1
            aa_map[k, j, i] = AMINO_ACIDS.index(row.residue_name) + 1 if row.residue_name in AMINO_ACIDS else 0
            s = ss_of.get((row.chain, row.residue_number, row.insertion_code), "-")
            ss_map[k, j, i] = 2 if s in "HGI" else 3 if s in "EB" else 1
    out = []
    box, core, pad = 32, 20, 6
    for vol in (density, atom_map, ca_map, aa_map, ss_map):
        nb = [-(-n // core) for n in shape]
        padded = np.zeros([g * core + 2 * pad for g in nb], vol.dtype)
        padded[pad : pad + shape[0], pad : pad + shape[1], pad : pad + shape[2]] = vol
        blocks = []
        for z in range(nb[0]):
            for y in range(nb[1]):
                for x in range(nb[2]):
                    blocks.append(padded[z * core : z * core + box, y * core : y * core + box,
                                         x * core : x * core + box].copy())
        out.append(np.stack(blocks))
    return out


def _ours(atoms: pd.DataFrame, secondary: pd.DataFrame, density: np.ndarray) -> list[np.ndarray]:
    lab = label_maps(atoms, density.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), secondary=secondary)
    volumes = (density, lab.backbone, lab.ca, lab.amino, lab.secondary)
    with ThreadPoolExecutor(max_workers=2) as pool:  # numpy copies release the GIL: 2 cores
        return [blocks for blocks, _ in pool.map(split, volumes)]


def _best(fn: Any, repeats: int) -> tuple[float, float, Any]:
    """Best wall-clock and CPU seconds over ``repeats`` runs, and the last result."""
    best, best_cpu, result = math.inf, math.inf, None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu, result


def main() -> dict[str, Any]:
    """Run the benchmark and return its numbers."""
    rng = np.random.default_rng(0)
    atoms = _tiled_model()
    density = rng.random(SHAPE, dtype=np.float32)
    t_dssp, _, secondary = _best(lambda: secondary_structure_from_atoms(atoms), 1)
    t_ours, cpu_ours, ours = _best(lambda: _ours(atoms, secondary, density), 3)
    t_naive, cpu_naive, naive = _best(lambda: _naive(atoms, secondary, density), 1)
    assert ours[0].shape == naive[0].shape  # same number of sub-grids
    n_res = int((atoms["atom_name"] == "CA").sum())

    big = rng.random((600, 600, 600), dtype=np.float32)
    tracemalloc.start()
    start = time.perf_counter()
    out = resample(big, 1.2, 1.0)
    t_resample = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result = {
        "map_shape": list(SHAPE),
        "residues": n_res,
        "backbone_atoms": int(atoms["atom_name"].isin(["N", "CA", "C"]).sum()),
        "subgrids_per_volume": int(ours[0].shape[0]),
        "cryoset_label_subgrid_s": round(t_ours, 3),
        "naive_label_subgrid_s": round(t_naive, 3),
        "ratio": round(t_naive / t_ours, 2),
        "cryoset_cpu_s": round(cpu_ours, 3),
        "naive_cpu_s": round(cpu_naive, 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "dssp_s": round(t_dssp, 3),
        "resample_600_to_720_trilinear_s": round(t_resample, 2),
        "resample_peak_traced_gb": round(peak / 1e9, 2),
        "resample_input_gb": round(big.nbytes / 1e9, 2),
        "resample_output_gb": round(out.nbytes / 1e9, 2),
    }
    for key, value in result.items():
        print(f"{key:36s} {value}")
    return result


if __name__ == "__main__":
    main()
