"""Registry of published cryo-EM datasets and their download through the hosts' APIs.

Four entries (``cryoset datasets list``):

* ``cryovirusdb`` — CryoVirusDB (Dhakal et al.). Per the authors' README: the virus-particle
  labels (ground truth) are Zenodo record 10397742; the micrographs come from EMPIAR (their
  download script) or, as whole entries (``<EMPIAR>.tar.gz``: micrographs, particle stacks,
  ground truth), from the authors' own server ``https://calla.rnet.missouri.edu/CryoVirusDB/``
  (and ``…/CryoVirusDB_Lite/``: 8-bit JPG micrographs, 76 GB). That server is a plain HTTP
  directory index (no API): ``--record https://…/`` lists it and downloads with size checks.
* ``cryoppp`` — CryoPPP (same layout, 34 EMPIAR sets). The papers we have give **no**
  record id: pass ``--record`` (Zenodo record id or a Dataverse DOI) and, if needed,
  ``--base-url``.
* ``cryo2structdata`` — Cryo2StructData on Harvard Dataverse: full (FCDG0W), small
  subsample (CGUENL), test set (2GSSC9), metadata (JMN60H), trained models and splits
  (SXNYRE full, DTV4JF small), all ``doi:10.7910/DVN/…``.
* ``cryopanda`` — cryoPANDA, per-experiment ``<EXPERIMENT>_particles.h5``; deposited at
  Science Data Bank, doi:10.57760/sciencedb.27164 (the authors' README: ``metadata.zip`` with
  the annotation tables and pretrained DINOv2 weights, and the particle files zipped in
  sub-folders). Science Data Bank's documented open API (``/open-api/v2``: search, harvest,
  metrics, ``json?doi=`` giving a schema.org Dataset description, COUNTER-SUSHI reports) has no
  call listing a dataset's files with sizes and checksums, so it has no download client here:
  fetch the files from the DOI landing page, or pass ``--record`` for a Zenodo / Dataverse /
  directory-index copy (:data:`NO_CLIENT`; docs/archives.md cites the sources).

Host APIs used (documented, public, no token):

* Zenodo REST: ``GET {base}/api/records/{id}`` → JSON with ``files: [{key, size,
  checksum: "md5:…", links: {self: "…/api/records/{id}/files/{key}/content"}}]``.
* Dataverse native API: ``GET {base}/api/datasets/:persistentId/?persistentId=doi:…`` →
  ``data.latestVersion.files[]`` with ``label``, ``directoryLabel`` and ``dataFile: {id,
  filename, filesize, md5 | checksum: {type, value}}``; a file is downloaded from
  ``{base}/api/access/datafile/{id}`` (``?format=original`` for ingested tabular files,
  whose listing then carries ``originalFileName``/``originalFileSize``; the checksum is
  that of the original).

Every file goes through :class:`cryoset.archives.download.HttpClient` (resumable, size and
checksum verified, cached, offline mode); archives are then extracted safely
(:func:`cryoset.datasets.extract.safe_extract`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from cryoset.archives.download import (
    DownloadRequest,
    HttpClient,
    contained_path,
    safe_relative_path,
)
from cryoset.datasets.extract import archive_stem, archive_suffix, safe_extract
from cryoset.errors import InputError
from cryoset.io.atomic import write_text_atomic
from cryoset.provenance import make_provenance, write_provenance

Host = Literal["zenodo", "dataverse", "sciencedb", "listing"]
Layout = Literal["cryoppp", "cryo2struct", "cryopanda"]

ZENODO_URL = "https://zenodo.org"
DATAVERSE_URL = "https://dataverse.harvard.edu"
SCIENCEDB_URL = "https://www.scidb.cn"
CRYOVIRUSDB_SERVER = "https://calla.rnet.missouri.edu/CryoVirusDB/"
DEFAULT_BASE_URLS: dict[str, str] = {"zenodo": ZENODO_URL, "dataverse": DATAVERSE_URL, "sciencedb": SCIENCEDB_URL}
#: Hosts without a download client here, and why.
NO_CLIENT: dict[str, str] = {
    "sciencedb": "Science Data Bank's documented open API (https://www.scidb.cn/open-api/v2, OpenAPI document "
                 "/open-api/v2/api-docs) has search, harvest, metrics, json (a dataset's schema.org description "
                 "by DOI) and COUNTER-SUSHI reports, no call that lists a dataset's files with sizes and checksums; "
                 "download the files from the DOI's landing page and run `cryoset datasets import`, or pass "
                 "--record for a Zenodo / Dataverse copy or a directory index (https://…/)",
}
#: Hosts a Dataverse file download may be redirected to (https only): installations with
#: S3 storage answer ``/api/access/datafile/{id}`` with a redirect to a signed S3 URL.
DATAVERSE_STORAGE_HOSTS: tuple[str, ...] = ("*.s3.amazonaws.com", "s3.amazonaws.com")
MANIFEST_NAME = "manifest.json"
_MARKER = ".cryoset-extracted.json"


@dataclass(frozen=True)
class Source:
    """One deposited record of a dataset.

    Parameters
    ----------
    subset
        Name used by ``--subset`` (for datasets whose subsets are records).
    host
        ``"zenodo"``, ``"dataverse"``, ``"sciencedb"`` (no client: :data:`NO_CLIENT`) or
        ``"listing"`` (an HTTP directory index); None when unknown.
    identifier
        Zenodo record id, DOI (``doi:…``) or the index URL; None when unknown.
    description
        What the record holds.
    default
        Listed by a download that names no record (False: only with ``--record``).
    """

    subset: str
    host: Host | None
    identifier: str | None
    description: str
    default: bool = True


@dataclass(frozen=True)
class DatasetSpec:
    """A published dataset: where it lives and how it is laid out."""

    name: str
    title: str
    layout: Layout
    sources: tuple[Source, ...]
    select_by: Literal["source", "empiar"]
    reference: str
    not_known: str = ""
    file_pattern: str = ""
    notes: str = ""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a record, as the host's API lists it."""

    key: str
    url: str
    size_bytes: int | None
    checksum: str | None
    source: str
    redirect_hosts: tuple[str, ...] = ()


