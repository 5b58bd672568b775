"""Particle coordinate files: read into, and write out of, the canonical picks table.

The canonical picks table (:mod:`cryoset.io.schema`) holds one row per pick with the
particle **centre** ``x_px`` (column), ``y_px`` (row) in pixels of the original
micrograph, 0-based, pixel centres on integers (the centre of ``image[i, j]`` is
``x_px = j``, ``y_px = i``), plus ``score`` and ``diameter_px`` (NaN when unknown).

Formats (``fmt``) and how each is converted (evidence in ``docs/formats-coordinates.md``):

``"star"``
    RELION coordinate STAR (``rlnCoordinateX/Y`` = centre, 0-based array index, no flip;
    ``rlnAutopickFigureOfMerit`` → ``score``; ``rlnMicrographName`` → ``micrograph`` when
    several micrographs share one file). Sentinels ``-999``/``-9999`` for "no score" or
    "no angle" (crYOLO, CASSPER) become NaN and are written back as ``-999``.
``"box"``
    EMAN1 box: ``x_corner y_corner width height [score]``; centre = corner + size / 2.
``"csv"``
    This project's CSV: ``x_px,y_px[,diameter_px][,score][,micrograph]`` (identity).
``"cryoppp"``
    CryoPPP / CryoVirusDB 11-column truth CSV (``X-Coordinate,Y-Coordinate,Diameter,…``).
    Its y axis is flipped relative to the micrograph array: ``y_px = (ny - 1) - Y``
    (``flip_y=True`` by default, needs ``micrograph_shape``). The 14-column CryoVirusDB
    particle file (with ``Micrographs Filename``) reads the same way; the full particle
    table of those files is :mod:`cryoset.io.cryovirusdb`.
``"topaz"``
    Topaz picks, tab-separated ``image_name x_coord y_coord score`` (centre, identity).
``"cbox"``
    crYOLO ``.cbox``: a STAR file (crYOLO ≥ 1.8; block ``data_cryolo`` with
    ``_CoordinateX/Y`` = box corner, ``_Width/_Height``, ``_EstWidth`` = estimated
    particle diameter, ``_Confidence``) or the older tab-separated
    ``x y w h confidence est_w est_h``; centre = corner + size / 2.
``"cs"``
    cryoSPARC picks ``.cs``: ``location/center_x_frac × nx``,
    ``location/center_y_frac × ny`` with ``location/micrograph_shape = (ny, nx)``.

Picks whose centre lies off the micrograph (when its shape is known) raise
:class:`~cryoset.errors.InputError` naming the count and the first bad row, or, with
``permissive=True``, are dropped and counted in ``df.attrs["dropped_outside"]``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_path
from cryoset.io.cryosparc import read_cs, write_cs
from cryoset.io.provenance import write_provenance
from cryoset.io.relion_labels import COORDINATE_STAR_TO_CANONICAL
from cryoset.io.schema import (
    CLASS_NUMBER,
    CTF_BFACTOR_A2,
    DEFOCUS_ANGLE_DEG,
    DEFOCUS_U_A,
    DEFOCUS_V_A,
    DIAMETER_PX,
    MICROGRAPH,
    MICROGRAPH_PIXEL_SIZE_A,
    OPTICS_GROUP,
    PHASE_SHIFT_DEG,
    PSI_DEG,
    ROT_DEG,
    SCORE,
    SHIFT_X_A,
    SHIFT_Y_A,
    TILT_DEG,
    X_PX,
    Y_PX,
    validate_picks,
)
from cryoset.io.star import LOOP_ATTR, read_star, write_star

#: Extra column (not canonical) holding the box edge of box-based formats, in pixels.
BOX_SIZE_PX = "box_size_px"
#: Extra column holding a box height that differs from its width (EMAN ``.box``).
BOX_HEIGHT_PX = "box_height_px"
#: Extra columns holding the micrograph shape read from a cryoSPARC ``.cs`` file.
MICROGRAPH_HEIGHT_PX = "micrograph_height_px"
MICROGRAPH_WIDTH_PX = "micrograph_width_px"

#: Slack (pixels) beyond the micrograph's pixel area [-0.5, n - 0.5] before a pick counts
#: as outside: absorbs the half-pixel difference between edge-based (cryoSPARC fractions)
#: and centre-based conventions.
EDGE_TOLERANCE_PX = 0.5

#: Values crYOLO, CASSPER and others write for "no score" / "no angle".
_SENTINELS = (-999.0, -9999.0)
_SENTINEL_OUT = -999.0

_STAR_TO_CANON = COORDINATE_STAR_TO_CANONICAL
_CANON_TO_STAR = {v: k for k, v in _STAR_TO_CANON.items()}

_CRYOPPP_X = "X-Coordinate"
_CRYOPPP_Y = "Y-Coordinate"
_CRYOPPP_DIAMETER = "Diameter"
_CRYOPPP_FILENAME = "Micrographs Filename"
#: The 11 columns of a CryoPPP truth CSV, in order.
CRYOPPP_COLUMNS: tuple[str, ...] = (
    _CRYOPPP_X,
    _CRYOPPP_Y,
    _CRYOPPP_DIAMETER,
    "Angle-Psi",
    "Origin X (Ang)",
    "Origin Y (Ang)",
    "Defocus U",
    "Defocus V",
    "Defocus Angle",
    "Phase Shift",
    "CTF B Factor",
)
# Same mapping as cryoset.io.cryovirusdb (the full CryoVirusDB particle-table reader): the
# angle/origin/CTF columns are copied from the RELION STAR of the extracted particles, so
# they keep RELION's meaning; only the micrograph coordinates are flipped.
_CRYOPPP_TO_CANON = {
    "Micrographs Filename": MICROGRAPH,
    "Angle-Psi": PSI_DEG,
    "Origin X (Ang)": SHIFT_X_A,
    "Origin Y (Ang)": SHIFT_Y_A,
    "Defocus U": DEFOCUS_U_A,
    "Defocus V": DEFOCUS_V_A,
    "Defocus Angle": DEFOCUS_ANGLE_DEG,
    "Phase Shift": PHASE_SHIFT_DEG,
    "CTF B Factor": CTF_BFACTOR_A2,
    "Optics Group": OPTICS_GROUP,
    "Class Number": CLASS_NUMBER,
}

_CBOX_COLUMNS: tuple[str, ...] = (
    "CoordinateX",
    "CoordinateY",
    "CoordinateZ",
    "Width",
    "Height",
    "Depth",
    "EstWidth",
    "EstHeight",
    "Confidence",
    "NumBoxes",
    "Angle",
)

_CS_X = "location/center_x_frac"
_CS_Y = "location/center_y_frac"
_CS_SHAPE = "location/micrograph_shape"
_CS_PATH = "location/micrograph_path"
_CS_SCORE = "pick_stats/ncc_score"

Shape = tuple[int, int]


# --------------------------------------------------------------------------------------
# format detection
# --------------------------------------------------------------------------------------


def _head(path: Path, n_bytes: int = 8192) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n_bytes)
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a coordinate file") from None


def _first_data_line(text: str) -> str:
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            return s
    return ""


def _star_kind(text: str) -> str | None:
    if "rlnCoordinateX" in text:
        return "star"
    if "_CoordinateX" in text:
        return "cbox"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess the coordinate format of a file from its suffix and first bytes.

    Parameters
    ----------
    path
        The coordinate file.

    Returns
    -------
    str
        One of `FORMATS`.

    Raises
    ------
    InputError
        When the file is empty or matches no known format.
    """
    p = Path(path)
    head = _head(p)
    if head.startswith(b"\x93NUMPY"):
        return "cs"
    text = head.decode("utf-8", errors="replace")
    suffix = p.suffix.lower()
    if not text.strip():
        if suffix in (".box", ".cbox"):  # pickers write empty box files for empty micrographs
            return suffix[1:]
        raise InputError(p, "is empty: no coordinates")
    first = _first_data_line(text)
    if "data_" in text and _star_kind(text):
        return str(_star_kind(text))
    if suffix == ".cbox":
        return "cbox"
    if first.startswith(_CRYOPPP_X) or "X-Coordinate" in first:
        return "cryoppp"
    if "x_px" in first.split(",")[0:3] or first.startswith("x_px"):
        return "csv"
    if first.split() and first.split()[0] == "image_name":
        return "topaz"
    if suffix == ".box":
        return "box"
    if suffix == ".star":
        raise InputError(p, "is a STAR file without rlnCoordinateX or _CoordinateX columns")
    if suffix == ".csv":
        raise InputError(p, "CSV header names neither x_px,y_px nor X-Coordinate,Y-Coordinate")
    tokens = first.split()
    if len(tokens) in (4, 5) and all(_is_number(t) for t in tokens):
        return "box"
    raise InputError(p, "unknown coordinate format (give the format explicitly, one of " + ", ".join(FORMATS) + ")")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _numeric(values: Any) -> np.ndarray:
    """Convert a column to float64; text such as ``<NA>`` or ``None`` becomes NaN."""
    series = pd.Series(values)
    if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
        series = series.replace({"<NA>": None, "None": None, "": None})
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


