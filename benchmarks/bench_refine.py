"""Benchmark: ``cryoset refine`` vs ``relion_refine --auto_refine`` on the same simulated particles.

Simulated particles (:mod:`cryoset.simulate.particles`, procedural 150-residue protein, ``N``
particles of ``B``² at 2.5 Å/px, SNR 0.1, CTF with astigmatism, shifts ≤ 4 Å). The STAR file
given to both programs holds no poses or shifts (only images and CTF), so neither starts from
the truth. Both start from the same initial model (the potential map of the atoms low-passed at
``LOWPASS_A``, default 15 Å, also RELION's ``--ini_high`` and our ``--initial-lowpass-a``), with the same soft spherical solvent mask (radius 0.4 B, 0.08 B cosine edge; RELION's
``--solvent_mask``; ours applies no mask in the search, only in the scores), C1. RELION's random halves need MPI: ``mpirun -n 3 relion_refine_mpi --j 1`` (a leader and two
workers, 2 busy cores); ours runs in one process with what numpy/numba get (2 cores here).

Ours: :func:`cryoset.workflows.refine.run_refine` in process (defaults: 7.5° global step, 0.9°
final step, initial low-pass ``LOWPASS_A``). Peer: ``relion_refine_mpi --auto_refine --split_random_halves
--ref initial.mrc --ini_high LOWPASS_A --ctf --firstiter_cc --healpix_order 2 --auto_local_healpix_order 4
--offset_range 5 --offset_step 2 --particle_diameter D --solvent_mask mask.mrc``.

Scores, both against the truth: median angular error (raw, and after removing the one frame
rotation that best maps the refined poses on the true ones, the median rotation vector), median
shift error (Å), FSC of the final map vs the true map at 0.5 and 0.143 (masked), and seconds.

Symmetric case (``--symmetry SYM``, ``Cn`` or ``D2``): the particle is an assembly built as the
probe corpus builds its assemblies (:func:`cryoset.workflows.probe_corpus._assembly`: a
``SUBUNIT``-residue procedural chain, default 60, randomly turned, moved off the axes and copied
by the group's operators, which equal :func:`cryoset.recon.symmetry.symmetry_operators`, i.e.
RELION's setting); ``--symmetry SYM`` goes to ours and ``--sym SYM`` to RELION, and the pose
scores take for each particle the symmetry mate ``A·R`` of the refined pose closest to the truth
(the same rule as the refinement's own pose-change measure) before the frame rotation.

Usage: ``python benchmarks/bench_refine.py [N] [B] [LOWPASS_A] [N_BEST] [--no-relion]
[--symmetry SYM] [--subunit RESIDUES] [--relion-timeout-s S]`` (prints a JSON dict). ``N_BEST``
is our ``--n-best-poses`` (default: our default, 8); ``--no-relion`` skips the peer run;
``--relion-timeout-s`` (default 3600) stops RELION's process group and reports the timeout;
``--keep DIR`` works in ``DIR`` (must be new or empty) and keeps every input and output there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _pose_scores(rot_deg: Any, tilt_deg: Any, psi_deg: Any, shift_x_a: Any, shift_y_a: Any,
                 truth: Any, symmetry: str = "C1") -> dict[str, float]:
    from cryoset.geometry import (
        angular_distance_deg,
        euler_to_matrix,
        matrix_to_rotvec,
        rotvec_to_matrix,
    )
    from cryoset.recon.symmetry import symmetry_operators

    found = euler_to_matrix(np.asarray(rot_deg, float), np.asarray(tilt_deg, float), np.asarray(psi_deg, float))
    true = euler_to_matrix(truth.rot_deg.to_numpy(float), truth.tilt_deg.to_numpy(float),
                           truth.psi_deg.to_numpy(float))
    # pose A and its mates A·R give the same projections of a symmetric map: keep the closest
    ops = symmetry_operators(symmetry)
    dist = np.stack([angular_distance_deg(found @ op, true) for op in ops])
    found = found @ ops[np.argmin(dist, axis=0)]
    rel = np.einsum("nba,nbc->nac", true, found)
    m = rotvec_to_matrix(np.median(matrix_to_rotvec(rel), axis=0))
    dx = np.asarray(shift_x_a, float) - truth.shift_x_a.to_numpy(float)
    dy = np.asarray(shift_y_a, float) - truth.shift_y_a.to_numpy(float)
    return {"median_angular_error_deg": float(np.median(angular_distance_deg(found, true))),
            "median_angular_error_after_frame_deg": float(np.median(angular_distance_deg(found, true @ m))),
            "frame_rotation_deg": float(np.rad2deg(np.linalg.norm(matrix_to_rotvec(m)))),
            "median_shift_error_a": float(np.median(np.hypot(dx, dy)))}


def _run_peer(cmd: list[str], cwd: Path, timeout_s: float) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group; on timeout kill the whole group (mpirun's ranks
    included). Returns (exit code or None on timeout, the output's tail)."""
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, (out or "")[-2000:]
    return proc.returncode, (out or "")[-2000:]


