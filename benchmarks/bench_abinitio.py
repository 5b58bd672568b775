"""Benchmark: ``cryoset abinitio`` vs RELION 3.1's SGD initial model (``relion_refine --denovo_3dref
--sgd``) on the same simulated particles, FSC with the true map after superposition.

Particles: :mod:`cryoset.simulate.particles` of a procedural 250-residue protein (box ``B`` = 32 at
2.5 Å/px, CTF with astigmatism, centred, SNR as given), written as a RELION 3.1 STAR + MRC stack
by :func:`cryoset.workflows.simulate.write_particle_set`. Both programs start from no reference.

* Ours: ``cryoset abinitio particles.star --out ours --initial-resolution-a 20
  --final-resolution-a 8 --batch-size 50 --angular-step-deg 10 --n-iter 40`` (one process,
  2 threads).
* RELION: ``relion_refine --denovo_3dref --sgd`` with 20 + 60 + 20 SGD iterations from 20 Å to
  8 Å, minibatches of 50 → 200, HEALPix order 1 (oversampled), ``--ctf --zero_mask
  --flatten_solvent --particle_diameter 70 --pad 1 --j 2`` (the defaults of RELION's GUI
  initial-model job scaled to this box).

Quality: each map is superposed on the truth by :func:`cryoset.recon.superpose.superpose`
(rotation, translation, hand; an ab initio map's hand is arbitrary) and the FSC 0.5 / 0.143
crossings and real-space correlation are reported. Wall seconds of each command.

Usage: ``python benchmarks/bench_abinitio.py [N] [SNR]`` (prints a JSON dict).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ENV = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
       "NUMBA_NUM_THREADS": "2"}


def _score(volume: np.ndarray, truth: np.ndarray, px: float) -> dict[str, Any]:
    from cryoset.recon.superpose import superpose

    sp = superpose(volume.astype(np.float32), truth.astype(np.float32), px)
    return {"fsc_0.5_a": round(sp.resolution_05_a, 2), "fsc_0.143_a": round(sp.resolution_0143_a, 2),
            "correlation": round(sp.correlation, 3), "mirrored": sp.mirrored}


def main(n: int = 600, snr: float = 0.2) -> dict[str, Any]:
    from cryoset.io.mrc import read_map, write_map
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.particles import ParticleSettings, simulate_particles
    from cryoset.simulate.potential import potential_volume
    from cryoset.simulate.protein import build_protein
    from cryoset.workflows.simulate import write_particle_set

    b, px = 32, 2.5
    atoms = atoms_from_protein(build_protein(250, 2)).centred()
    truth = potential_volume(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, (b, b, b), px, (-(b // 2) * px,) * 3)
    sim = simulate_particles(atoms, ParticleSettings(n=n, box_px=b, pixel_size_a=px, snr=snr, max_shift_a=0.0),
                             seed=2)
    result: dict[str, Any] = {"particles": n, "box": b, "pixel_size_a": px, "snr": snr, "protein_residues": 250}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_particle_set(d, sim)
        write_map(d / "truth.mrc", truth, (px, px, px))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cryoset", "abinitio", "particles.star", "--out", "ours",
                        "--initial-resolution-a", "20", "--final-resolution-a", "8", "--batch-size", "50",
                        "--angular-step-deg", "10", "--n-iter", "40"], cwd=d, env=ENV, check=True,
                       capture_output=True)
        ours_s = time.perf_counter() - t0
        result["cryoset_abinitio"] = {"seconds": round(ours_s, 1),
                                      **_score(read_map(d / "ours" / "class_001.mrc").data, truth, px)}
        relion = shutil.which("relion_refine")
        if relion is None:
            result["relion_denovo_sgd"] = "relion_refine not found"
            return result
        (d / "relion").mkdir()
        cmd = [relion, "--o", "relion/run", "--i", "particles.star", "--denovo_3dref", "--sgd",
               "--sgd_ini_iter", "20", "--sgd_inbetween_iter", "60", "--sgd_fin_iter", "20",
               "--sgd_write_iter", "100", "--sgd_ini_resol", "20", "--sgd_fin_resol", "8",
               "--sgd_ini_subset", "50", "--sgd_fin_subset", "200", "--ctf", "--K", "1", "--sym", "C1",
               "--zero_mask", "--flatten_solvent", "--particle_diameter", "70", "--oversampling", "1",
               "--healpix_order", "1", "--offset_range", "2", "--offset_step", "2", "--pad", "1",
               "--dont_combine_weights_via_disc", "--pool", "30", "--random_seed", "1", "--j", "2"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=d, env=ENV, capture_output=True, text=True)
        relion_s = time.perf_counter() - t0
        maps = sorted((d / "relion").glob("run_it*_class001.mrc"))
        if proc.returncode != 0 or not maps:
            result["relion_denovo_sgd"] = {"error": (proc.stderr or proc.stdout)[-500:]}
            return result
        result["relion_denovo_sgd"] = {"seconds": round(relion_s, 1), "map": maps[-1].name,
                                       **_score(read_map(maps[-1]).data, truth, px)}
        result["time_ratio_relion_over_ours"] = round(relion_s / ours_s, 2)
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(int(args[0]) if args else 600, float(args[1]) if len(args) > 1 else 0.2), indent=2))
