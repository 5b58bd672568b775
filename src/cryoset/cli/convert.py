"""``cryoset convert INPUT OUTPUT``: particles and coordinates between formats.

Particles: RELION STAR 3.0/3.1 (``.star`` with ``rlnImageName``), cryoSPARC ``.cs``
(with ``blob/*`` fields) and CryoVirusDB's 14-column CSV. Writing STAR 3.1 (or ``.cs``)
fills ``rlnImageSize`` and ``rlnImageDimensionality`` (``blob/shape``) from the stacks'
headers when the input lacks them (a RELION 3.0 file; stacks resolved as RELION does, from
the current directory, else beside the input). Image names are copied as they are.
STAR files with neither particles nor coordinates (pipeline, post-processing, optimiser…)
are refused in one line naming their blocks. Coordinates: RELION coordinate STAR, EMAN
``.box``, CryoPPP ``.csv``, Topaz ``.txt``/``.tsv``, crYOLO ``.cbox`` and cryoSPARC pick
``.cs``. The kind (particles or coordinates) is detected from the input;
the output format from the output's suffix (or ``--format``). Everything passes through the
canonical tables, so x/y origins, y-flips, corner offsets, units and Euler conventions are
converted as documented in docs/conventions.md.

Examples::

    cryoset convert run_data.star --out particles.cs
    cryoset convert particles.cs --out particles.star --star-version 3.0
    cryoset convert particles.star cryovirusdb.csv        # OUTPUT as a second argument
    cryoset convert mic001.box --out mic001.star --micrograph-shape-px 4096 4096
    cryoset convert picks.star --out picks.box --box-px 180
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError

PARTICLE_FORMATS = {"star", "cs", "cryovirusdb"}


def detect_input_kind(path: Path) -> str:
    """``"particles"`` or ``"coords"`` from the file's name and contents."""
    suffix = path.suffix.lower()
    if suffix == ".star":
        from cryoset.io.relion_labels import COORDINATE_X, IMAGE_NAME
        from cryoset.io.star import describe_blocks, read_star

        blocks = read_star(path)
        if any(IMAGE_NAME in df.columns for df in blocks.values()):
            return "particles"
        if any({COORDINATE_X, "CoordinateX"} & set(df.columns) for df in blocks.values()):
            return "coords"
        raise InputError(path, f"holds neither particles nor coordinates: a {describe_blocks(blocks)}")
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
    output_arg: Path | None = typer.Argument(None, metavar="OUTPUT", help="Destination (or --out); format "
                                             "from its suffix."),
    out: Path | None = option("out", None, help="Destination; format from its suffix."),
    to: str | None = option("format", None, help="Output format (star, cs, cryovirusdb for particles; "
                            "star, box, csv, topaz, cbox, cs for coordinates)."),
    star_version: str = typer.Option("3.1", "--star-version", help="RELION STAR version to write: 3.1 or 3.0."),
    micrograph_shape: tuple[int, int] | None = option(
        "micrograph_shape_px", None, help="Micrograph height and width, pixels (NY NX): needed for "
        "y-flipped formats and .cs picks, and to reject coordinates outside the micrograph."),
    box_size: int | None = option("box_px", None, help="Box edge, pixels, for EMAN .box output."),
    micrograph: str | None = typer.Option(None, "--micrograph", help="Micrograph name for per-micrograph "
                                          "coordinate files (default: from the file name)."),
    permissive: bool = typer.Option(False, "--permissive", help="Skip malformed rows instead of failing."),
    as_json: bool = json_option(),
) -> None:
    """Convert particles or coordinates between RELION, cryoSPARC, EMAN, Topaz, crYOLO and CSV.

    Examples:

        cryoset convert run_data.star --out particles.cs

        cryoset convert mic001.box --out mic001.star --micrograph-shape-px 4096 4096
    """
    from cryoset.provenance import make_provenance, write_provenance

    if out is not None and output_arg is not None:
        raise InputError("--out", "give the output once: as OUTPUT or as --out")
    output_path = out if out is not None else output_arg
    if output_path is None:
        raise InputError("--out", "no output given (--out PATH)")

    if not input_path.exists():
        raise InputError(input_path, "no such file")
    if star_version not in {"3.1", "3.0"}:
        raise InputError("--star-version", f"must be 3.1 or 3.0, got {star_version!r}")
    if box_size is not None and box_size < 1:
        raise InputError("--box-px", f"must be a positive number of pixels, got {box_size}")
    if micrograph_shape is not None and min(micrograph_shape) < 1:
        raise InputError("--micrograph-shape-px", f"must be two positive sizes (NY NX), got {micrograph_shape}")
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
        problems: list[str] = []
        if (out_fmt == "star" and star_version == "3.1") or out_fmt == "cs":
            from cryoset.io.particles import fill_image_geometry

            # RELION 3.1 needs the image size in data_optics, cryoSPARC in blob/shape
            problems = fill_image_geometry(ps, input_path)
        write_particles(output_path, ps, fmt=to, star_version=star_version,  # type: ignore[arg-type]
                        provenance=record, micrograph_shape=micrograph_shape)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            typer.echo(f"note: the image size is not written: {problems[0]}{more}", err=True)
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
    if as_json:
        echo_json({"input": str(input_path), "out": str(output_path), "kind": kind, "count": count})
    else:
        typer.echo(f"{input_path} -> {output_path}: {count} {kind}")


def register(app: typer.Typer) -> None:
    """Add the ``convert`` command."""
    app.command("convert")(convert)
