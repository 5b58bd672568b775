"""The contrast transfer function: the model (:mod:`cryoset.ctf.model`) and its estimation
from micrographs (:mod:`cryoset.ctf.estimate`, :mod:`cryoset.ctf.patches`)."""

from cryoset.ctf.model import (
    CTFParams,
    ctf_1d,
    ctf_2d,
    ctf_2d_batch,
    electron_wavelength_a,
    frequency_grid,
)

__all__ = [
    "CTFParams",
    "ctf_1d",
    "ctf_2d",
    "ctf_2d_batch",
    "electron_wavelength_a",
    "frequency_grid",
]
