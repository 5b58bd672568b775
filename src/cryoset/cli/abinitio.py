"""``cryoset abinitio``: initial 3D class maps and per-particle poses from particles with no reference.

Examples
--------
cryoset abinitio particles.star --out abinitio/

cryoset abinitio particles.star --out abinitio/ -K 3 --symmetry C2 --box-px 64 --n-iter 60

cryoset abinitio particles.star --out abinitio/ --final-resolution-a 12 --no-ctf --json
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryoset.cli._defaults import ABINITIO as _D  # AbinitioParams' defaults
from cryoset.cli._options import echo_json, json_option, option


def register(app: typer.Typer) -> None:
    """Add the ``abinitio`` command."""

    @app.command("abinitio")
    def abinitio_cmd(
        particles: Path = typer.Argument(..., help="Particle STAR file (poses not needed)."),
        out: Path = option("out", ..., help="Output directory: class maps, particles.star with poses, report."),
        n_classes: int = option("n_classes", _D.n_classes, help="Number of classes (maps)."),
        symmetry: str = typer.Option(_D.symmetry, "--symmetry", help="Point group: C1, Cn, Dn, T, O or I."),
        box: int = option("box_px", _D.box_px, help="Fourier-crop images to this box edge first, pixels (0: keep)."),
        n_iter: int = option("n_iter", _D.n_iterations, help="Minibatch iterations."),
        batch_size: int = typer.Option(_D.batch_size, "--batch-size", metavar="N", help="Particles per minibatch."),
        initial_resolution: float = typer.Option(_D.initial_resolution_a, "--initial-resolution-a", metavar="Å",
                                                 help="Resolution limit of the first iteration, Å."),
        final_resolution: float = typer.Option(_D.final_resolution_a, "--final-resolution-a", metavar="Å",
                                               help="Resolution limit of the last iteration and the maps, Å."),
        angular_step: float = typer.Option(_D.angular_step_deg, "--angular-step-deg", metavar="DEG",
                                           help="Finest global angular step, degrees."),
        final_angular_step: float = typer.Option(_D.final_angular_step_deg, "--final-angular-step-deg",
                                                 metavar="DEG", help="Local-search step of the final pass, degrees."),
        max_shift: float = option("max_shift_a", _D.max_shift_a,
                                  help="Translational search range (x and y), Å (0: centred particles)."),
        use_ctf: bool = typer.Option(_D.ctf, "--ctf/--no-ctf", help="Correct for the particles' CTFs."),
        seed: int = option("seed", _D.seed, help="Seed of every random choice (same seed, same output)."),
        permissive: bool = typer.Option(_D.permissive, "--permissive", help="Open non-conforming MRC stacks."),
        as_json: bool = json_option(),
    ) -> None:
        """Ab initio 3D: K initial class maps and every particle's pose and class from no
        reference, by stochastic frequency-marching projection matching on minibatches
        (random starts, resolution marching from --initial-resolution-a to
        --final-resolution-a, decaying CTF-weighted Fourier accumulation), with symmetry.
        Seeded and reproducible; the maps' handedness is arbitrary.

        Examples:

            cryoset abinitio particles.star --out abinitio/

            cryoset abinitio particles.star --out abinitio/ -K 3 --symmetry C2 --box-px 64
        """
        from cryoset.cli._paths import require_directory_location
        from cryoset.workflows.abinitio import AbinitioParams, run_abinitio

        params = AbinitioParams(n_classes=n_classes, symmetry=symmetry, box_px=box, n_iterations=n_iter,
                                batch_size=batch_size, initial_resolution_a=initial_resolution,
                                final_resolution_a=final_resolution, angular_step_deg=angular_step,
                                final_angular_step_deg=final_angular_step, max_shift_a=max_shift,
                                ctf=use_ctf, seed=seed, permissive=permissive)
        require_directory_location(out, "--out")
        summary = run_abinitio(particles, out, params)
        if as_json:
            echo_json(summary)
        else:
            counts = ", ".join(str(c) for c in summary["class_counts"])
            typer.echo(f"{summary['particles']} particles -> {out}: {summary['classes']} class map(s) "
                       f"(particles per class: {counts})")