def main(n: int = 400, box: int = 40, lowpass_a: int = 15, n_best: int | None = None,
         run_relion: bool = True, symmetry: str = "C1", subunit: int | None = None,
         relion_timeout_s: float = 3600.0, keep: Path | None = None) -> dict[str, Any]:
    from cryoset.io.mrc import read_map, write_map, write_stack
    from cryoset.io.particles import read_particles, write_particles
    from cryoset.recon.fsc import fourier_shell_correlation, resolution_at
    from cryoset.simulate.density import lowpass_filter
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.particles import ParticleSettings, simulate_particles
    from cryoset.simulate.potential import potential_volume
    from cryoset.simulate.protein import build_protein
    from cryoset.workflows.refine import RefineParams, run_refine

    px = 2.5
    symmetry = symmetry.upper()
    if symmetry == "C1":
        residues = 150 if subunit is None else subunit
        atoms = atoms_from_protein(build_protein(residues, 1)).centred()
    else:
        from cryoset.workflows.probe_corpus import _assembly

        residues = 60 if subunit is None else subunit
        atoms = _assembly(atoms_from_protein(build_protein(residues, 1)), symmetry, np.random.default_rng(1))
    truth = potential_volume(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, (box,) * 3, px,
                             (-(box // 2) * px,) * 3)
    sim = simulate_particles(atoms, ParticleSettings(n=n, box_px=box, pixel_size_a=px, snr=0.1,
                                                     max_shift_a=4.0), seed=3)
    zz, yy, xx = np.mgrid[0:box, 0:box, 0:box] - box // 2
    radius = np.sqrt(xx**2 + yy**2 + zz**2)
    edge = np.clip((radius - 0.4 * box) / (0.08 * box), 0.0, 1.0)
    mask = (0.5 + 0.5 * np.cos(np.pi * edge)).astype(np.float32)
    initial = lowpass_filter(truth, px, float(lowpass_a))

    def map_scores(vol: Any) -> dict[str, float]:
        c = fourier_shell_correlation(vol * mask, truth * mask, voxel_size_a=px)
        return {"fsc_truth_0.5_a": resolution_at(c.correlation, c.freq_per_a, 0.5),
                "fsc_truth_0.143_a": resolution_at(c.correlation, c.freq_per_a, 0.143)}

    params = RefineParams(initial_lowpass_a=float(lowpass_a), symmetry=symmetry)
    if n_best is not None:
        params = RefineParams(initial_lowpass_a=float(lowpass_a), symmetry=symmetry, n_best_poses=int(n_best))
    result: dict[str, Any] = {"particles": n, "box": box, "pixel_size_a": px, "snr": 0.1,
                              "initial_lowpass_a": lowpass_a, "n_best_poses": params.n_best_poses,
                              "symmetry": symmetry, "residues_per_subunit": residues,
                              "particle_radius_a": float(atoms.radius_a), "mask_radius_a": 0.4 * box * px}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) if keep is None else Path(keep)
        d.mkdir(parents=True, exist_ok=True)
        write_stack(d / "particles.mrcs", sim.images, px)
        table = sim.table.drop(columns=[c for c in ("kind", "rot_deg", "tilt_deg", "psi_deg", "shift_x_a",
                                                    "shift_y_a") if c in sim.table.columns]).copy()
        table.insert(0, "image_path", "particles.mrcs")
        table["optics_group"] = 1
        table["optics_group_name"] = "opticsGroup1"
        write_particles(d / "particles.star", table)
        write_map(d / "initial.mrc", initial, (px,) * 3)
        write_map(d / "mask.mrc", mask, (px,) * 3)

        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        run_refine(d / "particles.star", d / "initial.mrc", d / "ours", params, progress=False)
        ours_s = time.perf_counter() - t0
        t = read_particles(d / "ours" / "run_data.star").table
        summary = json.loads((d / "ours" / "run_summary.json").read_text())
        result["cryoset_refine"] = {
            "seconds": ours_s, "load_average_1min_start_end": [load0, os.getloadavg()[0]],
            "iterations": summary["iterations"], "gold_standard_a": summary["resolution_a"],
            **_pose_scores(t.rot_deg, t.tilt_deg, t.psi_deg, t.shift_x_a, t.shift_y_a, sim.table, symmetry),
            **map_scores(read_map(d / "ours" / "run_class001.mrc").data)}

        result["cryoset_refine"]["history"] = [
            {k: e[k] for k in ("local", "angular_step_deg", "resolution_a", "median_angular_error_deg")}
            for e in (json.loads(f.read_text()) for f in sorted((d / "ours").glob("run_it*.json")))]
        if not run_relion:
            return result
        relion, mpirun = shutil.which("relion_refine_mpi"), shutil.which("mpirun")
        if relion is None or mpirun is None:
            result["relion_refine"] = "relion_refine_mpi or mpirun not found"
            return result
        (d / "relion").mkdir()
        # split halves need MPI: 1 leader + 2 workers, 1 thread each = 2 busy cores
        cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "-n", "3", relion, "--i", "particles.star",
               "--o", "relion/run", "--ref", "initial.mrc", "--ini_high", str(lowpass_a),
               "--auto_refine", "--split_random_halves", "--ctf", "--firstiter_cc", "--healpix_order", "2",
               "--auto_local_healpix_order", "4", "--offset_range", "5", "--offset_step", "2",
               "--particle_diameter", str(0.8 * box * px), "--solvent_mask", "mask.mrc", "--sym", symmetry,
               "--oversampling", "1", "--pad", "2", "--norm", "--scale", "--flatten_solvent", "--zero_mask",
               "--dont_combine_weights_via_disc", "--pool", "3", "--j", "1"]
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        code, tail = _run_peer(cmd, d, relion_timeout_s)
        peer_s = time.perf_counter() - t0
        if code is None:
            result["relion_refine"] = {"error": f"timed out after {relion_timeout_s:.0f} s", "tail": tail,
                                       "seconds": peer_s}
            return result
        if code != 0 or not (d / "relion" / "run_data.star").exists():
            result["relion_refine"] = {"error": tail, "seconds": peer_s}
            return result
        rt = read_particles(d / "relion" / "run_data.star").table.sort_values("image_index").reset_index(drop=True)
        result["relion_refine"] = {
            "seconds": peer_s, "load_average_1min_start_end": [load0, os.getloadavg()[0]],
            "command": " ".join(Path(c).name if c.startswith("/") else c for c in cmd),
            **_pose_scores(rt.rot_deg, rt.tilt_deg, rt.psi_deg, rt.shift_x_a, rt.shift_y_a, sim.table, symmetry),
            **map_scores(read_map(d / "relion" / "run_class001.mrc").data)}
        result["time_ratio_relion_over_ours"] = peer_s / ours_s
    return result


if __name__ == "__main__":
    argv, flags, options = sys.argv[1:], set(), {}
    args: list[int] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--symmetry", "--subunit", "--relion-timeout-s", "--keep"):
            options[a] = argv[i + 1]
            i += 2
            continue
        if a.startswith("--"):
            flags.add(a)
        else:
            args.append(int(a))
        i += 1
    kwargs: dict[str, Any] = dict(zip(("n", "box", "lowpass_a", "n_best"), args[:4], strict=False))
    if "--subunit" in options:
        kwargs["subunit"] = int(options["--subunit"])
    print(json.dumps(main(**kwargs, run_relion="--no-relion" not in flags,
                          symmetry=options.get("--symmetry", "C1"),
                          relion_timeout_s=float(options.get("--relion-timeout-s", 3600)),
                          keep=Path(options["--keep"]) if "--keep" in options else None), indent=2))