def _strict_numeric(path: Path, values: Any, label: str) -> np.ndarray:
    out = _numeric(values)
    raw = pd.Series(values)
    bad = np.isnan(out) & raw.notna().to_numpy() & ~raw.astype(str).isin(
        ["<NA>", "None", "", "nan", "NaN"]
    ).to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(path, f"column {label!r} row {first + 1}: {raw.iloc[first]!r} is not a number")
    return out


def _desentinel(values: np.ndarray) -> np.ndarray:
    out = values.astype(np.float64, copy=True)
    out[np.isin(out, _SENTINELS)] = np.nan
    return out


def _basename(name: object) -> str:
    text = name.decode("utf-8", errors="replace") if isinstance(name, bytes) else str(name)
    return text.replace("\\", "/").rsplit("/", 1)[-1]


def _default_micrograph(path: Path, micrograph: str | None) -> str:
    return micrograph if micrograph is not None else path.stem


def _check_shape(shape: Any, name: str = "micrograph_shape") -> Shape:
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise InputError(name, f"must be (ny, nx), got {shape!r}") from None
    if ny <= 0 or nx <= 0:
        raise InputError(name, f"must be positive (ny, nx), got {shape!r}")
    return ny, nx


def outside_mask(
    x_px: np.ndarray, y_px: np.ndarray, ny: np.ndarray | int, nx: np.ndarray | int
) -> np.ndarray:
    """True where a centre lies off an ``ny × nx`` micrograph.

    A centre is inside when ``-0.5 - t <= x_px <= nx - 0.5 + t`` and likewise for y, with
    ``t = EDGE_TOLERANCE_PX``: the micrograph's pixel area plus half a pixel of slack.

    Parameters
    ----------
    x_px, y_px : ndarray, shape (n,)
        Centres in canonical pixels.
    ny, nx : int or ndarray, shape (n,)
        Micrograph height and width (per pick or shared).

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    lo = -0.5 - EDGE_TOLERANCE_PX
    x = np.asarray(x_px, dtype=np.float64)
    y = np.asarray(y_px, dtype=np.float64)
    hi_x = np.asarray(nx, dtype=np.float64) - 0.5 + EDGE_TOLERANCE_PX
    hi_y = np.asarray(ny, dtype=np.float64) - 0.5 + EDGE_TOLERANCE_PX
    return np.asarray((x < lo) | (x > hi_x) | (y < lo) | (y > hi_y))


def _apply_bounds(
    path: Path, df: pd.DataFrame, ny: Any, nx: Any, permissive: bool
) -> pd.DataFrame:
    bad = outside_mask(df[X_PX].to_numpy(), df[Y_PX].to_numpy(), ny, nx)
    count = int(bad.sum())
    if count and not permissive:
        i = int(np.flatnonzero(bad)[0])
        row = df.iloc[i]
        ny_i = int(np.broadcast_to(np.asarray(ny), bad.shape)[i])
        nx_i = int(np.broadcast_to(np.asarray(nx), bad.shape)[i])
        raise InputError(
            path,
            f"{count} pick(s) lie outside the {ny_i}×{nx_i} (ny×nx) micrograph; first at data "
            f"row {i + 1}: x_px={row[X_PX]:g}, y_px={row[Y_PX]:g} (use permissive to drop them)",
        )
    out = df.loc[~bad].reset_index(drop=True)
    out.attrs["dropped_outside"] = count
    return out


# --------------------------------------------------------------------------------------
# readers (each returns a table with at least micrograph, x_px, y_px)
# --------------------------------------------------------------------------------------


def _coordinate_block(path: Path, blocks: Mapping[str, pd.DataFrame], label: str) -> pd.DataFrame:
    for df in blocks.values():
        if label in df.columns:
            return df
    raise InputError(path, f"no data block with a {label} column")


def _read_star(path: Path, micrograph: str | None, permissive: bool) -> pd.DataFrame:
    blocks = read_star(path, permissive=permissive)
    src = _coordinate_block(path, blocks, "rlnCoordinateX")
    if "rlnCoordinateY" not in src.columns:
        raise InputError(path, "has rlnCoordinateX but no rlnCoordinateY")
    out = pd.DataFrame(index=range(len(src)))
    if "rlnMicrographName" in src.columns:
        names = src["rlnMicrographName"].astype(str)
        out[MICROGRAPH] = [_basename(n) for n in names]
        out["rlnMicrographName"] = names.to_numpy()
    else:
        out[MICROGRAPH] = _default_micrograph(path, micrograph)
    for label in src.columns:
        if label == "rlnMicrographName":
            continue
        canon = _STAR_TO_CANON.get(label)
        if canon in (X_PX, Y_PX):
            out[canon] = _strict_numeric(path, src[label].to_numpy(), label)
        elif canon in (SCORE, PSI_DEG, ROT_DEG, TILT_DEG):
            out[canon] = _desentinel(_strict_numeric(path, src[label].to_numpy(), label))
        elif canon is not None:
            out[canon] = src[label].to_numpy()
        else:
            out[label] = src[label].to_numpy()
    if SCORE not in out.columns:
        out[SCORE] = np.nan
    out[DIAMETER_PX] = np.nan
    if micrograph is not None and "rlnMicrographName" in src.columns:
        out = out.loc[out[MICROGRAPH] == micrograph].reset_index(drop=True)
    return out


def _split_table_lines(path: Path, text: str) -> list[tuple[int, list[str]]]:
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        rows.append((lineno, s.split()))
    return rows


def _read_box(
    path: Path, micrograph: str | None, box_size_px: float | None, permissive: bool
) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8", errors="replace")
    rows = _split_table_lines(path, text)
    corners: list[tuple[float, float, float, float, float]] = []
    for lineno, toks in rows:
        try:
            vals = [float(t) for t in toks]
        except ValueError:
            if permissive:
                continue
            raise InputError(path, f"line {lineno}: non-numeric value in {' '.join(toks)!r}") from None
        if len(vals) == 2:
            if box_size_px is None:
                raise InputError(path, f"line {lineno}: only x y given; pass box_size_px")
            vals = [*vals, float(box_size_px), float(box_size_px)]
        if len(vals) < 4 or (len(vals) > 5 and not permissive):
            if permissive:
                continue
            raise InputError(
                path, f"line {lineno}: {len(vals)} values; an EMAN .box line has x y w h [score]"
            )
        score = vals[4] if len(vals) >= 5 else np.nan
        corners.append((vals[0], vals[1], vals[2], vals[3], score))
    arr = np.asarray(corners, dtype=np.float64).reshape(-1, 5)
    if np.any(arr[:, 2:4] <= 0):
        raise InputError(path, "box width and height must be positive")
    out = pd.DataFrame(
        {
            MICROGRAPH: _default_micrograph(path, micrograph),
            X_PX: arr[:, 0] + arr[:, 2] / 2.0,
            Y_PX: arr[:, 1] + arr[:, 3] / 2.0,
            SCORE: arr[:, 4],
            DIAMETER_PX: np.nan,
            BOX_SIZE_PX: arr[:, 2],
        }
    )
    if np.any(arr[:, 3] != arr[:, 2]):
        out[BOX_HEIGHT_PX] = arr[:, 3]
    return out


def _read_csv_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be parsed as CSV ({exc})") from None


def _read_project_csv(path: Path, micrograph: str | None) -> pd.DataFrame:
    src = _read_csv_table(path)
    for col in (X_PX, Y_PX):
        if col not in src.columns:
            raise InputError(path, f"CSV lacks the {col} column")
    out = src.copy()
    for col in (X_PX, Y_PX, SCORE, DIAMETER_PX):
        if col in out.columns:
            out[col] = _strict_numeric(path, out[col].to_numpy(), col)
    if MICROGRAPH in out.columns:
        out[MICROGRAPH] = out[MICROGRAPH].astype(str)
        if micrograph is not None:
            out = out.loc[out[MICROGRAPH] == micrograph].reset_index(drop=True)
    else:
        out[MICROGRAPH] = _default_micrograph(path, micrograph)
    return out


def _read_cryoppp(
    path: Path, micrograph: str | None, shape: Shape | None, flip_y: bool
) -> pd.DataFrame:
    src = _read_csv_table(path)
    for col in (_CRYOPPP_X, _CRYOPPP_Y):
        if col not in src.columns:
            raise InputError(path, f"CryoPPP CSV lacks the {col!r} column")
    x = _strict_numeric(path, src[_CRYOPPP_X].to_numpy(), _CRYOPPP_X)
    y = _strict_numeric(path, src[_CRYOPPP_Y].to_numpy(), _CRYOPPP_Y)
    if flip_y:
        if shape is None:
            raise InputError(
                path,
                "CryoPPP CSV y coordinates are flipped relative to the micrograph: give the micrograph "
                "shape (--micrograph-shape-px NY NX), or read it without the flip to keep the file's frame",
            )
        y = (shape[0] - 1) - y
    out = pd.DataFrame({X_PX: x, Y_PX: y})
    if _CRYOPPP_FILENAME in src.columns:  # CryoVirusDB particle file: several micrographs
        out.insert(0, MICROGRAPH, [_basename(n) for n in src[_CRYOPPP_FILENAME].astype(str)])
    else:
        out.insert(0, MICROGRAPH, _default_micrograph(path, micrograph))
    out[SCORE] = np.nan
    out[DIAMETER_PX] = (
        _strict_numeric(path, src[_CRYOPPP_DIAMETER].to_numpy(), _CRYOPPP_DIAMETER)
        if _CRYOPPP_DIAMETER in src.columns
        else np.nan
    )
    for col in src.columns:
        if col in (_CRYOPPP_X, _CRYOPPP_Y, _CRYOPPP_DIAMETER, _CRYOPPP_FILENAME):
            continue
        out[_CRYOPPP_TO_CANON.get(col, col)] = src[col].to_numpy()
    if micrograph is not None and _CRYOPPP_FILENAME in src.columns:
        out = out.loc[out[MICROGRAPH] == micrograph].reset_index(drop=True)
    return out


def _read_topaz(path: Path, micrograph: str | None, permissive: bool) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError(path, "is empty: no Topaz header")
    header = lines[0].split("\t") if "\t" in lines[0] else lines[0].split()
    header = [h.strip() for h in header]
    needed = ("image_name", "x_coord", "y_coord")
    if any(h not in header for h in needed):
        raise InputError(path, "Topaz header must name image_name, x_coord, y_coord")
    idx = {h: header.index(h) for h in header}
    names: list[str] = []
    values: list[tuple[float, float, float]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        toks = line.split("\t") if "\t" in line else line.split()
        toks = [t.strip() for t in toks]
        if len(toks) != len(header):
            if permissive:
                continue
            raise InputError(path, f"line {lineno}: {len(toks)} fields for {len(header)} columns")
        try:
            x = float(toks[idx["x_coord"]])
            y = float(toks[idx["y_coord"]])
            s = float(toks[idx["score"]]) if "score" in idx else np.nan
        except ValueError:
            if permissive:
                continue
            raise InputError(path, f"line {lineno}: non-numeric coordinate or score") from None
        names.append(toks[idx["image_name"]])
        values.append((x, y, s))
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    out = pd.DataFrame(
        {
            MICROGRAPH: pd.Series([_basename(n) for n in names], dtype=str),
            X_PX: arr[:, 0],
            Y_PX: arr[:, 1],
            SCORE: arr[:, 2],
            DIAMETER_PX: np.nan,
        }
    )
    if micrograph is not None:
        out = out.loc[out[MICROGRAPH] == micrograph].reset_index(drop=True)
    return out


def _read_cbox(path: Path, micrograph: str | None, permissive: bool) -> pd.DataFrame:
    text = _head(path, 1 << 16).decode("utf-8", errors="replace")
    if "data_" not in text:  # crYOLO < 1.8: tab-separated x y w h confidence est_w est_h
        rows = _split_table_lines(path, path.read_text(encoding="utf-8", errors="replace"))
        vals: list[list[float]] = []
        for lineno, toks in rows:
            try:
                v = [float(t) for t in toks]
            except ValueError:
                if permissive:
                    continue
                raise InputError(path, f"line {lineno}: non-numeric value") from None
            if len(v) < 5:
                if permissive:
                    continue
                raise InputError(path, f"line {lineno}: {len(v)} values; old .cbox has at least 5")
            vals.append([*v, np.nan, np.nan][:7])
        arr = np.asarray(vals, dtype=np.float64).reshape(-1, 7)
        src = pd.DataFrame(
            {
                "CoordinateX": arr[:, 0],
                "CoordinateY": arr[:, 1],
                "Width": arr[:, 2],
                "Height": arr[:, 3],
                "Confidence": arr[:, 4],
                "EstWidth": arr[:, 5],
                "EstHeight": arr[:, 6],
            }
        )
    else:
        blocks = read_star(path, permissive=permissive)
        src = _coordinate_block(path, blocks, "CoordinateX")
    for col in ("CoordinateY", "Width"):
        if col not in src.columns:
            raise InputError(path, f"cbox lacks the _{col} column")
    cx = _strict_numeric(path, src["CoordinateX"].to_numpy(), "CoordinateX")
    cy = _strict_numeric(path, src["CoordinateY"].to_numpy(), "CoordinateY")
    w = _strict_numeric(path, src["Width"].to_numpy(), "Width")
    h = _strict_numeric(path, src["Height"].to_numpy(), "Height") if "Height" in src.columns else w
    h = np.where(np.isnan(h), w, h)
    out = pd.DataFrame(
        {
            MICROGRAPH: _default_micrograph(path, micrograph),
            X_PX: cx + w / 2.0,
            Y_PX: cy + h / 2.0,
            SCORE: _numeric(src["Confidence"].to_numpy()) if "Confidence" in src.columns else np.nan,
            DIAMETER_PX: _numeric(src["EstWidth"].to_numpy()) if "EstWidth" in src.columns else np.nan,
            BOX_SIZE_PX: w,
        }
    )
    if np.any(h != w):
        out[BOX_HEIGHT_PX] = h
    for col in src.columns:
        if col in ("CoordinateX", "CoordinateY", "Width", "Height", "Confidence", "EstWidth"):
            continue
        out[col] = _numeric(src[col].to_numpy())
    return out


def _read_cs(path: Path, micrograph: str | None, permissive: bool) -> pd.DataFrame:
    arr = read_cs(path, permissive=permissive)
    names = arr.dtype.names or ()
    missing = [f for f in (_CS_X, _CS_Y, _CS_SHAPE) if f not in names]
    if missing:
        raise InputError(path, f"cryoSPARC file lacks the field(s) {', '.join(missing)}")
    shape = np.asarray(arr[_CS_SHAPE])
    if shape.ndim != 2 or shape.shape[1] != 2:
        raise InputError(path, f"{_CS_SHAPE} must hold (ny, nx) per row")
    ny = shape[:, 0].astype(np.int64)
    nx = shape[:, 1].astype(np.int64)
    out = pd.DataFrame(index=range(len(arr)))
    if _CS_PATH in names:
        paths = [
            p.decode("utf-8", errors="replace") if isinstance(p, bytes) else str(p)
            for p in arr[_CS_PATH].tolist()
        ]
        out[MICROGRAPH] = [_basename(p) for p in paths]
        out[_CS_PATH] = paths
    else:
        out[MICROGRAPH] = _default_micrograph(path, micrograph)
    out[X_PX] = np.asarray(arr[_CS_X], dtype=np.float64) * nx
    out[Y_PX] = np.asarray(arr[_CS_Y], dtype=np.float64) * ny
    out[SCORE] = np.asarray(arr[_CS_SCORE], dtype=np.float64) if _CS_SCORE in names else np.nan
    out[DIAMETER_PX] = np.nan
    out[MICROGRAPH_HEIGHT_PX] = ny
    out[MICROGRAPH_WIDTH_PX] = nx
    for name in names:
        if name in (_CS_X, _CS_Y, _CS_SHAPE, _CS_PATH, _CS_SCORE):
            continue
        field = arr.dtype.fields[name][0]  # type: ignore[index]
        if field.shape:
            continue  # vector fields (poses, shifts…) belong to the particle table
        values = arr[name]
        if field.kind == "S":
            out[name] = [v.decode("utf-8", errors="replace") for v in values.tolist()]
        else:
            out[name] = np.asarray(values)
    if micrograph is not None and _CS_PATH in names:
        out = out.loc[out[MICROGRAPH] == micrograph].reset_index(drop=True)
    return out


def read_coords(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    micrograph: str | None = None,
    micrograph_shape: tuple[int, int] | None = None,
    pixel_size_a: float | None = None,
    box_size_px: float | None = None,
    flip_y: bool | None = None,
    permissive: bool = False,
) -> pd.DataFrame:
    """Read a particle coordinate file into the canonical picks table.

    Parameters
    ----------
    path
        The coordinate file.
    fmt
        One of `FORMATS`; detected from the suffix and content when None
        (:func:`detect_format`).
    micrograph
        For files that name no micrograph (``.box``, ``.cbox``, single-micrograph STAR,
        CSV), the ``micrograph`` value of every row (default: the file's stem). For files
        naming several micrographs (STAR with ``rlnMicrographName``, Topaz, ``.cs``,
        CSV with a micrograph column), keep only that micrograph's picks.
    micrograph_shape
        ``(ny, nx)`` of the original micrograph in pixels. When known, picks off the
        micrograph are rejected (or dropped, see ``permissive``); required to undo the
        y flip of CryoPPP CSV files. cryoSPARC files carry their own shape per row.
    pixel_size_a
        Micrograph pixel size (Å); stored in the ``micrograph_pixel_size_a`` column.
    box_size_px
        Box edge for EMAN ``.box`` lines that hold only ``x y`` corners.
    flip_y
        Undo a flipped y axis: ``y_px = (ny - 1) - y``. None means the format's default:
        True for ``"cryoppp"``, False for every other format.
    permissive
        When True, malformed lines are skipped and off-micrograph picks are dropped
        (their count is ``df.attrs["dropped_outside"]``) instead of raising.

    Returns
    -------
    DataFrame
        Canonical picks table (``micrograph, x_px, y_px, score, diameter_px`` first) plus
        the format's other columns: canonical names where one exists (``class_number``,
        ``psi_deg``…), source names otherwise (``rlnMicrographName``, ``box_size_px``,
        ``location/micrograph_path``…). ``df.attrs["format"]`` names the format read;
        ``df.attrs["dropped_outside"]`` is set whenever the micrograph shape is known.

    Raises
    ------
    InputError
        When the file cannot be read as the format, coordinates are not numeric, or
        (strict) picks lie outside the micrograph.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "mic1.box"
    >>> _ = p.write_text("10 20 100 100 0.5\\n")
    >>> read_coords(p)[["micrograph", "x_px", "y_px", "score"]].values.tolist()
    [['mic1', 60.0, 70.0, 0.5]]
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    kind = detect_format(p) if fmt is None else fmt.lower()
    spec = COORDINATE_FORMATS.get(kind)
    if spec is None:
        raise InputError(p, f"unknown coordinate format {fmt!r}; one of {', '.join(FORMATS)}")
    if not spec.empty_ok and not _head(p, 4096).strip():
        raise InputError(p, "is empty: no coordinates")
    shape = _check_shape(micrograph_shape) if micrograph_shape is not None else None
    do_flip = spec.flips_y if flip_y is None else bool(flip_y)
    df = spec.read(p, ReadOptions(micrograph, shape, box_size_px, do_flip, permissive))
    if spec.flips_y:
        do_flip = False  # done inside: the file's own flip
    if do_flip:
        if shape is None:
            raise InputError(p, "is y-flipped: reading it needs the micrograph shape (--micrograph-shape-px NY NX)")
        df[Y_PX] = (shape[0] - 1) - df[Y_PX].to_numpy(dtype=np.float64)
    if pixel_size_a is not None:
        if not pixel_size_a > 0:
            raise InputError("pixel_size_a", f"must be > 0, got {pixel_size_a}")
        df[MICROGRAPH_PIXEL_SIZE_A] = float(pixel_size_a)
    df = validate_picks(df, p)
    if kind == "cs":
        df = _apply_bounds(
            p, df, df[MICROGRAPH_HEIGHT_PX].to_numpy(), df[MICROGRAPH_WIDTH_PX].to_numpy(), permissive
        )
    elif shape is not None:
        df = _apply_bounds(p, df, shape[0], shape[1], permissive)
    df.attrs["format"] = kind
    df.attrs.pop(LOOP_ATTR, None)
    return df


