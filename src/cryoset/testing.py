"""Helpers for tests and benchmarks (ours and users'): locating real fixture data and
external programs, and synthetic RELION particle tables.

``../shared/data`` beside the project root holds real cryo-EM files. Tests that need it
skip with a reason when it is absent and fail when ``CRYOSET_REQUIRE_SHARED_DATA=1``.
The location can be overridden with ``CRYOSET_SHARED_DATA``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path:
    """The root of the real fixture data (may not exist)."""
    env = os.environ.get("CRYOSET_SHARED_DATA")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def require_shared_data(*parts: str) -> Path:
    """Return ``<shared data>/<parts>``; skip the calling test (or fail under CI) when absent."""
    import pytest

    path = shared_data_root().joinpath(*parts)
    if not path.exists():
        msg = f"{path} is absent (the real fixture data in ../shared/data is not beside this clone)"
        if os.environ.get("CRYOSET_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg + " and CRYOSET_REQUIRE_SHARED_DATA=1")
        pytest.skip(msg)
    return path


def require_program(name: str) -> str:
    """Return the path of an external program, or skip the calling test when not installed."""
    import pytest

    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def relion_particle_blocks(rng: np.random.Generator, n: int, *, wide_exponents: bool = False
                           ) -> dict[str, pd.DataFrame]:
    """The blocks of a RELION 3.1 particle STAR file with ``n`` particles and the usual
    ~25 columns (random but plausible values; 3 optics groups).

    ``wide_exponents`` gives ``rlnAutopickFigureOfMerit`` magnitudes from 1e-300 to 1e300
    (a hard case for float parsing).
    """
    import numpy as np
    import pandas as pd

    mic = rng.integers(0, 500, n)
    idx = rng.integers(1, 300, n)
    fom = rng.normal(0, 1, n)
    if wide_exponents:
        fom = fom * 10.0 ** rng.integers(-300, 300, n)
    particles = pd.DataFrame({
        "rlnCoordinateX": np.round(rng.uniform(0, 4096, n), 1),
        "rlnCoordinateY": np.round(rng.uniform(0, 4096, n), 1),
        "rlnImageName": pd.Series([f"{i:06d}@Particles/mic_{m:04d}.mrcs" for i, m in zip(idx, mic, strict=True)],
                                  dtype=str),
        "rlnMicrographName": pd.Series([f"MotionCorr/job002/mic_{m:04d}.mrc" for m in mic], dtype=str),
        "rlnDefocusU": rng.uniform(5000, 30000, n),
        "rlnDefocusV": np.round(rng.uniform(5000, 30000, n), 6),
        "rlnDefocusAngle": rng.uniform(-180, 180, n).astype(np.float32).astype(np.float64),
        "rlnCtfBfactor": np.zeros(n),
        "rlnCtfScalefactor": np.ones(n),
        "rlnPhaseShift": np.zeros(n),
        "rlnAngleRot": rng.uniform(-180, 180, n),
        "rlnAngleTilt": rng.uniform(0, 180, n),
        "rlnAnglePsi": rng.uniform(-180, 180, n),
        "rlnOriginXAngst": np.round(rng.normal(0, 3, n), 5),
        "rlnOriginYAngst": np.round(rng.normal(0, 3, n), 5),
        "rlnClassNumber": rng.integers(1, 51, n),
        "rlnOpticsGroup": rng.integers(1, 4, n),
        "rlnRandomSubset": rng.integers(1, 3, n),
        "rlnGroupNumber": rng.integers(1, 100, n),
        "rlnNormCorrection": rng.normal(1, 0.1, n),
        "rlnLogLikeliContribution": rng.normal(2e5, 1e4, n),
        "rlnMaxValueProbDistribution": rng.uniform(0, 1, n),
        "rlnNrOfSignificantSamples": rng.integers(1, 2000, n),
        "rlnAutopickFigureOfMerit": fom,
    })
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1, 2, 3],
        "rlnOpticsGroupName": pd.Series([f"opticsGroup{i}" for i in (1, 2, 3)], dtype=str),
        "rlnAmplitudeContrast": [0.1] * 3,
        "rlnSphericalAberration": [2.7] * 3,
        "rlnVoltage": [300.0] * 3,
        "rlnImagePixelSize": [1.06, 1.06, 0.83],
        "rlnImageSize": [256] * 3,
        "rlnImageDimensionality": [2] * 3,
    })
    return {"optics": optics, "particles": particles}


def relion_style_star_text(blocks: dict[str, pd.DataFrame]) -> str:
    """The text RELION 3.x writes for ``blocks``: padded labels ``_rlnX #i``, right-aligned
    ``%12.6f`` floats and ``%12d`` integers, a trailing space on every row."""
    lines = ["", "# version 30001", ""]
    for name, df in blocks.items():
        lines += [f"data_{name}", "", "loop_ "]
        lines += [f"_{c} #{i} " for i, c in enumerate(df.columns, start=1)]
        cells = []
        for c in df.columns:
            kind = df[c].dtype.kind
            fmt = "{:12.6f}" if kind == "f" else "{:12d}" if kind == "i" else "{}"
            cells.append([fmt.format(v) for v in df[c].tolist()])
        lines += [" ".join(row) + " " for row in zip(*cells, strict=True)]
        lines += ["", ""]
    return "\n".join(lines)


def relion31_optics_block(pixel: str | float = "2.0", size: int | str = 16, *, voltage: str | float = "300.0",
                          cs: str | float = "2.7", amplitude: str | float = "0.1") -> str:
    """A RELION 3.1 ``data_optics`` block of one 2D optics group, values written as given.

    Values are text on purpose: tests put ``nan``, ``-2.0`` or ``0`` there to check readers.

    >>> print(relion31_optics_block(1.5, 64).splitlines()[-1])
    1 opticsGroup1 1.5 64 2 300.0 2.7 0.1
    """
    return ("\ndata_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnOpticsGroupName #2\n_rlnImagePixelSize #3\n"
            "_rlnImageSize #4\n_rlnImageDimensionality #5\n_rlnVoltage #6\n_rlnSphericalAberration #7\n"
            f"_rlnAmplitudeContrast #8\n1 opticsGroup1 {pixel} {size} 2 {voltage} {cs} {amplitude}\n")
