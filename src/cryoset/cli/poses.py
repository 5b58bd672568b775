"""``cryoset poses export``: a refined particle STAR's 3D poses into cryoSPARC ``.cs``, the
CryoVirusDB CSV and the particle store.

Examples
--------
cryoset poses export refine/run_data.star --out poses/

cryoset poses export refine/run_data.star --out poses/ --store store/ --experiment EMPIAR-10028
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryoset.cli._defaults import POSES as _D  # PosesParams' defaults
from cryoset.cli._options import echo_json, json_option, option


def register(app: typer.Typer) -> None:
    """Add the ``poses`` sub-command group."""
    group = typer.Typer(name="poses", help="Per-particle 3D poses: export to .cs, CryoVirusDB CSV and the store.",
                        no_args_is_help=True)

    @group.command("export")
    def export_cmd(
        star: Path = typer.Argument(..., metavar="RUN_DATA.star",
                                    help="Particle STAR with 3D poses (cryoset refine or abinitio output)."),
        out: Path = option("out", ..., help="Output directory: particles.cs, particles_poses.csv, poses.parquet."),
        store: Path | None = typer.Option(None, "--store", metavar="STORE",
                                          help="Also write the poses into this particle store (with --experiment)."),
        experiment: str | None = typer.Option(None, "--experiment", metavar="ID",
                                              help="The store experiment the particles belong to."),
        tolerance: float = typer.Option(_D.match_tolerance_px, "--match-tolerance-px", metavar="PX",
                                        help="Largest distance between a particle and its stored particle, "
                                             "micrograph pixels."),
        permissive: bool = typer.Option(_D.permissive, "--permissive", help="Skip malformed STAR rows."),
        as_json: bool = json_option(),
    ) -> None:
        """Write the 3D poses (rot, tilt, psi, shifts, angular error, max probability, half
        set) of a refined particle STAR as a cryoSPARC .cs (alignments3D), the CryoVirusDB
        collective CSV (psi and origins: its layout has no rot/tilt) and poses.parquet; with
        --store, into the store's poses view, matched to the stored particles by micrograph
        and coordinates.

        Examples:

            cryoset poses export refine/run_data.star --out poses/

            cryoset poses export refine/run_data.star --out poses/ --store store/ --experiment EXP-1
        """
        from cryoset.cli._paths import require_directory_location
        from cryoset.workflows.poses import export_poses

        require_directory_location(out, "--out")
        summary = export_poses(star, out, store=store, experiment_id=experiment, match_tolerance_px=tolerance,
                               permissive=permissive)
        if as_json:
            echo_json(summary)
        else:
            where = f"; {summary['stored_poses']} poses in {store}" if store is not None else ""
            csv = summary["cryovirusdb_csv"] or f"CryoVirusDB CSV {summary['cryovirusdb_csv_note']}"
            typer.echo(f"{summary['particles']} particles -> {summary['cs']}, {csv}{where}")

    app.add_typer(group)