# --------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------


def _fmt_float(v: float) -> str:
    return repr(float(v))


def _single_micrograph(path: Path, picks: pd.DataFrame, fmt: str) -> None:
    n = picks[MICROGRAPH].nunique()
    if n > 1:
        raise InputError(
            path, f"picks of {n} micrographs given; a {fmt} file holds one (write one per micrograph)"
        )


def _box_sizes(path: Path, picks: pd.DataFrame, box_size_px: float | None) -> tuple[np.ndarray, np.ndarray]:
    if box_size_px is not None:
        w = np.full(len(picks), float(box_size_px))
    elif BOX_SIZE_PX in picks.columns:
        w = picks[BOX_SIZE_PX].to_numpy(dtype=np.float64)
    else:
        w = picks[DIAMETER_PX].to_numpy(dtype=np.float64)
    if len(w) and not np.all(np.isfinite(w) & (w > 0)):
        raise InputError(
            path, "box-based formats need a box size: pass box_size_px or give box_size_px/diameter_px"
        )
    h = picks[BOX_HEIGHT_PX].to_numpy(dtype=np.float64) if (
        BOX_HEIGHT_PX in picks.columns and box_size_px is None
    ) else w
    return w, h


def _format_box(path: Path, picks: pd.DataFrame, box_size_px: float | None) -> str:
    _single_micrograph(path, picks, "EMAN .box")
    w, h = _box_sizes(path, picks, box_size_px)
    x0 = picks[X_PX].to_numpy() - w / 2.0
    y0 = picks[Y_PX].to_numpy() - h / 2.0
    score = picks[SCORE].to_numpy(dtype=np.float64)
    with_score = bool(np.isfinite(score).any())
    lines = []
    for i in range(len(picks)):
        fields = [_fmt_float(x0[i]), _fmt_float(y0[i]), _fmt_float(w[i]), _fmt_float(h[i])]
        if with_score:
            fields.append(_fmt_float(score[i]))
        lines.append("\t".join(fields))
    return "\n".join(lines) + ("\n" if lines else "")


