"""Particle loading for classify2d / reconstruct refuses bad input with one clear sentence
(issue #16): non-positive pixel sizes, NaN images, an image size that contradicts the stack,
and NaN CTF values reported as NaN (not as missing CTF parameters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.classify.data import require_ctf
from cryoset.errors import InputError
from cryoset.io.mrc import write_stack
from cryoset.testing import relion31_optics_block
from cryoset.workflows.particle_images import load_star

_PARTICLES = """
data_particles

loop_
_rlnImageName #1
_rlnDefocusU #2
_rlnDefocusV #3
_rlnDefocusAngle #4
_rlnOpticsGroup #5
000001@particles.mrcs 15000 14000 10 1
000002@particles.mrcs {defocus} 14000 10 1
"""


def _write(folder: Path, images: np.ndarray, *, pixel: str = "2.0", size: int = 16,
           defocus: str = "15000") -> Path:
    if np.isfinite(images).all():  # a NaN stack is written by the test itself
        write_stack(folder / "particles.mrcs", images, 2.0)
    path = folder / "particles.star"
    path.write_text(relion31_optics_block(pixel, size) + _PARTICLES.format(defocus=defocus))
    return path


@pytest.mark.parametrize("pixel", ["-2.0", "0.0"])
def test_a_non_positive_pixel_size_is_refused(tmp_path: Path, rng: np.random.Generator, pixel: str) -> None:
    star = _write(tmp_path, rng.normal(size=(2, 16, 16)).astype(np.float32), pixel=pixel)
    with pytest.raises(InputError, match=rf"the pixel size {float(pixel)} Å is not a positive number"):
        load_star(star)


def test_an_image_size_contradicting_the_stack_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    star = _write(tmp_path, rng.normal(size=(2, 16, 16)).astype(np.float32), size=32)
    with pytest.raises(InputError, match=r"rlnImageSize 32 contradicts the 16×16 px images of particles.mrcs"):
        load_star(star)


def test_nan_images_are_refused_naming_the_stack(tmp_path: Path) -> None:
    import warnings

    import mrcfile

    data = np.ones((2, 16, 16), np.float32)
    data[1, 0, 0] = np.nan
    with mrcfile.new(tmp_path / "particles.mrcs") as mrc, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mrc.set_data(data)
        mrc.set_image_stack()
        mrc.voxel_size = 2.0
    star = _write(tmp_path, data)
    with pytest.raises(InputError, match=r"particles.mrcs: 1 of the 2 particle images read hold NaN .*image 2"):
        load_star(star)


def test_nan_ctf_is_reported_as_nan_and_missing_ctf_as_missing(tmp_path: Path, rng: np.random.Generator) -> None:
    star = _write(tmp_path, rng.normal(size=(2, 16, 16)).astype(np.float32), defocus="nan")
    table = load_star(star).table
    with pytest.raises(InputError, match=r"defocus_u_a is NaN or not finite for 1 of 2 particles \(first: particle 2\)"):
        require_ctf(table, star)
    with pytest.raises(InputError, match=r"particles lack CTF parameters \(defocus_u_a\); use --no-ctf"):
        require_ctf(table.drop(columns="defocus_u_a"), star)
    require_ctf(pd.concat([table.iloc[:1]] * 2, ignore_index=True), star)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("voltage_kv", 0.0, r"voltage_kv must be > 0 kV but is 0 for 2 of 2 particles"),
    ("cs_mm", -1.0, r"cs_mm must be >= 0 mm but is -1 for 2 of 2 particles"),
    ("amplitude_contrast", 7.0, r"amplitude_contrast must be in \[0, 1\) but is 7 for 2 of 2 particles"),
])
def test_impossible_optics_are_refused_in_one_line(column: str, value: float, message: str) -> None:
    """Issue #16 review: a STAR with rlnVoltage 0 (or amplitude contrast 7) ended classify2d and
    reconstruct in a ValueError traceback from the CTF model."""
    table = pd.DataFrame({"defocus_u_a": [1e4, 1e4], "defocus_v_a": [1e4, 1e4], "defocus_angle_deg": [0.0, 0.0],
                          "voltage_kv": [300.0, 300.0], "cs_mm": [2.7, 2.7], "amplitude_contrast": [0.1, 0.1]})
    require_ctf(table, "p.star")
    with pytest.raises(InputError, match=message):
        require_ctf(table.assign(**{column: value}), "p.star")
