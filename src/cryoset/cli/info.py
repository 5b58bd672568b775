"""``cryoset info FILE…``: summarise any supported file.

MRC/MRCS maps, stacks and micrographs (also ``.gz``/``.bz2``), PNG/TIFF/JPEG micrographs,
RELION STAR files, cryoSPARC ``.cs``, coordinate files (``.box``, CryoPPP ``.csv``, Topaz
``.txt``/``.tsv``, crYOLO ``.cbox``) and atomic models (PDB/mmCIF, ``.gz``).

Examples::

    cryoset info emd_5168.map
    cryoset info particles.star run_it025_data.star --json
    cryoset info picks.box 3MFP.pdb

Unreadable files are reported one line each on stderr and the exit code is 2; the other
files are still summarised.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError

MRC_SUFFIXES = {".mrc", ".mrcs", ".map", ".st", ".rec", ".ali", ".ccp4"}
IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}
MODEL_SUFFIXES = {".pdb", ".cif", ".ent", ".mmcif"}


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in {".gz", ".bz2"}:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def detect_kind(path: Path) -> str:
    """The kind of file, from its name: mrc, image, star, cs, model or coords."""
    suffix = _base_suffix(path)
    if suffix in MRC_SUFFIXES:
        return "mrc"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix == ".star":
        return "star"
    if suffix == ".cs":
        return "cs"
    if suffix in MODEL_SUFFIXES:
        return "model"
    from cryoset.io.coords import COORDINATE_SUFFIXES  # .star and .cs are told apart above

    if suffix in COORDINATE_SUFFIXES:
        return "coords"
    raise InputError(path, f"unknown file type {suffix or '(no suffix)'!r}")


def _summarise_mrc(path: Path, shape: tuple[int, int] | None, permissive: bool = False) -> dict[str, Any]:
    from cryoset.io.mrc import read_header, read_stack

    # checks the data block is complete and matches the header (lazily: nothing is loaded); a
    # volume stored with permuted axes is fine, an image stack must be stored (1, 2, 3)
    read_stack(path, permissive=permissive)
    h = read_header(path, permissive=permissive)
    shape_zyx = [int(v) for v in h["shape_zyx"]]  # after MAPC/MAPR/MAPS, like the data read
    return {
        "kind": "mrc",
        "shape_zyx": shape_zyx,
        "is_stack": bool(h.get("is_stack", False)),
        "mode": int(h["mode"]),
        "voxel_size_a": [float(v) for v in h["voxel_size_a"]],
        "origin_a": [float(v) for v in h["origin_a"]],
        "dmin": float(h.get("dmin", float("nan"))),
        "dmax": float(h.get("dmax", float("nan"))),
        "dmean": float(h.get("dmean", float("nan"))),
        "compression": h.get("compression"),
    }


def _summarise_image(path: Path, shape: tuple[int, int] | None, permissive: bool = False) -> dict[str, Any]:
    from cryoset.io.images import read_image

    img = read_image(path, permissive=permissive)
    return {"kind": "image", "format": img.source_format, "shape_yx": list(img.data.shape),
            "bit_depth": img.bit_depth, "min": float(img.data.min()), "max": float(img.data.max())}


def _summarise_star(path: Path, shape: tuple[int, int] | None, permissive: bool = False) -> dict[str, Any]:
    from cryoset.io.star import describe_blocks, read_star

    blocks = read_star(path, permissive=permissive)
    out: dict[str, Any] = {"kind": "star",
                           "blocks": {name: {"rows": len(df), "columns": list(map(str, df.columns))}
                                      for name, df in blocks.items()}}
    if any("rlnImageName" in df.columns for df in blocks.values()):
        from cryoset.io.particles import read_particles

        ps = read_particles(path, micrograph_shape=shape, permissive=permissive)
        out["particles"] = len(ps.table)
        out["optics_groups"] = 0 if ps.optics is None else len(ps.optics)
        if "ctf_phase_flipped" in ps.table.columns:
            out["phase_flipped"] = int(ps.table["ctf_phase_flipped"].fillna(0).astype(bool).sum())
    else:
        out["contents"] = describe_blocks(blocks)
    return out


def _summarise_cs(path: Path, shape: tuple[int, int] | None, permissive: bool = False) -> dict[str, Any]:
    from cryoset.io.cryosparc import read_cs

    arr = read_cs(path, permissive=permissive)
    names = list(arr.dtype.names or ())
    return {"kind": "cs", "rows": int(arr.shape[0]), "fields": names}


def _summarise_model(path: Path, shape: tuple[int, int] | None, permissive: bool = False) -> dict[str, Any]:
    from cryoset.io.structure import read_structure

    model = read_structure(path, permissive=permissive)
    seqs = model.modelled_sequences()
    return {"kind": "model", "atoms": len(model.atoms), "chains": sorted(seqs),
            "residues_per_chain": {c: len(s) for c, s in seqs.items()},
            "helices": len(model.helices), "sheets": len(model.sheets)}


def _summarise_coords(path: Path, shape: tuple[int, int] | None, permissive: bool = False) -> dict[str, Any]:
    from cryoset.io.coords import read_coords

    picks = read_coords(path, micrograph_shape=shape, permissive=permissive)
    return {"kind": "coords", "picks": len(picks),
            "micrographs": sorted(map(str, picks["micrograph"].unique())),
            "x_px_range": [float(picks["x_px"].min()), float(picks["x_px"].max())] if len(picks) else [],
            "y_px_range": [float(picks["y_px"].min()), float(picks["y_px"].max())] if len(picks) else []}


_SUMMARISERS = {"mrc": _summarise_mrc, "image": _summarise_image, "star": _summarise_star,
                "cs": _summarise_cs, "model": _summarise_model, "coords": _summarise_coords}


def summarise(path: Path, micrograph_shape: tuple[int, int] | None = None, *,
              permissive: bool = False) -> dict[str, Any]:
    """Summary of one file (raises :class:`InputError` when it cannot be read).

    ``permissive`` is passed to the file's reader (skip malformed rows, tolerate header
    problems, as each reader documents).
    """
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory")
    return {"path": str(path), **_SUMMARISERS[detect_kind(path)](path, micrograph_shape, permissive)}


def info(
    files: list[Path] = typer.Argument(..., help="Files to summarise."),
    as_json: bool = json_option("Print one JSON object: files (one summary per file) and errors (unreadable files)."),
    micrograph_shape: tuple[int, int] | None = option(
        "micrograph_shape_px", None, help="Micrograph height and width, pixels (NY NX), for y-flipped "
        "coordinate files (CryoPPP CSV) and bounds checks."),
    permissive: bool = typer.Option(False, "--permissive", help="Tolerate what the readers can skip "
                                    "(malformed STAR rows, incomplete .cs field groups, MRC header "
                                    "problems, off-micrograph picks)."),
) -> None:
    """Summarise any supported file (maps, stacks, images, STAR, .cs, coordinates, models).

    Examples:

        cryoset info emd_5168.map

        cryoset info particles.star picks.box 3MFP.pdb --json
    """
    from rich.console import Console
    from rich.table import Table

    if micrograph_shape is not None and min(micrograph_shape) < 1:
        raise InputError("--micrograph-shape-px", f"must be two positive sizes (NY NX), got {micrograph_shape}")
    summaries: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for path in files:
        try:
            summaries.append(summarise(path, micrograph_shape, permissive=permissive))
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            errors.append({"path": str(path), "error": exc.message})
    failed = bool(errors)
    if as_json:
        echo_json({"files": summaries, "errors": errors})
    else:
        console = Console()
        for s in summaries:
            table = Table(title=s["path"], show_header=False)
            for key, value in s.items():
                if key != "path":
                    text = json.dumps(value, default=str)
                    table.add_row(key, text if len(text) < 200 else text[:197] + "...")
            console.print(table)
    if failed:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add the ``info`` command."""
    app.command("info")(info)