def _format_topaz(picks: pd.DataFrame) -> str:
    lines = ["image_name\tx_coord\ty_coord\tscore"]
    for name, x, y, s in zip(
        picks[MICROGRAPH], picks[X_PX], picks[Y_PX], picks[SCORE], strict=True
    ):
        lines.append(f"{name}\t{_fmt_float(x)}\t{_fmt_float(y)}\t{_fmt_float(s)}")
    return "\n".join(lines) + "\n"


def _format_project_csv(picks: pd.DataFrame) -> str:
    cols = [X_PX, Y_PX, DIAMETER_PX]
    if np.isfinite(picks[SCORE].to_numpy(dtype=np.float64)).any():
        cols.append(SCORE)
    if picks[MICROGRAPH].nunique() > 1:
        cols.append(MICROGRAPH)
    buf = io.StringIO()
    picks[cols].to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def _format_cryoppp(path: Path, picks: pd.DataFrame, shape: Shape | None) -> str:
    _single_micrograph(path, picks, "CryoPPP CSV")
    if shape is None:
        raise InputError(path, "CryoPPP CSV is y-flipped: writing it needs the micrograph shape "
                         "(--micrograph-shape-px NY NX)")
    table = pd.DataFrame(
        {
            _CRYOPPP_X: picks[X_PX].to_numpy(),
            _CRYOPPP_Y: (shape[0] - 1) - picks[Y_PX].to_numpy(),
            _CRYOPPP_DIAMETER: picks[DIAMETER_PX].to_numpy(),
        }
    )
    for col in CRYOPPP_COLUMNS[3:]:
        canon = _CRYOPPP_TO_CANON.get(col)
        if canon is not None and canon in picks.columns:
            table[col] = picks[canon].to_numpy()
        elif col in picks.columns:
            table[col] = picks[col].to_numpy()
        else:
            table[col] = np.nan  # written as an empty cell
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def _star_blocks(picks: pd.DataFrame) -> dict[str, pd.DataFrame]:
    table = pd.DataFrame(index=range(len(picks)))
    table["rlnCoordinateX"] = picks[X_PX].to_numpy(dtype=np.float64)
    table["rlnCoordinateY"] = picks[Y_PX].to_numpy(dtype=np.float64)
    if "rlnMicrographName" in picks.columns:
        table["rlnMicrographName"] = picks["rlnMicrographName"].astype(str).to_numpy()
    else:
        table["rlnMicrographName"] = picks[MICROGRAPH].astype(str).to_numpy()
    score = picks[SCORE].to_numpy(dtype=np.float64)
    table["rlnAutopickFigureOfMerit"] = np.where(np.isnan(score), _SENTINEL_OUT, score)
    for canon in (CLASS_NUMBER, PSI_DEG, ROT_DEG, TILT_DEG, OPTICS_GROUP):
        if canon in picks.columns:
            values = picks[canon]
            if canon in (PSI_DEG, ROT_DEG, TILT_DEG):
                v = values.to_numpy(dtype=np.float64)
                table[_CANON_TO_STAR[canon]] = np.where(np.isnan(v), _SENTINEL_OUT, v)
            else:
                table[_CANON_TO_STAR[canon]] = values.to_numpy()
    for col in picks.columns:
        if str(col).startswith("rln") and col not in table.columns:
            table[col] = picks[col].to_numpy()
    table.attrs[LOOP_ATTR] = True
    return {"": table}


