"""``cryoset fetch``: EMPIAR, EMDB and PDB metadata and downloads.

Downloads are parallel, resumable, verified and atomic, kept in a cache directory
(``--cache``, default ``$CRYOSET_CACHE`` or ``~/.cache/cryoset``); ``--offline`` uses the
cache only; ``--max-download-gb`` caps the size of any one file (default 500 GB). Only
http(s) URLs are fetched, redirects may not leave the host or drop to http, and names from
a listing can never leave the cache. Archive base URLs can be pointed at a mirror with the
environment variables ``CRYOSET_EMPIAR_API_URL``, ``CRYOSET_EMPIAR_FILES_URL``,
``CRYOSET_EMDB_FILES_URL``, ``CRYOSET_PDB_FILES_URL`` and ``CRYOSET_PDB_FASTA_URL``.

Examples::

    cryoset fetch empiar 10028 --json                 # entry metadata
    cryoset fetch empiar 10028 --files '*.mrc' --count 5
    cryoset fetch emdb 5168 --half-maps --masks
    cryoset fetch pdb 3MFP
    cryoset fetch record EMPIAR-10028 EMD-5168 --out experiments.json
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cryoset.cli._defaults import MAX_DOWNLOAD_GB
from cryoset.cli._options import echo_json, json_option, option

if TYPE_CHECKING:
    from cryoset.archives.download import DownloadRequest, HttpClient

group = typer.Typer(help="Fetch metadata and files from EMPIAR, EMDB and the PDB.", no_args_is_help=True)

CacheOpt = typer.Option(None, "--cache", metavar="DIR", help="Cache directory (default $CRYOSET_CACHE or ~/.cache/cryoset).")
OfflineOpt = typer.Option(False, "--offline", help="Use only the cache; never touch the network.")
JsonOpt = json_option()
WorkersOpt = option("workers", 4, min=1, help="Parallel downloads.")
MaxDownloadOpt = typer.Option(MAX_DOWNLOAD_GB, "--max-download-gb", min=1e-9, metavar="GB",
                              help="Refuse any file larger than this many GB (10^9 bytes).")


def _http(cache: Path | None, offline: bool, max_download_gb: float | None = None) -> HttpClient:
    from cryoset.archives.download import HttpClient, Limits
    from cryoset.cli._paths import require_directory_location

    root = cache or Path(os.environ.get("CRYOSET_CACHE", Path.home() / ".cache" / "cryoset"))
    require_directory_location(root, "--cache" if cache is not None else "$CRYOSET_CACHE")
    limits = Limits() if max_download_gb is None else Limits(max_download_bytes=max(1, int(max_download_gb * 1e9)))
    return HttpClient(cache_dir=Path(root), offline=offline, limits=limits)


def _url(env: str, default: str) -> str:
    return os.environ.get(env, default)


def _empiar(http: HttpClient):  # type: ignore[no-untyped-def]
    from cryoset.archives import empiar

    return empiar.EmpiarClient(http, _url("CRYOSET_EMPIAR_API_URL", empiar.DEFAULT_API),
                               _url("CRYOSET_EMPIAR_FILES_URL", empiar.DEFAULT_FILES))


def _emdb(http: HttpClient):  # type: ignore[no-untyped-def]
    from cryoset.archives import emdb

    return emdb.EmdbClient(http, _url("CRYOSET_EMDB_FILES_URL", emdb.DEFAULT_FILES))


def _pdb(http: HttpClient):  # type: ignore[no-untyped-def]
    from cryoset.archives import pdb

    return pdb.PdbClient(http, _url("CRYOSET_PDB_FILES_URL", pdb.DEFAULT_FILES),
                         _url("CRYOSET_PDB_FASTA_URL", pdb.DEFAULT_FASTA))


def _download(http: HttpClient, reqs: list[DownloadRequest], workers: int) -> list[Path]:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), transient=True, console=Console(stderr=True)) as progress:
        tasks = {r.url: progress.add_task(Path(r.dest).name, total=r.size_bytes) for r in reqs}

        def update(url: str, done: int, total: int | None) -> None:
            progress.update(tasks[url], completed=done, total=total)

        paths = http.download_many(reqs, workers=workers, progress=update)
    from cryoset.provenance import make_provenance, write_provenance

    for req, path in zip(reqs, paths, strict=True):
        write_provenance(path, make_provenance("fetch", {"url": req.url, "checksum": req.checksum}))
    return paths


def _emit(obj: Any, as_json: bool) -> None:
    if as_json:
        echo_json(obj if isinstance(obj, dict) else {"items": obj})
    else:
        for key, value in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
            typer.echo(f"{key}: {value}")


def _asdict(obj: Any) -> dict[str, Any]:
    d = dataclasses.asdict(obj)
    d.pop("raw", None)
    return d


@group.command("empiar")
def empiar_cmd(
    empiar_id: str = typer.Argument(..., help="EMPIAR accession, e.g. 10028 or EMPIAR-10028."),
    files: str | None = typer.Option(None, "--files", help="Download files whose name matches this glob."),
    count: int | None = typer.Option(None, "--count", min=1, help="At most this many files."),
    directory: str = typer.Option("data", "--directory", help="Directory under the entry to list."),
    gain: bool = typer.Option(False, "--gain", help="Download the gain reference(s)."),
    cache: Path | None = CacheOpt, offline: bool = OfflineOpt, workers: int = WorkersOpt,
    as_json: bool = JsonOpt, max_download_gb: float = MaxDownloadOpt,
) -> None:
    """EMPIAR entry metadata, and optionally its files.

    Examples:

        cryoset fetch empiar 10028 --json

        cryoset fetch empiar 10028 --files '*.mrc' --count 5
    """
    http = _http(cache, offline, max_download_gb)
    client = _empiar(http)
    entry = client.entry(empiar_id)
    summary: dict[str, Any] = _asdict(entry)
    wanted: list[str] = []
    if files is not None:
        wanted = client.list_files(entry.empiar_id, directory, pattern=files, limit=count)
    if gain:
        wanted += client.gain_references(entry.empiar_id)
    if wanted:
        paths = _download(http, client.download_requests(entry.empiar_id, wanted), workers)
        summary["downloaded"] = [str(p) for p in paths]
    _emit(summary, as_json)


@group.command("emdb")
def emdb_cmd(
    emdb_id: str = typer.Argument(..., help="EMDB accession, e.g. 5168 or EMD-5168."),
    metadata_only: bool = typer.Option(False, "--metadata-only", help="Do not download the map."),
    half_maps: bool = typer.Option(False, "--half-maps", help="Also download the half maps."),
    masks: bool = typer.Option(False, "--masks", help="Also download the deposited masks."),
    cache: Path | None = CacheOpt, offline: bool = OfflineOpt, workers: int = WorkersOpt,
    as_json: bool = JsonOpt, max_download_gb: float = MaxDownloadOpt,
) -> None:
    """EMDB entry metadata and its map, half maps and masks (``.gz`` decompressed on arrival).

    Examples:

        cryoset fetch emdb 5168 --metadata-only --json

        cryoset fetch emdb 5168 --half-maps --masks
    """
    http = _http(cache, offline, max_download_gb)
    client = _emdb(http)
    entry = client.entry(emdb_id)
    summary = _asdict(entry)
    if not metadata_only:
        reqs = [client.map_request(entry.emdb_id)]
        if half_maps:
            reqs += client.half_map_requests(entry.emdb_id)
        if masks:
            reqs += client.mask_requests(entry.emdb_id)
        summary["downloaded"] = [str(p) for p in _download(http, reqs, workers)]
    _emit(summary, as_json)


@group.command("pdb")
def pdb_cmd(
    pdb_id: str = typer.Argument(..., help="PDB id, e.g. 3MFP."),
    cache: Path | None = CacheOpt, offline: bool = OfflineOpt, as_json: bool = JsonOpt,
    max_download_gb: float = MaxDownloadOpt,
) -> None:
    """PDB model (mmCIF) and entity sequences.

    Examples:

        cryoset fetch pdb 3MFP --json
    """
    http = _http(cache, offline, max_download_gb)
    client = _pdb(http)
    seqs = client.sequences(pdb_id)
    path = _download(http, [client.model_request(pdb_id)], 1)[0]
    _emit({"model": str(path), "entities": [dataclasses.asdict(s) for s in seqs]}, as_json)


@group.command("record")
def record_cmd(
    ids: list[str] = typer.Argument(..., help="EMPIAR and/or EMDB accessions of ONE experiment."),
    out: Path | None = option("out", None, help="Append the record to this JSON list file."),
    cache: Path | None = CacheOpt, offline: bool = OfflineOpt, as_json: bool = JsonOpt,
) -> None:
    """Build one experiment record (catalogue row) from archive metadata.

    Examples:

        cryoset fetch record EMPIAR-10028 EMD-5168 --out experiments.json
    """
    from cryoset.archives.records import experiment_record
    from cryoset.errors import InputError
    from cryoset.io.atomic import write_text_atomic

    existing: list[Any] = []
    if out is not None:  # the list to append to is read (and checked) before any download
        from cryoset.cli._paths import require_file_location

        require_file_location(out, "--out")
        if out.exists():
            try:
                existing = json.loads(out.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise InputError(out, f"not a JSON list of records ({' '.join(str(exc).split())})") from None
            if not isinstance(existing, list) or not all(isinstance(r, dict) for r in existing):
                raise InputError(out, "not a JSON list of records")
    http = _http(cache, offline)
    empiar_entry = None
    emdb_entries = []
    for ident in ids:
        if ident.upper().startswith("EMD"):
            emdb_entries.append(_emdb(http).entry(ident))
        else:
            empiar_entry = _empiar(http).entry(ident)
    if empiar_entry is not None:
        known = {f"EMD-{e.emdb_id}" for e in emdb_entries}
        for extra in empiar_entry.emdb_ids:
            if extra not in known:
                emdb_entries.append(_emdb(http).entry(extra))
    pdb = _pdb(http)
    sequences = {p: pdb.sequences(p) for p in sorted({p for e in emdb_entries for p in e.pdb_ids})}
    record = experiment_record(empiar_entry, emdb_entries, sequences)
    if out is not None:
        existing = [r for r in existing if r.get("experiment_id") != record["experiment_id"]]
        write_text_atomic(out, json.dumps([*existing, record], indent=2, default=str) + "\n")
        from cryoset.provenance import make_provenance, write_provenance

        write_provenance(out, make_provenance("fetch record", {"ids": ids, "offline": offline}))
    _emit(record, as_json)


def register(app: typer.Typer) -> None:
    """Add the ``fetch`` group."""
    app.add_typer(group, name="fetch")
