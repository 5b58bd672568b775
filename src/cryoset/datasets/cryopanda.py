"""Reader for cryoPANDA per-experiment particle files, ``<EMPIAR>_particles.h5``.

Each file holds ``images`` ``(n, 224, 224)`` uint8 and ``annotations``, a JSON dict of
lists (one list per column, ``n`` values each) stored as a string dataset. This is the
format :func:`cryoset.store.exports.export_hdf5` writes and
:func:`cryoset.store.exports.import_hdf5` reads; this module only adds discovery, the
annotation table and checks, and reuses ``import_hdf5`` for the store.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cryoset.errors import InputError
from cryoset.store.exports import read_hdf5_annotations

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


read_annotations = read_hdf5_annotations


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