def _cbox_blocks(path: Path, picks: pd.DataFrame, box_size_px: float | None) -> dict[str, pd.DataFrame]:
    _single_micrograph(path, picks, "crYOLO .cbox")
    w, h = _box_sizes(path, picks, box_size_px)
    n = len(picks)

    def extra(col: str) -> np.ndarray:
        if col in picks.columns:
            return picks[col].to_numpy(dtype=np.float64)
        return np.full(n, np.nan)

    est_w = picks[DIAMETER_PX].to_numpy(dtype=np.float64)
    est_h = extra("EstHeight") if "EstHeight" in picks.columns else est_w
    table = pd.DataFrame(
        {
            "CoordinateX": picks[X_PX].to_numpy() - w / 2.0,
            "CoordinateY": picks[Y_PX].to_numpy() - h / 2.0,
            "CoordinateZ": extra("CoordinateZ"),
            "Width": w,
            "Height": h,
            "Depth": extra("Depth"),
            "EstWidth": est_w,
            "EstHeight": est_h,
            "Confidence": picks[SCORE].to_numpy(dtype=np.float64),
            "NumBoxes": extra("NumBoxes"),
            "Angle": extra("Angle"),
        }
    )
    table.attrs[LOOP_ATTR] = True
    version = pd.DataFrame({"cbox_format_version": ["1.0"]})
    version.attrs[LOOP_ATTR] = False
    include = pd.DataFrame({"slice_index": pd.Series([], dtype=np.float64)})
    include.attrs[LOOP_ATTR] = True
    return {"global": version, "cryolo": table, "cryolo_include": include}


