"""Canonical column names of the picks and particle tables, and their validation.

Every reader of coordinates or particles (RELION STAR, cryoSPARC ``.cs``, CryoVirusDB CSV,
EMAN ``.box``…) converts into these tables; every writer converts out of them. Columns
with no canonical name are kept under their source name (e.g. ``rlnGroupNumber``,
``blob/path``).

Picks table (one row per pick)
------------------------------
``micrograph`` (str, name without directory), ``x_px``, ``y_px`` (float, particle centre in
pixels of the original micrograph; the centre of pixel ``image[i, j]`` is ``x_px = j``,
``y_px = i``, 0-based), ``score`` (float, NaN if none), ``diameter_px`` (float, NaN if
unknown).

Particle table (one row per particle)
-------------------------------------
The picks columns (where known) plus the constants below (`PARTICLE_COLUMNS`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.errors import InputError

# --- picks ---------------------------------------------------------------------------------
MICROGRAPH = "micrograph"
X_PX = "x_px"
Y_PX = "y_px"
SCORE = "score"
DIAMETER_PX = "diameter_px"

# --- particles -----------------------------------------------------------------------------
IMAGE_INDEX = "image_index"
IMAGE_PATH = "image_path"
PIXEL_SIZE_A = "pixel_size_a"
IMAGE_SIZE_PX = "image_size_px"
MICROGRAPH_PIXEL_SIZE_A = "micrograph_pixel_size_a"
VOLTAGE_KV = "voltage_kv"
CS_MM = "cs_mm"
AMPLITUDE_CONTRAST = "amplitude_contrast"
DEFOCUS_U_A = "defocus_u_a"
DEFOCUS_V_A = "defocus_v_a"
DEFOCUS_ANGLE_DEG = "defocus_angle_deg"
PHASE_SHIFT_DEG = "phase_shift_deg"
CTF_BFACTOR_A2 = "ctf_bfactor_a2"
CTF_SCALE = "ctf_scale"
#: 1 when the images were phase-flipped (``FT ← FT · sign(CTF)``, RELION's
#: ``rlnCtfDataArePhaseFlipped``): the CTF left in them is ``|CTF|``; 0 (or absent) when not.
CTF_PHASE_FLIPPED = "ctf_phase_flipped"
ROT_DEG = "rot_deg"
TILT_DEG = "tilt_deg"
PSI_DEG = "psi_deg"
SHIFT_X_A = "shift_x_a"
SHIFT_Y_A = "shift_y_a"
CLASS_NUMBER = "class_number"
OPTICS_GROUP = "optics_group"
OPTICS_GROUP_NAME = "optics_group_name"
RANDOM_SUBSET = "random_subset"
MAX_PROB = "max_prob"
ESS = "ess"
ECA = "eca"
DETECTOR_PIXEL_SIZE_UM = "detector_pixel_size_um"
MAGNIFICATION = "magnification"

#: Required columns of a picks table, in order.
PICKS_COLUMNS: tuple[str, ...] = (MICROGRAPH, X_PX, Y_PX, SCORE, DIAMETER_PX)

#: Every canonical column of a particle table, in order (all optional).
PARTICLE_COLUMNS: tuple[str, ...] = (
    *PICKS_COLUMNS,
    IMAGE_INDEX,
    IMAGE_PATH,
    PIXEL_SIZE_A,
    IMAGE_SIZE_PX,
    MICROGRAPH_PIXEL_SIZE_A,
    VOLTAGE_KV,
    CS_MM,
    AMPLITUDE_CONTRAST,
    DEFOCUS_U_A,
    DEFOCUS_V_A,
    DEFOCUS_ANGLE_DEG,
    PHASE_SHIFT_DEG,
    CTF_BFACTOR_A2,
    CTF_SCALE,
    CTF_PHASE_FLIPPED,
    ROT_DEG,
    TILT_DEG,
    PSI_DEG,
    SHIFT_X_A,
    SHIFT_Y_A,
    CLASS_NUMBER,
    OPTICS_GROUP,
    OPTICS_GROUP_NAME,
    RANDOM_SUBSET,
    MAX_PROB,
    ESS,
    ECA,
    DETECTOR_PIXEL_SIZE_UM,
    MAGNIFICATION,
)

#: Canonical columns holding text.
STRING_COLUMNS: frozenset[str] = frozenset({MICROGRAPH, IMAGE_PATH, OPTICS_GROUP_NAME})

#: Canonical columns holding integers (when no value is missing).
INTEGER_COLUMNS: frozenset[str] = frozenset(
    {IMAGE_INDEX, IMAGE_SIZE_PX, CLASS_NUMBER, OPTICS_GROUP, RANDOM_SUBSET, CTF_PHASE_FLIPPED}
)

#: Integer columns that are flags: only 0 and 1 are allowed.
FLAG_COLUMNS: frozenset[str] = frozenset({CTF_PHASE_FLIPPED})

#: Canonical columns holding floats.
FLOAT_COLUMNS: frozenset[str] = frozenset(
    c for c in PARTICLE_COLUMNS if c not in STRING_COLUMNS and c not in INTEGER_COLUMNS
)


def empty_picks() -> pd.DataFrame:
    """A picks table with no rows and the canonical columns and dtypes.

    Returns
    -------
    DataFrame
        Columns `PICKS_COLUMNS`: ``micrograph`` str, the others float64.

    Examples
    --------
    >>> list(empty_picks().columns)
    ['micrograph', 'x_px', 'y_px', 'score', 'diameter_px']
    """
    return pd.DataFrame(
        {
            MICROGRAPH: pd.Series([], dtype=str),
            X_PX: pd.Series([], dtype=np.float64),
            Y_PX: pd.Series([], dtype=np.float64),
            SCORE: pd.Series([], dtype=np.float64),
            DIAMETER_PX: pd.Series([], dtype=np.float64),
        }
    )


def _coerce_float(df: pd.DataFrame, column: str, path: str | os.PathLike[str] | None) -> None:
    try:
        df[column] = pd.to_numeric(df[column], errors="raise").astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"column {column!r} must be numeric ({exc})") from None


def validate_picks(df: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Check a picks table and return a copy with canonical dtypes.

    ``x_px``, ``y_px`` must be present, numeric and finite; ``micrograph`` must be present;
    ``score`` and ``diameter_px`` are added as NaN when absent. Extra columns are kept.

    Parameters
    ----------
    df
        The table to check.
    path
        The file the table came from (named in errors).

    Returns
    -------
    DataFrame
        A copy with ``micrograph`` as str and the coordinate columns as float64, the
        canonical columns first.

    Raises
    ------
    InputError
        When a required column is missing or has non-numeric / non-finite values.
    """
    missing = [c for c in (MICROGRAPH, X_PX, Y_PX) if c not in df.columns]
    if missing:
        raise InputError(path, f"picks table lacks required column(s) {', '.join(missing)}")
    out = df.copy()
    for column in (SCORE, DIAMETER_PX):
        if column not in out.columns:
            out[column] = np.nan
    for column in (X_PX, Y_PX, SCORE, DIAMETER_PX):
        _coerce_float(out, column, path)
    for column in (X_PX, Y_PX):
        bad = ~np.isfinite(out[column].to_numpy())
        if bad.any():
            raise InputError(
                path, f"column {column!r} has {int(bad.sum())} non-finite value(s)"
            )
    if out[MICROGRAPH].isna().any():
        raise InputError(path, "column 'micrograph' has missing values")
    out[MICROGRAPH] = out[MICROGRAPH].astype(str)
    order = [*PICKS_COLUMNS, *[c for c in out.columns if c not in PICKS_COLUMNS]]
    return out[order].reset_index(drop=True)


