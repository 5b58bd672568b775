"""``cryoset ctf MICROGRAPHS… --out DIR``: estimate the CTF of micrographs.

Micrographs are MRC (pixel size from the header), PNG/TIFF/JPEG (give ``--pixel-size-a``),
or a RELION micrograph STAR file whose optics block supplies pixel size, voltage, Cs and
amplitude contrast (flags override it). Many micrographs run in parallel (``--workers``).

Outputs in DIR:

- ``micrographs_ctf.star`` — RELION 3.1 micrograph STAR (optics + ``rlnDefocusU/V/Angle``,
  ``rlnCtfAstigmatism``, ``rlnCtfMaxResolution``, ``rlnCtfFigureOfMerit``, ``rlnPhaseShift``);
- ``ctf.csv`` — every fitted quantity per micrograph (also fit band, ice-ring ratio, timing);
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

import os
import sys
from pathlib import Path
from typing import Any

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError


def _inputs(paths: list[Path]) -> list[Any]:
    from cryoset.ctf.run import MicrographInput, micrographs_from_star

    items: list[Any] = []
    for p in paths:
        if p.suffix.lower() == ".star":
            if not p.exists():
                raise InputError(p, "no such file")
            items.extend(micrographs_from_star(p))
        else:
            items.append(MicrographInput(path=str(p), name=p.name))
    return items


def ctf(
    micrographs: list[Path] = typer.Argument(..., help="Micrograph files (MRC/PNG/TIFF) or a RELION micrograph STAR."),
    out: Path = option("out", ..., help="Output directory."),
    pixel_size: float | None = option("pixel_size_a", None, help="Pixel size, Å (required for PNG/TIFF)."),
    voltage_kv: float | None = option("voltage_kv", None, help="Accelerating voltage, kV (default: STAR optics, else 300)."),
    cs_mm: float | None = option("cs_mm", None, help="Spherical aberration, mm (default: STAR optics, else 2.7)."),
    amplitude_contrast: float | None = option(
        "amplitude_contrast", None, help="Amplitude contrast, fraction (default: STAR optics, else 0.1)."
    ),
    patches: str | None = typer.Option(None, "--patches", help="Local defocus on an NxM patch grid, e.g. 3x3."),
    surface: str = typer.Option("plane", "--surface", help="Defocus surface for --patches: plane, quadratic or constant."),
    picks: Path | None = typer.Option(
        None, "--picks", help="CSV picks/particle table (micrograph, x_px, y_px) to annotate with local defocus."
    ),
    min_res: float = option("min_resolution_a", 30.0, help="Low-resolution end of the fit, Å."),
    max_res: float = option("max_resolution_a", 4.0, help="High-resolution end of the fit, Å."),
    defocus_min: float = option("defocus_min_a", 2000.0, help="Smallest defocus searched, Å."),
    defocus_max: float = option("defocus_max_a", 80000.0, help="Largest defocus searched, Å."),
    phase_shift: bool = typer.Option(False, "--phase-shift", help="Also fit a phase shift (phase plate)."),
    tile: int = option("tile_px", 512, help="Power-spectrum tile size, pixels."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the diagnostic PNGs."),
    jobs: int = option("workers", 1, help="Micrographs processed in parallel."),
    as_json: bool = json_option(),
) -> None:
    """Estimate defocus, astigmatism, fit resolution and local defocus of micrographs.

    Examples:

        cryoset ctf Micrographs/*.mrc --out ctf/ --voltage-kv 300 --cs-mm 2.7

        cryoset ctf images/*.png --pixel-size-a 5.36 --out ctf/ --workers 2 --json
    """
    import concurrent.futures as cf
    import dataclasses
    import multiprocessing

    import pandas as pd
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cryoset.ctf.estimate import EstimateOptions
    from cryoset.ctf.patches import SURFACE_KINDS, add_local_defocus, parse_patch_grid
    from cryoset.ctf.run import (
        RunSettings,
        local_ctf_from_result,
        process_micrograph_safe,
        write_failed_csv,
        write_landscape_csv,
        write_micrograph_star,
        write_results_csv,
    )
    from cryoset.io.atomic import atomic_path, staged_directory
    from cryoset.provenance import make_provenance, write_provenance

    if jobs < 1:
        raise InputError("--workers", f"must be at least 1, got {jobs}")
    if pixel_size is not None and not pixel_size > 0:
        raise InputError("--pixel-size-a", f"must be positive, got {pixel_size}")
    if surface not in SURFACE_KINDS:
        raise InputError("--surface", f"must be one of {', '.join(SURFACE_KINDS)}, got {surface!r}")
    grid = parse_patch_grid(patches) if patches else None
    try:
        options = EstimateOptions(
            tile_px=tile, min_resolution_a=min_res, max_resolution_a=max_res,
            defocus_min_a=defocus_min, defocus_max_a=defocus_max, fit_phase_shift=phase_shift,
        )  # fmt: skip
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    picks_table = None
    if picks is not None:
        if not picks.exists():
            raise InputError(picks, "no such file")
        try:
            picks_table = pd.read_parquet(picks) if picks.suffix == ".parquet" else pd.read_csv(picks)
        except (OSError, ValueError) as exc:
            raise InputError(picks, f"cannot read the table ({exc})") from None
        missing = [c for c in ("micrograph", "x_px", "y_px") if c not in picks_table.columns]
        if missing:
            raise InputError(picks, f"lacks column(s) {', '.join(missing)}")
    items = _inputs(micrographs)
    if not items:
        raise InputError(None, "no micrographs given")
    # everything goes to a temporary folder first: when every micrograph is rejected, no output
    # folder is left behind; plots of earlier runs in OUT/plots are kept
    with staged_directory(out, merge=("plots",)) as staged:
        cpus = os.cpu_count() or 1
        settings = RunSettings(
            pixel_size_a=pixel_size, voltage_kv=voltage_kv, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast,
            patches=grid, surface=surface, options=options,
            plots_dir=None if no_plots else str(staged / "plots"), fft_workers=max(1, cpus // jobs),
        )  # fmt: skip

        results: dict[int, dict[str, Any]] = {}
        failures: list[tuple[str, str]] = []
        console = Console(stderr=True)
        with Progress(
            TextColumn("ctf"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True, disable=not console.is_terminal,
        ) as progress:  # fmt: skip
            task = progress.add_task("ctf", total=len(items))

            def record(i: int, outcome: tuple[bool, Any]) -> None:
                ok, value = outcome
                if ok:
                    results[i] = value
                else:
                    failures.append((items[i].name, str(value)))
                    print(f"error: {items[i].path}: {value}", file=sys.stderr)
                progress.advance(task)

            if jobs == 1 or len(items) == 1:
                for i, item in enumerate(items):
                    record(i, process_micrograph_safe(item, settings))
            else:
                ctx = multiprocessing.get_context("spawn")
                with cf.ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=ctx) as pool:
                    futures = {pool.submit(process_micrograph_safe, item, settings): i for i, item in enumerate(items)}
                    for fut in cf.as_completed(futures):
                        record(futures[fut], fut.result())

        ordered = [results[i] for i in sorted(results)]
        if not ordered:  # every micrograph failed (each said why on stderr): write nothing
            raise typer.Exit(2)
        argv = ["cryoset", "ctf", *sys.argv[1:]] if sys.argv and sys.argv[0].endswith("cryoset") else None
        prov = make_provenance(
            "ctf",
            {
                "pixel_size_a": pixel_size, "voltage_kv": voltage_kv, "cs_mm": cs_mm,
                "amplitude_contrast": amplitude_contrast, "patches": patches, "surface": surface,
                "options": dataclasses.asdict(options), "micrographs": [it.path for it in items],
            },
            inputs=[Path(it.path) for it in items if Path(it.path).is_file()]
            + [p for p in micrographs if p.suffix.lower() == ".star"],
            argv=argv,
        )  # fmt: skip
        comment = f"written by cryoset {prov['cryoset_version']} ctf ({prov['created_utc']}); see provenance.json"
        star_path = out / write_micrograph_star(staged / "micrographs_ctf.star", ordered, comment=comment).name
        write_results_csv(staged / "ctf.csv", ordered)
        if grid is not None:
            write_landscape_csv(staged / "defocus_landscape.csv", ordered)
        write_failed_csv(staged / "failed.csv", failures)
        annotated_path = None
        if picks_table is not None:
            local = {r["micrograph"]: local_ctf_from_result(r) for r in ordered}
            annotated = add_local_defocus(picks_table, local)
            annotated_path = out / "picks_local_defocus.csv"
            with atomic_path(staged / annotated_path.name) as tmp:
                annotated.to_csv(tmp, index=False)
        write_provenance(staged, prov)

    if as_json:
        summary = {
            "out": str(out),
            "star": str(star_path),
            "picks": None if annotated_path is None else str(annotated_path),
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
