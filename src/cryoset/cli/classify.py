"""``cryoset classify2d``: reference-free 2D classification with class statistics and junk removal.

Examples
--------
cryoset classify2d particles.star --out class2d --n-classes 8 --n-iter 10 --seed 0

cryoset classify2d --store dataset/ --query "SELECT * FROM particles WHERE experiment_id = 'sim'" --out class2d

cryoset classify2d particles.star --out class2d --box-px 64 --hard --no-recover
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryoset.cli._defaults import CLASSIFY2D as _D  # Classify2DParams' defaults (the build's too)
from cryoset.cli._options import echo_json, json_option, option


def register(app: typer.Typer) -> None:
    """Add the ``classify2d`` command."""

    @app.command("classify2d")
    def classify2d(
        particles: Path | None = typer.Argument(None, help="Particle STAR file (with .mrcs stacks)."),
        out: Path = option("out", ..., help="Output directory."),
        store: Path | None = typer.Option(None, "--store", help="A cryoset particle store instead of a STAR file."),
        query: str | None = typer.Option(None, "--query", help="SQL selecting particles from --store."),
        classes: int = option("n_classes", _D.n_classes, help="Number of classes."),
        n_iter: int = option("n_iter", _D.n_iter, help="EM iterations."),
        psi_step: float = option("psi_step_deg", _D.psi_step_deg, help="In-plane angular step, degrees."),
        offset_range: int = option("offset_range_px", _D.offset_range_px, help="Translation search radius, pixels of --box-px."),
        recentre: bool = typer.Option(
            _D.offset_recentre, "--offset-recentre/--fixed-offset-window",
            help="Centre each image's translation window on its previous offset (RELION) or on the box centre."),
        max_offset: float | None = option(
            "max_offset_px", _D.max_offset_px, help="Cap on the total shift, pixels of --box-px (default box/4)."),
        diameter_a: float | None = option("diameter_a", _D.diameter_a, help="Particle diameter, Å (mask; default 0.8 box)."),
        box: int = option("box_px", _D.box_px, help="Fourier-crop images to this box edge first, pixels (0: keep)."),
        tau2_fudge: float = typer.Option(_D.tau2_fudge, "--tau2-fudge", help="RELION's T: > 1 sharpens averages."),
        hard: bool = typer.Option(_D.hard, "--hard", help="Hard (MAP) assignment instead of probabilities."),
        use_ctf: bool = typer.Option(_D.ctf, "--ctf/--no-ctf", help="Use the particles' CTFs."),
        recover: bool = typer.Option(_D.recover, "--recover/--no-recover", help="Second pass over junk classes."),
        min_population: int = typer.Option(_D.min_population, "--min-population", help="Junk rule: smaller classes are junk."),
        resolution_factor: float = typer.Option(
            _D.resolution_factor, "--resolution-factor", help="Junk rule: res <= factor × population-weighted median class res."),
        power_fraction: float = typer.Option(_D.power_fraction, "--power-fraction", help="Junk rule: power >= fraction × median."),
        max_power_ratio: float = typer.Option(
            _D.max_power_ratio, "--max-power-ratio", help="Junk rule: power <= ratio × median (ice/carbon; inf disables)."),
        percentile: float = typer.Option(_D.recover_percentile, "--recover-percentile", help="Recovery threshold percentile."),
        seed: int = option("seed", _D.seed),
        rounds: int = typer.Option(
            _D.rounds, "--rounds", metavar="N",
            help="Rounds of classification: round k classifies the particles round k-1 kept (OUT/round<k>)."),
        permissive: bool = typer.Option(_D.permissive, "--permissive", help="Open non-conforming MRC stacks."),
        as_json: bool = json_option(),
    ) -> None:
        """Classify particle images in 2D (EM over class, in-plane angle and shift), score classes
        (population, half-set FRC resolution at 0.143, mean power), flag junk classes, recover good
        particles from them, and write a RELION 3.1 STAR, class averages and a gallery.

        Examples:

            cryoset classify2d particles.star --out class2d -K 8 --n-iter 10

            cryoset classify2d --store ds/ --query "SELECT * FROM particles" --out class2d
        """
        from cryoset.cli._paths import require_directory_location
        from cryoset.workflows.classify2d import Classify2DParams, run_classify2d

        params = Classify2DParams(
            n_classes=classes, n_iter=n_iter, psi_step_deg=psi_step, offset_range_px=offset_range,
            offset_recentre=recentre, max_offset_px=max_offset, diameter_a=diameter_a, box_px=box,
            tau2_fudge=tau2_fudge, hard=hard, ctf=use_ctf, recover=recover, min_population=min_population,
            resolution_factor=resolution_factor, power_fraction=power_fraction,
            max_power_ratio=max_power_ratio, recover_percentile=percentile, seed=seed, permissive=permissive,
            rounds=rounds,
        )  # fmt: skip
        if (particles is None) != (store is None) and (query is None or store is not None):
            require_directory_location(out, "--out")
        summary = run_classify2d(particles, out, params, store=store, query=query)
        if as_json:
            echo_json(summary)
        else:
            typer.echo(f"{summary['particles']} particles, {classes} classes, good: {summary['good_classes']}; "
                       f"kept {summary['kept']} ({summary['recovered']} recovered) -> {out}")
        if summary.get("cryovirusdb_csv_note"):  # why no CryoVirusDB particles_selected.csv
            typer.echo(f"note: particles_selected.csv {summary['cryovirusdb_csv_note']}", err=True)
