"""``cryoset build`` (dataset builds) and ``cryoset catalog …`` (curation of experiments).

Examples::

    cryoset build examples/build-demo.yaml --out demo-build
    cryoset build config.yaml --out big-build --dask-local 4
    cryoset build config.yaml --out big-build --scheduler tcp://10.0.0.5:8786
    cryoset catalog curate empiar_10028.json records.csv --fasta seqs.fasta --out catalog.parquet
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError

catalog_group = typer.Typer(help="Curate experiment catalogues: cluster by sequence, pick "
                            "representatives, split train/test.", no_args_is_help=True)


def build(
    config: Path = typer.Argument(..., help="Build configuration (YAML; see docs/build.md)."),
    out: Path = option("out", ..., help="Build directory (an existing one is resumed)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address."),
    dask_local: int | None = typer.Option(None, "--dask-local", min=1,
                                          help="Start a local Dask cluster with N workers."),
    workers: int | None = option("workers", None, min=1,
                                 help="Local process pool size (default: execution.workers)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = json_option(),
) -> None:
    """Build a particle dataset: CTF → pick → extract → classify → store, per experiment.

    Resumable: re-running the same command skips every stage already done (done-markers
    hold a hash of the inputs and parameters) and finishes what was interrupted.

    Examples:

        cryoset build examples/build-demo.yaml --out demo-build

        cryoset build config.yaml --out build --dask-local 4
    """
    from cryoset.pipeline.build import run_build

    result = run_build(config, out, scheduler=scheduler, dask_local=dask_local, workers=workers,
                       progress=not quiet)
    if as_json:
        echo_json({"out": str(out), "store": str(result.store_path), "particles": result.total_particles,
                   "experiments": {eid: {"micrographs": s.get("micrographs", 0), "particles": s.get("stored", 0),
                                         "executed": list(s["executed"]), "skipped": list(s["skipped"]),
                                         "stage_seconds": s.get("stage_seconds", {}),
                                         "report": str(s["report"])}
                                   for eid, s in result.experiments.items()}})
        return
    for eid, s in result.experiments.items():
        typer.echo(f"{eid}: {s.get('micrographs', 0)} micrographs, {s.get('stored', 0)} particles, "
                   f"{len(s['executed'])} stages run, {len(s['skipped'])} skipped; report {s['report']}")
    typer.echo(f"store {result.store_path}: {result.total_particles} particles")


@catalog_group.command("curate")
def curate_cmd(
    records: list[Path] = typer.Argument(..., help="Experiment records: EMPIAR JSON, YAML, CSV, Parquet."),
    out: Path = option("out", ..., help="Curated catalogue (.parquet or .csv)."),
    fasta: Path | None = typer.Option(None, "--fasta", help="FASTA; header = experiment id."),
    threshold: float = typer.Option(0.3, "--threshold", metavar="FRACTION", help="Identity threshold (0-1)."),
    max_per_cluster: int = typer.Option(4, "--max-per-cluster", min=1, help="Representatives per cluster."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of experiments in the test split."),
    seed: int = option("seed", 0, help="Seed of the split."),
    method: str = typer.Option("auto", "--method", help="auto, mmseqs or align."),
    as_json: bool = json_option(),
) -> None:
    """Cluster experiments by sequence identity, keep the best per cluster, split by cluster.

    Examples:

        cryoset catalog curate records.csv --fasta seqs.fasta --out catalog.parquet

        cryoset catalog curate a.json b.json --method align --threshold 0.3 --out cat.csv
    """
    from cryoset.catalog.curate import curate
    from cryoset.catalog.records import attach_sequences, read_fasta, read_records
    from cryoset.io.atomic import atomic_path
    from cryoset.provenance import make_provenance, write_provenance

    if not 0 < test_fraction < 1:
        raise InputError("--test-fraction", f"must be in (0, 1), got {test_fraction}")
    if method not in ("auto", "mmseqs", "align"):
        raise InputError("--method", f"must be auto, mmseqs or align, got {method!r}")
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise InputError(out, "output must end in .parquet or .csv")
    table = read_records(records)
    table = attach_sequences(table, read_fasta(fasta) if fasta is not None else None,
                             base_dir=records[0].parent)
    cat = curate(table, threshold=threshold, max_per_cluster=max_per_cluster,
                 fractions={"train": 1 - test_fraction, "test": test_fraction}, seed=seed,
                 method=method)  # type: ignore[arg-type]
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            flat = cat.copy()
            for col in ("sequences", "emdb_ids", "pdb_ids"):
                flat[col] = [";".join(v) for v in flat[col]]
            flat.to_csv(tmp, index=False)
        else:
            cat.to_parquet(tmp, index=False)
    inputs = [*records, *([fasta] if fasta is not None else [])]
    write_provenance(out, make_provenance("catalog curate", {
        "threshold": threshold, "max_per_cluster": max_per_cluster, "test_fraction": test_fraction,
        "seed": seed, "method": method}, inputs=inputs))
    kept = cat[cat["representative"]]
    summary = {"experiments": len(cat), "clusters": int(cat["cluster"].nunique()),
               "kept": len(kept), "train": int((kept["split"] == "train").sum()),
               "test": int((kept["split"] == "test").sum()), "output": str(out)}
    if as_json:
        echo_json(summary)
    else:
        typer.echo(f"{summary['experiments']} experiments in {summary['clusters']} clusters; kept "
                   f"{summary['kept']} ({summary['train']} train, {summary['test']} test) -> {out}")


def register(app: typer.Typer) -> None:
    """Add ``build`` and the ``catalog`` group to the application."""
    app.command("build")(build)
    app.add_typer(catalog_group, name="catalog")