def validate_particles(
    df: pd.DataFrame,
    path: str | os.PathLike[str] | None = None,
    *,
    required: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Check a particle table: required columns present, canonical columns of the right kind.

    Parameters
    ----------
    df
        The table to check.
    path
        The file the table came from (named in errors).
    required
        Canonical columns that must be present (e.g. ``("image_path", "image_index")``).

    Returns
    -------
    DataFrame
        A copy with canonical float columns as float64, integer columns as int64 (or
        nullable ``Int64`` when values are missing) and string columns as str.

    Raises
    ------
    InputError
        Naming the missing or mistyped columns.
    """
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(path, f"particle table lacks required column(s) {', '.join(missing)}")
    out = df.copy()
    for column in out.columns:
        if column in FLOAT_COLUMNS:
            _coerce_float(out, column, path)
        elif column in INTEGER_COLUMNS:
            try:
                values = pd.to_numeric(out[column], errors="raise")
            except (TypeError, ValueError) as exc:
                raise InputError(path, f"column {column!r} must be integer ({exc})") from None
            if values.isna().any():
                out[column] = values.astype("Int64")
            else:
                as_float = values.to_numpy(dtype=np.float64)
                if not np.array_equal(as_float, np.round(as_float)):
                    raise InputError(path, f"column {column!r} must hold whole numbers")
                out[column] = values.astype(np.int64)
            if column in FLAG_COLUMNS and not pd.Series(values).dropna().isin((0, 1)).all():
                raise InputError(path, f"column {column!r} is a flag: only 0 and 1 are allowed")
        elif column in STRING_COLUMNS:
            out[column] = out[column].astype(str)
    return out


def phase_flipped(df: pd.DataFrame) -> NDArray[np.bool_]:
    """Per-row phase-flip state of a particle table (``ctf_phase_flipped``; absent or NA: False).

    Parameters
    ----------
    df
        A canonical particle table.

    Returns
    -------
    ndarray of bool, shape (len(df),)
        True where the images were phase-flipped, so the CTF to apply to them is ``|CTF|``.
    """
    if CTF_PHASE_FLIPPED not in df.columns:
        return np.zeros(len(df), dtype=bool)
    values = pd.to_numeric(df[CTF_PHASE_FLIPPED], errors="coerce").fillna(0)
    return np.asarray(values.to_numpy(np.float64) != 0, dtype=bool)


def canonical_first(df: pd.DataFrame) -> pd.DataFrame:
    """Reorder columns: canonical particle columns first (`PARTICLE_COLUMNS` order), then the rest."""
    first = [c for c in PARTICLE_COLUMNS if c in df.columns]
    rest = [c for c in df.columns if c not in PARTICLE_COLUMNS]
    return df[first + rest]
