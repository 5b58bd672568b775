"""The reconstruction step: posed particles in, map, half maps, FSC table and plot out.

:func:`run_reconstruct` is ``cryoset reconstruct``: Wiener-weighted direct Fourier inversion
(:func:`cryoset.recon.reconstruct.reconstruct`) of the particles of a STAR file with known
poses, writing ``OUT.mrc``, ``OUT_half1.mrc``, ``OUT_half2.mrc``, ``OUT_fsc.csv``,
``OUT_fsc.png`` and the provenance beside them. Every parameter, with its one default, is a
field of :class:`ReconstructParams`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cryoset.errors import InputError
from cryoset.workflows.params import ReconstructParams

__all__ = ["ReconstructParams", "run_reconstruct"]


def _fsc_plot(path: Path, curves: list[tuple[str, Any, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryoset.report.figures import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, curve, _threshold in curves:
        ax.plot(curve.freq_per_a, curve.correlation, label=label)
    for _label, _curve, threshold in curves:
        ax.axhline(threshold, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def run_reconstruct(particles: Path, out: Path, p: ReconstructParams, *, reference: Path | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Reconstruct a map from the posed particles of ``particles`` and write it to ``out``.

    Returns
    -------
    dict
        The summary (particles, half sizes, box, voxel size, resolutions, map path).

    Raises
    ------
    InputError
        Bad parameters or inputs (before anything is written).
    """
    from rich.console import Console
    from rich.progress import Progress

    from cryoset.classify.data import ctf_parameters, require_ctf
    from cryoset.geometry import euler_to_matrix
    from cryoset.io.atomic import atomic_path
    from cryoset.io.mrc import MapData, read_map, write_map
    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.recon.fsc import fourier_shell_correlation, resolution_at
    from cryoset.recon.reconstruct import reconstruct
    from cryoset.recon.symmetry import parse_point_group
    from cryoset.workflows.particle_images import load_star

    parse_point_group(p.symmetry)
    if p.snr is not None and not (math.isfinite(p.snr) and p.snr > 0):
        raise InputError("--snr", f"must be > 0, got {p.snr}")
    if out.suffix.lower() not in (".mrc", ".map"):
        raise InputError(out, "output map must end in .mrc or .map")
    data = load_star(particles, box=p.box_px, permissive=p.permissive)
    t = data.table
    missing = [c for c in ("rot_deg", "tilt_deg", "psi_deg") if c not in t.columns or t[c].isna().any()]
    if missing:
        raise InputError(particles, "has no particle angles (rlnAngleRot/Tilt/Psi); reconstruct needs "
                                    "known poses (run a 3D refinement first)")
    if len(t) < 2:
        raise InputError(particles, "needs at least 2 particles for half maps")
    rotations = euler_to_matrix(t["rot_deg"].to_numpy(np.float64), t["tilt_deg"].to_numpy(np.float64),
                                t["psi_deg"].to_numpy(np.float64))
    shifts = np.zeros((len(t), 2))
    for j, col in enumerate(("shift_x_a", "shift_y_a")):
        if col in t.columns:
            shifts[:, j] = t[col].fillna(0.0).to_numpy(np.float64) / data.pixel_size_a
    ctf = None
    if p.ctf:
        require_ctf(t, particles)
        ctf = ctf_parameters(t)
    ref: MapData | None = None  # read and checked before any work is done
    if reference is not None:
        ref = read_map(reference, permissive=p.permissive)
        b = data.images.shape[-1]
        if ref.data.shape != (b, b, b):
            raise InputError(reference, f"shape {ref.data.shape} differs from the reconstruction "
                                        f"{(b, b, b)} (use --box-px to match)")
        if not np.allclose(ref.voxel_size_a, data.pixel_size_a, rtol=0.01):
            raise InputError(reference, f"voxel size {ref.voxel_size_a} differs from "
                                        f"{data.pixel_size_a:.4f} Å")
    subsets = None
    if "random_subset" in t.columns and t["random_subset"].isin([1, 2]).all() \
            and t["random_subset"].nunique() == 2:
        subsets = t["random_subset"].to_numpy(np.int64)
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("back-projecting", total=len(t))
        rec = reconstruct(data.images, rotations, shifts, data.pixel_size_a, ctf_params=ctf,
                          subsets=subsets, seed=p.seed, symmetry=p.symmetry,
                          wiener_constant=None if p.snr is None else 1.0 / p.snr,
                          gridding_correction=p.gridding_correction,
                          progress=lambda k: bar.update(task, completed=k))
    record = {"symmetry": p.symmetry.upper(), "snr": p.snr, "box": data.images.shape[-1],
              "voxel_size_a": data.pixel_size_a, "ctf": p.ctf, "seed": p.seed,
              "gridding_correction": p.gridding_correction,
              "half_split": "rlnRandomSubset" if subsets is not None else f"random (seed {p.seed})"}
    inputs = [particles] + ([reference] if reference is not None else [])
    prov = make_provenance("reconstruct", record, inputs)
    stem = out.with_suffix("")
    v = data.pixel_size_a
    write_map(out, rec.volume, (v, v, v), provenance=prov)
    write_map(Path(f"{stem}_half1.mrc"), rec.half1, (v, v, v), provenance=prov)
    write_map(Path(f"{stem}_half2.mrc"), rec.half2, (v, v, v), provenance=prov)
    curves: list[tuple[str, Any, float]] = [("half maps", rec.fsc, 0.143)]
    summary: dict[str, Any] = {
        "particles": len(t), "half_sizes": list(rec.n_particles), "box": data.images.shape[-1],
        "voxel_size_a": v, "symmetry": p.symmetry.upper(), "resolution_a": rec.resolution_a,
        "gridding_correction": p.gridding_correction, "map": str(out),
    }
    columns = {"freq_per_a": rec.fsc.freq_per_a, "fsc_half": rec.fsc.correlation}
    if ref is not None:
        cref = fourier_shell_correlation(rec.volume, ref.data, voxel_size_a=v)
        curves.append(("vs reference", cref, 0.5))
        columns["fsc_reference"] = cref.correlation
        summary["reference_resolution_0.5_a"] = resolution_at(cref.correlation, cref.freq_per_a, 0.5)
        summary["reference_resolution_0.143_a"] = resolution_at(cref.correlation, cref.freq_per_a, 0.143)
    import pandas as pd

    with atomic_path(Path(f"{stem}_fsc.csv")) as tmp:
        pd.DataFrame(columns).to_csv(tmp, index=False)
    _fsc_plot(Path(f"{stem}_fsc.png"), curves)
    write_provenance(out, prov)
    return summary