@dataclass
class DownloadResult:
    """What :func:`download_dataset` fetched and where it put it."""

    out_dir: Path
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        """The extracted directories / placed files, in listing order."""
        return [Path(f["path"]) for f in self.files]


def registry() -> dict[str, DatasetSpec]:
    """The known datasets by name (a new dict on each call)."""
    doi = "doi:10.7910/DVN/"
    specs = [
        DatasetSpec(
            name="cryovirusdb",
            title="CryoVirusDB: annotated cryo-EM micrographs of 9 virus datasets",
            layout="cryoppp",
            sources=(
                Source("all", "zenodo", "10397742", "the virus-particle labels (ground-truth coordinates) per "
                       "EMPIAR id; per the authors' README the micrographs are not in it"),
                Source("server", "listing", CRYOVIRUSDB_SERVER, "the authors' server: whole entries "
                       "<EMPIAR>.tar.gz (micrographs, particle stacks, ground truth; 634 GB in all); no API, a "
                       "directory index", default=False),
                Source("lite", "listing", CRYOVIRUSDB_SERVER.rstrip("/") + "_Lite/", "CryoVirusDB_Lite on the "
                       "authors' server: 8-bit JPG micrographs + coordinates, 76 GB", default=False),
            ),
            select_by="empiar",
            reference="Dhakal, Gyawali, Wang & Cheng, CryoVirusDB; Zenodo https://zenodo.org/records/10397742; "
                      "README https://github.com/BioinfoMachineLearning/CryoVirusDB",
            not_known="which files the Zenodo record holds beyond the labels (read from its listing), and the "
                      "checksums of the authors' server files (it publishes none: sizes are checked).",
            notes="--subset EMPIAR id selects the archive(s) whose name holds that id; the ids are read "
                  "from the record listing. The micrographs: EMPIAR (motion-corrected) or the authors' server "
                  "(--record " + CRYOVIRUSDB_SERVER + ").",
        ),
        DatasetSpec(
            name="cryoppp",
            title="CryoPPP: expert-picked particles for 34 EMPIAR datasets",
            layout="cryoppp",
            sources=(Source("all", None, None, "one archive per EMPIAR id (34 sets), CryoVirusDB layout"),),
            select_by="empiar",
            reference="Dhakal et al., CryoPPP (Sci. Data 2023)",
            not_known="the host record id: the papers we have give none. Pass --record (a Zenodo record id "
                      "or a Dataverse DOI) and --base-url for another installation. The 34 EMPIAR ids are "
                      "read from the listing of the record you give.",
            notes="--subset EMPIAR id selects the archive(s) whose name holds that id.",
        ),
        DatasetSpec(
            name="cryo2structdata",
            title="Cryo2StructData: 7,600 labelled cryo-EM maps for AI model building",
            layout="cryo2struct",
            sources=(
                Source("full", "dataverse", doi + "FCDG0W", "Cryo2StructData: Full Dataset"),
                Source("small", "dataverse", doi + "CGUENL", "Small Subsample Dataset"),
                Source("test", "dataverse", doi + "2GSSC9", "Test Dataset (208 maps)"),
                Source("metadata", "dataverse", doi + "JMN60H", "Metadata (EMD id, PDB id, resolution, ...)"),
                Source("models-full", "dataverse", doi + "SXNYRE", "Trained Model and Data Splits (Full)"),
                Source("models-small", "dataverse", doi + "DTV4JF", "Trained Model and Data Splits (Small Subset)"),
            ),
            select_by="source",
            reference="Giri, Wang & Cheng, Cryo2StructData (Sci. Data 2024); https://dataverse.harvard.edu/"
                      "dataverse/Cryo2StructData",
            not_known="the file names inside each record (read from the listing; use --match to pick files) "
                      "and the exact naming of the sub-grid .npz files (the reader takes every *.npz with "
                      "protein_grid/atom_grid/amino_grid arrays).",
        ),
        DatasetSpec(
            name="cryopanda",
            title="cryoPANDA: 37.6 M annotated particles from 252 EMPIAR experiments",
            layout="cryopanda",
            sources=(Source("all", "sciencedb", "doi:10.57760/sciencedb.27164",
                            "Science Data Bank: metadata.zip (annotation tables, probe sets, pretrained DINOv2 "
                            "weights) and the <EXPERIMENT>_particles.h5 files, zipped in sub-folders"),),
            select_by="empiar",
            reference="cryoPANDA (bioRxiv preprint); https://github.com/azamanos/cryoPANDA; data "
                      "https://doi.org/10.57760/sciencedb.27164",
            not_known="the file listing of the Science Data Bank record: its documented open API has none we "
                      "could verify, so there is no download client for it. Pass --record (a Zenodo record id, "
                      "doi:… for a Dataverse dataset, or https://… for a directory index) for another copy.",
            notes="--subset EMPIAR id selects <EMPIAR>_particles.h5.",
        ),
    ]
    return {s.name: s for s in specs}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry ``name`` (InputError listing the known names otherwise)."""
    specs = registry()
    key = name.lower()
    if key not in specs:
        raise InputError("dataset", f"unknown dataset {name!r} (known: {', '.join(specs)})")
    return specs[key]


def parse_record(record: str) -> tuple[Host, str]:
    """Host and identifier of a ``--record`` value: digits → Zenodo, ``doi:…``/``10.…`` → Dataverse."""
    text = record.strip()
    if text.lower().startswith(("https://", "http://")):
        return "listing", text if text.endswith("/") else text + "/"
    if text.isdigit():
        return "zenodo", text
    if text.lower().startswith("doi:"):
        return "dataverse", "doi:" + text[4:]
    if text.startswith("10.") and "/" in text:
        return "dataverse", "doi:" + text
    raise InputError("--record", f"{record!r} is neither a Zenodo record id (digits), a DOI (doi:10.…) nor a "
                     "directory index URL (https://…/)")


def empiar_number(subset: str) -> str:
    """``"EMPIAR-10028"`` / ``"10028"`` → ``"10028"`` (InputError otherwise)."""
    m = re.fullmatch(r"(?:EMPIAR[-_]?)?(\d{5})", subset.strip(), flags=re.IGNORECASE)
    if m is None:
        raise InputError("--subset", f"{subset!r} is not an EMPIAR id (e.g. 10028 or EMPIAR-10028)")
    return m.group(1)


def resolve_sources(spec: DatasetSpec, *, subsets: Sequence[str] = (), record: str | None = None,
                    base_url: str | None = None) -> list[tuple[Source, str]]:
    """The records to list, with the base URL of each host."""
    if record is not None:
        host, ident = parse_record(record)
        sources = [Source("record", host, ident, f"record given with --record ({record})")]
    elif spec.select_by == "source" and subsets:
        by_name = {s.subset: s for s in spec.sources}
        unknown = [s for s in subsets if s not in by_name]
        if unknown:
            raise InputError("--subset", f"{', '.join(unknown)}: not a subset of {spec.name} "
                             f"(subsets: {', '.join(by_name)})")
        sources = [by_name[s] for s in subsets]
    else:
        sources = [s for s in spec.sources if s.default]
    out: list[tuple[Source, str]] = []
    for src in sources:
        if src.host is None or src.identifier is None:
            raise InputError(spec.name, f"no record is known: {spec.not_known}")
        if src.host in NO_CLIENT:
            raise InputError(spec.name, f"its files are at {src.identifier} ({src.description}); "
                             f"{NO_CLIENT[src.host]}")
        if src.host == "listing":  # the index URL is the record; --base-url does not apply
            out.append((src, src.identifier))
            continue
        url = (base_url or DEFAULT_BASE_URLS[src.host]).rstrip("/")
        out.append((src, url))
    return out


def _md5_from(data_file: dict[str, Any]) -> str | None:
    checksum = data_file.get("checksum")
    if isinstance(checksum, dict) and checksum.get("type") and checksum.get("value"):
        algo = str(checksum["type"]).lower().replace("-", "")
        if algo in ("md5", "sha256", "sha1"):
            return f"{algo}:{checksum['value']}"
    if data_file.get("md5"):
        return f"md5:{data_file['md5']}"
    return None


def zenodo_files(record: Any, base_url: str, source: str, where: str) -> list[RemoteFile]:
    """Files of a Zenodo ``/api/records/{id}`` answer."""
    if not isinstance(record, dict) or not isinstance(record.get("files"), list):
        raise InputError(where, "is not a Zenodo record (no 'files' list in the answer)")
    rec_id = record.get("id", record.get("recid", ""))
    out = []
    for entry in record["files"]:
        key = entry.get("key") or entry.get("filename")
        if not key:
            raise InputError(where, "a file entry has no 'key'")
        links = entry.get("links") or {}
        url = links.get("self") or links.get("content") or \
            f"{base_url}/api/records/{rec_id}/files/{urllib.parse.quote(key)}/content"
        checksum = entry.get("checksum")
        size = entry.get("size", entry.get("filesize"))
        out.append(RemoteFile(str(key), str(url), None if size is None else int(size),
                              str(checksum) if checksum else None, source))
    return out


def dataverse_files(answer: Any, base_url: str, source: str, where: str) -> list[RemoteFile]:
    """Files of a Dataverse ``/api/datasets/:persistentId/`` answer (latest version)."""
    data = answer.get("data") if isinstance(answer, dict) else None
    version = data.get("latestVersion") if isinstance(data, dict) else None
    if not isinstance(version, dict) or not isinstance(version.get("files"), list):
        message = answer.get("message") if isinstance(answer, dict) else None
        raise InputError(where, f"is not a Dataverse dataset answer ({message or 'no data.latestVersion.files'})")
    out = []
    for entry in version["files"]:
        df = entry.get("dataFile") or {}
        if "id" not in df:
            raise InputError(where, f"file {entry.get('label')!r} has no dataFile.id")
        original = df.get("originalFileName")
        name = str(original or entry.get("label") or df.get("filename") or df["id"])
        key = str(PurePosixPath(entry["directoryLabel"]) / name) if entry.get("directoryLabel") else str(name)
        url = f"{base_url}/api/access/datafile/{int(df['id'])}" + ("?format=original" if original else "")
        size = df.get("originalFileSize") if original else df.get("filesize")
        out.append(RemoteFile(key, url, None if size is None else int(size), _md5_from(df), source,
                              DATAVERSE_STORAGE_HOSTS))
    return out


def listing_files(index: bytes, url: str, source: str) -> list[RemoteFile]:
    """Files (not sub-directories) of an HTTP directory index at ``url``: no size or checksum is
    listed, so a download is checked against the server's ``Content-Length`` only."""
    from cryoset.archives.download import listing_names

    return [RemoteFile(str(name), urllib.parse.urljoin(url, urllib.parse.quote(str(name))), None, None, source)
            for name, is_dir in listing_names(index, source=url) if not is_dir]


