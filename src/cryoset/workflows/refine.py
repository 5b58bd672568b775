"""The 3D refinement step: particles and a starting map in, posed particles and maps out.

:func:`run_refine` is ``cryoset refine``: gold-standard auto-refinement
(:func:`cryoset.recon.refine.auto_refine`) of the particles of a STAR file against a starting
reference. ``OUT/`` receives (RELION's names):

* ``run_data.star`` — the particles with ``rlnAngleRot/Tilt/Psi``, ``rlnOriginX/YAngst``,
  ``rlnRandomSubset``, ``rlnMaxValueProbDistribution`` and ``rlnCryosetAngularErrorDeg``
  (posterior angular spread around the best pose, degrees);
* ``run_half1_class001_unfil.mrc``, ``run_half2_class001_unfil.mrc`` (half maps),
  ``run_class001.mrc`` (both halves), ``run_fsc.csv``, ``run_fsc.png``, ``run_summary.json``;
* ``run_itNNN.json`` — one summary per iteration; ``state/itNNN.npz`` — the full state after
  iteration NNN (poses, half maps, noise spectra, resolution, search step, history, the half
  split), written atomically. Re-running the same command on the same ``OUT`` continues after
  the last complete iteration and gives exactly the result of an uninterrupted run (there are
  no random draws after the seeded half split, which the state holds);
* the provenance (``run_class001.mrc.provenance.json`` and in every map and STAR header).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cryoset.errors import InputError
from cryoset.workflows.params import RefineParams

__all__ = ["ANGULAR_ERROR_LABEL", "RefineParams", "run_refine"]

#: STAR label of the per-particle angular error (no RELION label holds a per-particle one).
ANGULAR_ERROR_LABEL = "rlnCryosetAngularErrorDeg"

_ARRAYS = ("rotations", "shifts_px", "subsets", "half1", "half2", "volume", "fsc", "fsc_freq_per_a",
           "noise_power", "max_probability", "angular_error_deg")
_SCALARS = ("iteration", "resolution_a", "angular_step_deg", "shift_step_px", "local", "converged")


def _check(p: RefineParams) -> None:
    for name, value, ok in (("--initial-lowpass-a", p.initial_lowpass_a, p.initial_lowpass_a > 0),
                            ("--angular-step-deg", p.angular_step_deg, 0 < p.angular_step_deg <= 90),
                            ("--final-angular-step-deg", p.final_angular_step_deg,
                             0 < p.final_angular_step_deg <= p.angular_step_deg),
                            ("--shift-range-px", p.shift_range_px, p.shift_range_px >= 0),
                            ("--shift-step-px", p.shift_step_px, p.shift_step_px > 0),
                            ("--iterations", p.iterations, p.iterations >= 1),
                            ("--global-iterations", p.global_iterations, p.global_iterations >= 1),
                            ("--n-best-poses", p.n_best_poses, p.n_best_poses >= 1)):
        if not (math.isfinite(float(value)) and ok):
            raise InputError(name, f"invalid value {value}")


def _save_state(path: Path, state: Any, fingerprint: str) -> None:
    from cryoset.io.atomic import atomic_path

    arrays: dict[str, Any] = {k: np.asarray(getattr(state, k)) for k in _ARRAYS}
    meta = {k: getattr(state, k) for k in _SCALARS}
    meta["history"] = state.history
    meta["fingerprint"] = fingerprint
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            arrays["meta"] = np.array(json.dumps(meta))
            np.savez(fh, **arrays)


def _load_state(path: Path) -> tuple[Any, str]:
    from cryoset.recon.refine import RefineState

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: np.array(z[k]) for k in _ARRAYS}
    fields = {**arrays, **{k: meta[k] for k in _SCALARS}, "history": meta["history"]}
    fields["iteration"] = int(fields["iteration"])
    for k in ("resolution_a", "angular_step_deg", "shift_step_px"):
        fields[k] = float(fields[k])
    fields["local"], fields["converged"] = bool(fields["local"]), bool(fields["converged"])
    return RefineState(**fields), str(meta["fingerprint"])


def _latest_state(out: Path) -> Path | None:
    states = sorted((out / "state").glob("it[0-9][0-9][0-9].npz")) if (out / "state").is_dir() else []
    return states[-1] if states else None


def _fsc_plot(path: Path, freq: Any, fsc: Any, resolution_a: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryoset.report.figures import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(freq, fsc, label=f"half maps (0.143: {resolution_a:.2f} Å)")
    ax.axhline(0.143, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def run_refine(particles: Path, reference: Path, out: Path, p: RefineParams, *,
               progress: bool = True) -> dict[str, Any]:
    """Refine the particles of ``particles`` against ``reference``, writing ``out/`` (module docstring).

    Resumes from ``out/state`` when it holds iterations of the same inputs and parameters.

    Returns
    -------
    dict
        The summary (particles, half sizes, box, voxel size, symmetry, iterations,
        resolution, final search step, output paths).

    Raises
    ------
    InputError
        Bad parameters or inputs (before anything is written), or an ``out`` holding a
        refinement of other inputs or parameters.
    """
    from rich.console import Console
    from rich.progress import Progress

    from cryoset.classify.data import ctf_parameters, require_ctf
    from cryoset.geometry import matrix_to_euler
    from cryoset.io.atomic import atomic_path, write_text_atomic
    from cryoset.io.jsontext import json_safe
    from cryoset.io.mrc import read_map, write_map
    from cryoset.io.particles import relion_path, write_particles
    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.recon.refine import RefineSettings, auto_refine
    from cryoset.recon.symmetry import parse_point_group
    from cryoset.workflows.particle_images import load_star

    _check(p)
    parse_point_group(p.symmetry)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    data = load_star(particles, permissive=p.permissive)
    t = data.table
    n, b = data.images.shape[0], data.images.shape[-1]
    if n < 2:
        raise InputError(particles, "needs at least 2 particles for two half sets")
    ctf = None
    if p.ctf:
        require_ctf(t, particles)
        ctf = ctf_parameters(t)
    ref = read_map(reference, permissive=p.permissive)
    shape = tuple(int(s) for s in ref.data.shape)
    if len(set(shape)) != 1:
        raise InputError(reference, f"is not cubic: shape {shape} (z, y, x)")
    if shape[0] != b:
        raise InputError(reference, f"box {shape[0]} differs from the particle box {b}")
    if not np.allclose(ref.voxel_size_a, data.pixel_size_a, rtol=0.01):
        raise InputError(reference, f"voxel size {ref.voxel_size_a} differs from the particles' "
                                    f"{data.pixel_size_a:.4f} Å")
    subsets = None
    if "random_subset" in t.columns and t["random_subset"].isin([1, 2]).all() \
            and t["random_subset"].nunique() == 2:
        subsets = t["random_subset"].to_numpy(np.int64)
    settings = RefineSettings(
        symmetry=p.symmetry.upper(), initial_lowpass_a=p.initial_lowpass_a, angular_step_deg=p.angular_step_deg,
        final_angular_step_deg=p.final_angular_step_deg, shift_range_px=p.shift_range_px,
        shift_step_px=p.shift_step_px, global_iterations=p.global_iterations, max_iterations=p.iterations,
        n_best_poses=p.n_best_poses)
    record = {"symmetry": settings.symmetry, "ctf": p.ctf, "initial_lowpass_a": p.initial_lowpass_a,
              "angular_step_deg": p.angular_step_deg, "final_angular_step_deg": p.final_angular_step_deg,
              "shift_range_px": p.shift_range_px, "shift_step_px": p.shift_step_px,
              "global_iterations": p.global_iterations, "iterations": p.iterations, "seed": p.seed,
              "n_best_poses": p.n_best_poses,
              "box": b, "pixel_size_a": data.pixel_size_a,
              "half_split": "rlnRandomSubset" if subsets is not None else f"random (seed {p.seed})"}
    digest = hashlib.sha256()
    digest.update(json.dumps(record, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(data.images).tobytes())
    digest.update(np.ascontiguousarray(ref.data, np.float32).tobytes())
    if ctf is not None:
        for k in sorted(ctf):
            digest.update(np.ascontiguousarray(ctf[k]).tobytes())
    fingerprint = digest.hexdigest()

    state = None
    latest = _latest_state(out)
    if latest is not None:
        state, found = _load_state(latest)
        if found != fingerprint:
            raise InputError(out, "holds a refinement of other particles, reference or parameters; "
                                  "use a new --out")
    v = data.pixel_size_a

    def save(s: Any) -> None:
        _save_state(out / "state" / f"it{s.iteration:03d}.npz", s, fingerprint)
        write_text_atomic(out / f"run_it{s.iteration:03d}.json",
                          json.dumps(json_safe(s.history[-1]), indent=2, allow_nan=False) + "\n")

    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        tasks: dict[int, Any] = {}

        def report(it: int, k: int) -> None:
            if it not in tasks:
                tasks[it] = bar.add_task(f"iteration {it}: pose search", total=n)
            bar.update(tasks[it], completed=k)

        out.mkdir(parents=True, exist_ok=True)
        state = auto_refine(data.images, np.asarray(ref.data, np.float32), v, settings=settings,
                            ctf_params=ctf, subsets=subsets, seed=p.seed, state=state,
                            on_iteration=save, progress=report)

    angles = matrix_to_euler(state.rotations)
    table = t.copy()
    table["image_path"] = [relion_path(q, out / "run_data.star") for q in table["image_path"].astype(str)]
    table["rot_deg"] = angles[:, 0]
    table["tilt_deg"] = angles[:, 1]
    table["psi_deg"] = angles[:, 2]
    table["shift_x_a"] = state.shifts_px[:, 0] * v
    table["shift_y_a"] = state.shifts_px[:, 1] * v
    table["random_subset"] = state.subsets
    table["max_prob"] = state.max_probability
    table[ANGULAR_ERROR_LABEL] = state.angular_error_deg
    prov = make_provenance("refine", record, [particles, reference])
    write_particles(out / "run_data.star", table, provenance=prov)
    write_map(out / "run_half1_class001_unfil.mrc", state.half1, (v, v, v), provenance=prov)
    write_map(out / "run_half2_class001_unfil.mrc", state.half2, (v, v, v), provenance=prov)
    write_map(out / "run_class001.mrc", state.volume, (v, v, v), provenance=prov)
    import pandas as pd

    with atomic_path(out / "run_fsc.csv") as tmp:
        pd.DataFrame({"freq_per_a": state.fsc_freq_per_a, "fsc_half": state.fsc}).to_csv(tmp, index=False)
    _fsc_plot(out / "run_fsc.png", state.fsc_freq_per_a, state.fsc, state.resolution_a)
    summary: dict[str, Any] = {
        "particles": n, "half_sizes": [int((state.subsets == 1).sum()), int((state.subsets == 2).sum())],
        "box": b, "voxel_size_a": v, "symmetry": settings.symmetry, "iterations": state.iteration,
        "converged": state.converged, "resolution_a": state.resolution_a,
        "final_angular_step_deg": float(state.history[-1]["angular_step_deg"]),
        "median_angular_error_deg": float(np.median(state.angular_error_deg)),
        "median_max_probability": float(np.median(state.max_probability)),
        "map": str(out / "run_class001.mrc"), "particles_star": str(out / "run_data.star"),
    }
    write_text_atomic(out / "run_summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    write_provenance(out / "run_class001.mrc", prov)
    return summary
