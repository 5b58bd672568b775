"""Benchmark: 2D classification, cryoset ``classify_2d`` vs ``relion_refine`` (2D, 2 threads).

The same simulated particles (:mod:`cryoset.simulate.particles`: procedural 150-residue
protein, ``N`` images of 48² at 2 Å/px, SNR 0.1, 30 % junk — noise, ice blobs, overlapping
pairs) go through both, with matching settings: K = 8, 5 iterations, ψ step 10°, offsets
within 5 px, τ² fudge 2, particle diameter 60 Å, CTF on. RELION:
``relion_refine --i particles.star --o out/run --K 8 --iter 5 --tau2_fudge 2
--particle_diameter 60 --psi_step 10 --offset_range 5 --offset_step 2 --zero_mask --ctf
--j 2 --dont_combine_weights_via_disc --pool 30``.

Quality is measured identically for both from their per-particle assignments (class, ψ,
shifts): the population-weighted mean class resolution over all / good classes (half-set FRC at 0.143,
:func:`cryoset.classify.select.class_statistics`, using our aligned-average code on RELION's
poses too), and the purity / recall of the particles kept by our junk rule (for ours also
after the recovery pass).

Usage: ``python benchmarks/bench_classify.py [N]`` (prints a JSON dict).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _quality(images: Any, ctf: Any, result: Any, settings: Any, kinds: Any) -> dict[str, float]:
    from cryoset.classify.select import class_statistics, select_classes

    stats = class_statistics(images, result, settings, 2.0, ctf=ctf)
    finite = np.isfinite(stats["resolution_a"]) & (stats["population"] >= 3)
    w = stats["population"][finite]
    mean_res = float((stats["resolution_a"][finite] * w).sum() / w.sum())
    good = select_classes(stats)
    kept = good[result.class_index]
    particle = kinds == "particle"
    gw = stats["population"][good & finite]
    good_res = float((stats["resolution_a"][good & finite] * gw).sum() / gw.sum()) if gw.sum() else float("inf")
    return {"weighted_class_resolution_a": mean_res,
            "weighted_good_class_resolution_a": good_res,
            "class_resolutions_a": [round(float(r), 2) for r in stats["resolution_a"]],
            "class_populations": [int(p) for p in stats["population"]],
            "best_class_resolution_a": float(stats["resolution_a"].min()),
            "kept_purity": float(particle[kept].mean()) if kept.any() else 0.0,
            "kept_recall": float(kept[particle].mean())}


def main(n: int = 400) -> dict[str, Any]:
    """Run both classifications and return times and quality."""
    from cryoset.classify.em2d import Classification2D, ClassifySettings, classify_2d
    from cryoset.ctf.model import ctf_2d_batch
    from cryoset.io.particles import read_particles
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.particles import ParticleSettings, simulate_particles, write_particle_set
    from cryoset.simulate.protein import build_protein

    box, px = 48, 2.0
    atoms = atoms_from_protein(build_protein(150, 1))
    sim = simulate_particles(atoms, ParticleSettings(n=n, box_px=box, pixel_size_a=px, snr=0.1,
                                                     junk_fraction=0.3, max_shift_a=4.0), seed=0)
    t = sim.table
    kinds = t["kind"].to_numpy()
    ctf = ctf_2d_batch(t.defocus_u_a, t.defocus_v_a, t.defocus_angle_deg, (box, box), px, rfft=True)
    settings = ClassifySettings(n_classes=8, n_iter=5, psi_step_deg=10, offset_range_px=5,
                                particle_diameter_px=30, tau2_fudge=2.0, seed=0)
    t0 = time.perf_counter()
    ours = classify_2d(sim.images, settings, ctf=ctf)
    ours_s = time.perf_counter() - t0
    result: dict[str, Any] = {"particles": n, "box": box,
                              "ours": {"seconds": ours_s, **_quality(sim.images, ctf, ours, settings, kinds)}}
    from cryoset.classify.select import class_statistics, recover_particles, select_classes

    t0 = time.perf_counter()
    good = select_classes(class_statistics(sim.images, ours, settings, px, ctf=ctf))
    rec = recover_particles(sim.images, ours, good, settings, ctf=ctf)
    particle = kinds == "particle"
    result["ours_with_recovery"] = {"extra_seconds": time.perf_counter() - t0,
                                    "kept_purity": float(particle[rec.kept].mean()),
                                    "kept_recall": float(rec.kept[particle].mean())}
    relion = shutil.which("relion_refine")
    if relion is not None:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            write_particle_set(d, sim)
            (d / "out").mkdir()
            cmd = [relion, "--i", "particles.star", "--o", "out/run", "--K", "8", "--iter", "5",
                   "--tau2_fudge", "2", "--particle_diameter", "60", "--psi_step", "10",
                   "--offset_range", "5", "--offset_step", "2", "--zero_mask", "--ctf", "--j", "2",
                   "--dont_combine_weights_via_disc", "--pool", "30", "--random_seed", "0"]
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=d, check=True, capture_output=True)
            peer_s = time.perf_counter() - t0
            table = read_particles(d / "out" / "run_it005_data.star").table
            table = table.sort_values("image_index").reset_index(drop=True)
            peer = Classification2D(
                averages=np.zeros((8, box, box), np.float32),
                class_index=table["class_number"].to_numpy(np.int64) - 1,
                psi_deg=table["psi_deg"].to_numpy(np.float64),
                shift_px=np.stack([table["shift_x_a"], table["shift_y_a"]], 1) / px,
                max_prob=table["max_prob"].to_numpy(np.float64), ess=np.ones(n), eca=np.ones(n),
                log_evidence_gain=np.zeros(n), class_prob=np.zeros((n, 8)), sigma2=1.0)
            # RELION's own class averages give the power used by the junk rule
            from cryoset.io.mrc import read_stack

            peer.averages = np.asarray(read_stack(d / "out" / "run_it005_classes.mrcs").data, np.float32)
            std = float(np.std(sim.images))
            peer.averages = peer.averages / (std if std > 0 else 1.0)
            result["relion_refine"] = {"seconds": peer_s, **_quality(sim.images, ctf, peer, settings, kinds)}
            result["time_ratio_peer_over_ours"] = peer_s / ours_s
    return result


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:2]]
    print(json.dumps(main(*args), indent=2))