def list_remote_files(spec: DatasetSpec, client: HttpClient, *, subsets: Sequence[str] = (),
                      record: str | None = None, base_url: str | None = None,
                      match: str | None = None) -> list[RemoteFile]:
    """List (and filter) the files of ``spec``'s records through the host APIs.

    ``subsets`` are record names (``select_by == "source"``) or EMPIAR ids (matched as a
    whole number in the file name); ``match`` is a glob on the file key (``fnmatch``).
    """
    import fnmatch

    files: list[RemoteFile] = []
    for src, url in resolve_sources(spec, subsets=subsets, record=record, base_url=base_url):
        ident = str(src.identifier)  # never None after resolve_sources
        if src.host == "listing":
            cache = f"{spec.name}/listing-{re.sub(r'[^A-Za-z0-9]+', '_', ident)}.html"
            index = client.get_bytes(ident, cache_name=cache)  # cached: --offline works after one run
            files += listing_files(index, ident, src.subset)
        elif src.host == "zenodo":
            api = f"{url}/api/records/{ident}"
            cache = f"{spec.name}/zenodo-{ident}.json"
            answer = client.get_json_cached(api, cache) if client.offline else client.get_json(api, cache_name=cache)
            files += zenodo_files(answer, url, src.subset, api)
        else:
            api = f"{url}/api/datasets/:persistentId/?persistentId={urllib.parse.quote(ident, safe=':/')}"
            cache = f"{spec.name}/dataverse-{re.sub(r'[^A-Za-z0-9]+', '_', ident)}.json"
            answer = client.get_json_cached(api, cache) if client.offline else client.get_json(api, cache_name=cache)
            files += dataverse_files(answer, url, src.subset, api)
    if spec.select_by == "empiar" and subsets:
        chosen: list[RemoteFile] = []
        for subset in subsets:
            number = empiar_number(subset)
            hits = [f for f in files if re.search(rf"(?<!\d){number}(?!\d)", PurePosixPath(f.key).name)]
            if not hits:
                raise InputError("--subset", f"no file for EMPIAR-{number} in the {spec.name} record "
                                 f"(files: {', '.join(f.key for f in files[:12])})")
            chosen += [h for h in hits if h not in chosen]
        files = chosen
    if match:
        files = [f for f in files if fnmatch.fnmatch(f.key, match) or fnmatch.fnmatch(PurePosixPath(f.key).name, match)]
        if not files:
            raise InputError("--match", f"no file of {spec.name} matches {match!r}")
    return files


