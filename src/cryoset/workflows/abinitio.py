"""The ab initio step: particles with no poses in, initial class maps and per-particle poses out.

:func:`run_abinitio` is ``cryoset abinitio``: :func:`cryoset.recon.abinitio.abinitio`
(stochastic frequency-marching projection matching, ``K`` classes, symmetry) on the particles
of a STAR file, writing into the output directory, all at once (a temporary directory renamed
on success):

* ``class_001.mrc`` … — the class maps ``(z, y, x)``, voxel size in the header;
* ``particles.star`` — RELION 3.1 particles with ``rlnAngleRot/Tilt/Psi``,
  ``rlnOriginXAngst/YAngst``, ``rlnClassNumber``, ``rlnMaxValueProbDistribution``,
  ``rlnRandomSubset`` (the half of the final reconstruction);
* ``classes.csv`` — class distribution (particles, fraction, gold-standard resolution);
* ``class_fsc.csv`` — the FSC of every pair of class maps (as written, unaligned);
* ``iterations.csv`` — resolution, box, angular step and class counts per iteration;
* ``central_slices.png`` — the three central sections of every class map;
* ``summary.json`` and ``provenance.json``.

Every parameter, with its one default, is a field of :class:`AbinitioParams`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.workflows.params import AbinitioParams

__all__ = ["AbinitioParams", "run_abinitio"]


def _slices_figure(path: Path, volumes: NDArray[np.float32], counts: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryoset.report.figures import save_figure

    k = volumes.shape[0]
    fig, axes = plt.subplots(k, 3, figsize=(6, 2 * k), squeeze=False)
    c = volumes.shape[-1] // 2
    for i in range(k):
        v = volumes[i]
        for j, (img, name) in enumerate(((v[c], "z"), (v[:, c], "y"), (v[:, :, c], "x"))):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"class {i + 1} ({counts[i]}): {name} = centre", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _check(p: AbinitioParams) -> None:
    checks = [
        (p.n_classes >= 1, "--n-classes", "must be >= 1"),
        (p.n_iterations >= 1, "--n-iter", "must be >= 1"),
        (p.batch_size >= 2, "--batch-size", "must be >= 2"),
        (p.final_resolution_a > 0, "--final-resolution-a", "must be > 0"),
        (p.initial_resolution_a >= p.final_resolution_a, "--initial-resolution-a",
         "must be >= --final-resolution-a"),
        (0 < p.angular_step_deg <= 90, "--angular-step-deg", "must be in (0, 90]"),
        (0 < p.final_angular_step_deg <= p.angular_step_deg, "--final-angular-step-deg",
         "must be in (0, --angular-step-deg]"),
        (p.max_shift_a >= 0, "--max-shift-a", "must be >= 0"),
    ]
    for ok, name, problem in checks:
        if not ok:
            raise InputError(name, problem)


def run_abinitio(particles: Path, out: Path, p: AbinitioParams, *, progress: bool = True,
                 search: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Ab initio maps and poses from the particles of ``particles``, written into ``out``.

    Parameters
    ----------
    particles
        Particle STAR (or ``.cs``) file.
    out
        Output directory (replaced as a whole when it exists).
    p
        Parameters.
    progress
        Show a progress bar over the iterations.
    search
        The pose search (default :func:`cryoset.recon.align.search_poses`).

    Returns
    -------
    dict
        The summary (also written as ``summary.json``).

    Raises
    ------
    InputError
        Bad parameters or inputs (before anything is written).
    """
    import pandas as pd
    from rich.console import Console
    from rich.progress import Progress

    from cryoset.classify.data import ctf_parameters, require_ctf
    from cryoset.geometry import matrix_to_euler
    from cryoset.io.atomic import atomic_directory, atomic_path, write_text_atomic
    from cryoset.io.jsontext import json_safe
    from cryoset.io.mrc import write_map
    from cryoset.io.particles import relion_path, write_particles
    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.recon.abinitio import AbinitioSettings, abinitio
    from cryoset.recon.fsc import fourier_shell_correlation, resolution_at
    from cryoset.recon.symmetry import parse_point_group
    from cryoset.workflows.particle_images import load_star

    _check(p)
    parse_point_group(p.symmetry)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    data = load_star(particles, box=p.box_px, permissive=p.permissive)
    t = data.table
    n, b = data.images.shape[0], data.images.shape[-1]
    if n < 2 * p.n_classes or n < 2:
        raise InputError(particles, f"holds {n} particles; ab initio with {p.n_classes} classes needs at "
                                    f"least {max(2, 2 * p.n_classes)}")
    nyquist = 2.0 * data.pixel_size_a
    if p.final_resolution_a < nyquist * 0.999:
        raise InputError("--final-resolution-a", f"{p.final_resolution_a:g} Å is beyond the Nyquist limit "
                                                 f"{nyquist:.3g} Å of the {b}-px images")
    ctf = None
    if p.ctf:
        require_ctf(t, particles)
        ctf = ctf_parameters(t)
    settings = AbinitioSettings(
        n_classes=p.n_classes, symmetry=p.symmetry, n_iterations=p.n_iterations,
        batch_size=min(p.batch_size, n), initial_resolution_a=p.initial_resolution_a,
        final_resolution_a=p.final_resolution_a, angular_step_deg=p.angular_step_deg,
        final_angular_step_deg=p.final_angular_step_deg, max_shift_a=p.max_shift_a, seed=p.seed)
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("ab initio", total=p.n_iterations + 1)
        result = abinitio(data.images, data.pixel_size_a, settings, ctf_params=ctf, search=search,
                          progress=lambda i, total: bar.update(task, completed=i, total=total))

    v = data.pixel_size_a
    k = p.n_classes
    counts = [int(np.sum(result.class_index == c)) for c in range(k)]
    angles = matrix_to_euler(result.rotations)
    table = t.copy()
    table["image_path"] = [relion_path(q, out / "particles.star") for q in table["image_path"].astype(str)]
    if b != data.original_box:
        table["pixel_size_a"] = v
        table["image_size_px"] = b
    table["rot_deg"] = angles[:, 0]
    table["tilt_deg"] = angles[:, 1]
    table["psi_deg"] = angles[:, 2]
    table["shift_x_a"] = result.shifts_px[:, 0] * v
    table["shift_y_a"] = result.shifts_px[:, 1] * v
    table["class_number"] = result.class_index + 1
    table["max_prob"] = result.max_probability
    table["random_subset"] = result.subsets
    classes = pd.DataFrame({
        "class_number": np.arange(1, k + 1), "particles": counts,
        "fraction": np.asarray(counts, np.float64) / n, "resolution_a": result.resolution_a,
        "map": [f"class_{c + 1:03d}.mrc" for c in range(k)],
    })
    pair_columns: dict[str, Any] = {}
    pair_res: dict[str, float] = {}
    for i in range(k):
        for j in range(i + 1, k):
            curve = fourier_shell_correlation(result.volumes[i], result.volumes[j], voxel_size_a=v)
            pair_columns.setdefault("freq_per_a", curve.freq_per_a)
            pair_columns[f"fsc_{i + 1}_{j + 1}"] = curve.correlation
            pair_res[f"{i + 1}-{j + 1}"] = resolution_at(curve.correlation, curve.freq_per_a, 0.5)
    history = pd.DataFrame([{**{kk: vv for kk, vv in h.items() if kk != "class_counts"},
                             **{f"class_{c + 1}": h["class_counts"][c] for c in range(k)}}
                            for h in result.history])
    record = {"classes": k, "symmetry": p.symmetry.upper(), "box": b, "pixel_size_a": v,
              "iterations": p.n_iterations, "batch_size": settings.batch_size,
              "initial_resolution_a": p.initial_resolution_a, "final_resolution_a": p.final_resolution_a,
              "angular_step_deg": p.angular_step_deg, "final_angular_step_deg": p.final_angular_step_deg,
              "max_shift_a": p.max_shift_a, "ctf": p.ctf, "seed": p.seed,
              "forget": settings.forget, "balance": settings.balance}
    prov = make_provenance("abinitio", record, [particles])
    summary: dict[str, Any] = {
        "particles": n, "classes": k, "box": b, "voxel_size_a": v, "symmetry": p.symmetry.upper(),
        "class_counts": counts, "class_resolution_a": [float(r) for r in result.resolution_a],
        "class_pair_fsc_0.5_a": pair_res,
        "maps": [str(out / f"class_{c + 1:03d}.mrc") for c in range(k)],
        "particles_star": str(out / "particles.star"),
    }
    with atomic_directory(out) as tmp:
        for c in range(k):
            write_map(tmp / f"class_{c + 1:03d}.mrc", result.volumes[c], (v, v, v), provenance=prov)
        write_particles(tmp / "particles.star", table, provenance=prov)
        with atomic_path(tmp / "classes.csv") as f:
            classes.to_csv(f, index=False)
        with atomic_path(tmp / "iterations.csv") as f:
            history.to_csv(f, index=False)
        if pair_columns:
            with atomic_path(tmp / "class_fsc.csv") as f:
                pd.DataFrame(pair_columns).to_csv(f, index=False)
        _slices_figure(tmp / "central_slices.png", result.volumes, counts)
        write_text_atomic(tmp / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
        write_provenance(tmp, prov)
    return summary
