"""Benchmark: direct Fourier reconstruction vs ``relion_reconstruct --ctf`` on the same particles.

Simulated particles (:mod:`cryoset.simulate.particles`, procedural 150-residue protein,
``N`` particles of ``B``² at 2 Å/px, SNR 0.1, CTF with astigmatism, shifts ≤ 4 Å) with their
true poses. Ours: :func:`cryoset.recon.reconstruct.reconstruct` (two half maps + full map),
gridding-corrected (default; timed first, cold as a CLI run is) and with
``gridding_correction=False`` (timed second, warm).
Peer: ``relion_reconstruct --i particles.star --o map.mrc --ctf`` (one map) in the same run.
Quality: FSC of each map against the potential map of the same atoms (0.5 and 0.143 crossings),
unmasked and with the same soft spherical mask (radius 0.4 B, 0.08 B cosine edge) on all.
``decomposition`` (untimed) separates the two parts of the correction on the same
accumulators: the sinc² division alone (no mask outside the inscribed sphere) and the mask alone.

Command vs command (``commands``, in the same run): ``cryoset reconstruct particles.star --out
ours/map.mrc`` against ``relion_reconstruct --i particles.star --o relion.mrc --ctf``, each a fresh
process reading the same STAR + MRC stack written by :func:`write_particle_set` and writing its
map (ours also writes the two half maps and the FSC). Protocol in :mod:`_commands` (1 thread
each, one warm-up run each, best/median of 3, peak RSS). The library column is ours in-process
(``ours`` above, first call in the process: numba compilation or cache load included); RELION
has no library, so its library column is empty.

Usage: ``python benchmarks/bench_reconstruct.py [N] [B] [--commands-only]`` (prints a JSON dict).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _commands import PROTOCOL, load_average, time_command


def main(n: int = 1000, box: int = 64, *, commands_only: bool = False) -> dict[str, Any]:
    """Run both reconstructions and return times and FSC resolutions (``commands_only``: only
    the command-vs-command timings)."""
    from cryoset.classify.data import ctf_parameters
    from cryoset.geometry import euler_to_matrix
    from cryoset.io.mrc import read_map
    from cryoset.recon.fsc import fourier_shell_correlation, resolution_at
    from cryoset.recon.reconstruct import reconstruct
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.particles import ParticleSettings, simulate_particles
    from cryoset.simulate.potential import potential_volume
    from cryoset.simulate.protein import build_protein
    from cryoset.workflows.simulate import write_particle_set

    px = 2.0
    atoms = atoms_from_protein(build_protein(150, 1)).centred()
    truth = potential_volume(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, (box,) * 3, px,
                             (-(box // 2) * px,) * 3)
    sim = simulate_particles(atoms, ParticleSettings(n=n, box_px=box, pixel_size_a=px, snr=0.1,
                                                     max_shift_a=4.0), seed=3)
    t = sim.table
    rots = euler_to_matrix(t.rot_deg, t.tilt_deg, t.psi_deg)
    shifts = np.stack([t.shift_x_a, t.shift_y_a], 1) / px

    zz, yy, xx = np.mgrid[0:box, 0:box, 0:box] - box // 2
    radius = np.sqrt(xx**2 + yy**2 + zz**2)
    edge = np.clip((radius - 0.4 * box) / (0.08 * box), 0.0, 1.0)
    mask = 0.5 + 0.5 * np.cos(np.pi * edge)  # soft sphere, the same for both maps

    def score(vol: Any) -> dict[str, float]:
        out = {}
        for tag, m in (("", 1.0), ("masked_", mask)):
            c = fourier_shell_correlation(vol * m, truth * m, voxel_size_a=px)
            out[f"{tag}fsc_truth_0.5_a"] = resolution_at(c.correlation, c.freq_per_a, 0.5)
            out[f"{tag}fsc_truth_0.143_a"] = resolution_at(c.correlation, c.freq_per_a, 0.143)
        return out

    result: dict[str, Any] = {"particles": n, "box": box, "pixel_size_a": px}
    result["commands"] = _commands(sim, score)
    if commands_only:
        return result
    for key, gridding in (("ours", True), ("ours_no_gridding_correction", False)):
        t0 = time.perf_counter()
        rec = reconstruct(sim.images, rots, shifts, px, ctf_params=ctf_parameters(t),
                          gridding_correction=gridding)
        seconds = time.perf_counter() - t0
        result[key] = {"seconds": seconds, "gold_standard_a": rec.resolution_a, **score(rec.volume)}
    ours_s = result["ours"]["seconds"]
    result["decomposition"] = _decomposition(sim, rots, shifts, px, score)
    relion = shutil.which("relion_reconstruct")
    if relion is not None:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            write_particle_set(d, sim)
            t0 = time.perf_counter()
            subprocess.run([relion, "--i", "particles.star", "--o", "relion.mrc", "--ctf"], cwd=d,
                           check=True, capture_output=True)
            peer_s = time.perf_counter() - t0
            result["relion_reconstruct"] = {"seconds": peer_s, **score(read_map(d / "relion.mrc").data)}
            result["time_ratio_peer_over_ours"] = peer_s / ours_s
    return result


def _commands(sim: Any, score: Callable[[Any], dict[str, float]], repeats: int = 3) -> dict[str, Any]:
    """``cryoset reconstruct`` vs ``relion_reconstruct --ctf`` as whole processes on the same files."""
    from cryoset.io.mrc import read_map
    from cryoset.workflows.simulate import write_particle_set

    relion = shutil.which("relion_reconstruct")
    cryoset = Path(sys.executable).with_name("cryoset")
    out: dict[str, Any] = {"protocol": PROTOCOL, "load_average_before": load_average()}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_particle_set(d, sim)

        def reset() -> None:
            shutil.rmtree(d / "ours", ignore_errors=True)
            (d / "relion.mrc").unlink(missing_ok=True)
            (d / "ours").mkdir()

        out["cryoset_reconstruct"] = time_command([str(cryoset), "reconstruct", "particles.star", "--out",
                                                   "ours/map.mrc"], d, reset=reset, repeats=repeats)
        out["cryoset_reconstruct"].update(score(read_map(d / "ours" / "map.mrc").data))
        if relion is None:
            out["relion_reconstruct"] = "relion_reconstruct not found (apt-get install relion)"
            return out
        out["relion_reconstruct"] = time_command([relion, "--i", "particles.star", "--o", "relion.mrc", "--ctf"],
                                                 d, reset=reset, repeats=repeats)
        out["relion_reconstruct"].update(score(read_map(d / "relion.mrc").data))
    out["command_ratio_relion_over_ours"] = (out["relion_reconstruct"]["best_s"]
                                             / out["cryoset_reconstruct"]["best_s"])
    return out


def _decomposition(sim: Any, rots: Any, shifts: Any, px: float,
                   score: Callable[[Any], dict[str, float]]) -> dict[str, Any]:
    """Scores of the sinc² division without the inscribed-sphere mask and of the mask alone
    (FSC-derived Wiener recomputed for each, as :func:`reconstruct` does; seed-0 split)."""
    from cryoset.classify.data import ctf_parameters
    from cryoset.recon.fsc import fourier_shell_correlation
    from cryoset.recon.reconstruct import (
        FourierAccumulator,
        backproject,
        gridding_factor,
        inscribed_sphere_mask,
        invert,
        shell_regulariser,
    )

    n, box = rots.shape[0], sim.images.shape[-1]
    subsets = np.ones(n, np.int64)
    subsets[np.random.default_rng(0).permutation(n)[: n // 2]] = 2
    ctf = ctf_parameters(sim.table)
    halves = []
    for h in (1, 2):
        sel = np.flatnonzero(subsets == h)
        acc = FourierAccumulator.empty(box, 2)
        backproject(acc, sim.images[sel], rots[sel], shifts[sel], px,
                    ctf_params={k: np.asarray(v)[sel] for k, v in ctf.items()})
        halves.append(acc)
    tiny = 1e-6 * float(halves[0].weight.max())
    out = {}
    for name, factor in (("sinc2_without_sphere_mask", 1.0 / gridding_factor(box, 2 * box)),
                         ("sphere_mask_without_sinc2", inscribed_sphere_mask(box))):
        def inv(acc: Any, reg: Any, f: Any = factor) -> Any:
            return invert(acc, reg, gridding_correction=False) * f

        fsc0 = fourier_shell_correlation(inv(halves[0], tiny), inv(halves[1], tiny), voxel_size_a=px)
        reg = shell_regulariser(halves[0], halves[1], fsc0.correlation)
        out[name] = score(inv(halves[0] + halves[1], reg))
    return out


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:] if not a.startswith("--")][:2]
    print(json.dumps(main(*args, commands_only="--commands-only" in sys.argv), indent=2))