def _cs_array(path: Path, picks: pd.DataFrame, shape: Shape | None) -> np.ndarray:
    n = len(picks)
    if MICROGRAPH_HEIGHT_PX in picks.columns and MICROGRAPH_WIDTH_PX in picks.columns and shape is None:
        ny = picks[MICROGRAPH_HEIGHT_PX].to_numpy(dtype=np.int64)
        nx = picks[MICROGRAPH_WIDTH_PX].to_numpy(dtype=np.int64)
    elif shape is not None:
        ny = np.full(n, shape[0], dtype=np.int64)
        nx = np.full(n, shape[1], dtype=np.int64)
    else:
        raise InputError(path, "cryoSPARC picks store fractions: writing them needs the micrograph shape "
                         "(--micrograph-shape-px NY NX)")
    if _CS_PATH in picks.columns:
        names = picks[_CS_PATH].astype(str).tolist()
    else:
        names = picks[MICROGRAPH].astype(str).tolist()
    encoded = [s.encode("utf-8") for s in names]
    width = max([len(b) for b in encoded] + [1])
    dtype = np.dtype(
        [
            ("uid", "<u8"),
            (_CS_PATH, f"S{width}"),
            (_CS_X, "<f4"),
            (_CS_Y, "<f4"),
            (_CS_SHAPE, "<u4", (2,)),
            (_CS_SCORE, "<f4"),
        ]
    )
    arr = np.zeros(n, dtype=dtype)
    arr["uid"] = np.arange(1, n + 1, dtype=np.uint64)
    arr[_CS_PATH] = encoded
    arr[_CS_X] = picks[X_PX].to_numpy(dtype=np.float64) / nx
    arr[_CS_Y] = picks[Y_PX].to_numpy(dtype=np.float64) / ny
    arr[_CS_SHAPE] = np.column_stack([ny, nx]).astype(np.uint32)
    arr[_CS_SCORE] = picks[SCORE].to_numpy(dtype=np.float64)
    return arr


