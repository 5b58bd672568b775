"""EMPIAR: entry metadata from the REST API and imageset files from the HTTPS mirror.

Endpoints (base URLs are parameters so tests and mirrors can substitute their own):

* ``{api}/entry/EMPIAR-{id}/`` — JSON ``{"EMPIAR-{id}": {title, release_date,
  experiment_type, cross_references: [{name: "EMD-…"}], imagesets: [...], citation: [...]}}``.
* ``{files}/{id}/data/…`` — the archive's HTTPS directory listing (an HTML index whose
  ``<a href>`` entries are files, or sub-directories ending in ``/``).

Imageset fields mapped (see docs/archives.md): ``name``, ``directory``, ``category``,
``header_format``, ``data_format``, ``num_images_or_tilt_series``, ``frames_per_image``,
``voxel_type``, ``pixel_width`` (Å), ``pixel_height``, ``image_width``, ``image_height``,
``details``. Deposition-format codes such as ``"('T2', '')"`` are translated to the
category/format names the deposition schema defines.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urljoin

from cryoset.archives.download import (
    DownloadError,
    DownloadRequest,
    HttpClient,
    listing_names,
    safe_relative_path,
)

DEFAULT_API = "https://www.ebi.ac.uk/empiar/api"
DEFAULT_FILES = "https://ftp.ebi.ac.uk/empiar/world_availability"

#: Deposition-schema codes for imageset categories.
CATEGORY_CODES = {
    "T1": "micrographs - single frame", "T2": "micrographs - multiframe",
    "T3": "micrographs - focal pairs - unprocessed",
    "T4": "micrographs - focal pairs - contrast inverted",
    "T5": "picked particles - single frame - unprocessed",
    "T6": "picked particles - multiframe - unprocessed",
    "T7": "picked particles - single frame - processed",
    "T8": "picked particles - multiframe - processed", "T9": "tilt series",
    "T10": "class averages", "T11": "stitched maps", "T12": "diffraction images",
    "T13": "reconstructed volumes", "T14": "subtomograms",
}
#: Deposition-schema codes for header/data formats.
FORMAT_CODES = {
    "T1": "MRC", "T2": "MRCS", "T3": "TIFF", "T4": "IMAGIC", "T5": "DM3", "T6": "DM4",
    "T7": "SPIDER", "T8": "XML", "T9": "EER", "T10": "PNG", "T11": "JPEG", "T12": "SMV",
    "T13": "EM", "T14": "TPX3",
}

_ID = re.compile(r"^(?:EMPIAR-)?(\d{5,})$", re.IGNORECASE)
#: A deposition code such as ``('T2', '')`` or ``('OT', 'other name')`` (parsed, never evaluated).
_CODE = re.compile(r"""^\(\s*'([A-Z0-9]+)'\s*,\s*'(.*)'\s*\)$""")


def normalise_empiar_id(value: str | int) -> str:
    """``10028``, ``"10028"`` or ``"EMPIAR-10028"`` → ``"10028"``; anything else is a ValueError."""
    m = _ID.match(str(value).strip())
    if not m:
        raise ValueError(f"empiar_id: not an EMPIAR accession: {value!r}")
    return m.group(1)


def _decode_code(value: Any, table: dict[str, str]) -> Any:
    """Translate ``"('T2', '')"`` / ``"('OT', 'name')"`` to a name; pass plain strings through."""
    m = _CODE.match(value) if isinstance(value, str) else None
    if m is not None:
        code, other = m.group(1), m.group(2)
        if code == "OT":
            return str(other)
        return table.get(str(code), str(code))
    return value


@dataclass(frozen=True)
class Imageset:
    """One EMPIAR imageset (units in the field names)."""

    name: str
    directory: str
    category: str
    header_format: str
    data_format: str
    num_images: int | None
    frames_per_image: int | None
    voxel_type: str
    pixel_width_a: float | None
    pixel_height_a: float | None
    image_width_px: int | None
    image_height_px: int | None
    details: str


@dataclass(frozen=True)
class EmpiarEntry:
    """EMPIAR entry metadata."""

    empiar_id: str
    title: str
    release_date: str
    experiment_type: str
    emdb_ids: tuple[str, ...]
    imagesets: tuple[Imageset, ...]
    citation_titles: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)


def _int_or_none(v: Any) -> int | None:
    try:
        return None if v in (None, "") else int(v)
    except (TypeError, ValueError):
        return None


def _float_or_none(v: Any) -> float | None:
    try:
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None


def parse_entry(empiar_id: str, payload: Any, *, source: str = "EMPIAR API") -> EmpiarEntry:
    """Map an EMPIAR API answer (or a deposition JSON) to :class:`EmpiarEntry`."""
    key = f"EMPIAR-{empiar_id}"
    body = payload.get(key, payload) if isinstance(payload, dict) else None
    if not isinstance(body, dict) or "title" not in body:
        raise DownloadError(source, f"no entry {key} with a title in the answer")
    sets = []
    for s in body.get("imagesets") or []:
        sets.append(Imageset(
            name=str(s.get("name", "")),
            directory=str(s.get("directory", "")),
            category=str(_decode_code(s.get("category", ""), CATEGORY_CODES)),
            header_format=str(_decode_code(s.get("header_format", ""), FORMAT_CODES)),
            data_format=str(_decode_code(s.get("data_format", ""), FORMAT_CODES)),
            num_images=_int_or_none(s.get("num_images_or_tilt_series")),
            frames_per_image=_int_or_none(s.get("frames_per_image")),
            voxel_type=str(s.get("voxel_type") or ""),
            pixel_width_a=_float_or_none(s.get("pixel_width")),
            pixel_height_a=_float_or_none(s.get("pixel_height")),
            image_width_px=_int_or_none(s.get("image_width")),
            image_height_px=_int_or_none(s.get("image_height")),
            details=str(s.get("details") or ""),
        ))
    refs = body.get("cross_references") or []
    emdb = tuple(str(r["name"]).upper() for r in refs if isinstance(r, dict)
                 and str(r.get("name", "")).upper().startswith("EMD-"))
    cites = body.get("citation") or []
    return EmpiarEntry(
        empiar_id=empiar_id,
        title=str(body["title"]),
        release_date=str(body.get("release_date") or ""),
        experiment_type=str(body.get("experiment_type") or ""),
        emdb_ids=emdb,
        imagesets=tuple(sets),
        citation_titles=tuple(str(c.get("title", "")) for c in cites if isinstance(c, dict)),
        raw=body,
    )


@dataclass
class EmpiarClient:
    """EMPIAR metadata and file access through an :class:`HttpClient`."""

    http: HttpClient
    api_url: str = DEFAULT_API
    files_url: str = DEFAULT_FILES

    def entry(self, empiar_id: str | int) -> EmpiarEntry:
        eid = normalise_empiar_id(empiar_id)
        url = f"{self.api_url.rstrip('/')}/entry/EMPIAR-{eid}/"
        payload = self.http.get_json_cached(url, f"empiar/EMPIAR-{eid}.json")
        return parse_entry(eid, payload, source=url)

    def list_files(self, empiar_id: str | int, directory: str = "data", *, pattern: str | None = None,
                   limit: int | None = None, max_depth: int = 8) -> list[str]:
        """Relative paths (under the entry) of files in ``directory``, recursively, sorted.

        ``pattern`` is a glob matched against the file name; ``limit`` keeps the first N.
        """
        eid = normalise_empiar_id(empiar_id)
        root = f"{self.files_url.rstrip('/')}/{eid}/"
        wanted = directory.strip("/")
        start = safe_relative_path(wanted, source="--directory") if wanted else PurePosixPath()
        found: list[PurePosixPath] = []
        stack = [(start, 0)]
        while stack:
            rel, depth = stack.pop()
            url = urljoin(root, quote(rel.as_posix()) + "/" if rel.parts else "")
            for name, is_dir in listing_names(self.http.get_bytes(url), source=url):
                if is_dir:
                    if depth < max_depth:
                        stack.append((rel / name, depth + 1))
                elif pattern is None or fnmatch.fnmatch(name.name, pattern):
                    found.append(rel / name)
        out = sorted(p.as_posix() for p in found)
        return out[:limit] if limit is not None else out

    def download_requests(self, empiar_id: str | int, files: list[str],
                          dest_root: str = "empiar") -> list[DownloadRequest]:
        eid = normalise_empiar_id(empiar_id)
        base = f"{self.files_url.rstrip('/')}/{eid}/"
        out = []
        for f in files:
            rel = safe_relative_path(f, source=f"EMPIAR-{eid} file list")
            out.append(DownloadRequest(url=urljoin(base, quote(rel.as_posix())), dest=Path(dest_root, eid, *rel.parts)))
        return out

    def gain_references(self, empiar_id: str | int) -> list[str]:
        """Files whose name looks like a gain reference (``*gain*``), anywhere under data/."""
        return [f for f in self.list_files(empiar_id, "data")
                if "gain" in PurePosixPath(f).name.lower()]
