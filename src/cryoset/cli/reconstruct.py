"""``cryoset reconstruct``: direct Fourier inversion of posed particles, half maps and FSC.

Examples
--------
cryoset reconstruct particles.star --out map.mrc

cryoset reconstruct particles.star --out map.mrc --symmetry C4 --reference emd_1234.map --box-px 96

cryoset reconstruct particles.star --out map.mrc --snr 10 --no-ctf --json

cryoset reconstruct particles.star --out raw.mrc --no-gridding-correction
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError


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


def register(app: typer.Typer) -> None:
    """Add the ``reconstruct`` command."""

    @app.command("reconstruct")
    def reconstruct_cmd(
        particles: Path = typer.Argument(..., help="Particle STAR file with angles, shifts and CTF."),
        out: Path = option("out", ..., help="Output map (.mrc); half maps and FSC go beside it."),
        symmetry: str = typer.Option("C1", "--symmetry", help="Point group: C1, Cn or Dn."),
        reference: Path | None = typer.Option(None, "--reference", help="Map to compare with (FSC at 0.5 and 0.143)."),
        snr: float | None = typer.Option(None, "--snr", help="Fixed Wiener SNR (default: per shell from the half-map FSC)."),
        box: int = option("box_px", 0, help="Fourier-crop images to this box edge first, pixels (0: keep)."),
        use_ctf: bool = typer.Option(True, "--ctf/--no-ctf", help="Correct for the particles' CTFs."),
        gridding: bool = typer.Option(True, "--gridding-correction/--no-gridding-correction",
                                      help="Divide by the trilinear kernel's sinc² apodisation inside the "
                                           "inscribed sphere and zero the corners (default); off: the "
                                           "uncorrected estimate."),
        seed: int = option("seed", 0, help="Seed of the half split when rlnRandomSubset is absent."),
        permissive: bool = typer.Option(False, "--permissive", help="Open non-conforming MRC stacks/maps."),
        as_json: bool = json_option(),
    ) -> None:
        """Reconstruct a map from particles with known poses (Wiener-weighted direct Fourier
        inversion), with half maps, gold-standard FSC (0.143), an optional FSC against a
        reference map, and an FSC plot. Maps are gridding-corrected (sinc² of the padded grid)
        inside the inscribed sphere and zero outside it unless --no-gridding-correction.

        Examples:

            cryoset reconstruct particles.star --out map.mrc

            cryoset reconstruct particles.star --out map.mrc --symmetry C4 --reference emd.map --box-px 96
        """
        from rich.console import Console
        from rich.progress import Progress

        from cryoset.classify.data import ctf_parameters, load_star, require_ctf
        from cryoset.geometry import euler_to_matrix
        from cryoset.io.atomic import atomic_path
        from cryoset.io.mrc import MapData, read_map, write_map
        from cryoset.provenance import make_provenance, write_provenance
        from cryoset.recon.fsc import fourier_shell_correlation, resolution_at
        from cryoset.recon.reconstruct import reconstruct
        from cryoset.recon.symmetry import parse_point_group

        parse_point_group(symmetry)
        if snr is not None and not (math.isfinite(snr) and snr > 0):
            raise InputError("--snr", f"must be > 0, got {snr}")
        if out.suffix.lower() not in (".mrc", ".map"):
            raise InputError(out, "output map must end in .mrc or .map")
        from cryoset.cli._paths import require_file_location

        require_file_location(out, "--out")
        data = load_star(particles, box=box, permissive=permissive)
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
        if use_ctf:
            require_ctf(t, particles)
            ctf = ctf_parameters(t)
        ref: MapData | None = None  # read and checked before any work is done
        if reference is not None:
            ref = read_map(reference, permissive=permissive)
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
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("back-projecting", total=len(t))
            rec = reconstruct(data.images, rotations, shifts, data.pixel_size_a, ctf_params=ctf,
                              subsets=subsets, seed=seed, symmetry=symmetry,
                              wiener_constant=None if snr is None else 1.0 / snr,
                              gridding_correction=gridding,
                              progress=lambda k: bar.update(task, completed=k))
        params = {"symmetry": symmetry.upper(), "snr": snr, "box": data.images.shape[-1],
                  "voxel_size_a": data.pixel_size_a, "ctf": use_ctf, "seed": seed,
                  "gridding_correction": gridding,
                  "half_split": "rlnRandomSubset" if subsets is not None else f"random (seed {seed})"}
        inputs = [particles] + ([reference] if reference is not None else [])
        prov = make_provenance("reconstruct", params, inputs)
        stem = out.with_suffix("")
        v = data.pixel_size_a
        write_map(out, rec.volume, (v, v, v), provenance=prov)
        write_map(Path(f"{stem}_half1.mrc"), rec.half1, (v, v, v), provenance=prov)
        write_map(Path(f"{stem}_half2.mrc"), rec.half2, (v, v, v), provenance=prov)
        curves: list[tuple[str, Any, float]] = [("half maps", rec.fsc, 0.143)]
        summary: dict[str, Any] = {
            "particles": len(t), "half_sizes": list(rec.n_particles), "box": data.images.shape[-1],
            "voxel_size_a": v, "symmetry": symmetry.upper(), "resolution_a": rec.resolution_a,
            "gridding_correction": gridding, "map": str(out),
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
        if as_json:
            echo_json(summary)
        else:
            line = f"{len(t)} particles -> {out}: gold-standard FSC 0.143 at {rec.resolution_a:.2f} Å"
            if reference is not None:
                line += f"; vs reference 0.5 at {summary['reference_resolution_0.5_a']:.2f} Å"
            typer.echo(line)
