"""EMDB: entry metadata from the header XML (schema v3) and map / half-map / mask downloads.

Endpoints (base URL is a parameter):

* ``{files}/EMD-{id}/header/emd-{id}.xml`` — the entry header (EMDB XML schema v3).
* ``{files}/EMD-{id}/map/emd_{id}.map.gz`` — the primary map (decompressed on arrival).
* ``{files}/EMD-{id}/other/emd_{id}_half_map_{1,2}.map.gz`` — half maps, when deposited.
* ``{files}/EMD-{id}/masks/…`` — masks, listed from the directory index.

XML fields mapped (first match, anywhere under the named parent; see docs/archives.md):
``admin/title``, ``crossreferences/pdb_list/pdb_reference/pdb_id``,
``structure_determination/method``, ``final_reconstruction/resolution`` (Å),
``software/name``, ``sample/name``, ``molecular_weight/theoretical|experimental`` (MDa),
``final_reconstruction/applied_symmetry/point_group`` (or helical parameters),
``acceleration_voltage`` (kV), ``nominal_cs`` (mm), ``average_electron_dose_per_image``
(e/Å²), ``map/pixel_spacing/x`` (Å), ``map/dimensions/col``, ``citation … title``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryoset.archives.download import DownloadError, DownloadRequest, HttpClient, listing_names

DEFAULT_FILES = "https://ftp.ebi.ac.uk/pub/databases/emdb/structures"

_ID = re.compile(r"^(?:EMD-|EMD_)?(\d{4,})$", re.IGNORECASE)


def normalise_emdb_id(value: str | int) -> str:
    """``5168``, ``"EMD-5168"`` or ``"emd_5168"`` → ``"5168"``; anything else is a ValueError."""
    m = _ID.match(str(value).strip())
    if not m:
        raise ValueError(f"emdb_id: not an EMDB accession: {value!r}")
    return m.group(1)


@dataclass(frozen=True)
class EmdbEntry:
    """EMDB entry metadata (units in the field names)."""

    emdb_id: str
    title: str
    method: str
    resolution_a: float | None
    pdb_ids: tuple[str, ...]
    software: tuple[str, ...]
    sample_name: str
    molecular_weight_mda: float | None
    symmetry: str
    voltage_kv: float | None
    cs_mm: float | None
    dose_e_per_a2: float | None
    pixel_size_a: float | None
    map_size_px: int | None
    citation_title: str


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _first(root: ET.Element, *path: str) -> ET.Element | None:
    """First element whose tag chain ends with ``path`` (each step: a descendant)."""
    current = [root]
    for step in path:
        nxt = [e for c in current for e in c.iter() if _local(e.tag) == step and e is not c]
        if not nxt:
            return None
        current = nxt
    return current[0]


def _text(root: ET.Element, *path: str) -> str:
    e = _first(root, *path)
    return (e.text or "").strip() if e is not None else ""


def _float(root: ET.Element, *path: str) -> float | None:
    t = _text(root, *path)
    try:
        return float(t) if t else None
    except ValueError:
        return None


def parse_header_xml(emdb_id: str, xml_bytes: bytes, *, source: str = "EMDB header") -> EmdbEntry:
    """Map an EMDB v3 header XML document to :class:`EmdbEntry`."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as exc:
        raise DownloadError(source, f"the header is not valid XML ({exc})") from None
    if _local(root.tag) != "emd":
        raise DownloadError(source, f"the header's root element is <{_local(root.tag)}>, expected <emd>")
    pdb_ids = tuple(sorted({(e.text or "").strip().upper() for e in root.iter()
                            if _local(e.tag) == "pdb_id" and (e.text or "").strip()}))
    software = tuple(dict.fromkeys((e.text or "").strip() for s in root.iter()
                                   if _local(s.tag) == "software" for e in s
                                   if _local(e.tag) == "name" and (e.text or "").strip()))
    mw = _float(root, "molecular_weight", "theoretical")
    if mw is None:
        mw = _float(root, "molecular_weight", "experimental")
    symmetry = _text(root, "applied_symmetry", "point_group")
    if not symmetry and _first(root, "helical_parameters") is not None:
        rise = _text(root, "helical_parameters", "delta_z")
        twist = _text(root, "helical_parameters", "delta_phi")
        symmetry = f"helical rise {rise} Å twist {twist}°"
    size = _text(root, "map", "dimensions", "col")
    return EmdbEntry(
        emdb_id=emdb_id,
        title=_text(root, "admin", "title"),
        method=_text(root, "structure_determination", "method"),
        resolution_a=_float(root, "final_reconstruction", "resolution"),
        pdb_ids=pdb_ids,
        software=software,
        sample_name=_text(root, "sample", "name"),
        molecular_weight_mda=mw,
        symmetry=symmetry,
        voltage_kv=_float(root, "acceleration_voltage"),
        cs_mm=_float(root, "nominal_cs"),
        dose_e_per_a2=_float(root, "average_electron_dose_per_image"),
        pixel_size_a=_float(root, "map", "pixel_spacing", "x"),
        map_size_px=int(size) if size.isdigit() else None,
        citation_title=_text(root, "primary_citation", "title"),
    )


@dataclass
class EmdbClient:
    """EMDB metadata and map access through an :class:`HttpClient`."""

    http: HttpClient
    files_url: str = DEFAULT_FILES

    def _base(self, eid: str) -> str:
        return f"{self.files_url.rstrip('/')}/EMD-{eid}"

    def entry(self, emdb_id: str | int) -> EmdbEntry:
        eid = normalise_emdb_id(emdb_id)
        url = f"{self._base(eid)}/header/emd-{eid}.xml"
        data = self.http.get_bytes(url, cache_name=f"emdb/emd-{eid}.xml")
        return parse_header_xml(eid, data, source=url)

    def map_request(self, emdb_id: str | int, dest_root: str = "emdb") -> DownloadRequest:
        eid = normalise_emdb_id(emdb_id)
        return DownloadRequest(url=f"{self._base(eid)}/map/emd_{eid}.map.gz",
                               dest=Path(dest_root, f"EMD-{eid}", f"emd_{eid}.map"), decompress_gzip=True)

    def mask_requests(self, emdb_id: str | int, dest_root: str = "emdb") -> list[DownloadRequest]:
        """Every file in the entry's ``masks/`` directory (listed from its HTML index; none → []).

        Link targets are decoded and checked by :func:`cryoset.archives.download.listing_names`:
        one that would leave ``masks/`` (``%2e%2e/…``, an absolute path, a backslash) makes
        the whole listing refused.
        """
        eid = normalise_emdb_id(emdb_id)
        base = f"{self._base(eid)}/masks/"
        try:
            index = self.http.get_bytes(base)
        except DownloadError as exc:
            if "HTTP 404" in str(exc):
                return []
            raise
        names = sorted({str(p) for p, is_dir in listing_names(index, source=base) if not is_dir})
        return [DownloadRequest(url=base + quote(name), dest=Path(dest_root, f"EMD-{eid}", "masks",
                                                                   name.removesuffix(".gz")),
                                decompress_gzip=name.endswith(".gz")) for name in names]

    def half_map_requests(self, emdb_id: str | int, dest_root: str = "emdb") -> list[DownloadRequest]:
        eid = normalise_emdb_id(emdb_id)
        return [DownloadRequest(url=f"{self._base(eid)}/other/emd_{eid}_half_map_{k}.map.gz",
                                dest=Path(dest_root, f"EMD-{eid}", f"emd_{eid}_half_map_{k}.map"),
                                decompress_gzip=True) for k in (1, 2)]
