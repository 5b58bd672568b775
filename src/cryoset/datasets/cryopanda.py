"""Reader for cryoPANDA per-experiment particle files, ``<EMPIAR>_particles.h5``.

Each file holds ``images`` ``(n, 224, 224)`` uint8 and ``annotations``, a JSON dict of
lists (one list per column, ``n`` values each) stored as a string dataset. This is the
format :func:`cryoset.store.exports.export_hdf5` writes and
:func:`cryoset.store.exports.import_hdf5` reads; this module only adds discovery, the
annotation table and checks, and reuses ``import_hdf5`` for the store.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.errors import InputError

_NAME = re.compile(r"(?:EMPIAR[-_]?)?(\d{5})_particles\.h5$", re.IGNORECASE)


def find_cryopanda_files(path: str | os.PathLike[str]) -> dict[str, Path]:
    """``EMPIAR-NNNNN`` → file for every ``<EMPIAR>_particles.h5`` at or below ``path``."""
    p = Path(path)
    if p.is_file():
        candidates = [p]
    elif p.is_dir():
        candidates = sorted(p.rglob("*_particles.h5"))
    else:
        raise InputError(p, "no such file or directory")
    out: dict[str, Path] = {}
    for f in candidates:
        m = _NAME.search(f.name)
        if m is not None:
            out[f"EMPIAR-{m.group(1)}"] = f
    if not out:
        raise InputError(p, "holds no <EMPIAR>_particles.h5 file")
    return out


def read_annotations(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The ``annotations`` of a cryoPANDA file as a table (one row per image)."""
    import h5py

    p = Path(path)
    try:
        h5 = h5py.File(p, "r")
    except OSError as exc:
        raise InputError(p, f"is not a readable HDF5 file ({exc})") from None
    with h5:
        if "images" not in h5 or "annotations" not in h5:
            raise InputError(p, "lacks the 'images' and/or 'annotations' datasets")
        shape = h5["images"].shape
        raw = h5["annotations"][()]
    if len(shape) != 3:
        raise InputError(p, f"images must be (n, y, x), got shape {shape}")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        annotations: Any = json.loads(text)
    except ValueError as exc:
        raise InputError(p, f"annotations are not valid JSON ({exc})") from None
    if not isinstance(annotations, dict) or not all(isinstance(v, list) for v in annotations.values()):
        raise InputError(p, "annotations are not a JSON dict of lists")
    lengths = {len(v) for v in annotations.values()}
    if lengths and lengths != {shape[0]}:
        raise InputError(p, f"annotation lists have lengths {sorted(lengths)} for {shape[0]} images")
    table = pd.DataFrame(annotations)
    for col in table.columns:
        if table[col].dtype == object:
            converted = pd.to_numeric(table[col], errors="coerce")
            if converted.notna().sum() == table[col].notna().sum():
                table[col] = converted.astype(np.float64)
    return table


def import_cryopanda(path: str | os.PathLike[str], store: Any, experiment_id: str | None = None, *,
                     provenance: dict[str, Any] | None = None) -> int:
    """Add one cryoPANDA file to a :class:`cryoset.store.ParticleStore` (via ``import_hdf5``).

    ``experiment_id`` defaults to ``EMPIAR-NNNNN`` from the file name. Returns the count.
    """
    from cryoset.store.exports import import_hdf5

    p = Path(path)
    read_annotations(p)  # checks the layout with a clear message first
    if experiment_id is None:
        m = _NAME.search(p.name)
        experiment_id = f"EMPIAR-{m.group(1)}" if m else p.stem
    return import_hdf5(p, store, experiment_id, provenance=provenance)
