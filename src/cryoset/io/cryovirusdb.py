"""CryoVirusDB / CryoPPP particle CSV files ↔ the canonical particle table.

CryoVirusDB (Dhakal et al.) and CryoPPP export their expert picks as CSV with these
header names (values copied from a cryoSPARC-exported RELION STAR file, so the units are
RELION's):

=====================  ========================  ==========================================
CSV column             canonical column          unit / meaning
=====================  ========================  ==========================================
Micrographs Filename   ``micrograph``            micrograph file name (no directory)
X-Coordinate           ``x_px``                  particle centre, micrograph pixels
Y-Coordinate           ``y_px``                  particle centre, micrograph pixels
Diameter               ``diameter_px``           particle diameter, pixels
Angle-Psi              ``psi_deg``               RELION in-plane angle, degrees
Origin X (Ang)         ``shift_x_a``             RELION ``rlnOriginXAngst``
Origin Y (Ang)         ``shift_y_a``             RELION ``rlnOriginYAngst``
Defocus U / V          ``defocus_u_a`` / ``_v_a``  Å, positive underfocus
Defocus Angle          ``defocus_angle_deg``     degrees
Phase Shift            ``phase_shift_deg``       degrees
CTF B Factor           ``ctf_bfactor_a2``        Å²
Optics Group           ``optics_group``          RELION optics group (1-based)
Class Number           ``class_number``          RELION class (1-based)
Reason                 ``Reason`` (kept)         false-positive files only: why rejected
=====================  ========================  ==========================================

Three variants exist: the 14-column particle file (all columns above but ``Reason``), the
false-positive file (the same plus ``Reason``) and the 11-column per-micrograph file (no
``Micrographs Filename``, ``Optics Group``, ``Class Number``; the micrograph is named by
the file, so ``micrograph`` is taken from the file stem unless given). Columns not listed
are kept under their CSV names (e.g. CryoPPP's ``Particles Filename``).

Frames. The CSV's y axis is flipped relative to the micrograph array (established by the
coordinates engineer against six independent pickers, ``docs/formats-coordinates.md``):
``y_px = (ny - 1) - Y``. The flip is done by :func:`cryoset.io.coords.read_coords` (one
place for the rule); it needs the micrograph shape ``(ny, nx)``. ``flip_y=False`` keeps the
file's own frame. ``Angle-Psi`` and ``Origin X/Y (Ang)`` describe the extracted particle
images (they are copied from the RELION STAR that came with the particle stacks), not the
micrograph frame, so they are mapped to ``psi_deg``/``shift_x_a``/``shift_y_a`` unchanged.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cryoset.errors import InputError
from cryoset.io import schema as S
from cryoset.io.atomic import atomic_path

#: CSV header → canonical column.
CSV_TO_CANONICAL: dict[str, str] = {
    "Micrographs Filename": S.MICROGRAPH,
    "X-Coordinate": S.X_PX,
    "Y-Coordinate": S.Y_PX,
    "Diameter": S.DIAMETER_PX,
    "Angle-Psi": S.PSI_DEG,
    "Origin X (Ang)": S.SHIFT_X_A,
    "Origin Y (Ang)": S.SHIFT_Y_A,
    "Defocus U": S.DEFOCUS_U_A,
    "Defocus V": S.DEFOCUS_V_A,
    "Defocus Angle": S.DEFOCUS_ANGLE_DEG,
    "Phase Shift": S.PHASE_SHIFT_DEG,
    "CTF B Factor": S.CTF_BFACTOR_A2,
    "Optics Group": S.OPTICS_GROUP,
    "Class Number": S.CLASS_NUMBER,
}
CANONICAL_TO_CSV: dict[str, str] = {v: k for k, v in CSV_TO_CANONICAL.items()}

#: The 14 columns of a CryoVirusDB particle CSV, in order.
PARTICLE_CSV_COLUMNS: tuple[str, ...] = tuple(CSV_TO_CANONICAL)
#: The 11 columns of a per-micrograph CryoPPP ground-truth CSV, in order.
PER_MICROGRAPH_CSV_COLUMNS: tuple[str, ...] = tuple(
    c for c in CSV_TO_CANONICAL if c not in ("Micrographs Filename", "Optics Group", "Class Number")
)
#: Extra column of a false-positive CSV.
REASON = "Reason"
#: First column of CryoVirusDB's collective particles CSV: the particle stack's file name.
PARTICLES_FILENAME = "Particles Filename"
#: The collective particles CSV as CryoVirusDB publishes it (its ``convert_start_to_csv_file``
#: script): the particle stack and micrograph names, then the 12 columns the paper lists, no
#: ``Diameter`` (``write_cryovirusdb(..., variant="collective", diameter=True)`` adds it after
#: ``Y-Coordinate``).
COLLECTIVE_CSV_COLUMNS: tuple[str, ...] = (PARTICLES_FILENAME, *(c for c in CSV_TO_CANONICAL if c != "Diameter"))

Variant = Literal["particles", "false_positives", "per_micrograph", "collective"]


def detect_variant(columns: list[str]) -> Variant:
    """Which CryoVirusDB CSV variant a header is (``REASON`` → false positives, no file name → per micrograph)."""
    if REASON in columns:
        return "false_positives"
    if PARTICLES_FILENAME in columns and "Micrographs Filename" in columns and "Diameter" not in columns:
        return "collective"
    if "Micrographs Filename" in columns:
        return "particles"
    return "per_micrograph"


def read_cryovirusdb(
    path: str | os.PathLike[str],
    *,
    micrograph: str | None = None,
    micrograph_shape: tuple[int, int] | None = None,
    flip_y: bool = True,
    permissive: bool = False,
    micrograph_heights: Mapping[str, float] | Callable[[str], float] | None = None,
) -> pd.DataFrame:
    """Read a CryoVirusDB / CryoPPP particle CSV as a canonical particle table.

    Parameters
    ----------
    path
        The ``.csv`` file.
    micrograph
        Micrograph name for a per-micrograph (11-column) file; default: the file stem.
    micrograph_shape
        ``(ny, nx)`` of the micrographs, needed to undo the y flip (and then picks off the
        micrograph raise, as in :func:`cryoset.io.coords.read_coords`).
    flip_y
        Undo the CryoPPP y flip (default). False keeps the file's frame.
    permissive
        When True, rows whose coordinates are not numbers are dropped instead of raising
        (only without a flip).
    micrograph_heights
        Height ``ny`` (pixels) of each micrograph, by ``micrograph`` value (a mapping or a
        function): undo the flip per
        micrograph (instead of one ``micrograph_shape``); unknown micrographs get NaN ``y_px``.

    Returns
    -------
    DataFrame
        Canonical columns (``score`` NaN) plus unknown columns under their CSV names;
        ``attrs["cryovirusdb_variant"]`` names the variant.

    Raises
    ------
    InputError
        When the header lacks ``X-Coordinate`` / ``Y-Coordinate``, a column is repeated, or
        a value is not a number.
    """
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except UnicodeDecodeError:
        raise InputError(p, "is not a UTF-8 text CSV file") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise InputError(p, "CSV header repeats a column name")
    missing = [c for c in ("X-Coordinate", "Y-Coordinate") if c not in header]
    if missing:
        raise InputError(
            p, f"not a CryoVirusDB particle CSV: header lacks {', '.join(missing)} "
            f"(found {', '.join(header[:6]) or 'nothing'})"
        )
    raw = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    raw.columns = header
    variant = detect_variant(header)
    out = pd.DataFrame(index=raw.index)
    for column in header:
        target = CSV_TO_CANONICAL.get(column, column)
        values = raw[column].str.strip()
        if target in (S.MICROGRAPH,) or column not in CSV_TO_CANONICAL:
            out[target] = values.to_numpy()
            continue
        numbers = pd.Series(pd.to_numeric(values.to_numpy(dtype=object), errors="coerce"),
                            index=values.index, dtype=np.float64)
        bad = numbers.isna() & (values != "")
        if target == S.OPTICS_GROUP and bad.any():
            out[S.OPTICS_GROUP_NAME] = values.to_numpy()
            continue
        if bad.any():
            if permissive and target in (S.X_PX, S.Y_PX):
                numbers[bad] = np.nan
            else:
                row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
                raise InputError(
                    p, f"line {row}: {column} value {values[bad].iloc[0]!r} is not a number"
                )
        out[target] = numbers.to_numpy(dtype=np.float64)
    if flip_y and micrograph_heights is None:
        from cryoset.io.coords import read_coords

        picks = read_coords(p, fmt="cryoppp", micrograph_shape=micrograph_shape, flip_y=True)
        out[S.X_PX] = picks[S.X_PX].to_numpy(dtype=np.float64)
        out[S.Y_PX] = picks[S.Y_PX].to_numpy(dtype=np.float64)
    elif permissive:
        out = out[out[S.X_PX].notna() & out[S.Y_PX].notna()].reset_index(drop=True)
    if S.MICROGRAPH not in out.columns:
        out.insert(0, S.MICROGRAPH, micrograph if micrograph is not None else p.stem)
    out[S.SCORE] = np.nan
    if S.DIAMETER_PX not in out.columns:
        out[S.DIAMETER_PX] = np.nan
    table = S.canonical_first(S.validate_particles(S.validate_picks(out, p), p))
    if flip_y and micrograph_heights is not None:
        table[S.Y_PX] = _per_micrograph_flip(table, micrograph_heights)
    table.attrs["cryovirusdb_variant"] = variant
    return table


def _per_micrograph_flip(
    table: pd.DataFrame, heights: Mapping[str, float] | Callable[[str], float]
) -> np.ndarray:
    """``(ny - 1) - y`` with ``ny`` looked up per row by micrograph (NaN when unknown); self-inverse."""
    lookup = heights if callable(heights) else (lambda m: heights.get(m, np.nan))
    ny = table[S.MICROGRAPH].astype(str).map(lookup)
    return (ny.to_numpy(np.float64) - 1) - table[S.Y_PX].to_numpy(np.float64)


#: Columns CryoPPP writes as whole numbers when they are whole.
_WHOLE_COLUMNS = frozenset({S.X_PX, S.Y_PX, S.DIAMETER_PX, S.OPTICS_GROUP, S.CLASS_NUMBER})


def _format_numbers(values: pd.Series, allow_whole: bool) -> pd.Series:
    """Floats as the shortest exact text; whole numbers without ``.0`` when ``allow_whole``."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("Int64").astype(str).replace("<NA>", "")
    if not pd.api.types.is_float_dtype(values.dtype):
        return values.astype(str)
    arr = values.to_numpy(dtype=np.float64)
    finite = np.isfinite(arr)
    whole = allow_whole and bool(np.all(np.equal(np.round(arr[finite]), arr[finite])))
    text = [("" if not np.isfinite(v) else (str(int(v)) if whole and abs(v) < 2**53 else repr(v)))
            for v in arr.tolist()]
    return pd.Series(text, index=values.index)


