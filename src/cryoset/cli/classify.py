"""``cryoset classify2d``: reference-free 2D classification with class statistics and junk removal.

Examples
--------
cryoset classify2d particles.star --out class2d --n-classes 8 --n-iter 10 --seed 0

cryoset classify2d --store dataset/ --query "SELECT * FROM particles WHERE experiment_id = 'sim'" --out class2d

cryoset classify2d particles.star --out class2d --box-px 64 --hard --no-recover
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import typer

from cryoset.cli._options import echo_json, json_option, json_safe, option
from cryoset.errors import InputError


def _gallery(path: Path, averages: np.ndarray, stats: Any, good: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryoset.report.figures import save_figure

    k = averages.shape[0]
    cols = min(k, 8)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for j in range(k):
        ax = axes.ravel()[j]
        ax.imshow(averages[j], cmap="gray")
        row = stats.iloc[j]
        res = "inf" if not np.isfinite(row.resolution_a) else f"{row.resolution_a:.1f}Å"
        ax.set_title(f"{j + 1}: n={row.population} {res}", fontsize=7,
                     color="black" if good[j] else "red")
    fig.tight_layout()
    save_figure(fig, path)


def register(app: typer.Typer) -> None:
    """Add the ``classify2d`` command."""

    @app.command("classify2d")
    def classify2d(
        particles: Path | None = typer.Argument(None, help="Particle STAR file (with .mrcs stacks)."),
        out: Path = option("out", ..., help="Output directory."),
        store: Path | None = typer.Option(None, "--store", help="A cryoset particle store instead of a STAR file."),
        query: str | None = typer.Option(None, "--query", help="SQL selecting particles from --store."),
        classes: int = option("n_classes", 8, help="Number of classes."),
        n_iter: int = option("n_iter", 10, help="EM iterations."),
        psi_step: float = option("psi_step_deg", 10.0, help="In-plane angular step, degrees."),
        offset_range: int = option("offset_range_px", 5, help="Translation search radius, pixels of --box-px."),
        recentre: bool = typer.Option(
            True, "--offset-recentre/--fixed-offset-window",
            help="Centre each image's translation window on its previous offset (RELION) or on the box centre."),
        max_offset: float | None = option(
            "max_offset_px", None, help="Cap on the total shift, pixels of --box-px (default box/4)."),
        diameter_a: float | None = option("diameter_a", None, help="Particle diameter, Å (mask; default 0.8 box)."),
        box: int = option("box_px", 64, help="Fourier-crop images to this box edge first, pixels (0: keep)."),
        tau2_fudge: float = typer.Option(2.0, "--tau2-fudge", help="RELION's T: > 1 sharpens averages."),
        hard: bool = typer.Option(False, "--hard", help="Hard (MAP) assignment instead of probabilities."),
        use_ctf: bool = typer.Option(True, "--ctf/--no-ctf", help="Use the particles' CTFs."),
        recover: bool = typer.Option(True, "--recover/--no-recover", help="Second pass over junk classes."),
        min_population: int = typer.Option(3, "--min-population", help="Junk rule: smaller classes are junk."),
        resolution_factor: float = typer.Option(
            2.0, "--resolution-factor", help="Junk rule: res <= factor × population-weighted median class res."),
        power_fraction: float = typer.Option(0.25, "--power-fraction", help="Junk rule: power >= fraction × median."),
        max_power_ratio: float = typer.Option(
            3.0, "--max-power-ratio", help="Junk rule: power <= ratio × median (ice/carbon; inf disables)."),
        percentile: float = typer.Option(10.0, "--recover-percentile", help="Recovery threshold percentile."),
        seed: int = option("seed", 0),
        permissive: bool = typer.Option(False, "--permissive", help="Open non-conforming MRC stacks."),
        as_json: bool = json_option(),
    ) -> None:
        """Classify particle images in 2D (EM over class, in-plane angle and shift), score classes
        (population, half-set FRC resolution at 0.143, mean power), flag junk classes, recover good
        particles from them, and write a RELION 3.1 STAR, class averages and a gallery.

        Examples:

            cryoset classify2d particles.star --out class2d -K 8 --n-iter 10

            cryoset classify2d --store ds/ --query "SELECT * FROM particles" --out class2d
        """
        from rich.console import Console
        from rich.progress import Progress

        from cryoset.classify.data import ctf_images, load_star, load_store, require_ctf
        from cryoset.classify.em2d import ClassifySettings, classify_2d
        from cryoset.classify.select import (
            class_statistics,
            class_verdicts,
            recover_particles,
            recoverable_classes,
        )
        from cryoset.io.atomic import atomic_path, write_text_atomic
        from cryoset.io.mrc import write_stack
        from cryoset.io.particles import write_particles
        from cryoset.provenance import make_provenance, write_provenance

        if (particles is None) == (store is None):
            raise InputError("particles", "give a STAR file or --store DIR (not both)")
        if query is not None and store is None:
            raise InputError("--query", "needs --store")
        if classes < 1 or n_iter < 1 or not 0 < psi_step <= 180 or offset_range < 0:
            raise InputError("options", "need --n-classes >= 1, --n-iter >= 1, 0 < --psi-step-deg <= 180, "
                                        "--offset-range-px >= 0")
        if max_offset is not None and not max_offset >= 0:
            raise InputError("--max-offset-px", "must be >= 0")
        if not (resolution_factor > 0 and 0 <= power_fraction < max_power_ratio):
            raise InputError("options", "need --resolution-factor > 0 and 0 <= --power-fraction < --max-power-ratio")
        from cryoset.cli._paths import require_directory_location

        require_directory_location(out, "--out")
        source: Path = particles if particles is not None else Path(str(store))
        if particles is not None:
            data = load_star(particles, box=box, permissive=permissive)
        else:
            data = load_store(source, query, box=box)
        b = data.images.shape[-1]
        ctf = None
        if use_ctf:
            require_ctf(data.table, source)
            ctf = ctf_images(data.table, b, data.pixel_size_a)
        diameter_px = None if diameter_a is None else diameter_a / data.pixel_size_a
        settings = ClassifySettings(n_classes=classes, n_iter=n_iter, psi_step_deg=psi_step,
                                    offset_range_px=offset_range, offset_sigma_px=max(offset_range, 1) / 1.5,
                                    offset_recentre=recentre, max_offset_px=max_offset,
                                    particle_diameter_px=diameter_px, tau2_fudge=tau2_fudge,
                                    hard=hard, seed=seed)
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("classify2d", total=n_iter)
            result = classify_2d(data.images, settings, ctf=ctf,
                                 progress=lambda i: bar.update(task, completed=i))
        stats = class_statistics(data.images, result, settings, data.pixel_size_a, ctf=ctf, seed=seed)
        verdict = class_verdicts(stats, min_population=min_population, resolution_factor=resolution_factor,
                                 power_fraction=power_fraction, max_power_ratio=max_power_ratio)
        good = verdict == "good"
        stats["good"] = good
        stats["verdict"] = verdict
        kept = good[result.class_index]
        recovered = np.zeros_like(kept)
        if recover and good.any():
            rec = recover_particles(data.images, result, good, settings, ctf=ctf, percentile=percentile,
                                    recover_from=recoverable_classes(verdict))
            kept, recovered = rec.kept, rec.recovered

        table = data.table.copy()
        if particles is not None:  # stacks stay where they are, named as RELION resolves them
            from cryoset.io.particles import relion_path

            table["image_path"] = [relion_path(q, out / "particles.star")
                                   for q in table["image_path"].astype(str)]
        else:
            table["image_path"] = "particles.mrcs"
            table["image_index"] = np.arange(len(table))
        table["class_number"] = result.class_index + 1
        table["psi_deg"] = result.psi_deg
        table["shift_x_a"] = result.shift_px[:, 0] * data.pixel_size_a
        table["shift_y_a"] = result.shift_px[:, 1] * data.pixel_size_a
        table["max_prob"] = result.max_prob
        table["ess"] = result.ess
        table["eca"] = result.eca
        table["rlnCryosetPoseEss"] = result.ess
        table["rlnCryosetClassEca"] = result.eca
        table["rlnCryosetKept"] = kept.astype(np.int64)
        table["rlnCryosetRecovered"] = recovered.astype(np.int64)
        params = {"classes": classes, "iter": n_iter, "psi_step_deg": psi_step,
                  "offset_range_px": offset_range, "offset_recentre": recentre, "max_offset_px": max_offset,
                  "box": b, "pixel_size_a": data.pixel_size_a,
                  "tau2_fudge": tau2_fudge, "hard": hard, "ctf": use_ctf, "recover": recover,
                  "min_population": min_population, "resolution_factor": resolution_factor,
                  "power_fraction": power_fraction, "max_power_ratio": max_power_ratio,
                  "recover_percentile": percentile, "seed": seed,
                  "query": query}
        prov = make_provenance("classify2d", params, [source])
        out.mkdir(parents=True, exist_ok=True)
        if store is not None:
            write_stack(out / "particles.mrcs", data.images, data.pixel_size_a)
            if b != data.original_box:
                table["pixel_size_a"] = data.pixel_size_a
        write_particles(out / "particles.star", table, provenance=prov)
        write_particles(out / "particles_kept.star", table[kept].reset_index(drop=True), provenance=prov)
        write_stack(out / "class_averages.mrcs", result.averages, data.pixel_size_a)
        with atomic_path(out / "classes.csv") as tmp:
            stats.to_csv(tmp, index=False)
        _gallery(out / "class_averages.png", result.averages, stats, good)
        summary = {
            "particles": len(table), "classes": classes, "good_classes": [int(j + 1) for j in np.flatnonzero(good)],
            "kept": int(kept.sum()), "recovered": int(recovered.sum()), "box": b,
            "pixel_size_a": data.pixel_size_a, "sigma2": result.sigma2,
            "class_table": json.loads(stats.to_json(orient="records")),
        }
        write_text_atomic(out / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
        write_provenance(out, prov)
        if as_json:
            echo_json(summary)
        else:
            typer.echo(f"{len(table)} particles, {classes} classes, good: {summary['good_classes']}; "
                       f"kept {summary['kept']} ({summary['recovered']} recovered) -> {out}")
