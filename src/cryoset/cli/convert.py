"""``cryoset convert INPUT OUTPUT``: particles and coordinates between formats.

Particles: RELION STAR 3.0/3.1 (``.star`` with ``rlnImageName``), cryoSPARC ``.cs``
(with ``blob/*`` fields) and CryoVirusDB's 14-column CSV. Coordinates: RELION coordinate
STAR, EMAN ``.box``, CryoPPP ``.csv``, Topaz ``.txt``/``.tsv``, crYOLO ``.cbox`` and
cryoSPARC pick ``.cs``. The kind (particles or coordinates) is detected from the input;
the output format from the output's suffix (or ``--to``). Everything passes through the
canonical tables, so x/y origins, y-flips, corner offsets, units and Euler conventions are
converted as documented in docs/conventions.md.

Examples::

    cryoset convert run_data.star particles.cs
    cryoset convert particles.cs particles.star --star-version 3.0
    cryoset convert particles.star cryovirusdb.csv
    cryoset convert mic001.box mic001.star --micrograph-shape 4096 4096
    cryoset convert picks.star picks.box --box-size 180
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import typer

from cryoset.errors import InputError

PARTICLE_FORMATS = {"star", "cs", "cryovirusdb"}


def detect_input_kind(path: Path) -> str:
    """``"particles"`` or ``"coords"`` from the file's name and contents."""
    suffix = path.suffix.lower()
    if suffix == ".star":
        from cryoset.io.star import read_star

        blocks = read_star(path)
        return "particles" if any("rlnImageName" in df.columns for df in blocks.values()) else "coords"
    if suffix == ".cs":
        from cryoset.io.cryosparc import read_cs

        names = read_cs(path).dtype.names or ()
        return "particles" if any(n.startswith("blob/") for n in names) else "coords"
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh), [])
        return "particles" if "Micrographs Filename" in [h.strip() for h in header] else "coords"
    return "coords"


def convert(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Particles or coordinates file."),
    output_path: Path = typer.Argument(..., metavar="OUTPUT", help="Destination; format from its suffix."),
    to: str | None = typer.Option(None, "--to", help="Output format (star, cs, cryovirusdb for particles; "
                                  "star, box, csv, topaz, cbox, cs for coordinates)."),
    star_version: str = typer.Option("3.1", "--star-version", help="RELION STAR version to write: 3.1 or 3.0."),
    micrograph_shape: tuple[int, int] | None = typer.Option(
        None, "--micrograph-shape", help="Micrograph height and width in pixels (NY NX): needed for "
        "y-flipped formats and .cs picks, and to reject coordinates outside the micrograph."),
    box_size: int | None = typer.Option(None, "--box-size", help="Box size in pixels for EMAN .box output."),
    micrograph: str | None = typer.Option(None, "--micrograph", help="Micrograph name for per-micrograph "
                                          "coordinate files (default: from the file name)."),
    permissive: bool = typer.Option(False, "--permissive", help="Skip malformed rows instead of failing."),
) -> None:
    """Convert particles or coordinates between RELION, cryoSPARC, EMAN, Topaz, crYOLO and CSV."""
    from cryoset.provenance import make_provenance, write_provenance

    if not input_path.exists():
        raise InputError(input_path, "no such file")
    if star_version not in {"3.1", "3.0"}:
        raise InputError("--star-version", f"must be 3.1 or 3.0, got {star_version!r}")
    kind = detect_input_kind(input_path)
    out_fmt = to or output_path.suffix.lower().lstrip(".")
    if kind == "particles" and out_fmt not in {"star", "cs", "csv", "cryovirusdb"}:
        kind = "particles-to-coords"
    params: dict[str, Any] = {"kind": kind, "to": to, "star_version": star_version,
                              "micrograph_shape": micrograph_shape, "box_size": box_size,
                              "permissive": permissive}
    record = make_provenance("convert", params, [input_path])
    if kind == "particles":
        from cryoset.io.particles import read_particles, write_particles

        if to is not None and to not in PARTICLE_FORMATS:
            raise InputError(output_path, f"particles cannot be written as {to!r} "
                             f"(choose one of {', '.join(sorted(PARTICLE_FORMATS))})")
        ps = read_particles(input_path, permissive=permissive, micrograph_shape=micrograph_shape)
        write_particles(output_path, ps, fmt=to, star_version=star_version,  # type: ignore[arg-type]
                        provenance=record, micrograph_shape=micrograph_shape)
        count = len(ps.table)
    elif kind == "particles-to-coords":
        from cryoset.io.coords import write_coords
        from cryoset.io.particles import read_particles

        ps = read_particles(input_path, permissive=permissive, micrograph_shape=micrograph_shape,
                            require=("micrograph", "x_px", "y_px"))
        write_coords(output_path, ps.table, fmt=to, micrograph_shape=micrograph_shape, box_size_px=box_size)
        write_provenance(output_path, record)
        count = len(ps.table)
    else:
        from cryoset.io.coords import read_coords, write_coords

        picks = read_coords(input_path, micrograph=micrograph, micrograph_shape=micrograph_shape,
                            permissive=permissive)
        write_coords(output_path, picks, fmt=to, micrograph_shape=micrograph_shape, box_size_px=box_size)
        if output_path.suffix.lower() != ".star":
            write_provenance(output_path, record)
        count = len(picks)
    typer.echo(f"{input_path} -> {output_path}: {count} {kind}")


def register(app: typer.Typer) -> None:
    """Add the ``convert`` command."""
    app.command("convert")(convert)