def write_cryovirusdb(
    path: str | os.PathLike[str],
    table: pd.DataFrame,
    *,
    micrograph_shape: tuple[int, int] | None = None,
    flip_y: bool = True,
    variant: Variant | None = None,
    micrograph_heights: Mapping[str, float] | Callable[[str], float] | None = None,
    diameter: bool = False,
) -> Path:
    """Write a canonical particle table as a CryoVirusDB CSV, atomically.

    Parameters
    ----------
    path
        Destination ``.csv``.
    table
        Canonical particle table; needs ``x_px`` and ``y_px`` (and ``micrograph`` for the
        14-column and false-positive variants).
    variant
        ``"particles"`` (14 columns), ``"false_positives"`` (14 + ``Reason``) or
        ``"per_micrograph"`` (11 columns). Default: ``"false_positives"`` when the table has
        a ``Reason`` column, else ``"particles"`` when it has ``micrograph``, else
        ``"per_micrograph"``. ``"collective"`` is CryoVirusDB's collective particles CSV
        (:data:`COLLECTIVE_CSV_COLUMNS`: ``Particles Filename`` from that column, else the file
        name of ``image_path``), as written after 2D classification (psi, origins, class).
        Missing values are written as empty cells; other columns are not written.
    diameter
        ``"collective"`` only: add the ``Diameter`` column after ``Y-Coordinate`` (not published).
    micrograph_shape
        ``(ny, nx)``: needed to write the flipped y axis, ``Y = (ny - 1) - y_px`` (the
        inverse of the reader's flip, checked against :func:`cryoset.io.coords.read_coords`
        by the tests).
    flip_y
        Write the CryoPPP flipped frame (default); False writes ``y_px`` unchanged.
    micrograph_heights
        Height ``ny`` (pixels) of each micrograph, by the table's ``micrograph`` value (a
        mapping or a function): the
        flip of a table spanning micrographs of different sizes (instead of
        ``micrograph_shape``); a micrograph missing from it gets NaN ``Y``.

    Returns
    -------
    Path
        ``path``.
    """
    out_path = Path(path)
    missing = [c for c in (S.X_PX, S.Y_PX) if c not in table.columns]
    if missing:
        raise InputError(out_path, f"table lacks {', '.join(missing)} needed for a CryoVirusDB CSV")
    if variant is None:
        variant = ("false_positives" if REASON in table.columns
                   else "particles" if S.MICROGRAPH in table.columns else "per_micrograph")
    if variant == "collective":
        columns = list(COLLECTIVE_CSV_COLUMNS)
        if diameter:
            columns.insert(columns.index("Y-Coordinate") + 1, "Diameter")
    else:
        columns = list(PARTICLE_CSV_COLUMNS if variant != "per_micrograph" else PER_MICROGRAPH_CSV_COLUMNS)
    if variant == "false_positives":
        columns.append(REASON)
    if variant != "per_micrograph" and S.MICROGRAPH not in table.columns:
        raise InputError(out_path, f"table lacks micrograph needed for the {variant} variant")
    t = table.reset_index(drop=True).copy()
    if variant == "collective" and PARTICLES_FILENAME not in t.columns and S.IMAGE_PATH in t.columns:
        t[PARTICLES_FILENAME] = [Path(str(v)).name for v in t[S.IMAGE_PATH]]
    if flip_y and micrograph_heights is not None:
        t[S.Y_PX] = _per_micrograph_flip(t, micrograph_heights)
    elif flip_y:
        if micrograph_shape is None:
            raise InputError(
                out_path, "CryoPPP CSV y is flipped: writing it needs the micrograph shape "
                "(--micrograph-shape-px NY NX), or the canonical frame without the flip"
            )
        t[S.Y_PX] = (int(micrograph_shape[0]) - 1) - t[S.Y_PX].to_numpy(dtype=np.float64)
    if flip_y:  # undo the read's (ny - 1) - Y to the decimals written (1e-9 px), e.g. 1814.2 not 1814.1999…
        t[S.Y_PX] = np.round(t[S.Y_PX].to_numpy(dtype=np.float64), 9)
    frame = pd.DataFrame(index=t.index)
    for column in columns:
        source = CSV_TO_CANONICAL.get(column, column)
        if source not in t.columns:
            if source == S.OPTICS_GROUP and S.OPTICS_GROUP_NAME in t.columns:
                frame[column] = t[S.OPTICS_GROUP_NAME].astype(str)
            else:
                frame[column] = ""
            continue
        values = t[source]
        if source in S.STRING_COLUMNS or column in (REASON, PARTICLES_FILENAME):
            frame[column] = values.astype(str)
        else:
            frame[column] = _format_numbers(values, source in _WHOLE_COLUMNS)
    with atomic_path(out_path) as tmp:
        frame.to_csv(tmp, index=False)
    return out_path


def weighted_class_resolution(classes: pd.DataFrame, n: int | None = None) -> float:
    """CryoVirusDB's "Weighted Average Resolution of 2D classes (N=…)" (its Table 3).

    The mean of the classes' resolutions weighted by their populations, over the ``n`` most
    populated classes (all when None; CryoVirusDB reports N=50, all its classes, and N=10).
    ``classes`` needs ``population`` and ``resolution_a`` (the 2D class summary); classes
    without a finite resolution are left out. NaN when no class is left.
    """
    missing = [c for c in ("population", "resolution_a") if c not in classes.columns]
    if missing:
        raise InputError("classes", f"lack column(s) {', '.join(missing)}")
    t = classes.sort_values("population", ascending=False, kind="stable")
    if n is not None:
        t = t.head(int(n))
    res = t["resolution_a"].to_numpy(np.float64)
    pop = t["population"].to_numpy(np.float64)
    ok = np.isfinite(res) & (pop > 0)
    return float(np.sum(res[ok] * pop[ok]) / np.sum(pop[ok])) if ok.any() else float("nan")
