"""PDB (RCSB): mmCIF model downloads and entity sequences as FASTA.

Endpoints (base URLs are parameters):

* ``{files}/{ID}.cif.gz`` — the model in mmCIF (kept compressed; gemmi reads ``.gz``).
* ``{fasta}/{ID}`` — FASTA of the entry's polymer entities, headers like
  ``>3MFP_1|Chain A|Actin, alpha skeletal muscle|Oryctolagus cuniculus (9986)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryoset.archives.download import DownloadError, DownloadRequest, HttpClient

DEFAULT_FILES = "https://files.rcsb.org/download"
DEFAULT_FASTA = "https://www.rcsb.org/fasta/entry"

_ID = re.compile(r"^[0-9][A-Za-z0-9]{3}$")


def normalise_pdb_id(value: str) -> str:
    """``"3mfp"`` → ``"3MFP"``; anything that is not a 4-character PDB id is a ValueError."""
    v = str(value).strip()
    if not _ID.match(v):
        raise ValueError(f"pdb_id: not a PDB id: {value!r}")
    return v.upper()


@dataclass(frozen=True)
class EntitySequence:
    """One polymer entity of a PDB entry."""

    pdb_id: str
    entity_id: str
    chains: tuple[str, ...]
    description: str
    organism: str
    sequence: str


def parse_fasta(pdb_id: str, text: str, *, source: str = "RCSB FASTA") -> list[EntitySequence]:
    """Parse RCSB entry FASTA into entity sequences."""
    out: list[EntitySequence] = []
    header: str | None = None
    seq: list[str] = []

    def flush() -> None:
        if header is None:
            return
        fields = header.split("|")
        entity = fields[0].split("_", 1)[1] if "_" in fields[0] else fields[0]
        chains_field = fields[1] if len(fields) > 1 else ""
        chains_field = re.sub(r"^Chains?\s+", "", chains_field)
        chains = tuple(c.strip().split("[")[0].strip() for c in chains_field.split(",") if c.strip())
        out.append(EntitySequence(pdb_id, entity, chains, fields[2] if len(fields) > 2 else "",
                                  fields[3] if len(fields) > 3 else "", "".join(seq)))

    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            flush()
            header, seq = line[1:], []
        elif header is None:
            raise DownloadError(source, "FASTA text does not start with a '>' header")
        else:
            seq.append(line)
    flush()
    if not out:
        raise DownloadError(source, "no sequences in the FASTA answer")
    return out


@dataclass
class PdbClient:
    """RCSB model and sequence access through an :class:`HttpClient`."""

    http: HttpClient
    files_url: str = DEFAULT_FILES
    fasta_url: str = DEFAULT_FASTA

    def model_request(self, pdb_id: str, dest_root: str = "pdb") -> DownloadRequest:
        pid = normalise_pdb_id(pdb_id)
        return DownloadRequest(url=f"{self.files_url.rstrip('/')}/{pid}.cif.gz",
                               dest=Path(dest_root, f"{pid}.cif.gz"))

    def sequences(self, pdb_id: str) -> list[EntitySequence]:
        pid = normalise_pdb_id(pdb_id)
        url = f"{self.fasta_url.rstrip('/')}/{pid}"
        text = self.http.get_bytes(url, cache_name=f"pdb/{pid}.fasta").decode("utf-8", "replace")
        return parse_fasta(pid, text, source=url)
