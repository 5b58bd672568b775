"""Provenance records: what produced an output, from what, with which parameters.

Every output cryoset writes carries a record with the cryoset version, the command
line, the parameters and the SHA-256 of every input file. It is stored beside the
output as ``<output>.provenance.json`` (or ``provenance.json`` inside an output
directory), or embedded where a format has room for it (STAR comments, Parquet
metadata, Zarr attributes).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryoset import __version__
from cryoset.io.atomic import write_text_atomic

PROVENANCE_SUFFIX = ".provenance.json"


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return value.item()
        except (TypeError, ValueError):
            return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def make_provenance(
    command: str,
    parameters: Mapping[str, Any] | None = None,
    inputs: Iterable[str | os.PathLike[str]] = (),
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Build a provenance record.

    Parameters
    ----------
    command
        The operation, e.g. ``"simulate micrographs"``.
    parameters
        The parameters that determined the output (JSON-serialisable after conversion).
    inputs
        Input files; each gets its SHA-256 and size. Directories are listed file by file.
    argv
        The command line; defaults to ``sys.argv``.
    """
    files: list[dict[str, Any]] = []
    for item in inputs:
        p = Path(item)
        paths = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for q in paths:
            if q.is_file():
                files.append({"path": str(q), "sha256": sha256_file(q), "bytes": q.stat().st_size})
    return {
        "cryoset_version": __version__,
        "command": command,
        "command_line": list(sys.argv if argv is None else argv),
        "parameters": _jsonable(dict(parameters or {})),
        "inputs": files,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def provenance_path_for(output: str | os.PathLike[str]) -> Path:
    """Where the sidecar record of ``output`` lives."""
    out = Path(output)
    if out.is_dir():
        return out / "provenance.json"
    return out.with_name(out.name + PROVENANCE_SUFFIX)


def write_provenance(output: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write ``record`` as the sidecar of ``output`` (atomically) and return its path."""
    path = provenance_path_for(output)
    write_text_atomic(path, json.dumps(_jsonable(record), indent=2, sort_keys=True) + "\n")
    return path


def read_provenance(output: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the sidecar record of ``output``."""
    data = json.loads(provenance_path_for(output).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{output}: provenance record is not a JSON object")
    return data
