"""``cryoset store …`` and ``cryoset query``: the particle dataset store.

A store keeps particle images in Zarr v3 (uint8 with per-particle scaling, or float16) and
annotations in Parquet, one experiment per directory; DuckDB queries run over all of them.

Examples::

    cryoset store create ds/ --encoding uint8
    cryoset store add ds/ --star particles.star --experiment EMPIAR-10076
    cryoset store add ds/ --hdf5 10076_particles.h5 --experiment EMPIAR-10076b
    cryoset store info ds/
    cryoset query "SELECT experiment_id, count(*) FROM particles GROUP BY 1" --store ds/
    cryoset query "SELECT * FROM particles WHERE defocus_u_a < 15000" --store ds/ --out sel.parquet
    cryoset store export ds/ --format relion --out relion_export/ --selection sel.parquet
    cryoset store export ds/ --format hdf5 --size-px 128 --out small.h5
    cryoset store export ds/ --format hdf5 --out export.h5
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError

group = typer.Typer(help="Create, fill, inspect and export particle stores.", no_args_is_help=True)


@group.command("create")
def create(
    root: Path = typer.Argument(..., help="Directory of the new store."),
    encoding: str = typer.Option("uint8", "--encoding", help="uint8 (per-particle scaling) or float16."),
    chunk_particles: int = typer.Option(256, "--chunk-particles", min=1, help="Particles per Zarr chunk."),
    codec: str = typer.Option("blosc-zstd-3-bitshuffle", "--codec",
                              help="Chunk codec: blosc-zstd-3-bitshuffle, zstd-9 (smallest) or none (fastest reads)."),
) -> None:
    """Create an empty particle store.

    Examples:

        cryoset store create ds/ --encoding uint8

        cryoset store create ds/ --codec zstd-9 --chunk-particles 512
    """
    from cryoset.store.dataset import CODECS, ParticleStore

    if encoding not in ("uint8", "float16"):
        raise InputError("--encoding", f"must be uint8 or float16, got {encoding!r}")
    if codec not in CODECS:
        raise InputError("--codec", f"must be one of {', '.join(CODECS)}, got {codec!r}")
    ParticleStore.create(root, encoding=encoding, chunk_particles=chunk_particles,  # type: ignore[arg-type]
                         codec=codec)
    typer.echo(f"created {root}")


@group.command("add")
def add(
    root: Path = typer.Argument(..., help="The store."),
    experiment: str = typer.Option(..., "--experiment", help="Experiment id, e.g. EMPIAR-10076."),
    star: Path | None = typer.Option(None, "--star", help="RELION particle STAR (stacks beside it)."),
    hdf5: Path | None = typer.Option(None, "--hdf5", help="cryoPANDA-style HDF5 file."),
    replace: bool = typer.Option(False, "--replace", help="Swap an experiment already stored under this id "
                                 "(without it, an existing id is an error)."),
    as_json: bool = json_option(),
) -> None:
    """Append one experiment (never rewrites the others; invisible until complete).

    The commit is exclusive: if the id is already in the store, or another `store add`
    commits it first, this one fails (exit 2) and the stored experiment is untouched —
    unless --replace is given.

    Examples:

        cryoset store add ds/ --star particles.star --experiment EMPIAR-10076

        cryoset store add ds/ --hdf5 10076_particles.h5 --experiment EMPIAR-10076b --json
    """
    from cryoset.provenance import make_provenance
    from cryoset.store.dataset import ParticleStore
    from cryoset.store.exports import import_hdf5, import_relion

    source = star if hdf5 is None else hdf5
    if source is None or (star is not None and hdf5 is not None):
        raise InputError("--star/--hdf5", "give exactly one source")
    store = ParticleStore.open(root)
    if not source.exists():
        raise InputError(source, "no such file")
    record = make_provenance("store add", {"experiment": experiment}, [source])
    if star is not None:
        n = import_relion(star, store, experiment, provenance=record, replace=replace)
    else:
        n = import_hdf5(source, store, experiment, provenance=record, replace=replace)
    if as_json:
        echo_json({"store": str(root), "experiment_id": experiment, "particles": n})
    else:
        typer.echo(f"{experiment}: {n} particles added to {root}")


@group.command("info")
def info(
    root: Path = typer.Argument(..., help="The store."),
    as_json: bool = json_option(),
) -> None:
    """Experiments, particle counts and image shapes.

    Examples:

        cryoset store info ds/ --json
    """
    from cryoset.store.dataset import ParticleStore

    store = ParticleStore.open(root)
    rows = [{"experiment_id": e, "particles": store.num_particles(e),
             "image_shape": list(store.images_array(e).shape[1:])} for e in store.experiments()]
    summary = {"root": str(root), "encoding": store.encoding, "experiments": rows,
               "particles": sum(r["particles"] for r in rows)}  # type: ignore[misc]
    if as_json:
        echo_json(summary)
        return
    typer.echo("\n".join([f"{r['experiment_id']}: {r['particles']} particles {r['image_shape']}" for r in rows]
                         + [f"total: {summary['particles']} particles ({store.encoding})"]))


@group.command("export")
def export(
    root: Path = typer.Argument(..., help="The store."),
    fmt: str = option("format", ..., help="relion or hdf5."),
    out: Path = option("out", ..., help="Output directory (relion) or file (hdf5)."),
    selection: Path | None = typer.Option(None, "--selection", help="Parquet selection from `cryoset query --out`."),
    size: int = option("size_px", 224, min=8, help="Image edge for hdf5, pixels."),
    as_json: bool = json_option(),
) -> None:
    """Export a selection (default: everything) as RELION .mrcs + STAR or cryoPANDA HDF5.

    Examples:

        cryoset store export ds/ --format relion --out relion_export/ --selection sel.parquet

        cryoset store export ds/ --format hdf5 --size-px 128 --out export.h5
    """
    import pandas as pd

    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.store.dataset import ParticleStore, Selection
    from cryoset.store.exports import export_hdf5, export_relion

    store = ParticleStore.open(root)
    if selection is not None:
        if not selection.is_file():
            raise InputError(selection, "no such selection file")
        try:
            sel = Selection(pd.read_parquet(selection))
        except (OSError, ValueError) as exc:
            raise InputError(selection, f"is not a Parquet selection ({exc})") from None
    else:
        sel = store.select()
    record = make_provenance("store export", {"format": fmt, "size": size},
                             [selection] if selection is not None else [])
    if fmt == "relion":
        path = export_relion(store, sel, out, provenance=record)
        write_provenance(out, record)
    elif fmt == "hdf5":
        path = export_hdf5(store, sel, out, size=size, provenance=record)
        write_provenance(path, record)
    else:
        raise InputError("--format", f"must be relion or hdf5, got {fmt!r}")
    if as_json:
        echo_json({"out": str(path), "format": fmt, "particles": len(sel)})
    else:
        typer.echo(f"exported {len(sel)} particles to {path}")


def query(
    sql: str = typer.Argument(..., help="SQL over the view `particles`."),
    store_root: Path = typer.Option(..., "--store", help="The store."),
    out: Path | None = option("out", None, help="Save the result as Parquet (a selection when it "
                              "has experiment_id and particle_index)."),
    as_json: bool = json_option("Print one JSON object: rows (the first --show rows as records) and total_rows."),
    limit: int = typer.Option(20, "--show", metavar="N", help="Rows to print."),
) -> None:
    """Run DuckDB SQL over every experiment of a store.

    Examples:

        cryoset query "SELECT experiment_id, count(*) FROM particles GROUP BY 1" --store ds/ --json

        cryoset query "SELECT * FROM particles WHERE defocus_u_a < 15000" --store ds/ --out sel.parquet
    """
    from cryoset.io.atomic import atomic_path
    from cryoset.store.dataset import ParticleStore

    if limit < 0:
        raise InputError("--show", f"must be a number of rows >= 0, got {limit}")
    frame = ParticleStore.open(store_root).query(sql)
    if out is not None:
        with atomic_path(out) as tmp:
            frame.to_parquet(tmp, index=False)
    if as_json:
        echo_json({"rows": json.loads(frame.head(limit).to_json(orient="records")), "total_rows": len(frame),
                   "out": None if out is None else str(out)})
    else:
        typer.echo(frame.head(limit).to_string(index=False))
        typer.echo(f"({len(frame)} rows)")


def register(app: typer.Typer) -> None:
    """Add the ``store`` group and the ``query`` command."""
    app.add_typer(group, name="store")
    app.command("query")(query)
