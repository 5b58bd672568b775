"""Benchmark: 2D classification, cryoset ``classify_2d`` vs ``relion_refine`` (2D, 2 threads).

The same simulated particles (:mod:`cryoset.simulate.particles`: procedural 150-residue
protein, ``N`` images of 48² at 2 Å/px, SNR 0.1, 30 % junk — noise, ice blobs, overlapping
pairs) go through both, with matching settings: K = 8, 5 iterations, ψ step 10°, offsets
within 5 px of each image's previous offset (both programs recentre the window every
iteration; ours caps the total shift at box/4 = 12 px), τ² fudge 2, particle diameter 60 Å,
CTF on. RELION:
``relion_refine --i particles.star --o out/run --K 8 --iter 5 --tau2_fudge 2
--particle_diameter 60 --psi_step 10 --offset_range 5 --offset_step 2 --zero_mask --ctf
--j 2 --dont_combine_weights_via_disc --pool 30``.

Quality is measured identically for both from their per-particle assignments (class, ψ,
shifts): the population-weighted mean class resolution over all / good classes (half-set FRC
at 0.143, :func:`cryoset.classify.select.class_statistics`, using our aligned-average code on
RELION's poses too), and the purity / recall of the particles kept by the junk rule
(:func:`cryoset.classify.select.class_verdicts`), for ours also after the recovery pass. The
previous rule (resolution ≤ 1.5 × the *best* class, no upper power bound, recovery from every
junk class) is reported alongside as ``legacy_rule``, and every class is listed with its
verdict and its content by the simulation's junk truth.

Usage: ``python benchmarks/bench_classify.py [N]`` (one scene, ours and RELION; prints JSON);
``python benchmarks/bench_classify.py sweep [--relion] [--fixed-offset-window] [--offset-range-px R]``:
ours (and optionally RELION) on the tuning and held-out scenes of the rule
(:data:`TUNING_SCENES`, :data:`HELD_OUT_SCENES`), plus the benchmark scene; ``--fixed-window``
searches ``|t| ≤ R`` around the box centre in every iteration (the previous default, σ_t = 3 px
for R = 5, R / 1.5 otherwise) instead of recentring.
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

#: (protein seed, simulation seed) of the scenes the junk-rule thresholds were chosen on
#: (plus the 200-particle K = 5 test scene of tests/classify/test_em2d.py)
TUNING_SCENES = ((1, 1), (1, 2), (1, 3), (1, 4))
#: scenes never looked at while choosing the thresholds (the main benchmark scene is (1, 0))
HELD_OUT_SCENES = ((1, 5), (1, 6), (1, 7), (1, 8), (2, 12), (3, 13))

BOX, PIXEL_A = 48, 2.0


def _scene(n: int, protein_seed: int, sim_seed: int) -> tuple[Any, Any, Any]:
    """Simulated stack, its CTFs (rfft layout) and the junk truth (``kind``)."""
    from cryoset.ctf.model import ctf_2d_batch
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.particles import ParticleSettings, simulate_particles
    from cryoset.simulate.protein import build_protein

    atoms = atoms_from_protein(build_protein(150, protein_seed))
    sim = simulate_particles(atoms, ParticleSettings(n=n, box_px=BOX, pixel_size_a=PIXEL_A, snr=0.1,
                                                     junk_fraction=0.3, max_shift_a=4.0), seed=sim_seed)
    t = sim.table
    ctf = ctf_2d_batch(t.defocus_u_a, t.defocus_v_a, t.defocus_angle_deg, (BOX, BOX), PIXEL_A, rfft=True)
    return sim, ctf, t["kind"].to_numpy()


def _settings(**overrides: Any) -> Any:
    from cryoset.classify.em2d import ClassifySettings

    base = {"n_classes": 8, "n_iter": 5, "psi_step_deg": 10, "offset_range_px": 5, "offset_recentre": True,
            "particle_diameter_px": 30, "tau2_fudge": 2.0, "seed": 0}
    return ClassifySettings(**{**base, **overrides})


def legacy_select(stats: Any) -> Any:
    """The previous junk rule: population ≥ 3, resolution ≤ 1.5 × best, power ≥ 0.25 × median."""
    pop = stats["population"].to_numpy()
    res = stats["resolution_a"].to_numpy(np.float64)
    power = stats["mean_power"].to_numpy(np.float64)
    populated = pop >= 3
    if not populated.any():
        return np.zeros(len(stats), bool)
    return populated & (res <= 1.5 * res[populated].min()) & (power >= 0.25 * np.median(power[populated]))


def _purity_recall(kept: Any, kinds: Any) -> dict[str, float]:
    particle = kinds == "particle"
    return {"purity": round(float(particle[kept].mean()) if kept.any() else 0.0, 4),
            "recall": round(float(kept[particle].mean()), 4)}


def _quality(images: Any, ctf: Any, result: Any, settings: Any, kinds: Any) -> dict[str, Any]:
    from cryoset.classify.select import class_statistics, class_verdicts

    stats = class_statistics(images, result, settings, PIXEL_A, ctf=ctf)
    finite = np.isfinite(stats["resolution_a"]) & (stats["population"] >= 3)
    w = stats["population"][finite]
    mean_res = float((stats["resolution_a"][finite] * w).sum() / w.sum())
    verdict = class_verdicts(stats)
    good = verdict == "good"
    kept = good[result.class_index]
    gw = stats["population"][good & finite]
    good_res = float((stats["resolution_a"][good & finite] * gw).sum() / gw.sum()) if gw.sum() else float("inf")
    legacy = legacy_select(stats)
    classes = []
    for j in range(len(stats)):
        members = result.class_index == j
        content = {str(k): int((kinds[members] == k).sum()) for k in ("particle", "noise", "ice", "pair")}
        classes.append({"class": j + 1, "population": int(stats["population"][j]),
                        "resolution_a": round(float(stats["resolution_a"][j]), 2),
                        "mean_power": round(float(stats["mean_power"][j]), 3), "verdict": str(verdict[j]),
                        "legacy_good": bool(legacy[j]), **content})
    return {"weighted_class_resolution_a": mean_res,
            "weighted_good_class_resolution_a": good_res,
            "best_class_resolution_a": float(stats["resolution_a"].min()),
            "first_pass": _purity_recall(kept, kinds),
            "legacy_rule_first_pass": _purity_recall(legacy[result.class_index], kinds),
            "classes": classes, "_stats": stats, "_verdict": verdict, "_legacy": legacy}


def _with_recovery(images: Any, ctf: Any, result: Any, settings: Any, kinds: Any,
                   quality: dict[str, Any]) -> dict[str, Any]:
    from cryoset.classify.select import recover_particles, recoverable_classes

    verdict, legacy = quality.pop("_verdict"), quality.pop("_legacy")
    quality.pop("_stats")
    t0 = time.perf_counter()
    good = verdict == "good"
    rec = recover_particles(images, result, good, settings, ctf=ctf, recover_from=recoverable_classes(verdict))
    extra = time.perf_counter() - t0
    old = recover_particles(images, result, legacy, settings, ctf=ctf)
    return {"extra_seconds": extra, **_purity_recall(rec.kept, kinds), "recovered": int(rec.recovered.sum()),
            "legacy_rule": {**_purity_recall(old.kept, kinds), "recovered": int(old.recovered.sum())}}


def _relion(sim: Any, n: int) -> tuple[Any, float]:
    """Run ``relion_refine`` 2D on the scene; its result as a Classification2D, and seconds."""
    from cryoset.classify.em2d import Classification2D
    from cryoset.io.mrc import read_stack
    from cryoset.io.particles import read_particles
    from cryoset.workflows.simulate import write_particle_set

    relion = shutil.which("relion_refine")
    if relion is None:
        raise FileNotFoundError("relion_refine")
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
        seconds = time.perf_counter() - t0
        table = read_particles(d / "out" / "run_it005_data.star").table
        table = table.sort_values("image_index").reset_index(drop=True)
        peer = Classification2D(
            averages=np.zeros((8, BOX, BOX), np.float32),
            class_index=table["class_number"].to_numpy(np.int64) - 1,
            psi_deg=table["psi_deg"].to_numpy(np.float64),
            shift_px=np.stack([table["shift_x_a"], table["shift_y_a"]], 1) / PIXEL_A,
            max_prob=table["max_prob"].to_numpy(np.float64), ess=np.ones(n), eca=np.ones(n),
            log_evidence_gain=np.zeros(n), class_prob=np.zeros((n, 8)), sigma2=1.0)
        # RELION's own class averages give the power used by the junk rule
        peer.averages = np.asarray(read_stack(d / "out" / "run_it005_classes.mrcs").data, np.float32)
    std = float(np.std(sim.images))
    peer.averages = peer.averages / (std if std > 0 else 1.0)
    return peer, seconds


def _strip(q: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in q.items() if not k.startswith("_")}


def main(n: int = 400) -> dict[str, Any]:
    """Run both classifications on scene (protein 1, simulation 0); return times and quality."""
    from cryoset.classify.em2d import classify_2d

    sim, ctf, kinds = _scene(n, 1, 0)
    settings = _settings()
    t0 = time.perf_counter()
    ours = classify_2d(sim.images, settings, ctf=ctf)
    ours_s = time.perf_counter() - t0
    quality = _quality(sim.images, ctf, ours, settings, kinds)
    result: dict[str, Any] = {"particles": n, "box": BOX, "ours": {"seconds": ours_s, **_strip(quality)}}
    result["ours_with_recovery"] = _with_recovery(sim.images, ctf, ours, settings, kinds, quality)
    if shutil.which("relion_refine") is not None:
        peer, peer_s = _relion(sim, n)
        result["relion_refine"] = {"seconds": peer_s, **_strip(_quality(sim.images, ctf, peer, settings, kinds))}
        result["time_ratio_peer_over_ours"] = peer_s / ours_s
    return result


def sweep(scenes: tuple[tuple[int, int], ...] = ((1, 0), *TUNING_SCENES, *HELD_OUT_SCENES), n: int = 400,
          relion: bool = False, **overrides: Any) -> dict[str, Any]:
    """First-pass / recovered purity and recall, new and legacy rule, on several scenes.

    Also per scene: seconds of the classification, ice images kept, population-weighted
    good-class and best class resolution. ``overrides`` replace fields of the settings.
    """
    from cryoset.classify.em2d import classify_2d

    rows = []
    settings = _settings(**overrides)
    for protein_seed, sim_seed in scenes:
        sim, ctf, kinds = _scene(n, protein_seed, sim_seed)
        t0 = time.perf_counter()
        ours = classify_2d(sim.images, settings, ctf=ctf)
        seconds = time.perf_counter() - t0
        q = _quality(sim.images, ctf, ours, settings, kinds)
        kept = (q["_verdict"] == "good")[ours.class_index]
        name = ("tuning" if (protein_seed, sim_seed) in TUNING_SCENES
                else "held-out" if (protein_seed, sim_seed) in HELD_OUT_SCENES else "benchmark")
        row: dict[str, Any] = {
            "scene": [protein_seed, sim_seed], "set": name, "seconds": round(seconds, 1),
            "ice_kept": int((kinds[kept] == "ice").sum()),
            "good_class_resolution_a": round(q["weighted_good_class_resolution_a"], 2),
            "best_class_resolution_a": round(q["best_class_resolution_a"], 2),
            "first_pass": q["first_pass"], "legacy_first_pass": q["legacy_rule_first_pass"]}
        rec = _with_recovery(sim.images, ctf, ours, settings, kinds, q)
        row["recovered"] = {"purity": rec["purity"], "recall": rec["recall"]}
        row["legacy_recovered"] = rec["legacy_rule"]
        if relion and shutil.which("relion_refine") is not None:
            peer, _ = _relion(sim, n)
            pq = _quality(sim.images, ctf, peer, settings, kinds)
            row["relion_first_pass"] = pq["first_pass"]
            row["relion_legacy_first_pass"] = pq["legacy_rule_first_pass"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    summary: dict[str, Any] = {}
    for name in ("tuning", "held-out", "benchmark"):
        sel = [r for r in rows if r["set"] == name]
        if sel:
            summary[name] = {key: ({m: round(float(np.mean([r[key][m] for r in sel])), 4) for m in ("purity", "recall")}
                                   if isinstance(sel[0][key], dict) else round(float(np.mean([r[key] for r in sel])), 2))
                             for key in sel[0] if key not in ("scene", "set")}
    return {"settings": {k: v for k, v in settings.__dict__.items()}, "scenes": rows, "mean": summary}


def _sweep_overrides(argv: list[str]) -> dict[str, Any]:
    """``--fixed-offset-window`` and ``--offset-range-px R`` of the sweep command line (the
    ``classify2d`` option names)."""
    over: dict[str, Any] = {}
    if "--offset-range-px" in argv:
        r = int(argv[argv.index("--offset-range-px") + 1])
        over["offset_range_px"] = r
        over["offset_sigma_px"] = 3.0 if r == 5 else r / 1.5
    if "--fixed-offset-window" in argv:
        over["offset_recentre"] = False
    return over


if __name__ == "__main__":
    if sys.argv[1:2] == ["sweep"]:
        print(json.dumps(sweep(relion="--relion" in sys.argv, **_sweep_overrides(sys.argv)), indent=2))
    else:
        args = [int(a) for a in sys.argv[1:2]]
        print(json.dumps(main(*args), indent=2))