def _listed(rf: RemoteFile) -> dict[str, Any]:
    """The manifest entry of ``rf`` (what the host listed)."""
    entry = asdict(rf)
    entry.pop("redirect_hosts")
    return entry


def _place(cached: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(cached, tmp)
    except OSError:
        shutil.copyfile(cached, tmp)
    os.replace(tmp, dest)


def download_dataset(spec: DatasetSpec, out_dir: str | os.PathLike[str], client: HttpClient, *,
                     subsets: Sequence[str] = (), record: str | None = None, base_url: str | None = None,
                     match: str | None = None,
                     progress: Callable[[str, int, int | None], None] | None = None) -> DownloadResult:
    """Download (resumable, verified, cached) and extract the selected files of ``spec``.

    Archives are extracted into ``out_dir/<archive name without suffix>`` (keeping the
    record's folders); other files are placed at ``out_dir/<key>``. ``out_dir`` gets a
    ``manifest.json`` (files, URLs, checksums, destinations) and ``provenance.json``.
    Re-running skips files whose cached copy and extraction are already complete.
    """
    out = Path(out_dir)
    files = list_remote_files(spec, client, subsets=subsets, record=record, base_url=base_url, match=match)
    result = DownloadResult(out)
    where = f"{spec.name} record listing"
    plan: list[tuple[RemoteFile, DownloadRequest, str | None, Path]] = []
    for rf in files:  # every name is checked before anything is downloaded
        key = safe_relative_path(rf.key, source=where)
        req = DownloadRequest(url=rf.url, dest=Path("datasets", spec.name, rf.source, *key.parts),
                              size_bytes=rf.size_bytes, checksum=rf.checksum, redirect_hosts=rf.redirect_hosts)
        client.resolve(req.dest)
        suffix = archive_suffix(key.name)
        stem = archive_stem(key.name)
        if suffix is not None and stem in ("", ".", ".."):
            raise InputError(where, f"archive {rf.key!r} leaves no directory name to extract into; refusing it")
        # the extraction directory / placed file must lie strictly inside out_dir
        plan.append((rf, req, suffix, contained_path(out, key.with_name(stem) if suffix is not None else key,
                                                     source=where)))
    for rf, req, suffix, dest in plan:
        cached = client.download(req, progress)
        if suffix is not None:
            marker = dest / _MARKER
            stamp = {"key": rf.key, "size_bytes": cached.stat().st_size, "checksum": rf.checksum}
            done = marker.exists() and json.loads(marker.read_text()) == stamp
            if not done:
                members = safe_extract(cached, dest, limits=client.limits)
                write_text_atomic(marker, json.dumps(stamp) + "\n")
            else:
                members = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and p != marker)
            result.files.append({**_listed(rf), "path": str(dest), "extracted": True, "n_members": len(members)})
        else:
            _place(cached, dest)
            result.files.append({**_listed(rf), "path": str(dest), "extracted": False})
    params: dict[str, Any] = {"dataset": spec.name, "subsets": list(subsets), "record": record, "base_url": base_url,
              "match": match}
    write_text_atomic(out / MANIFEST_NAME, json.dumps({"dataset": spec.name, "files": result.files},
                                                      indent=2) + "\n")
    params["files"] = [{"key": f["key"], "url": f["url"], "checksum": f["checksum"]} for f in result.files]
    # the host checksums identify the inputs; re-hashing multi-GB files here would double the cost
    write_provenance(out, make_provenance("datasets download", params))
    return result
