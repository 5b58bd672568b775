"""Experiment records: read them from archive JSON or user tables, attach sequences.

An experiment record is one row with the columns of
:data:`cryoset.archives.records.EXPERIMENT_COLUMNS` (missing ones are null); ``sequences``
is a list of one-letter protein sequences. Sources:

- EMPIAR API answers or deposition JSON (``{"title": …, "imagesets": […]}``, or
  ``{"EMPIAR-10028": {…}}``), parsed by :func:`cryoset.archives.empiar.parse_entry`;
- a JSON/YAML list of records (or ``{"experiments": [...]}``);
- CSV or Parquet tables (in CSV, ``sequences``, ``emdb_ids`` and ``pdb_ids`` are
  ``;``-separated).

Extra columns are kept. Sequences may also come from FASTA files (header: the experiment id,
optionally followed by ``|chain`` or whitespace) or from atomic models (``model_path``
column, read with :func:`cryoset.io.structure.read_structure`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cryoset.archives.records import EXPERIMENT_COLUMNS
from cryoset.errors import InputError

_LIST_COLUMNS = ("sequences", "emdb_ids", "pdb_ids")
_PROTEIN = re.compile(r"^[A-Za-z*]+$")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, float) and value != value:  # NaN
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(";") if v.strip()]
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [str(v).strip() for v in value if str(v).strip()]


def _dicts(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]


def _empiar_id_from_name(path: Path) -> str:
    m = re.search(r"(\d{5,})", path.stem)
    return m.group(1) if m else path.stem


def _records_from_json(path: Path, payload: Any) -> list[dict[str, Any]]:
    from cryoset.archives.empiar import parse_entry
    from cryoset.archives.records import experiment_record

    if isinstance(payload, dict) and "experiments" in payload:
        payload = payload["experiments"]
    if isinstance(payload, list):
        if not all(isinstance(r, dict) for r in payload):
            raise InputError(path, "a list of records must hold JSON objects")
        return [dict(r) for r in payload]
    if not isinstance(payload, dict):
        raise InputError(path, "is neither an EMPIAR entry nor a list of experiment records")
    keys = [k for k in payload if re.fullmatch(r"EMPIAR-\d{5,}", str(k))]
    ids = [k.split("-")[1] for k in keys] if keys else [_empiar_id_from_name(path)]
    rows = []
    for eid in ids:
        try:
            entry = parse_entry(eid, payload, source=str(path))
        except Exception as exc:  # DownloadError and malformed fields
            raise InputError(path, f"not an EMPIAR entry: {exc}") from None
        rows.append(experiment_record(entry))
    return rows


def read_records(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """Read experiment records from one or more files (JSON, YAML, CSV, Parquet).

    Returns
    -------
    DataFrame
        One row per experiment, columns :data:`EXPERIMENT_COLUMNS` first (then extras);
        ``sequences``, ``emdb_ids`` and ``pdb_ids`` are lists.

    Raises
    ------
    InputError
        Unknown suffix, unreadable file, missing or duplicate ``experiment_id``.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    rows: list[dict[str, Any]] = []
    for item in items:
        path = Path(item)
        if not path.is_file():
            raise InputError(path, "no such file")
        suffix = path.suffix.lower()
        try:
            if suffix == ".json":
                rows += _records_from_json(path, json.loads(path.read_text(encoding="utf-8")))
            elif suffix in (".yaml", ".yml"):
                rows += _records_from_json(path, yaml.safe_load(path.read_text(encoding="utf-8")))
            elif suffix == ".csv":
                rows += _dicts(pd.read_csv(path, dtype={"empiar_id": str}))
            elif suffix == ".parquet":
                rows += _dicts(pd.read_parquet(path))
            else:
                raise InputError(path, "records must be .json, .yaml, .csv or .parquet")
        except (ValueError, yaml.YAMLError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(path, f"cannot be read: {str(exc).splitlines()[0]}") from None
    return normalise_records(rows, source=", ".join(str(i) for i in items))


def normalise_records(rows: Iterable[Mapping[str, Any]], *, source: str = "records") -> pd.DataFrame:
    """Turn record dicts into the canonical table (see :func:`read_records`)."""
    frame = pd.DataFrame([dict(r) for r in rows])
    if frame.empty:
        raise InputError(source, "no experiment records")
    if "experiment_id" not in frame.columns:
        raise InputError(source, "records lack an 'experiment_id' column")
    ids = frame["experiment_id"].astype(str).str.strip()
    if (ids == "").any() or frame["experiment_id"].isna().any():
        raise InputError(source, "an experiment_id is empty")
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise InputError(source, f"duplicate experiment_id {', '.join(dup)}")
    frame["experiment_id"] = ids
    for col in EXPERIMENT_COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    for col in _LIST_COLUMNS:
        frame[col] = [_as_list(v) for v in frame[col]]
    for eid, seqs in zip(frame["experiment_id"], frame["sequences"], strict=True):
        bad = [s for s in seqs if not _PROTEIN.match(s)]
        if bad:
            raise InputError(source, f"{eid}: sequence {bad[0][:20]!r} is not one-letter protein code")
    extras = [c for c in frame.columns if c not in EXPERIMENT_COLUMNS]
    return frame[[*EXPERIMENT_COLUMNS, *extras]].reset_index(drop=True)


def read_fasta(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a FASTA file: first header word (up to ``|``) → its sequences, in file order."""
    p = Path(path)
    out: dict[str, list[str]] = {}
    name: str | None = None
    chunks: list[str] = []

    def flush() -> None:
        if name is not None:
            seq = "".join(chunks).replace(" ", "").upper()
            if not seq or not _PROTEIN.match(seq):
                raise InputError(p, f"record {name!r} has no one-letter protein sequence")
            out.setdefault(name, []).append(seq)

    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            flush()
            header = line[1:].strip()
            name = re.split(r"[|\s]", header, maxsplit=1)[0] if header else ""
            if not name:
                raise InputError(p, "a FASTA header is empty")
            chunks = []
        elif name is None:
            raise InputError(p, "sequence data before the first '>' header")
        else:
            chunks.append(line)
    flush()
    if not out:
        raise InputError(p, "no FASTA records")
    return out


def sequences_from_model(path: str | os.PathLike[str]) -> list[str]:
    """Unique protein sequences of an atomic model (entity sequences, else modelled chains)."""
    from cryoset.io.structure import read_structure

    model = read_structure(path)
    seqs = model.sequences()
    return sorted({s for s in seqs.values() if s and _PROTEIN.match(s)})


def attach_sequences(records: pd.DataFrame, fasta: Mapping[str, list[str]] | None = None, *,
                     base_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Add sequences from a FASTA mapping and from ``model_path`` columns (deduplicated).

    Model paths are relative to ``base_dir`` (default: the working directory).
    """
    out = records.copy()
    base = Path(base_dir) if base_dir is not None else Path()
    merged = []
    for _, row in out.iterrows():
        seqs = list(row["sequences"])
        if fasta is not None:
            seqs += fasta.get(row["experiment_id"], [])
        mp = row.get("model_path")
        if isinstance(mp, str) and mp.strip():
            seqs += sequences_from_model(base / mp)
        merged.append(sorted(set(seqs)))
    out["sequences"] = merged
    return out
