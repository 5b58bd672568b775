"""The RELION micrograph STAR (``data_optics`` + ``data_micrographs``): read and written here only.

A micrograph STAR lists micrographs, their optics group and, after CTF estimation, their
CTF (``rlnDefocusU/V/Angle``, ``rlnCtfAstigmatism``, ``rlnCtfFigureOfMerit``,
``rlnCtfMaxResolution``, ``rlnPhaseShift``). In cryoset it is a table with canonical
columns (labels in :data:`cryoset.io.relion_labels.MICROGRAPH_CTF_LABELS`): one row per
micrograph, optics values (``pixel_size_a``, ``voltage_kv``, ``cs_mm``,
``amplitude_contrast``) merged into every row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cryoset.errors import InputError
from cryoset.io import relion_labels as L
from cryoset.io import schema as S

__all__ = ["MICROGRAPH_PATH", "read_micrograph_star", "write_micrograph_star"]

#: Column of :func:`read_micrograph_star` holding the micrograph path resolved on disk.
MICROGRAPH_PATH = "path"

_OPTICS_VALUES = (S.PIXEL_SIZE_A, S.VOLTAGE_KV, S.CS_MM, S.AMPLITUDE_CONTRAST)


def read_micrograph_star(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a RELION micrograph STAR (3.0, or 3.1 with optics) as a canonical table.

    Columns: ``micrograph`` (``rlnMicrographName`` as written), ``path`` (that name resolved
    against the current directory, the RELION project, and failing that against the STAR
    file's directory), ``optics_group`` (1 when absent), ``pixel_size_a``, ``voltage_kv``,
    ``cs_mm``, ``amplitude_contrast`` (per-micrograph value, else the optics group's, else
    NaN), and whichever CTF columns the file has (``defocus_u_a``…, NaN where missing).

    Raises
    ------
    InputError
        When no table has an ``rlnMicrographName`` column.
    """
    from cryoset.io.star import read_star

    star = Path(path)
    blocks = read_star(star)
    table = next((df for df in blocks.values() if L.MICROGRAPH_NAME in df.columns), None)
    if table is None:
        raise InputError(star, "no table with an rlnMicrographName column")
    optics_labels = dict(L.MICROGRAPH_OPTICS_LABELS)
    optics: dict[int, dict[str, float]] = {}
    opt = blocks.get("optics")
    if opt is not None and L.OPTICS_GROUP in opt.columns:
        for _, row in opt.iterrows():

            def get(col: str, row: pd.Series = row) -> float:
                return float(row[col]) if col in row.index and pd.notna(row[col]) else np.nan

            values = {name: get(optics_labels[name]) for name in _OPTICS_VALUES}
            if np.isnan(values[S.PIXEL_SIZE_A]):
                for label in L.MICROGRAPH_PIXEL_SIZE_FALLBACKS:
                    v = get(label)
                    if not np.isnan(v) and v != 0:
                        values[S.PIXEL_SIZE_A] = v
                        break
            optics[int(row[L.OPTICS_GROUP])] = values
    names = [str(v) for v in table[L.MICROGRAPH_NAME].tolist()]
    paths = []
    for name in names:
        candidate = Path(name)
        if not candidate.is_absolute() and not candidate.exists() and (star.parent / name).exists():
            candidate = star.parent / name
        paths.append(str(candidate))
    groups = (
        [int(g) for g in table[L.OPTICS_GROUP].tolist()] if L.OPTICS_GROUP in table.columns else [1] * len(names)
    )
    out = pd.DataFrame({S.MICROGRAPH: names, MICROGRAPH_PATH: paths, S.OPTICS_GROUP: groups})
    for name in _OPTICS_VALUES:
        label = optics_labels[name]
        own = (
            pd.to_numeric(table[label], errors="coerce").to_numpy(np.float64)
            if label in table.columns
            else np.full(len(names), np.nan)
        )
        group_values = np.array([optics.get(g, {}).get(name, np.nan) for g in groups], dtype=np.float64)
        out[name] = np.where(np.isnan(own), group_values, own)
    for name, label in L.MICROGRAPH_CTF_LABELS:
        if name in (S.MICROGRAPH, S.OPTICS_GROUP) or label not in table.columns:
            continue
        out[name] = pd.to_numeric(table[label], errors="coerce").to_numpy(np.float64)
    return out


def write_micrograph_star(
    path: str | os.PathLike[str], table: pd.DataFrame, *, comment: str | None = None
) -> Path:
    """Write a RELION 3.1 micrograph STAR (``data_optics`` + ``data_micrographs``), atomically.

    ``table`` has one row per micrograph with ``micrograph`` (written as
    ``rlnMicrographName``), ``pixel_size_a``, ``voltage_kv``, ``cs_mm``,
    ``amplitude_contrast`` and any of the CTF columns of
    :data:`~cryoset.io.relion_labels.MICROGRAPH_CTF_LABELS`, written in the table's column
    order. One optics group per distinct (pixel size, voltage, Cs, amplitude contrast), in
    order of first appearance.
    """
    from cryoset.io.star import LOOP_ATTR, write_star

    keys: dict[tuple[float, float, float, float], int] = {}
    groups = []
    for row in table[list(_OPTICS_VALUES)].itertuples(index=False):
        key = (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
        if key not in keys:
            keys[key] = len(keys) + 1
        groups.append(keys[key])
    optics_labels = dict(L.MICROGRAPH_OPTICS_LABELS)
    optics = pd.DataFrame(
        {
            optics_labels[S.OPTICS_GROUP_NAME]: [f"opticsGroup{g}" for g in keys.values()],
            optics_labels[S.OPTICS_GROUP]: list(keys.values()),
            **{optics_labels[name]: [k[i] for k in keys] for i, name in enumerate(_OPTICS_VALUES)},
        }
    )
    optics.attrs[LOOP_ATTR] = True
    ctf_labels = dict(L.MICROGRAPH_CTF_LABELS)
    columns: dict[str, list[object]] = {
        L.MICROGRAPH_NAME: [str(v) for v in table[S.MICROGRAPH].tolist()],
        L.OPTICS_GROUP: list(groups),
    }
    for name in table.columns:
        if name in ctf_labels and name not in (S.MICROGRAPH, S.OPTICS_GROUP):
            columns[ctf_labels[name]] = [float(v) for v in table[name].tolist()]
    mics = pd.DataFrame(columns)
    mics.attrs[LOOP_ATTR] = True
    return write_star(path, {"optics": optics, "micrographs": mics}, comment=comment, version=30001)
