"""``cryoset datasets …``: download, read and cross-check published cryo-EM datasets.

Examples::

    cryoset datasets list
    cryoset datasets info cryo2structdata
    cryoset datasets download cryovirusdb --subset 10205 --out data/cryovirusdb
    cryoset datasets download cryo2structdata --subset test --match '*7770*' --out data/c2s
    cryoset datasets download cryoppp --record 1234567 --subset 10028 --out data/cryoppp
    cryoset datasets download cryovirusdb --subset 10205 --out data/cryovirusdb --offline
    cryoset datasets summary data/cryovirusdb/10205 --layout cryoppp --json
    cryoset datasets import data/cryopanda/10017_particles.h5 --layout cryopanda --store store/
    cryoset datasets crosscheck data/c2s/EMD-5168 prepared/EMD-5168 --out agreement.json
    cryoset datasets export store/ --layout cryopanda --out panda/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError

_LAYOUTS = ("cryoppp", "cryo2struct", "cryopanda")

_SHAPE_HELP = "Height and width of the original micrographs, pixels (NY NX; for lite JPGs)."


def _check_shape(shape: tuple[int, int] | None) -> tuple[int, int] | None:
    if shape is not None and min(shape) < 1:
        raise InputError("--micrograph-shape-px", f"must be positive, got {shape[0]} {shape[1]}")
    return shape


def register(app: typer.Typer) -> None:
    """Add the ``datasets`` sub-command group."""
    group = typer.Typer(name="datasets", no_args_is_help=True,
                        help="Published datasets (CryoVirusDB, CryoPPP, Cryo2StructData, cryoPANDA).")

    @group.command("list")
    def list_(as_json: bool = json_option()) -> None:
        """List the registered datasets.

        Examples:

            cryoset datasets list --json
        """
        from cryoset.datasets.registry import registry

        if as_json:
            echo_json({"datasets": [{"name": spec.name, "layout": spec.layout, "title": spec.title}
                                    for spec in registry().values()]})
            return
        for spec in registry().values():
            typer.echo(f"{spec.name:16s} {spec.layout:12s} {spec.title}")

    @group.command("info")
    def info(name: str = typer.Argument(..., help="Dataset name (see `datasets list`)."),
             as_json: bool = json_option()) -> None:
        """Show where a dataset lives, its subsets, its layout and what is not known.

        Examples:

            cryoset datasets info cryoppp --json
        """
        from cryoset.datasets.registry import get_spec

        spec = get_spec(name)
        if as_json:
            echo_json({"name": spec.name, "title": spec.title, "layout": spec.layout,
                       "reference": spec.reference, "select_by": spec.select_by,
                       "sources": [{"subset": src.subset, "host": src.host, "identifier": src.identifier,
                                    "description": src.description, "default": src.default}
                                   for src in spec.sources],
                       "notes": spec.notes or None, "not_known": spec.not_known or None})
            return
        typer.echo(f"{spec.name}: {spec.title}")
        typer.echo(f"layout: {spec.layout}")
        typer.echo(f"reference: {spec.reference}")
        typer.echo("records:" if spec.select_by == "source" else "record:")
        for src in spec.sources:
            where = f"{src.host or 'unknown host'} {src.identifier or 'unknown record id'}"
            how = "" if src.default else " (only with --record " + str(src.identifier) + ")"
            typer.echo(f"  {src.subset:13s} {where:32s} {src.description}{how}")
        subsets = ("--subset NAME selects records" if spec.select_by == "source"
                   else "--subset EMPIAR id selects files")
        typer.echo(f"subsets: {subsets}")
        if spec.notes:
            typer.echo(f"notes: {spec.notes}")
        typer.echo(f"not known: {spec.not_known or 'nothing (record ids from the papers)'}")

    @group.command("download")
    def download(
        name: str = typer.Argument(..., help="Dataset name."),
        out: Path = option("out", ..., help="Output directory."),
        subset: list[str] = typer.Option([], "--subset", "-s", metavar="SUBSET",
                                         help="Subset (record name or EMPIAR id); repeatable."),
        record: str | None = typer.Option(None, "--record", help="Record override: Zenodo id or doi:…"),
        base_url: str | None = typer.Option(None, "--base-url", help="Host base URL override."),
        match: str | None = typer.Option(None, "--match", help="Glob on file names within the records."),
        cache: Path | None = typer.Option(None, "--cache", help="Download cache (default OUT/.cache)."),
        offline: bool = typer.Option(False, "--offline", help="Use only the cache."),
        retries: int = typer.Option(4, "--retries", min=0, help="Retries for transient failures."),
        dry_run: bool = typer.Option(False, "--dry-run", help="List the files, download nothing."),
        as_json: bool = json_option(),
    ) -> None:
        """Download (resumable, verified, cached) and safely extract a published dataset.

        Examples:

            cryoset datasets download cryo2structdata --subset test --out data/c2s

            cryoset datasets download cryoppp --subset 10028 --out data/cryoppp --dry-run --json
        """
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        from cryoset.archives.download import HttpClient
        from cryoset.cli._paths import require_directory_location
        from cryoset.datasets.registry import download_dataset, get_spec, list_remote_files

        spec = get_spec(name)
        require_directory_location(out, "--out")
        if cache is not None:
            require_directory_location(cache, "--cache")
        client = HttpClient(cache_dir=cache or out / ".cache", offline=offline, retries=retries)
        if dry_run:
            remote = list_remote_files(spec, client, subsets=subset, record=record, base_url=base_url,
                                       match=match)
            if as_json:
                echo_json({"files": [{"source": rf.source, "key": rf.key, "size_bytes": rf.size_bytes,
                                      "checksum": rf.checksum} for rf in remote]})
                return
            for rf in remote:
                size = "?" if rf.size_bytes is None else str(rf.size_bytes)
                typer.echo(f"{rf.source}\t{rf.key}\t{size}\t{rf.checksum or ''}")
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            tasks: dict[str, Any] = {}

            def progress(url: str, done: int, total: int | None) -> None:
                if url not in tasks:
                    tasks[url] = bar.add_task(url.rsplit("/", 1)[-1][:40], total=total)
                bar.update(tasks[url], completed=done, total=total)

            result = download_dataset(spec, out, client, subsets=subset, record=record, base_url=base_url,
                                      match=match, progress=progress)
        if as_json:
            echo_json({"out": str(out), "files": list(result.files)})
            return
        for f in result.files:
            kind = f"extracted ({f['n_members']} files)" if f["extracted"] else "file"
            typer.echo(f"{f['key']} -> {f['path']} [{kind}]")

    @group.command("summary")
    def summary(
        path: Path = typer.Argument(..., help="An extracted entry (directory) or a cryoPANDA .h5."),
        layout: str = typer.Option(..., "--layout", help="cryoppp, cryo2struct or cryopanda."),
        original_shape: tuple[int, int] | None = option("micrograph_shape_px", None, help=_SHAPE_HELP),
        table: Path | None = option("out", None, help="Write the particle table (CSV, canonical)."),
        as_json: bool = json_option(),
    ) -> None:
        """Read an entry in a published layout and print what it holds.

        Examples:

            cryoset datasets summary data/cryovirusdb/10205 --layout cryoppp --out picks.csv --json
        """
        summary_dict = _summary(path, layout, _check_shape(original_shape), table)
        if as_json:
            echo_json(summary_dict)
        else:
            for key, value in summary_dict.items():
                typer.echo(f"{key}: {json.dumps(value, default=str)}")

    @group.command("import")
    def import_(
        path: Path = typer.Argument(..., help="cryoPANDA .h5 (or a folder of them) or a CryoPPP entry."),
        store: Path = typer.Option(..., "--store", help="Particle store (created if absent)."),
        layout: str = typer.Option(..., "--layout", help="cryopanda or cryoppp."),
        experiment: str | None = typer.Option(None, "--experiment", help="Experiment id (CryoPPP: required)."),
        original_shape: tuple[int, int] | None = option("micrograph_shape_px", None, help=_SHAPE_HELP),
        as_json: bool = json_option(),
    ) -> None:
        """Add published particles to a particle store (cryoPANDA HDF5 or CryoPPP stacks).

        Examples:

            cryoset datasets import data/cryopanda --layout cryopanda --store store/
        """
        from cryoset.cli._paths import require_directory_location
        from cryoset.provenance import make_provenance
        from cryoset.store.dataset import ParticleStore

        if layout not in ("cryopanda", "cryoppp"):
            raise InputError("--layout", f"must be cryopanda or cryoppp, not {layout!r}")
        shape = _check_shape(original_shape)
        if layout == "cryoppp" and experiment is None:
            raise InputError("--experiment", "is required for a CryoPPP entry")
        require_directory_location(store, "--store")
        # the source is found and checked before the store is created or written
        if layout == "cryopanda":
            from cryoset.datasets.cryopanda import (
                find_cryopanda_files,
                import_cryopanda,
                read_annotations,
            )

            files = find_cryopanda_files(path)
            for f in files.values():
                read_annotations(f)
        else:
            from cryoset.datasets.cryoppp import import_cryoppp_stacks, read_cryoppp

            entry = read_cryoppp(path, original_shape=shape)
        ps = ParticleStore.open(store) if (store / "store.json").exists() else ParticleStore.create(store)
        prov = make_provenance("datasets import", {"layout": layout, "experiment": experiment}, [path])
        if layout == "cryopanda":
            added: dict[str, int] = {}
            for exp, f in files.items():
                n = import_cryopanda(f, ps, experiment or exp, provenance=prov)
                added[experiment or exp] = n
                if not as_json:
                    typer.echo(f"{experiment or exp}: {n} particles")
        elif layout == "cryoppp":
            if experiment is None:  # checked above; keeps the type checker informed
                raise InputError("--experiment", "is required for a CryoPPP entry")
            n = import_cryoppp_stacks(entry, ps, experiment, provenance=prov)
            added = {experiment: n}
            if not as_json:
                typer.echo(f"{experiment}: {n} particles")
        else:
            raise InputError("--layout", f"must be cryopanda or cryoppp, not {layout!r}")
        if as_json:
            echo_json({"store": str(store), "experiments": added, "particles": sum(added.values())})

    @group.command("export")
    def export(
        store: Path = typer.Argument(..., help="Particle store."),
        layout: str = typer.Option(..., "--layout", help="cryopanda (the only layout written so far)."),
        out: Path = option("out", ..., help="Output directory: one <EXPERIMENT>_particles.h5 per experiment."),
        selection: Path | None = typer.Option(
            None, "--selection", help="Parquet selection: from `cryoset query --out`, or a cryoPANDA "
            "probe/index file (FileName, FileParticleIndex, …). Default: every particle."),
        strict: bool = typer.Option(False, "--strict", help="Write only the published keys (no columns of ours)."),
        as_json: bool = json_option(),
    ) -> None:
        """Write a store (or a selection of it) in a published layout, under its key names.

        Examples:

            cryoset datasets export store/ --layout cryopanda --out panda/

            cryoset datasets export store/ --layout cryopanda --selection probe_train.parquet --out panda/ --json
        """
        import pandas as pd

        from cryoset.cli._paths import require_directory_location
        from cryoset.datasets.cryopanda import export_cryopanda, read_probe_selection
        from cryoset.provenance import make_provenance, write_provenance
        from cryoset.store.dataset import ParticleStore, Selection

        if layout != "cryopanda":
            raise InputError("--layout", f"must be cryopanda, not {layout!r}")
        require_directory_location(out, "--out")
        ps = ParticleStore.open(store)
        if selection is None:
            sel = ps.select()
        else:
            if not selection.is_file():
                raise InputError(selection, "no such selection file")
            try:
                columns = set(pd.read_parquet(selection).columns)
            except Exception as exc:  # pyarrow raises several types for unreadable files
                raise InputError(selection, f"is not a readable Parquet file ({exc})") from None
            if {"experiment_id", "particle_index"} <= columns:
                sel = Selection(pd.read_parquet(selection))
            else:
                sel = read_probe_selection(selection, ps)
        paths = export_cryopanda(ps, sel, out, extras=not strict)
        write_provenance(out, make_provenance("datasets export", {"layout": layout, "strict": strict},
                                              [selection] if selection is not None else []))
        if as_json:
            echo_json({"out": str(out), "layout": layout, "files": [str(p) for p in paths], "particles": len(sel)})
            return
        for path in paths:
            typer.echo(str(path))
        typer.echo(f"exported {len(sel)} particles")

    @group.command("crosscheck")
    def crosscheck(
        theirs: Path = typer.Argument(..., help="Published Cryo2StructData entry directory."),
        ours: Path = typer.Argument(..., help="Our `cryoset map prepare` output of the same map."),
        json_out: Path | None = option("out", None, help="Write the full report as JSON to this file."),
        as_json: bool = json_option("Print the full report as one JSON object on stdout."),
    ) -> None:
        """Agreement of label maps (per-label Dice, voxel agreement) and density correlation.

        Examples:

            cryoset datasets crosscheck c2s/EMD-5168 prepared/EMD-5168 --out report.json

            cryoset datasets crosscheck c2s/EMD-5168 prepared/EMD-5168 --json
        """
        from cryoset.datasets.cryo2struct import crosscheck as run_crosscheck
        from cryoset.datasets.cryo2struct import read_cryo2struct_entry
        from cryoset.io.atomic import write_text_atomic
        from cryoset.provenance import make_provenance, write_provenance

        report = run_crosscheck(read_cryo2struct_entry(theirs), read_cryo2struct_entry(ours))
        if not any(r["label"] == -1 for r in report["labels"]):
            raise InputError(theirs, "no label map in common with ours to compare")
        if json_out is not None:
            from cryoset.io.jsontext import json_safe

            write_text_atomic(json_out, json.dumps(json_safe(report), indent=2, default=str) + "\n")
            write_provenance(json_out, make_provenance("datasets crosscheck", {}, [theirs, ours]))
        if as_json:
            echo_json(report)
            return
        typer.echo(f"{report['emdb_id']}: offset {report['offset_vox']} vox, overlap {report['overlap_shape']}, "
                   f"density r = {report['density_correlation']:.4f}")
        typer.echo("map        label  n_ours  n_theirs  n_both  dice")
        for r in report["labels"]:
            label = "all" if r["label"] == -1 else str(r["label"])
            typer.echo(f"{r['map']:10s} {label:>5s} {r['n_ours']:7d} {r['n_theirs']:9d} {r['n_both']:7d}  "
                       f"{r['dice']:.4f}")

    app.add_typer(group)


def _summary(path: Path, layout: str, original_shape: tuple[int, int] | None, table: Path | None) -> dict[str, Any]:
    from cryoset.provenance import make_provenance, write_provenance

    if layout not in _LAYOUTS:
        raise InputError("--layout", f"must be one of {', '.join(_LAYOUTS)}, not {layout!r}")
    out: dict[str, Any] = {"path": str(path), "layout": layout}
    frame = None
    if layout == "cryoppp":
        from cryoset.datasets.cryoppp import read_cryoppp

        entry = read_cryoppp(path, original_shape=original_shape)
        frame = entry.particles
        out.update(root=str(entry.root), n_micrographs=len(entry.micrographs), n_particles=len(entry.particles),
                   n_false_positives=0 if entry.false_positives is None else len(entry.false_positives),
                   n_stacks=len(entry.stacks), star_files=[str(s) for s in entry.star_files],
                   micrograph_shapes=sorted({str(s) for s in entry.shapes.values()}))
    elif layout == "cryo2struct":
        from cryoset.datasets.cryo2struct import find_entries, read_cryo2struct_entry

        entries = []
        for d in find_entries(path):
            e = read_cryo2struct_entry(d)
            entries.append({"dir": str(d), "emdb_id": e.emdb_id, "shape": list(e.density.data.shape),
                            "voxel_size_a": list(e.density.voxel_size_a), "labels": sorted(e.labels),
                            "n_npz": len(e.npz), "models": [m.name for m in e.models]})
        out["entries"] = entries
    else:
        from cryoset.datasets.cryopanda import find_cryopanda_files, read_annotations

        files = find_cryopanda_files(path)
        out["experiments"] = {k: len(read_annotations(v)) for k, v in files.items()}
        if len(files) == 1:
            frame = read_annotations(next(iter(files.values())))
    if table is not None:
        if frame is None:
            raise InputError("--out", f"the {layout} layout has no single particle table here")
        from cryoset.io.atomic import atomic_path

        with atomic_path(table) as tmp:
            frame.to_csv(tmp, index=False)
        write_provenance(table, make_provenance("datasets summary", {"layout": layout}, []))
    return out
