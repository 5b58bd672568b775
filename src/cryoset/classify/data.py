"""Per-particle CTF arrays of a canonical particle table, for classification and reconstruction.

Reading the images and the table from files is :mod:`cryoset.workflows.particle_images`'s job.

Phase-flipped images (``ctf_phase_flipped`` = 1, RELION's ``rlnCtfDataArePhaseFlipped``)
already carry ``sign(CTF)``: the CTF left in them is ``|CTF|``, so :func:`ctf_images` returns
``|CTF|`` for them and :func:`ctf_parameters` marks them (``phase_flipped``) for the
reconstruction, which then uses ``|CTF|`` in the forward model and ``CTF²`` in the weights.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.errors import InputError

#: Canonical CTF columns (the rest default: phase shift 0, B-factor 0).
CTF_COLUMNS = ("defocus_u_a", "defocus_v_a", "defocus_angle_deg", "voltage_kv", "cs_mm",
               "amplitude_contrast")


def has_ctf(table: pd.DataFrame) -> bool:
    """Whether every particle has the CTF columns."""
    return all(c in table.columns and table[c].notna().all() for c in CTF_COLUMNS)


def require_ctf(table: pd.DataFrame, source: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` (naming ``source``) unless every particle has finite CTF values.

    Missing columns and NaN values are told apart: a NaN defocus is reported as NaN, not as
    missing CTF parameters.
    """
    missing = [c for c in CTF_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(source, f"particles lack CTF parameters ({', '.join(missing)}); use --no-ctf")
    for c in CTF_COLUMNS:
        values = pd.to_numeric(table[c], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise InputError(source, f"{c} is NaN or not finite for {int(bad.sum())} of {len(values)} "
                             f"particles (first: particle {int(np.argmax(bad)) + 1})")
    # the ranges the CTF model accepts (CTFParams), checked here so they are one line naming the file
    for c, ok, what in (("voltage_kv", lambda v: v > 0, "> 0 kV"), ("cs_mm", lambda v: v >= 0, ">= 0 mm"),
                        ("amplitude_contrast", lambda v: (v >= 0) & (v < 1), "in [0, 1)")):
        values = pd.to_numeric(table[c], errors="coerce").to_numpy(np.float64)
        bad = ~ok(values)
        if bad.any():
            raise InputError(source, f"{c} must be {what} but is {values[np.argmax(bad)]:g} for {int(bad.sum())} "
                             f"of {len(values)} particles (first: particle {int(np.argmax(bad)) + 1})")


def ctf_parameters(table: pd.DataFrame) -> dict[str, NDArray[np.float64]]:
    """Per-particle CTF arrays for :func:`cryoset.recon.reconstruct.backproject`.

    ``phase_flipped`` is 1.0 for phase-flipped images (``ctf_phase_flipped``), else 0.0.
    """
    from cryoset.io.schema import phase_flipped

    n = len(table)

    def col(name: str, default: float) -> NDArray[np.float64]:
        if name in table.columns:
            return np.asarray(pd.to_numeric(table[name]).fillna(default), np.float64)
        return np.full(n, default)

    out = {c: col(c, 0.0) for c in CTF_COLUMNS}
    out["phase_shift_deg"] = col("phase_shift_deg", 0.0)
    out["bfactor_a2"] = col("ctf_bfactor_a2", 0.0)
    out["phase_flipped"] = phase_flipped(table).astype(np.float64)
    for shared in ("voltage_kv", "cs_mm", "amplitude_contrast"):
        if np.unique(out[shared]).size > 1:
            raise InputError(shared, "must be the same for every particle (split the optics groups)")
    return out


def ctf_images(table: pd.DataFrame, box: int, pixel_size_a: float) -> NDArray[np.float32]:
    """The CTF left in every particle on the ``box × box`` ``rfft2`` grid, shape (n, box, box//2 + 1).

    ``CTF`` for ordinary images, ``|CTF|`` for phase-flipped ones (``ctf_phase_flipped``).
    """
    from cryoset.ctf.model import ctf_2d_batch

    p = ctf_parameters(table)
    ctf = ctf_2d_batch(p["defocus_u_a"], p["defocus_v_a"], p["defocus_angle_deg"], (box, box),
                       pixel_size_a, voltage_kv=float(p["voltage_kv"][0]), cs_mm=float(p["cs_mm"][0]),
                       amplitude_contrast=float(p["amplitude_contrast"][0]),
                       phase_shift_deg=p["phase_shift_deg"], bfactor_a2=p["bfactor_a2"], rfft=True)
    flipped = p["phase_flipped"] != 0
    if flipped.any():
        ctf[flipped] = np.abs(ctf[flipped])
    return ctf