# --------------------------------------------------------------------------------------
# the registry: one entry per format
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOptions:
    """What :func:`read_coords` hands a format's reader (see its parameters)."""

    micrograph: str | None
    shape: Shape | None
    box_size_px: float | None
    flip_y: bool
    permissive: bool


@dataclass(frozen=True)
class WriteOptions:
    """What :func:`write_coords` hands a format's writer (see its parameters)."""

    shape: Shape | None
    box_size_px: float | None
    comment: str | None


@dataclass(frozen=True)
class CoordinateFormat:
    """One coordinate format: its name, file suffixes, reader and writer.

    Attributes
    ----------
    name
        The ``fmt`` name.
    suffixes
        File suffixes (lower case); the first is the one written by ``cryoset pick``.
    read
        ``read(path, options) -> picks table`` (before the y flip, bounds and validation
        that :func:`read_coords` applies to every format).
    write
        ``write(path, validated picks, options)``, atomically.
    implied_by_suffix
        Whether :func:`write_coords` picks this format from the suffix alone.
    flips_y
        The file's y axis is flipped; the reader undoes it when ``options.flip_y``.
    empty_ok
        An empty file is a valid file without picks (pickers write them).
    embeds_provenance
        Provenance goes into the file (STAR comment) instead of a sidecar.
    """

    name: str
    suffixes: tuple[str, ...]
    read: Callable[[Path, ReadOptions], pd.DataFrame]
    write: Callable[[Path, pd.DataFrame, WriteOptions], object]
    implied_by_suffix: bool = True
    flips_y: bool = False
    empty_ok: bool = False
    embeds_provenance: bool = False


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


