"""``cryoset refine``: gold-standard 3D auto-refinement of particles against a starting map.

Examples
--------
cryoset refine particles.star --reference initial.mrc --out refine/

cryoset refine particles.star --reference initial.mrc --out refine/ --symmetry D2 --initial-lowpass-a 40

cryoset refine particles.star --reference initial.mrc --out refine/ --no-ctf --angular-step-deg 15 --json
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryoset.cli._defaults import REFINE as _D  # RefineParams' defaults
from cryoset.cli._options import echo_json, json_option, option


def register(app: typer.Typer) -> None:
    """Add the ``refine`` command."""

    @app.command("refine")
    def refine_cmd(
        particles: Path = typer.Argument(..., help="Particle STAR file (images, CTF)."),
        reference: Path = typer.Option(..., "--reference", help="Starting map (.mrc), same box and pixel size."),
        out: Path = option("out", ..., help="Output directory (run_data.star, maps, FSC; resumable)."),
        symmetry: str = typer.Option(_D.symmetry, "--symmetry", help="Point group: C1, Cn, Dn, T, O or I."),
        use_ctf: bool = typer.Option(_D.ctf, "--ctf/--no-ctf", help="Use the particles' CTFs."),
        lowpass: float = typer.Option(_D.initial_lowpass_a, "--initial-lowpass-a",
                                      help="Low-pass the starting map to this resolution, Å."),
        step: float = typer.Option(_D.angular_step_deg, "--angular-step-deg",
                                   help="Angular step of the global search, degrees."),
        final_step: float = typer.Option(_D.final_angular_step_deg, "--final-angular-step-deg",
                                         help="Finest local angular step, degrees."),
        shift_range: float = typer.Option(_D.shift_range_px, "--shift-range-px",
                                          help="Shift search range of the global search, pixels."),
        iterations: int = typer.Option(_D.iterations, "--iterations", help="At most this many iterations."),
        n_best_poses: int = typer.Option(_D.n_best_poses, "--n-best-poses", min=1,
                                         help="Back-project each particle at its N most probable poses, "
                                              "posterior-weighted (1: best pose only)."),
        seed: int = option("seed", _D.seed, help="Seed of the half split when rlnRandomSubset is absent."),
        permissive: bool = typer.Option(_D.permissive, "--permissive", help="Open non-conforming MRC stacks/maps."),
        as_json: bool = json_option(),
    ) -> None:
        """Refine particle poses against a starting map with gold-standard half sets: global then
        local projection matching (CTF-modulated, Gaussian likelihood), per-half Wiener
        reconstruction, FSC-driven resolution stepping. Re-run the same command to resume.

        Examples:

            cryoset refine particles.star --reference initial.mrc --out refine/

            cryoset refine particles.star --reference initial.mrc --out refine/ --symmetry D2
        """
        from cryoset.cli._paths import require_directory_location
        from cryoset.workflows.refine import RefineParams, run_refine

        params = RefineParams(symmetry=symmetry, ctf=use_ctf, initial_lowpass_a=lowpass, angular_step_deg=step,
                              final_angular_step_deg=final_step, shift_range_px=shift_range,
                              shift_step_px=_D.shift_step_px, global_iterations=_D.global_iterations,
                              iterations=iterations, seed=seed, permissive=permissive,
                              n_best_poses=n_best_poses)
        require_directory_location(out, "--out")
        summary = run_refine(particles, reference, out, params)
        if as_json:
            echo_json(summary)
        else:
            typer.echo(f"{summary['particles']} particles -> {out}: {summary['iterations']} iterations, "
                       f"gold-standard FSC 0.143 at {summary['resolution_a']:.2f} Å")
