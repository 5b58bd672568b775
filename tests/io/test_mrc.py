"""MRC IO: exact round trips, axis order, the physical frame, strict errors, lazy stacks."""

from __future__ import annotations

import io
import struct
from contextlib import redirect_stdout
from pathlib import Path

import gemmi
import mrcfile
import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from cryoset.errors import InputError
from cryoset.io.mrc import (
    read_header,
    read_map,
    read_stack,
    require_pixel_size,
    validate_mrc,
    write_map,
    write_stack,
)
from cryoset.provenance import make_provenance, read_provenance
from cryoset.testing import require_program, require_shared_data

# byte offsets of MRC2014 header words
OFF_NZ, OFF_MODE, OFF_MAPC, OFF_MAP = 8, 12, 64, 208


def _mrcfile_valid(path: Path) -> bool:
    with redirect_stdout(io.StringIO()):
        return bool(mrcfile.validate(str(path)))


def _patch(path: Path, offset: int, payload: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(payload)


@pytest.fixture
def good_map(tmp_path: Path, rng: np.random.Generator) -> Path:
    return write_map(tmp_path / "good.mrc", rng.normal(size=(6, 7, 8)).astype(np.float32), 1.5)


# --------------------------------------------------------------------------- round trips


def test_write_read_map_exact_round_trip_anisotropic(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    path = write_map(tmp_path / "m.mrc", data, (1.25, 2.5, 0.75), origin_a=(-10.0, 3.5, 42.25))
    m = read_map(path)
    np.testing.assert_array_equal(m.data, data)
    assert m.data.dtype == np.float32
    np.testing.assert_allclose(m.voxel_size_a, (1.25, 2.5, 0.75), rtol=1e-6)
    np.testing.assert_allclose(m.origin_a, (-10.0, 3.5, 42.25), rtol=1e-6)
    assert validate_mrc(path) == []
    assert _mrcfile_valid(path)
    # header statistics are the true ones
    h = m.header
    d64 = data.astype(np.float64)
    assert h["dmin"] == pytest.approx(d64.min(), rel=1e-6)
    assert h["dmax"] == pytest.approx(d64.max(), rel=1e-6)
    assert h["dmean"] == pytest.approx(d64.mean(), rel=1e-5, abs=1e-6)
    assert h["rms"] == pytest.approx(d64.std(), rel=1e-5)
    assert h["mode"] == 2 and h["nversion"] in (20140, 20141)


@pytest.mark.parametrize(("dtype", "mode"), [("float16", 12), ("int8", 0)])
def test_write_map_float16_and_int8(tmp_path: Path, rng: np.random.Generator, dtype: str, mode: int) -> None:
    data = rng.integers(-100, 100, size=(4, 5, 6)).astype(np.float32)  # exact in both
    path = write_map(tmp_path / f"{dtype}.mrc", data, 2.0, dtype=dtype)  # type: ignore[arg-type]
    m = read_map(path)
    assert m.header["mode"] == mode
    np.testing.assert_array_equal(m.data, data)
    assert validate_mrc(path) == []
    if mode == 0:  # (mrcfile.validate computes float16 statistics in float16 and overflows)
        assert _mrcfile_valid(path)
    assert path.stat().st_size == 1024 + data.size * (2 if mode == 12 else 1)


def test_write_map_int8_refuses_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int8"):
        write_map(tmp_path / "x.mrc", np.full((2, 2, 2), 300.0), 1.0, dtype="int8")
    assert not (tmp_path / "x.mrc").exists()


def test_write_map_provenance_label_and_sidecar(tmp_path: Path) -> None:
    record = make_provenance("test write", {"a": 1}, argv=["cryoset", "x"])
    path = write_map(tmp_path / "p.mrc", np.zeros((2, 3, 4), np.float32), 1.0, provenance=record)
    labels = read_map(path).header["labels"]
    assert len(labels) == 1 and labels[0].startswith("cryoset ") and "test write" in labels[0]
    assert read_provenance(path)["parameters"] == {"a": 1}
    assert validate_mrc(path) == []


@pytest.mark.parametrize(("suffix", "magic", "kind"), [(".gz", b"\x1f\x8b", "gzip"), (".bz2", b"BZh", "bzip2")])
def test_compressed_round_trip(
    tmp_path: Path, rng: np.random.Generator, suffix: str, magic: bytes, kind: str
) -> None:
    data = rng.normal(size=(3, 4, 5)).astype(np.float32)
    path = write_map(tmp_path / f"m.mrc{suffix}", data, 1.0, origin_a=(1.0, 2.0, 3.0))
    assert path.read_bytes()[: len(magic)] == magic
    m = read_map(path)
    np.testing.assert_array_equal(m.data, data)
    assert m.origin_a == (1.0, 2.0, 3.0)
    assert m.header["compression"] == kind
    assert validate_mrc(path) == []
    stack = read_stack(write_stack(tmp_path / f"s.mrcs{suffix}", data, 1.5))
    assert not isinstance(stack.data, np.memmap)  # compressed: read whole, no lazy access
    np.testing.assert_array_equal(stack.data, data)
    assert stack.pixel_size_a == 1.5


def test_writers_refuse_nan(tmp_path: Path) -> None:
    bad = np.zeros((2, 2, 2), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_map(tmp_path / "n.mrc", bad, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        write_stack(tmp_path / "n.mrcs", bad, 1.0)
    assert list(tmp_path.iterdir()) == []  # atomic: nothing left behind


def test_real_gzip_map_equals_uncompressed() -> None:
    root = require_shared_data("maps", "emd_3197")
    plain, gz = read_map(root / "EMD-3197.map"), read_map(root / "emd_3197.map.gz")
    np.testing.assert_array_equal(plain.data, gz.data)
    assert plain.origin_a == gz.origin_a == (0.0, 0.0, -2 * 11.4)  # nstart (x=-2, 0, 0)


# --------------------------------------------------------------------------- axis order and frame


def test_permuted_axis_order_is_transposed_to_zyx(tmp_path: Path, rng: np.random.Generator) -> None:
    """A file stored with columns=Z, rows=X, sections=Y reads back as the same (z, y, x) array."""
    nz, ny, nx = 4, 5, 6
    vz, vy, vx = 1.5, 2.0, 2.5
    truth = rng.normal(size=(nz, ny, nx)).astype(np.float32)
    stored = np.ascontiguousarray(np.transpose(truth, (1, 2, 0)))  # (sections=Y, rows=X, cols=Z)
    path = tmp_path / "permuted.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(stored)
        h = mrc.header
        h.mapc, h.mapr, h.maps = 3, 1, 2
        h.mx, h.my, h.mz = nx, ny, nz
        h.cella = (vx * nx, vy * ny, vz * nz)
        h.nxstart, h.nystart, h.nzstart = -3, 5, 7  # start of columns (Z), rows (X), sections (Y)
    m = read_map(path)
    np.testing.assert_array_equal(m.data, truth)
    np.testing.assert_allclose(m.voxel_size_a, (vz, vy, vx))
    np.testing.assert_allclose(m.origin_a, (-3 * vz, 7 * vy, 5 * vx))
    # and a written copy is canonical (1, 2, 3) and identical
    copy = read_map(write_map(tmp_path / "copy.mrc", m.data, m.voxel_size_a, m.origin_a))
    assert (copy.header["mapc"], copy.header["mapr"], copy.header["maps"]) == (1, 2, 3)
    np.testing.assert_array_equal(copy.data, truth)
    np.testing.assert_allclose(copy.origin_a, m.origin_a, rtol=1e-6)


_AXIS_ORDERS = [(1, 2, 3), (1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1)]


def _write_permuted(path: Path, truth_zyx: np.ndarray, voxel_zyx: tuple[float, float, float],
                    start_zyx: tuple[int, int, int], axes: tuple[int, int, int], *, ispg: int = 4,
                    extended: bytes = b"") -> Path:
    """Store ``truth_zyx`` with MAPC/MAPR/MAPS = ``axes`` the way a crystallographic program
    does: sections/rows/columns are the axes ``maps/mapr/mapc``, MX/MY/MZ and CELLA stay
    X/Y/Z, NXSTART/NYSTART/NZSTART are the column/row/section starts."""
    mapc, mapr, maps = axes
    zyx_axis = {3: 0, 2: 1, 1: 2}  # MRC axis number → numpy axis of (z, y, x)
    stored = np.ascontiguousarray(np.transpose(truth_zyx, (zyx_axis[maps], zyx_axis[mapr], zyx_axis[mapc])))
    nz, ny, nx = truth_zyx.shape
    vz, vy, vx = voxel_zyx
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(stored)
        if extended:
            mrc.set_extended_header(np.frombuffer(extended, dtype="V1"))
            mrc.header.exttyp = b"CCP4"
        h = mrc.header
        h.ispg = ispg
        h.mapc, h.mapr, h.maps = mapc, mapr, maps
        h.mx, h.my, h.mz = nx, ny, nz
        h.cella = (vx * nx, vy * ny, vz * nz)
        start_xyz = {1: start_zyx[2], 2: start_zyx[1], 3: start_zyx[0]}
        h.nxstart, h.nystart, h.nzstart = start_xyz[mapc], start_xyz[mapr], start_xyz[maps]
    return path


@pytest.mark.parametrize("axes", _AXIS_ORDERS, ids=[f"{a}{b}{c}" for a, b, c in _AXIS_ORDERS])
def test_every_axis_order_loads_the_same_zyx_map_voxels_and_origin(
    tmp_path: Path, rng: np.random.Generator, axes: tuple[int, int, int]
) -> None:
    """Issue #16: a deposited MicroED map (space group 4, MAPC/MAPR/MAPS = 3,1,2, an extended
    header, anisotropic voxels) must load; the same density stored with each of the 6 axis
    orders gives the identical (z, y, x) array, voxel size, origin and shape, through
    read_map, read_header and read_stack (a volume, so the order is allowed there too)."""
    truth = rng.normal(size=(5, 6, 7)).astype(np.float32)
    voxel, start = (1.5, 1.2, 0.9), (-3, 2, 5)
    path = _write_permuted(tmp_path / "m.map", truth, voxel, start, axes,
                           extended=bytes(range(80)) * 2)
    m = read_map(path)
    np.testing.assert_array_equal(m.data, truth)
    np.testing.assert_allclose(m.voxel_size_a, voxel, rtol=1e-6)
    np.testing.assert_allclose(m.origin_a, np.multiply(start, voxel), rtol=1e-6)
    h = read_header(path)
    assert h["shape_zyx"] == truth.shape and h["ispg"] == 4 and h["nsymbt"] == 160
    np.testing.assert_allclose(h["origin_a"], m.origin_a)
    s = read_stack(path)
    np.testing.assert_array_equal(np.asarray(s.data, np.float32), truth)


def test_permuted_image_stack_is_refused_but_a_permuted_volume_is_not(tmp_path: Path, rng: np.random.Generator) -> None:
    """Only an image stack (ISPG 0) must be stored (1, 2, 3): its first axis is the image index."""
    truth = rng.normal(size=(3, 4, 5)).astype(np.float32)
    stack = _write_permuted(tmp_path / "s.mrcs", truth, (1.0, 1.0, 1.0), (0, 0, 0), (3, 1, 2), ispg=0)
    with pytest.raises(InputError, match=r"image stack \(ISPG 0\) must be stored with axis order"):
        read_stack(stack)
    volume = _write_permuted(tmp_path / "v.mrc", truth, (1.0, 1.0, 1.0), (0, 0, 0), (3, 1, 2), ispg=1)
    assert read_stack(volume).shape == truth.shape


def test_data_block_larger_than_the_header_implies_is_refused(tmp_path: Path, good_map: Path) -> None:
    """Issue #16: a map whose header says 16-bit integers over a float32 data block is INVALID
    for validate and must not be read as garbage: strict readers refuse it, naming the sizes;
    permissive ones read the leading bytes and say so."""
    path = tmp_path / "mode1.mrc"
    path.write_bytes(good_map.read_bytes())
    _patch(path, OFF_MODE, struct.pack("<i", 1))
    assert any("file is 2368 bytes but the header implies 1696" in q for q in validate_mrc(path))
    for reader in (read_map, read_stack):
        with pytest.raises(InputError, match=r"holds 1344 bytes but the header \(mode 1, 8×7×6\) implies 672"):
            reader(path)  # type: ignore[operator]
    m = read_map(path, permissive=True)
    assert m.data.shape == (6, 7, 8)
    assert any("672 extra bytes" in w for w in m.header["warnings"])


def test_nan_voxels_are_refused_strictly_and_kept_permissively(tmp_path: Path) -> None:
    path = tmp_path / "somenan.mrc"
    data = np.ones((2, 3, 4), np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones((2, 3, 4), np.float32))
        mrc.data[...] = data
        mrc.voxel_size = 1.0
    with pytest.raises(InputError, match="2 of 24 voxels are NaN or infinite"):
        read_map(path)
    m = read_map(path, permissive=True)
    assert int(np.isnan(m.data).sum()) == 1 and any("2 of 24" in w for w in m.header["warnings"])


def test_origin_field_wins_over_nstart_and_nstart_used_when_origin_zero(tmp_path: Path) -> None:
    path = tmp_path / "o.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((2, 3, 4), np.float32))
        mrc.voxel_size = 2.0
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = -1, -2, -3
    assert read_map(path).origin_a == (-6.0, -4.0, -2.0)  # nstart × voxel, (z, y, x)
    with mrcfile.open(path, mode="r+") as mrc:
        mrc.header.origin = (10.0, 20.0, 30.0)
    assert read_map(path).origin_a == (30.0, 20.0, 10.0)  # origin field alone, nstart not added
    assert read_header(path)["origin_a"] == (30.0, 20.0, 10.0)


def _atoms_zyx(pdb: Path) -> np.ndarray:
    st = gemmi.read_structure(str(pdb))
    return np.array([[a.pos.z, a.pos.y, a.pos.x] for ch in st[0] for res in ch for a in res])


@pytest.mark.shared_data
def test_emd_5168_frame_agrees_with_model_and_between_header_conventions() -> None:
    """nstart (full map) and origin (monomer cut) give one frame; 3MFP sits on the density."""
    root = require_shared_data("maps", "emd_5168")
    full = read_map(root / "emd_5168.map")  # origin 0, nstart -50
    mono = read_map(root / "emd_5168_monomer.mrc")  # origin (-33.10, -24.39, -90.58), nstart 0
    assert full.header["nstart_crs"] == (-50, -50, -50) and full.header["origin_xyz"] == (0, 0, 0)
    assert mono.header["nstart_crs"] == (0, 0, 0)
    np.testing.assert_allclose(full.origin_a, (-87.1,) * 3, atol=1e-4)
    np.testing.assert_allclose(mono.origin_a, (-90.584, -24.388, -33.098), atol=1e-3)

    # 1. The two header mechanisms agree voxel for voxel: the monomer is the full map cut at
    #    the integer offset its origin implies (its two first z planes lie outside and are 0).
    offset = (np.array(mono.origin_a) - np.array(full.origin_a)) / np.array(full.voxel_size_a)
    np.testing.assert_allclose(offset, np.rint(offset), atol=1e-3)
    k0, j0, i0 = (int(v) for v in np.rint(offset))
    assert (k0, j0, i0) == (-2, 36, 31)
    nzm, nym, nxm = mono.data.shape
    np.testing.assert_array_equal(mono.data[: -k0], 0.0)
    block = full.data[0 : nzm + k0, j0 : j0 + nym, i0 : i0 + nxm]
    inside = mono.data[-k0:]
    mask = inside != 0
    assert mask.sum() > 3000
    np.testing.assert_array_equal(block[mask], inside[mask])

    # 2. Every atom of 3MFP is in the monomer's box (within one voxel of the voxel centres);
    #    in the full map all but 14 atoms (z < -88 Å, at most 4.7 Å beyond the box edge) are.
    xyz = _atoms_zyx(root / "3MFP.pdb")
    assert len(xyz) == 2882
    for m, max_outside in ((mono, 0), (full, 14)):
        idx = (xyz - np.array(m.origin_a)) / np.array(m.voxel_size_a)
        shape = np.array(m.data.shape)
        in_box = np.all((idx >= -1.0) & (idx <= shape), axis=1)
        assert (~in_box).sum() <= max_outside
        assert np.all(idx >= -3) and np.all(idx <= shape + 2)

        # 3. The density at the atoms is highest with no shift: a frame error of half a voxel
        #    (corner vs centre) or one voxel (nstart off by one) along any axis lowers it.
        def density(shift: np.ndarray, m=m, idx=idx, in_box=in_box) -> float:
            pts = (idx[in_box] + shift).T
            return float(map_coordinates(m.data, pts, order=1, mode="constant").mean())

        at_zero = density(np.zeros(3))
        assert at_zero > m.data.mean() + m.data.std()
        for axis in range(3):
            for step in (-1.0, -0.5, 0.5, 1.0):
                shift = np.zeros(3)
                shift[axis] = step
                assert density(shift) < at_zero


# --------------------------------------------------------------------------- strict errors


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mrc"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_map(path)
    with pytest.raises(InputError, match="empty"):
        read_stack(path, permissive=True)
    with pytest.raises(InputError, match="empty"):
        validate_mrc(path)


def test_truncated_header(tmp_path: Path, good_map: Path) -> None:
    path = tmp_path / "short.mrc"
    path.write_bytes(good_map.read_bytes()[:500])
    with pytest.raises(InputError, match=r"truncated.*500 bytes"):
        read_map(path)
    with pytest.raises(InputError, match="truncated"):
        validate_mrc(path)


def test_truncated_data(tmp_path: Path, good_map: Path) -> None:
    path = tmp_path / "cut.mrc"
    path.write_bytes(good_map.read_bytes()[:-100])
    for reader in (read_map, read_stack):
        with pytest.raises(InputError, match=r"truncated: the data block needs 1344 bytes .*but only 1244"):
            reader(path)  # type: ignore[operator]
        with pytest.raises(InputError, match="truncated"):
            reader(path, permissive=True)  # type: ignore[operator]
    assert validate_mrc(path) == ["The file is 2268 bytes but the header implies 2368 (1024 + 0 extended header + 1344 data)."]


def test_truncated_gzip(tmp_path: Path, rng: np.random.Generator) -> None:
    full = write_map(tmp_path / "m.mrc.gz", rng.normal(size=(20, 20, 20)), 1.0).read_bytes()
    cut = tmp_path / "cut.mrc.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(InputError, match="compressed file is truncated or corrupt"):
        read_map(cut)
    assert validate_mrc(cut) == ["The decompressed data block does not hold the 32000 bytes the header implies."]


def test_wrong_mode(tmp_path: Path, good_map: Path) -> None:
    path = tmp_path / "mode.mrc"
    path.write_bytes(good_map.read_bytes())
    _patch(path, OFF_MODE, struct.pack("<i", 7))
    for permissive in (False, True):
        with pytest.raises(InputError, match="unknown data mode 7"):
            read_map(path, permissive=permissive)
    assert "The mode 7 is not an MRC2014 data mode (0, 1, 2, 3, 4, 6, 12, 101)." in validate_mrc(path)


def test_unsupported_mode_101(tmp_path: Path, good_map: Path) -> None:
    path = tmp_path / "mode101.mrc"
    path.write_bytes(good_map.read_bytes())
    _patch(path, OFF_MODE, struct.pack("<i", 101))
    with pytest.raises(InputError, match=r"mode 101 .*not supported"):
        read_map(path)


def test_bad_map_id_strict_fails_permissive_reads(tmp_path: Path, good_map: Path) -> None:
    path = tmp_path / "noid.mrc"
    path.write_bytes(good_map.read_bytes())
    _patch(path, OFF_MAP, b"XXXX")
    with pytest.raises(InputError, match="'MAP ' ID"):
        read_map(path)
    m = read_map(path, permissive=True)
    np.testing.assert_array_equal(m.data, read_map(good_map).data)
    assert any("MAP " in w for w in m.header["warnings"])
    assert validate_mrc(path) == ["The map ID (bytes 209-212) is 'XXXX', not 'MAP '."]


def test_negative_dimensions(tmp_path: Path, good_map: Path) -> None:
    path = tmp_path / "neg.mrc"
    path.write_bytes(good_map.read_bytes())
    _patch(path, OFF_NZ, struct.pack("<i", -6))
    for permissive in (False, True):
        with pytest.raises(InputError, match="non-positive dimensions"):
            read_map(path, permissive=permissive)


def test_bad_axis_mapping(tmp_path: Path, good_map: Path) -> None:
    path = tmp_path / "mapc.mrc"
    path.write_bytes(good_map.read_bytes())
    _patch(path, OFF_MAPC, struct.pack("<3i", 1, 1, 3))
    with pytest.raises(InputError, match=r"axis mapping .*\(1, 1, 3\)"):
        read_map(path)
    m = read_map(path, permissive=True)
    np.testing.assert_array_equal(m.data, read_map(good_map).data)
    assert validate_mrc(path) == ["The axis mapping (MAPC, MAPR, MAPS) = (1, 1, 3) is not a permutation of (1, 2, 3)."]


def test_nan_only_map(tmp_path: Path) -> None:
    path = tmp_path / "nan.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((2, 2, 2), np.float32))
        mrc.data[...] = np.nan
        mrc.voxel_size = 1.0
    with pytest.raises(InputError, match="no finite values"):
        read_map(path)


def test_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_map(tmp_path / "missing.mrc")


def test_voxel_size_zero_needs_override(tmp_path: Path) -> None:
    path = tmp_path / "v0.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones((2, 3, 4), np.float32))
        mrc.voxel_size = 0.0
        mrc.header.nxstart = -2
    with pytest.raises(InputError, match=r"voxel size .*unset"):
        read_map(path)
    m = read_map(path, voxel_size_a=1.5)
    assert m.voxel_size_a == (1.5, 1.5, 1.5)
    assert m.origin_a == (0.0, 0.0, -3.0)
    with pytest.raises(InputError, match="positive"):
        read_map(path, voxel_size_a=-1.0)


def test_require_pixel_size() -> None:
    assert require_pixel_size(1.31, "a.mrcs") == 1.31
    for bad in (None, 0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match=r"a\.mrcs: the pixel size is unknown"):
            require_pixel_size(bad, "a.mrcs")


def test_extended_header_is_skipped(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(3, 4, 5)).astype(np.float32)
    path = tmp_path / "ext.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_extended_header(np.arange(100, dtype=np.int32).view(np.dtype("V4")))
        mrc.header.exttyp = b"MRCO"
        mrc.set_data(data)
        mrc.voxel_size = 1.0
    assert read_header(path)["nsymbt"] == 400
    np.testing.assert_array_equal(read_map(path).data, data)
    np.testing.assert_array_equal(read_stack(path).data, data)


def test_big_endian_file(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(2, 3, 4)).astype(np.float32)
    path = tmp_path / "be.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data.astype(">f4"))
        mrc.voxel_size = 1.0
    m = read_map(path)
    assert m.header["byte_order"] == "big"
    np.testing.assert_array_equal(m.data, data)


# --------------------------------------------------------------------------- validation


def test_validate_names_each_rule_and_agrees_with_mrcfile(tmp_path: Path, good_map: Path) -> None:
    """Our rules give mrcfile.validate's verdict on every broken variant, one sentence each."""
    raw = good_map.read_bytes()
    variants = {
        "good": (raw, []),
        "stats": (raw[:80] + struct.pack("<f", 1e6) + raw[84:], ["maximum"]),
        "rms": (raw[:216] + struct.pack("<f", 123.0) + raw[220:], ["RMS"]),
        "version": (raw[:108] + struct.pack("<i", 0) + raw[112:], ["NVERSION is 0"]),
        "stamp": (raw[:212] + b"\x00\x00\x00\x00" + raw[216:], ["machine stamp 0x00 0x00 0x00 0x00"]),
        "labels": (raw[:220] + struct.pack("<i", 5) + raw[224:], ["NLABL is 5 but 1 labels"]),
        "ext": (raw[:92] + struct.pack("<i", 80) + raw[96:104] + b"ABCD" + raw[108:1024] + bytes(80) + raw[1024:],
                ["EXTTYP 'ABCD'"]),
        "extra": (raw + bytes(8), ["The file is 2376 bytes"]),
        "id+version": (raw[:108] + struct.pack("<i", 0) + raw[112:208] + b"ABCD" + raw[212:],
                       ["map ID", "NVERSION"]),
    }
    for name, (content, expected) in variants.items():
        path = tmp_path / f"{name}.mrc"
        path.write_bytes(content)
        problems = validate_mrc(path)
        assert len(problems) == len(expected), (name, problems)
        for problem, fragment in zip(problems, expected, strict=True):
            assert fragment in problem and problem.endswith("."), (name, problem)
        assert _mrcfile_valid(path) == (not problems), name


def test_validate_float16_statistics_do_not_overflow(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(scale=300.0, size=(40, 40, 40)).astype(np.float16)
    path = write_map(tmp_path / "h.mrc", data, 1.0, dtype="float16")
    assert validate_mrc(path) == []  # mrcfile itself computes the RMS in float16 and overflows


@pytest.mark.shared_data
def test_validate_real_files() -> None:
    root = require_shared_data("maps")
    assert validate_mrc(root / "emd_5168" / "emd_5168.map") == [
        "NVERSION is 0, not 20140 or 20141 (the file does not declare MRC2014)."
    ]
    monomer = validate_mrc(root / "emd_5168" / "emd_5168_monomer.mrc")
    assert len(monomer) == 2 and "RMS deviation 0 does not match the data (4.4726" in monomer[1]
    rel = validate_mrc(root.parent / "star" / "relion" / "relion31.mrcs")
    assert [p.split(" ")[1] for p in rel] == ["map", "machine", "is"]  # ID, stamp, NVERSION


# --------------------------------------------------------------------------- stacks


def test_write_read_stack_round_trip_chunked(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(11, 8, 9)).astype(np.float32)
    path = write_stack(tmp_path / "s.mrcs", data, 1.31, chunk_images=4)
    s = read_stack(path)
    assert isinstance(s.data, np.memmap)
    assert s.shape == (11, 8, 9) and len(s) == 11
    assert s.pixel_size_a == pytest.approx(1.31, rel=1e-6)
    np.testing.assert_array_equal(np.asarray(s.data), data)
    np.testing.assert_array_equal(s.images([3, 0, 10]), data[[3, 0, 10]])
    assert s.header["ispg"] == 0 and s.header["is_stack"]
    assert not read_header(write_map(tmp_path / "v.mrc", data, 1.0))["is_stack"]
    assert validate_mrc(path) == []
    assert _mrcfile_valid(path)
    assert s.header["rms"] == pytest.approx(data.astype(np.float64).std(), rel=1e-5)
    s2 = read_stack(path, mmap=False)
    assert not isinstance(s2.data, np.memmap)
    np.testing.assert_array_equal(s2.data, data)


def test_write_stack_from_memmap_and_float16(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(5, 6, 6)).astype(np.float16)
    src = read_stack(write_stack(tmp_path / "a.mrcs", data, 2.0, dtype="float16"))
    assert src.header["mode"] == 12 and isinstance(src.data, np.memmap)
    out = read_stack(write_stack(tmp_path / "b.mrcs", src.data, 2.0, chunk_images=2))
    np.testing.assert_array_equal(out.data, data.astype(np.float32))


def test_read_stack_is_lazy_on_a_64_gib_sparse_file(tmp_path: Path) -> None:
    """Opening and indexing a stack far larger than memory reads only the images asked for."""
    n, side = 250_000, 256
    first = np.arange(side * side, dtype=np.float32).reshape(1, side, side)
    path = write_stack(tmp_path / "huge.mrcs", first, 1.0)
    image_bytes = side * side * 4
    _patch(path, OFF_NZ, struct.pack("<i", n))
    _patch(path, 9 * 4, struct.pack("<i", 1))  # mz stays 1 (image stack)
    target = 123_457
    with open(path, "r+b") as fh:
        fh.truncate(1024 + n * image_bytes)  # sparse: 64 GiB apparent, a few kB on disk
        fh.seek(1024 + target * image_bytes)
        fh.write(np.full((side, side), 7.0, np.float32).tobytes())
    s = read_stack(path)
    assert len(s) == n
    assert isinstance(s.data, np.memmap)
    np.testing.assert_array_equal(s.images(0), first[0])
    picked = s.images([target, 5, target])
    np.testing.assert_array_equal(picked[0], 7.0)
    np.testing.assert_array_equal(picked[1], 0.0)
    np.testing.assert_array_equal(picked[2], 7.0)
    del s, picked
    path.unlink()  # do not leave a 64 GiB (apparent) file in pytest's kept temp dirs


def test_relion31_mrcs_lacks_map_id() -> None:
    path = require_shared_data("star", "relion", "relion31.mrcs")
    with pytest.raises(InputError, match="'MAP ' ID"):
        read_stack(path)
    s = read_stack(path, permissive=True)
    assert s.shape == (5, 256, 256)
    assert np.isfinite(s.images([0, 4])).all()
    assert any("MAP " in w for w in s.header["warnings"])


def test_empiar_10076_pixel_size_zero_is_none() -> None:
    path = require_shared_data("star", "relion", "empiar_10076_7.mrc")
    s = read_stack(path)
    assert s.shape == (7, 320, 320)
    assert s.pixel_size_a is None
    with pytest.raises(InputError, match="pixel size is unknown"):
        require_pixel_size(s.pixel_size_a, path)
    with pytest.raises(InputError, match="voxel size"):
        read_map(path)
    assert validate_mrc(path) == []


# --------------------------------------------------------------------------- every real file


def _real_files() -> list[tuple[str, str]]:
    from cryoset.testing import shared_data_root

    root = shared_data_root()
    maps = sorted(p for p in (root / "maps").rglob("*") if p.is_file() and p.suffix != ".pdb")
    stacks = sorted(p for p in (root / "star").rglob("*") if p.suffix in (".mrc", ".mrcs"))
    out = [("map", str(p.relative_to(root))) for p in maps]
    out += [("stack", str(p.relative_to(root))) for p in stacks]
    return out or [("map", "maps")]  # absent data: one case that skips


@pytest.mark.shared_data
@pytest.mark.parametrize(("kind", "relpath"), _real_files())
def test_every_real_file_loads(kind: str, relpath: str) -> None:
    path = require_shared_data(*Path(relpath).parts)
    if path.is_dir():
        pytest.skip("no real MRC files found")
    reader = read_map if kind == "map" else read_stack
    try:
        obj = reader(path)  # type: ignore[operator]
    except InputError as exc:
        assert str(path) in str(exc) and len(str(exc).splitlines()) == 1
        obj = reader(path, permissive=True)  # type: ignore[operator]
    data = np.asarray(obj.data[:1] if kind == "stack" else obj.data, dtype=np.float32)
    assert data.size > 0 and np.isfinite(data).all() and data.std() > 0


# --------------------------------------------------------------------------- RELION interop


@pytest.mark.relion
def test_relion_reads_our_stack_and_map_identically(tmp_path: Path, rng: np.random.Generator) -> None:
    """relion_image_handler --stats on our files gives our shape, pixel size and statistics."""
    import re
    import subprocess

    exe = require_program("relion_image_handler")
    stack = rng.normal(size=(3, 16, 20)).astype(np.float32)
    stack[1, 0, :] += 10.0  # marks the top row of image 1
    path = write_stack(tmp_path / "s.mrcs", stack, 1.31)
    out = subprocess.run([exe, "--i", str(path), "--stats"], capture_output=True, text=True, check=True).stdout
    rows = re.findall(
        r"(\d+)@\S+ : \(x,y,z,n\)= (\d+) x (\d+) x 1 x 1 ; avg= (\S+) stddev= (\S+) minval= (\S+) maxval= (\S+); angpix = (\S+)",
        out,
    )
    assert len(rows) == 3
    for k, (num, nx, ny, avg, std, lo, hi, angpix) in enumerate(rows):
        img = stack[k].astype(np.float64)
        assert int(num) == k + 1 and (int(nx), int(ny)) == (20, 16)
        np.testing.assert_allclose(
            [float(avg), float(std), float(lo), float(hi)], [img.mean(), img.std(), img.min(), img.max()],
            rtol=1e-4, atol=1e-5,
        )
        assert float(angpix) == pytest.approx(1.31, rel=1e-4)
    # statistics cannot see a flip or a transpose: RELION's copy of image 2@ (1-based) is ours
    # pixel for pixel, top row included.
    copy = tmp_path / "one.mrc"
    subprocess.run([exe, "--i", f"2@{path}", "--o", str(copy)], capture_output=True, check=True)
    np.testing.assert_array_equal(read_stack(copy).images(0), stack[1])


@pytest.mark.relion
@pytest.mark.shared_data
def test_relion_copy_of_real_map_has_same_voxels_but_drops_origin(tmp_path: Path) -> None:
    import subprocess

    exe = require_program("relion_image_handler")
    src = require_shared_data("maps", "emd_5168", "emd_5168_monomer.mrc")
    out = tmp_path / "relion_copy.mrc"
    subprocess.run([exe, "--i", str(src), "--o", str(out)], capture_output=True, check=True)
    ours, theirs = read_map(src), read_map(out)
    np.testing.assert_array_equal(theirs.data, ours.data)  # same (z, y, x) order, no flips
    np.testing.assert_allclose(theirs.voxel_size_a, ours.voxel_size_a, rtol=1e-6)
    assert theirs.origin_a == (0.0, 0.0, 0.0)  # RELION 3.1 writes neither origin nor nstart