#: Every coordinate format, by name. A new format is one entry here plus its reader/writer.
COORDINATE_FORMATS: dict[str, CoordinateFormat] = {
    f.name: f
    for f in (
        CoordinateFormat(
            "star", (".star",),
            lambda p, o: _read_star(p, o.micrograph, o.permissive),
            lambda p, t, o: write_star(p, _star_blocks(t), comment=o.comment),
            embeds_provenance=True,
        ),
        CoordinateFormat(
            "box", (".box",),
            lambda p, o: _read_box(p, o.micrograph, o.box_size_px, o.permissive),
            lambda p, t, o: _write_text(p, _format_box(p, t, o.box_size_px)),
            empty_ok=True,
        ),
        CoordinateFormat(
            "csv", (".csv",),
            lambda p, o: _read_project_csv(p, o.micrograph),
            lambda p, t, o: _write_text(p, _format_project_csv(t)),
        ),
        CoordinateFormat(
            "cryoppp", (".csv",),
            lambda p, o: _read_cryoppp(p, o.micrograph, o.shape, o.flip_y),
            lambda p, t, o: _write_text(p, _format_cryoppp(p, t, o.shape)),
            implied_by_suffix=False, flips_y=True,
        ),
        CoordinateFormat(
            "topaz", (".txt", ".tsv"),
            lambda p, o: _read_topaz(p, o.micrograph, o.permissive),
            lambda p, t, o: _write_text(p, _format_topaz(t)),
        ),
        CoordinateFormat(
            "cbox", (".cbox",),
            lambda p, o: _read_cbox(p, o.micrograph, o.permissive),
            lambda p, t, o: write_star(p, _cbox_blocks(p, t, o.box_size_px), comment=o.comment),
            empty_ok=True, embeds_provenance=True,
        ),
        CoordinateFormat(
            "cs", (".cs",),
            lambda p, o: _read_cs(p, o.micrograph, o.permissive),
            lambda p, t, o: write_cs(p, _cs_array(p, t, o.shape)),
            empty_ok=True,
        ),
    )
}  # fmt: skip

#: Every format name accepted by :func:`read_coords` / :func:`write_coords`.
FORMATS: tuple[str, ...] = tuple(COORDINATE_FORMATS)

#: Every suffix of a coordinate file, in registry order.
COORDINATE_SUFFIXES: tuple[str, ...] = tuple(dict.fromkeys(s for f in COORDINATE_FORMATS.values() for s in f.suffixes))


def _format_for_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    for spec in COORDINATE_FORMATS.values():
        if spec.implied_by_suffix and suffix in spec.suffixes:
            return spec.name
    raise InputError(path, f"cannot tell the coordinate format from suffix {suffix!r}; give the format explicitly "
                      f"(one of {', '.join(COORDINATE_FORMATS)})")


def write_coords(
    path: str | os.PathLike[str],
    picks: pd.DataFrame,
    *,
    fmt: str | None = None,
    micrograph_shape: tuple[int, int] | None = None,
    box_size_px: float | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a picks table as a coordinate file, atomically.

    Parameters
    ----------
    path
        Destination. With ``fmt=None`` the format follows the suffix: ``.star``,
        ``.box``, ``.csv`` (this project's CSV), ``.cbox``, ``.cs``, ``.txt``/``.tsv``
        (Topaz). The CryoPPP CSV needs ``fmt="cryoppp"``.
    picks
        Canonical picks table (validated with :func:`cryoset.io.schema.validate_picks`).
    fmt
        One of `FORMATS`.
    micrograph_shape
        ``(ny, nx)``; needed by ``"cryoppp"`` (y flip) and ``"cs"`` (fractions) unless the
        table has ``micrograph_height_px``/``micrograph_width_px`` columns (from a
        ``.cs`` file); when given, off-micrograph picks raise InputError.
    box_size_px
        Box edge for ``"box"`` and ``"cbox"``; default: the ``box_size_px`` column,
        then ``diameter_px``.
    provenance
        Provenance record: embedded as a comment in STAR/``.cbox`` files, written as
        the ``<path>.provenance.json`` sidecar for the others.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        When the table is invalid, lacks what the format needs, holds several
        micrographs for a one-micrograph format, or has picks off the micrograph.
    """
    out = Path(path)
    kind = _format_for_suffix(out) if fmt is None else fmt.lower()
    spec = COORDINATE_FORMATS.get(kind)
    if spec is None:
        raise InputError(out, f"unknown coordinate format {fmt!r}; one of {', '.join(FORMATS)}")
    table = validate_picks(picks, out)
    shape = _check_shape(micrograph_shape) if micrograph_shape is not None else None
    if shape is not None:
        bad = outside_mask(table[X_PX].to_numpy(), table[Y_PX].to_numpy(), shape[0], shape[1])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                out, f"{int(bad.sum())} pick(s) lie outside the {shape[0]}×{shape[1]} micrograph "
                f"(first: row {i + 1})"
            )
    comment = None
    if provenance is not None:
        comment = "cryoset provenance: " + json.dumps(dict(provenance), sort_keys=True, default=str)
    spec.write(out, table, WriteOptions(shape, box_size_px, comment if spec.embeds_provenance else None))
    if spec.embeds_provenance:
        return out
    if provenance is not None:
        write_provenance(out, provenance)
    return out
