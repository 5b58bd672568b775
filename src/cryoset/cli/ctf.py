"""``cryoset ctf MICROGRAPHS… --out DIR``: estimate the CTF of micrographs (:func:`cryoset.workflows.ctf.run_ctf`).

Micrographs are MRC (pixel size from the header), PNG/TIFF/JPEG (give ``--pixel-size-a``),
or a RELION micrograph STAR file whose optics block supplies pixel size, voltage, Cs and
amplitude contrast (flags override it). Many micrographs run in parallel (``--workers``).

Outputs in DIR:

- ``micrographs_ctf.star`` — RELION 3.1 micrograph STAR (optics + ``rlnDefocusU/V/Angle``,
  ``rlnCtfAstigmatism``, ``rlnCtfMaxResolution``, ``rlnCtfFigureOfMerit``, ``rlnPhaseShift``);
- ``ctf.csv`` — every fitted quantity per micrograph (also fit band, ice-ring ratio, timing);
- ``defocus_surfaces.json`` — each micrograph's defocus surface (local defocus of later steps);
- ``defocus_landscape.csv`` — with ``--patches``: the per-patch defoci and the surface;
- ``picks_local_defocus.csv`` — with ``--picks``: the table with local defocus columns;
- ``plots/<name>_ctf.png`` (and ``_landscape.png``) — diagnostics;
- ``failed.csv`` — micrographs that could not be processed, with the reason;
- ``provenance.json``.

Exit code 2 when any micrograph failed (the others are still written).

Examples::

    cryoset ctf Micrographs/*.mrc --out ctf/ --voltage-kv 300 --cs-mm 2.7
    cryoset ctf images/*.png --pixel-size-a 5.36 --out ctf/ --workers 2 --json
    cryoset ctf corrected_micrographs.star --out ctf/ --patches 3x3 --picks picks.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cryoset.cli._defaults import CTF as _D  # CtfParams' defaults (the build's too)
from cryoset.cli._options import echo_json, json_option, option


def ctf(
    micrographs: list[Path] = typer.Argument(..., help="Micrograph files (MRC/PNG/TIFF) or a RELION micrograph STAR."),
    out: Path = option("out", ..., help="Output directory."),
    pixel_size: float | None = option("pixel_size_a", _D.pixel_size_a, help="Pixel size, Å (required for PNG/TIFF)."),
    voltage_kv: float | None = option("voltage_kv", _D.voltage_kv, help="Accelerating voltage, kV (default: STAR optics, else 300)."),
    cs_mm: float | None = option("cs_mm", _D.cs_mm, help="Spherical aberration, mm (default: STAR optics, else 2.7)."),
    amplitude_contrast: float | None = option(
        "amplitude_contrast", _D.amplitude_contrast, help="Amplitude contrast, fraction (default: STAR optics, else 0.1)."
    ),
    patches: str | None = typer.Option(_D.patches, "--patches", help="Local defocus on an NxM patch grid, e.g. 3x3."),
    surface: str = typer.Option(_D.surface, "--surface", help="Defocus surface for --patches: plane, quadratic or constant."),
    picks: Path | None = typer.Option(
        None, "--picks", help="CSV picks/particle table (micrograph, x_px, y_px) to annotate with local defocus."
    ),
    min_res: float = option("min_resolution_a", _D.min_resolution_a, help="Low-resolution end of the fit, Å."),
    max_res: float = option("max_resolution_a", _D.max_resolution_a, help="High-resolution end of the fit, Å."),
    defocus_min: float = option("defocus_min_a", _D.defocus_min_a, help="Smallest defocus searched, Å."),
    defocus_max: float = option("defocus_max_a", _D.defocus_max_a, help="Largest defocus searched, Å."),
    phase_shift: bool = typer.Option(_D.phase_shift, "--phase-shift", help="Also fit a phase shift (phase plate)."),
    tile: int = option("tile_px", _D.tile_px, help="Power-spectrum tile size, pixels."),
    plots: bool = typer.Option(_D.plots, "--plots/--no-plots", help="Write the diagnostic PNGs (--no-plots: skip them)."),
    jobs: int = option("workers", _D.workers, help="Micrographs processed in parallel."),
    as_json: bool = json_option(),
) -> None:
    """Estimate defocus, astigmatism, fit resolution and local defocus of micrographs.

    Examples:

        cryoset ctf Micrographs/*.mrc --out ctf/ --voltage-kv 300 --cs-mm 2.7

        cryoset ctf images/*.png --pixel-size-a 5.36 --out ctf/ --workers 2 --json
    """
    from rich.console import Console

    from cryoset.workflows.ctf import CtfParams, run_ctf

    params = CtfParams(
        pixel_size_a=pixel_size, voltage_kv=voltage_kv, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast,
        patches=patches, surface=surface, min_resolution_a=min_res, max_resolution_a=max_res,
        defocus_min_a=defocus_min, defocus_max_a=defocus_max, phase_shift=phase_shift, tile_px=tile,
        plots=plots, workers=jobs,
    )  # fmt: skip
    argv = ["cryoset", "ctf", *sys.argv[1:]] if sys.argv and sys.argv[0].endswith("cryoset") else None
    result = run_ctf(micrographs, out, params, picks=picks, argv=argv)
    ordered, failures = result.records, result.failures
    if not ordered:  # every micrograph failed (each said why on stderr): nothing was written
        raise typer.Exit(2)

    if as_json:
        summary = {
            "out": str(out),
            "star": str(result.star_path),
            "picks": None if result.annotated_path is None else str(result.annotated_path),
            "results": ordered,
            "failed": [{"micrograph": m, "reason": r} for m, r in failures],
        }
        echo_json(summary)
    else:
        from rich.table import Table

        table = Table(title=f"CTF ({len(ordered)} ok, {len(failures)} failed)")
        for col in ("micrograph", "U (Å)", "V (Å)", "angle (°)", "fit res (Å)", "FOM"):
            table.add_column(col)
        for r in ordered:
            table.add_row(
                str(r["micrograph"]), f"{r['defocus_u_a']:.0f}", f"{r['defocus_v_a']:.0f}",
                f"{r['defocus_angle_deg']:.1f}", f"{r['fit_resolution_a']:.1f}", f"{r['figure_of_merit']:.3f}",
            )  # fmt: skip
        Console().print(table)
    if failures:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add the ``ctf`` command."""
    app.command("ctf")(ctf)
