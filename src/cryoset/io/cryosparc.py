"""cryoSPARC ``.cs`` files: numpy structured arrays saved in the ``.npy`` format.

A ``.cs`` file is ``np.save`` of a one-dimensional structured array whose field names are
``<group>/<field>`` (``blob/path``, ``ctf/df1_A``, ``alignments3D/pose``…). Text fields are
fixed-width bytes (``|S<n>``); vector fields are sub-arrays (``('<f4', (3,))``). Files
are never unpickled: object fields are refused.

:func:`read_cs` / :func:`write_cs` move structured arrays; the mapping to the canonical
particle table (poses, shifts, CTF) lives in :mod:`cryoset.io.particles` and is
documented in ``docs/formats-particles.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_path

#: Field cryoset writes for the phase-flip state of the images (uint8, 1 = phase-flipped).
#: cryoSPARC has no such field and always applies the full CTF; its ``ctf/type`` names where
#: the CTF parameters came from (``b"imported"``, ``b"ctffind4"`` in the shared files), not
#: the state of the images.
PHASE_FLIPPED_FIELD = "cryoset/ctf_phase_flipped"

#: Per field group, the fields cryoSPARC writes in every particle ``.cs`` (as in
#: ``../shared/data/star/cryosparc/*.cs``) that have a safe default, with their dtype, shape
#: and the value written when the table does not provide one. ``alignments*`` entries are
#: written under ``alignments2D/`` or ``alignments3D/`` (``alpha_min`` under 2D only).
CS_DEFAULT_FIELDS: dict[str, tuple[tuple[str, str, tuple[int, ...], float | bytes], ...]] = {
    "blob": (("sign", "<f4", (), -1.0),),
    "ctf": (
        ("type", "S9", (), b"imported"),
        ("exp_group_id", "<u4", (), 0),
        ("phase_shift_rad", "<f4", (), 0.0),
        ("scale", "<f4", (), 1.0),
        ("scale_const", "<f4", (), 0.0),
        ("bfactor", "<f4", (), 0.0),
        ("shift_A", "<f4", (2,), 0.0),
        ("tilt_A", "<f4", (2,), 0.0),
        ("trefoil_A", "<f4", (2,), 0.0),
        ("tetra_A", "<f4", (4,), 0.0),
        ("anisomag", "<f4", (4,), 0.0),
    ),
    "alignments": (
        ("split", "<u4", (), 0),
        ("error", "<f4", (), 0.0),
        ("error_min", "<f4", (), 0.0),
        ("resid_pow", "<f4", (), 0.0),
        ("slice_pow", "<f4", (), 0.0),
        ("image_pow", "<f4", (), 0.0),
        ("cross_cor", "<f4", (), 0.0),
        ("alpha", "<f4", (), 1.0),
        ("alpha_min", "<f4", (), 1.0),
        ("weight", "<f4", (), 0.0),
        ("pose_ess", "<f4", (), 0.0),
        ("shift_ess", "<f4", (), 0.0),
        ("class_posterior", "<f4", (), 1.0),
        ("class", "<u4", (), 0),
        ("class_ess", "<f4", (), 1.0),
    ),
}


def _has_object_fields(dtype: np.dtype) -> bool:
    if dtype.names is None:
        return bool(dtype.hasobject)
    return any(_has_object_fields(dtype.fields[n][0]) for n in dtype.names)  # type: ignore[index]


def read_cs(path: str | os.PathLike[str], *, permissive: bool = False) -> np.ndarray:
    """Read a cryoSPARC ``.cs`` file as a structured array.

    Parameters
    ----------
    path
        The ``.cs`` file.
    permissive
        When True, a zero-dimensional record is returned as a one-element array and a
        file with a ``uid`` field missing is accepted; otherwise both raise.

    Returns
    -------
    ndarray, shape (n,)
        Structured array, one record per particle, fields named ``group/field``.

    Raises
    ------
    InputError
        When the file is not an ``.npy`` structured array, holds Python objects (which would
        need unpickling), or (strict) lacks a ``uid`` field.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(p, "is a directory, not a cryoSPARC .cs file")
    with open(p, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise InputError(p, "is not a cryoSPARC .cs file (no numpy .npy header)")
    try:
        array = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise InputError(p, f"cannot be read without unpickling Python objects ({exc})") from None
    except (OSError, EOFError) as exc:
        raise InputError(p, f"is truncated or corrupt ({exc})") from None
    if not isinstance(array, np.ndarray) or array.dtype.names is None:
        raise InputError(p, "is a numpy array without named fields, not a cryoSPARC .cs table")
    if array.ndim == 0:
        if not permissive:
            raise InputError(p, "holds a single record, not a one-dimensional table")
        array = array.reshape(1)
    if array.ndim != 1:
        raise InputError(p, f"table must be one-dimensional, got shape {array.shape}")
    if "uid" not in array.dtype.names and not permissive:
        raise InputError(p, "lacks the 'uid' field every cryoSPARC table has")
    return array


def write_cs(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a structured array as a cryoSPARC ``.cs`` file, atomically.

    Parameters
    ----------
    path
        Destination; written exactly as ``np.save`` would (the name is kept as given, no
        ``.npy`` suffix is added).
    array : ndarray, shape (n,)
        Structured array with ``group/field`` names and no object fields.

    Returns
    -------
    Path
        ``path``.
    """
    arr = np.asarray(array)
    if arr.dtype.names is None or arr.ndim != 1:
        raise ValueError("array: expected a one-dimensional structured array")
    if _has_object_fields(arr.dtype):
        raise ValueError("array: object fields cannot be written to a .cs file")
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    return out
