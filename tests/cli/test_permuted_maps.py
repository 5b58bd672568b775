"""Maps stored with permuted axes (a deposited MicroED map: space group 4, MAPC/MAPR/MAPS =
3,1,2, an extended header, anisotropic voxels) through ``info`` and ``map prepare``, and the
warning for atoms outside a map (issue #16)."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryoset.io.mrc import read_map

SHAPE_ZYX = (10, 14, 18)
VOXEL_ZYX = (2.0, 1.5, 1.2)
START_ZYX = (-3, 2, 5)  # nstart in voxels: origin (z, y, x) = (-6.0, 3.0, 6.0) Å
_AXIS = {3: 0, 2: 1, 1: 2}  # MRC axis number → numpy axis of (z, y, x)


def _write(path: Path, truth: np.ndarray, axes: tuple[int, int, int], *, ispg: int = 4) -> Path:
    """Store ``truth`` (z, y, x) the crystallographic way with MAPC/MAPR/MAPS = ``axes``."""
    mapc, mapr, maps = axes
    stored = np.ascontiguousarray(np.transpose(truth, (_AXIS[maps], _AXIS[mapr], _AXIS[mapc])))
    nz, ny, nx = truth.shape
    vz, vy, vx = VOXEL_ZYX
    start = {1: START_ZYX[2], 2: START_ZYX[1], 3: START_ZYX[0]}
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(stored)
        mrc.set_extended_header(np.frombuffer(bytes(range(256)) * 2, dtype="V1"))
        h = mrc.header
        h.exttyp = b"CCP4"
        h.ispg = ispg
        h.mapc, h.mapr, h.maps = mapc, mapr, maps
        h.mx, h.my, h.mz = nx, ny, nz
        h.cella = (vx * nx, vy * ny, vz * nz)
        h.nxstart, h.nystart, h.nzstart = start[mapc], start[mapr], start[maps]
    return path


@pytest.fixture
def density(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.1, 1.0, size=SHAPE_ZYX).astype(np.float32)


def _ala(atoms: dict[str, tuple[float, float, float]]) -> str:
    lines = [f"ATOM  {k + 1:5d}  {name:<3s} ALA A   1    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           {name[0]}"
             for k, (name, (x, y, z)) in enumerate(atoms.items())]
    return "\n".join(lines) + "\nEND\n"


def test_info_reads_a_microed_style_map_in_the_zyx_frame(run_cli, tmp_path: Path, density: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Was: "an image stack must be stored with axis order (1, 2, 3)"."""
    path = _write(tmp_path / "microed.map", density, (3, 1, 2))
    code, out, err = run_cli("info", path, "--json")
    assert code == 0, err
    (summary,) = json.loads(out)["files"]
    assert summary["shape_zyx"] == list(SHAPE_ZYX)
    assert summary["voxel_size_a"] == pytest.approx(VOXEL_ZYX, rel=1e-6)
    assert summary["origin_a"] == pytest.approx(np.multiply(START_ZYX, VOXEL_ZYX), rel=1e-6)


def test_info_json_never_prints_bare_nan(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "nan_header.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones((2, 3, 4), np.float32))
        mrc.voxel_size = 1.0
        mrc.header.dmean = np.nan
    code, out, err = run_cli("info", path, "--json")
    assert code == 0, err
    assert "NaN" not in out and json.loads(out)["files"][0]["dmean"] is None


@pytest.mark.parametrize("axes", [(1, 2, 3), (3, 1, 2), (2, 3, 1)])
def test_prepare_puts_a_known_atom_at_the_right_voxel_of_an_anisotropic_permuted_map(
    run_cli, tmp_path: Path, density: np.ndarray, axes: tuple[int, int, int]  # type: ignore[no-untyped-def]
) -> None:
    """Resampled to 1 Å, the map keeps the centre of voxel 0 at the origin; the Cα at
    (x, y, z) = (12.3, 9.2, 4.6) Å goes to voxel floor(p − origin + 0.5) = (11, 6, 6) (z, y, x),
    whatever the stored axis order."""
    path = _write(tmp_path / "m.map", density, axes)
    model = tmp_path / "ala.pdb"
    model.write_text(_ala({"N": (11.0, 9.2, 4.6), "CA": (12.3, 9.2, 4.6), "C": (13.6, 9.2, 4.6)}))
    out = tmp_path / "prepared"
    code, _, err = run_cli("map", "prepare", path, "--model", model, "--out", out, "--no-subgrids")
    assert code == 0 and err == "", err
    norm = read_map(out / "emd_normalized_map.mrc")
    # n' = round(n · v / 1 Å) per axis; origin unchanged
    assert norm.data.shape == (20, 21, 22)
    assert norm.origin_a == pytest.approx((-6.0, 3.0, 6.0), abs=1e-4)
    ca = read_map(out / "atom_ca_emd_normalized_map.mrc").data
    assert list(zip(*np.nonzero(ca), strict=True)) == [(11, 6, 6)]
    backbone = read_map(out / "atom_emd_normalized_map.mrc").data
    assert backbone[11, 6, 6] == 1 and backbone[11, 6, 5] == 2 and backbone[11, 6, 8] == 3


def test_prepare_warns_about_atoms_outside_and_refuses_a_model_entirely_outside(
    run_cli, tmp_path: Path, density: np.ndarray  # type: ignore[no-untyped-def]
) -> None:
    path = _write(tmp_path / "m.map", density, (1, 2, 3), ispg=1)
    partly = tmp_path / "partly.pdb"
    partly.write_text(_ala({"N": (11.0, 9.2, 4.6), "CA": (12.3, 9.2, 4.6), "C": (300.0, 9.2, 4.6)}))
    code, out, err = run_cli("map", "prepare", path, "--model", partly, "--out", tmp_path / "a", "--no-subgrids")
    assert code == 0
    assert err.strip() == (f"warning: {partly}: 1 of 3 backbone atoms (Cα, N, C) lie outside the 20×21×22 "
                           "map grid and are not labelled")
    far = tmp_path / "far.pdb"
    far.write_text(_ala({"N": (500.0, 0.0, 0.0), "CA": (501.0, 0.0, 0.0), "C": (502.0, 0.0, 0.0)}))
    code, out, err = run_cli("map", "prepare", path, "--model", far, "--out", tmp_path / "b", "--no-subgrids")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {far}: none of the 3 backbone atoms (Cα, N, C) lies inside the 20×21×22 map grid")
    assert not (tmp_path / "b").exists()
