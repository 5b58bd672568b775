"""``cryoset reconstruct``: direct Fourier inversion of posed particles, half maps and FSC.

Examples
--------
cryoset reconstruct particles.star --out map.mrc

cryoset reconstruct particles.star --out map.mrc --symmetry C4 --reference emd_1234.map --box-px 96

cryoset reconstruct particles.star --out map.mrc --snr 10 --no-ctf --json

cryoset reconstruct particles.star --out raw.mrc --no-gridding-correction
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryoset.cli._defaults import RECONSTRUCT as _D  # ReconstructParams' defaults
from cryoset.cli._options import echo_json, json_option, option


def register(app: typer.Typer) -> None:
    """Add the ``reconstruct`` command."""

    @app.command("reconstruct")
    def reconstruct_cmd(
        particles: Path = typer.Argument(..., help="Particle STAR file with angles, shifts and CTF."),
        out: Path = option("out", ..., help="Output map (.mrc); half maps and FSC go beside it."),
        symmetry: str = typer.Option(_D.symmetry, "--symmetry", help="Point group: C1, Cn, Dn, T, O or I."),
        reference: Path | None = typer.Option(None, "--reference", help="Map to compare with (FSC at 0.5 and 0.143)."),
        snr: float | None = typer.Option(_D.snr, "--snr", help="Fixed Wiener SNR (default: per shell from the half-map FSC)."),
        box: int = option("box_px", _D.box_px, help="Fourier-crop images to this box edge first, pixels (0: keep)."),
        use_ctf: bool = typer.Option(_D.ctf, "--ctf/--no-ctf", help="Correct for the particles' CTFs."),
        gridding: bool = typer.Option(_D.gridding_correction, "--gridding-correction/--no-gridding-correction",
                                      help="Divide by the trilinear kernel's sinc² apodisation inside the "
                                           "inscribed sphere and zero the corners (default); off: the "
                                           "uncorrected estimate."),
        seed: int = option("seed", _D.seed, help="Seed of the half split when rlnRandomSubset is absent."),
        permissive: bool = typer.Option(_D.permissive, "--permissive", help="Open non-conforming MRC stacks/maps."),
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
        from cryoset.cli._paths import require_file_location
        from cryoset.workflows.reconstruct import ReconstructParams, run_reconstruct

        params = ReconstructParams(symmetry=symmetry, snr=snr, box_px=box, ctf=use_ctf,
                                   gridding_correction=gridding, seed=seed, permissive=permissive)
        if out.suffix.lower() in (".mrc", ".map"):
            require_file_location(out, "--out")
        summary = run_reconstruct(particles, out, params, reference=reference)
        if as_json:
            echo_json(summary)
        else:
            line = (f"{summary['particles']} particles -> {out}: gold-standard FSC 0.143 at "
                    f"{summary['resolution_a']:.2f} Å")
            if reference is not None:
                line += f"; vs reference 0.5 at {summary['reference_resolution_0.5_a']:.2f} Å"
            typer.echo(line)
