"""Pick inspection: thresholds on NCC and power, on the micrograph's CTF fit and on a
carbon/ice mask (cryoSPARC's "Inspect picks"). Rejected picks are kept with a reason, in
the form of the CryoVirusDB false-positive CSV (``Reason`` column).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = ["InspectionSettings", "inspect_picks"]

REASON = "Reason"


@dataclass(frozen=True)
class InspectionSettings:
    """Acceptance thresholds; None disables a test.

    Attributes
    ----------
    min_ncc
        Reject picks with ``ncc`` below this.
    min_power, max_power
        Reject picks with ``power`` outside this range (too empty / contamination).
    max_ctf_resolution_a
        Reject every pick of a micrograph whose CTF fit resolution (Å) is worse (larger).
    """

    min_ncc: float | None = None
    min_power: float | None = None
    max_power: float | None = None
    max_ctf_resolution_a: float | None = None


def inspect_picks(
    picks: pd.DataFrame,
    settings: InspectionSettings,
    *,
    ctf_resolution_a: Mapping[str, float] | None = None,
    masks: Mapping[str, NDArray[np.bool_]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split picks into accepted and rejected (with the first failed test as ``Reason``).

    Parameters
    ----------
    picks
        Picks table; ``ncc``/``power`` columns are needed only by their thresholds
        (a missing column or NaN value fails that test).
    settings
        Thresholds.
    ctf_resolution_a
        Micrograph name → CTF fit resolution (Å); micrographs not named pass.
    masks
        Micrograph name → boolean ``(ny, nx)`` array, True where picks are unwanted
        (carbon, thick ice, contamination). Picks are looked up at their rounded centre.

    Returns
    -------
    accepted, rejected : DataFrame
        Row subsets of ``picks`` (index reset); ``rejected`` has a ``Reason`` column.
    """
    n = len(picks)
    reason = np.full(n, "", dtype=object)

    def fail(bad: NDArray[np.bool_], why: str) -> None:
        new = bad & (reason == "")
        reason[new] = why

    def column(name: str) -> NDArray[np.float64]:
        if name not in picks.columns:
            return np.full(n, np.nan)
        return pd.to_numeric(picks[name], errors="coerce").to_numpy(np.float64)

    names = picks["micrograph"].astype(str).to_numpy() if n else np.zeros(0, dtype=object)
    if settings.max_ctf_resolution_a is not None and ctf_resolution_a:
        res = np.array([ctf_resolution_a.get(str(m), np.nan) for m in names], dtype=np.float64)
        fail(np.isfinite(res) & (res > settings.max_ctf_resolution_a),
             f"CTF fit worse than {settings.max_ctf_resolution_a:g} A")
    if masks:
        x = np.rint(column("x_px")).astype(np.int64)
        y = np.rint(column("y_px")).astype(np.int64)
        bad = np.zeros(n, dtype=bool)
        for m, mask in masks.items():
            rows = np.flatnonzero(names == m)
            if len(rows) == 0:
                continue
            yy = np.clip(y[rows], 0, mask.shape[0] - 1)
            xx = np.clip(x[rows], 0, mask.shape[1] - 1)
            bad[rows] = mask[yy, xx]
        fail(bad, "on carbon/ice mask")
    if settings.min_ncc is not None:
        v = column("ncc")
        fail(~(v >= settings.min_ncc), f"NCC below {settings.min_ncc:g}")
    if settings.min_power is not None:
        v = column("power")
        fail(~(v >= settings.min_power), f"power below {settings.min_power:g}")
    if settings.max_power is not None:
        v = column("power")
        fail(~(v <= settings.max_power), f"power above {settings.max_power:g}")
    ok = reason == ""
    accepted = picks.loc[ok].reset_index(drop=True)
    rejected = picks.loc[~ok].reset_index(drop=True)
    rejected[REASON] = reason[~ok].astype(str)
    return accepted, rejected
