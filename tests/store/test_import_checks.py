"""``store add`` (import_relion) refuses what it used to store: NaN images, non-positive pixel
sizes, image indices outside the stack and an image size that contradicts the stack (issue #16).
Nothing is written in every case: the experiment never appears."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryoset.errors import InputError
from cryoset.io.mrc import write_stack
from cryoset.store.dataset import ParticleStore
from cryoset.store.exports import import_relion
from cryoset.testing import relion31_optics_block

_PARTICLES = """
data_particles

loop_
_rlnImageName #1
_rlnDefocusU #2
_rlnDefocusV #3
_rlnDefocusAngle #4
_rlnOpticsGroup #5
"""


def _star(folder: Path, *, pixel: str = "2.0", size: int = 16, first: int = 1, n: int = 4,
          voltage: str = "300.0", amplitude: str = "0.1") -> Path:
    rows = "".join(f"{k:06d}@particles.mrcs 15000 14000 10 1\n" for k in range(first, first + n))
    path = folder / "particles.star"
    path.write_text(relion31_optics_block(pixel, size, voltage=voltage, amplitude=amplitude) + _PARTICLES + rows)
    return path


@pytest.fixture
def store(tmp_path: Path, rng: np.random.Generator) -> ParticleStore:
    write_stack(tmp_path / "particles.mrcs", rng.normal(size=(4, 16, 16)).astype(np.float32), 2.0)
    return ParticleStore.create(tmp_path / "store")


def test_good_star_is_stored(store: ParticleStore, tmp_path: Path) -> None:
    assert import_relion(_star(tmp_path), store, "ok") == 4
    assert store.experiments() == ["ok"]


@pytest.mark.parametrize(("star", "message"), [
    ({"pixel": "-2.0"}, r"the pixel size of 4 particles is not a positive number \(first: -2 Å\)"),
    ({"pixel": "0"}, r"the pixel size of 4 particles is not a positive number"),
    ({"pixel": "nan"}, r"the pixel size of 4 particles is not a positive number \(first: nan Å\)"),  # review
    ({"voltage": "0"}, r"voltage_kv must be > 0 kV but is 0 for 4 particles"),  # review
    ({"amplitude": "7"}, r"amplitude_contrast must be in \[0, 1\) but is 7 for 4 particles"),  # review
    ({"first": 3}, r"image 6 of particles.mrcs is out of range: the stack holds 4 images"),
    ({"size": 32}, r"rlnImageSize 32 contradicts the 16×16 px images of particles.mrcs"),
])
def test_bad_metadata_is_refused_before_writing(store: ParticleStore, tmp_path: Path,
                                                star: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        import_relion(_star(tmp_path, **star), store, "bad")  # type: ignore[arg-type]
    assert store.experiments() == [] and list((store.root / "experiments").iterdir()) == []


def test_nan_images_are_refused_and_nothing_is_stored(store: ParticleStore, tmp_path: Path) -> None:
    import warnings

    data = np.ones((4, 16, 16), np.float32)
    data[2, 3, 4] = np.nan
    with mrcfile.new(tmp_path / "particles.mrcs", overwrite=True) as mrc, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mrcfile warns about the NaN it is given
        mrc.set_data(data)
        mrc.set_image_stack()
        mrc.voxel_size = 2.0
    with pytest.raises(InputError, match=r"particles.mrcs: image 3 holds NaN or infinite pixels"):
        import_relion(_star(tmp_path), store, "nan")
    assert store.experiments() == [] and list((store.root / "experiments").iterdir()) == []
