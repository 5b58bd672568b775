"""Provenance records: re-exported from :mod:`cryoset.io.provenance`, where they live.

The sidecar (``FILE.provenance.json``) and embedded records are a file format, so they sit
in ``io/`` (which writes them); this module keeps ``cryoset.provenance`` importable.
"""

from __future__ import annotations

from cryoset.io.provenance import (
    make_provenance,
    provenance_path_for,
    read_provenance,
    sha256_file,
    write_provenance,
)

__all__ = [
    "make_provenance",
    "provenance_path_for",
    "read_provenance",
    "sha256_file",
    "write_provenance",
]
