"""MRC / MRCS maps, particle stacks and micrographs (MRC2014), read strictly or permissively.

Conventions (see docs/formats-mrc.md and docs/conventions.md)
------------------------------------------------------------
* Arrays are numpy ``(z, y, x)`` whatever the header's MAPC/MAPR/MAPS axis order: a file
  stored with permuted axes is transposed on read. Stacks are ``(n, y, x)``.
* Nothing is flipped: row 0 of the array is the first stored row of the file.
* ``origin_a`` is the physical ``(z, y, x)`` position in Å of the centre of voxel
  ``data[0, 0, 0]``, so voxel ``data[k, j, i]`` is at ``origin_a + (k, j, i) * voxel_size_a``.
  It is taken from the header ``origin`` field (words 50-52) when that field is not all
  zero, and otherwise from ``(nxstart, nystart, nzstart) * voxel size`` (as Chimera does
  for MRC-2000 vs CCP4-style files; EMDB maps carry their offset in ``nstart`` with a zero ``origin``). The two are
  never added. Writers store ``origin_a`` in ``origin`` and set ``nstart`` to zero.
* A voxel size of 0 in the header means "unset": :func:`read_map` refuses it unless
  ``voxel_size_a=`` is given; stack and image readers return ``pixel_size_a=None``.
* Strict by default: anything that is not a well-formed MRC file raises
  :class:`cryoset.errors.InputError` with one sentence, including a data block larger
  than the mode and dimensions imply (the mode or the dimensions are wrong) and, for maps,
  NaN or infinite voxels. ``permissive=True`` reads files with a missing ``"MAP "`` ID, an
  unknown machine stamp, a bad axis mapping, extra bytes after the data block or some
  non-finite voxels, recording what it tolerated in ``header["warnings"]``.
* ``.gz`` and ``.bz2`` files (detected from their content) are read fully into memory:
  memory mapping is impossible for compressed files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import mrcfile
import numpy as np
from numpy.typing import ArrayLike, NDArray

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_path
from cryoset.io.provenance import write_provenance

__all__ = [
    "MapData",
    "StackData",
    "read_header",
    "read_map",
    "read_stack",
    "require_pixel_size",
    "validate_mrc",
    "write_map",
    "write_stack",
]

PathLike = str | os.PathLike[str]
WriteDtype = Literal["float32", "float16", "int8"]

HEADER_BYTES = 1024
#: MRC2014 modes and the numpy dtype cryoset reads them as (None: valid but unsupported).
MODE_NAMES: Mapping[int, str] = {
    0: "8-bit signed integer",
    1: "16-bit signed integer",
    2: "32-bit float",
    3: "complex 16-bit integer",
    4: "complex 32-bit float",
    6: "16-bit unsigned integer",
    12: "16-bit float",
    101: "4-bit packed integer",
}
_MODE_DTYPES: Mapping[int, type[np.generic]] = {
    0: np.int8,
    1: np.int16,
    2: np.float32,
    4: np.complex64,
    6: np.uint16,
    12: np.float16,
}
_WRITE_MODES: Mapping[str, type[np.generic]] = {
    "float32": np.float32,
    "float16": np.float16,
    "int8": np.int8,
}
_KNOWN_MACHINE_STAMPS = {(0x44, 0x44), (0x44, 0x41), (0x11, 0x11)}
_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"
_MAX_LABEL_CHARS = 80
#: Stacks up to this size (bytes) are written from memory in one go; larger ones in chunks.
_IN_MEMORY_WRITE_BYTES = 1 << 30


@dataclass(frozen=True)
class MapData:
    """A 3D map in the canonical frame.

    Attributes
    ----------
    data : ndarray, float32, shape (z, y, x)
    voxel_size_a : tuple of 3 floats
        Voxel size in Å, ``(z, y, x)`` order (anisotropic voxels allowed).
    origin_a : tuple of 3 floats
        Physical ``(z, y, x)`` position in Å of the centre of voxel ``data[0, 0, 0]``.
    header : dict
        Raw header values: ``nx, ny, nz, mode, mapc, mapr, maps, nstart_crs`` (column, row,
        section starts), ``mxyz, cella_xyz, origin_xyz, dmin, dmax, dmean, rms, ispg,
        is_stack`` (ISPG 0: an image stack by the MRC2014 convention), ``nsymbt, exttyp,
        nversion, map_id, machst, byte_order, labels, compression`` (None, "gzip", "bzip2") and
        ``warnings`` (what a permissive read tolerated).
    """

    data: NDArray[np.float32]
    voxel_size_a: tuple[float, float, float]
    origin_a: tuple[float, float, float]
    header: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StackData:
    """A stack of 2D images (particles, frames or a single micrograph).

    Attributes
    ----------
    data : array-like, shape (n, y, x)
        Lazily indexable (an ``np.memmap`` opened read-only for uncompressed files, in the
        file's stored dtype); ``data[i]`` reads only image ``i`` from disk. Use
        :meth:`images` for float32 copies.
    pixel_size_a : float or None
        Pixel size in Å from the header, None when the header says 0 (unset).
    header : dict
        Raw header values, as in :class:`MapData`.
    """

    data: NDArray[Any]
    pixel_size_a: float | None
    header: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n, y, x)``."""
        n, ny, nx = self.data.shape
        return int(n), int(ny), int(nx)

    def images(self, indices: int | slice | Sequence[int] | NDArray[np.integer]) -> NDArray[np.float32]:
        """Read the selected images as a float32 array, touching only those images on disk.

        Parameters
        ----------
        indices
            An index, slice or sequence of indices (0-based).

        Returns
        -------
        ndarray, float32, shape (k, y, x) (or (y, x) for a single integer index)
        """
        if isinstance(indices, (int, np.integer, slice)):
            return np.asarray(self.data[indices], dtype=np.float32)
        idx = np.asarray(indices, dtype=np.int64)
        return np.asarray(self.data[idx], dtype=np.float32)


# --------------------------------------------------------------------------- helpers


def require_pixel_size(value: float | None, path: PathLike | None) -> float:
    """Return ``value`` if it is a usable pixel size, else raise a clear :class:`InputError`.

    Parameters
    ----------
    value
        Pixel size in Å (None or <= 0 means unknown).
    path
        The file the pixel size belongs to (named in the error).

    Examples
    --------
    >>> require_pixel_size(1.31, "stack.mrcs")
    1.31
    """
    if value is None or not np.isfinite(value) or value <= 0:
        raise InputError(
            path,
            "the pixel size is unknown (0 or missing in the file); give it explicitly "
            "(--pixel-size-a on the command line)",
        )
    return float(value)


def _compression(path: Path) -> str | None:
    with open(path, "rb") as fh:
        magic = fh.read(3)
    if magic.startswith(_GZIP_MAGIC):
        return "gzip"
    if magic.startswith(_BZIP2_MAGIC):
        return "bzip2"
    return None


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not an MRC file")
    if path.stat().st_size == 0:
        raise InputError(path, "the file is empty")


def _warning_text(record: warnings.WarningMessage) -> str:
    return str(record.message)


def _byte_order_name(code: str) -> str:
    if code == ">" or (code in "=|" and not np.little_endian):
        return "big"
    return "little"


def _header_dict(header: Any, compression: str | None, tolerated: list[str]) -> dict[str, Any]:
    nlabl = int(header.nlabl)
    labels = [
        bytes(lab).decode("ascii", errors="replace").rstrip("\x00 ").strip()
        for lab in header.label[: max(0, min(nlabl, 10))]
    ]
    return {
        "nx": int(header.nx),
        "ny": int(header.ny),
        "nz": int(header.nz),
        "mode": int(header.mode),
        "nstart_crs": (int(header.nxstart), int(header.nystart), int(header.nzstart)),
        "mxyz": (int(header.mx), int(header.my), int(header.mz)),
        "cella_xyz": (float(header.cella.x), float(header.cella.y), float(header.cella.z)),
        "mapc": int(header.mapc),
        "mapr": int(header.mapr),
        "maps": int(header.maps),
        "dmin": float(header.dmin),
        "dmax": float(header.dmax),
        "dmean": float(header.dmean),
        "rms": float(header.rms),
        "ispg": int(header.ispg),
        "is_stack": int(header.ispg) == 0,
        "nsymbt": int(header.nsymbt),
        "exttyp": bytes(header.exttyp).decode("ascii", errors="replace"),
        "nversion": int(header.nversion),
        "origin_xyz": (float(header.origin.x), float(header.origin.y), float(header.origin.z)),
        "map_id": bytes(header.map).decode("ascii", errors="replace"),
        "machst": tuple(int(b) for b in header.machst),
        "byte_order": _byte_order_name(header.mode.dtype.byteorder),
        "labels": labels,
        "compression": compression,
        "warnings": list(tolerated),
    }


@dataclass
class _Opened:
    header: Any
    info: dict[str, Any]
    compression: str | None


def _open_header(path: PathLike, permissive: bool) -> _Opened:
    """Read and check the header; raise InputError (strict) or record tolerated problems."""
    p = Path(path)
    _check_exists(p)
    compression = _compression(p)
    if compression is None and p.stat().st_size < HEADER_BYTES:
        raise InputError(
            p, f"the file is truncated: {p.stat().st_size} bytes, shorter than the 1024-byte MRC header"
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with mrcfile.open(p, mode="r", permissive=True, header_only=True) as mrc:
                header = mrc.header.copy()
    except (ValueError, EOFError, OSError) as exc:
        raise InputError(p, f"cannot read the MRC header ({exc})") from exc
    # mrcfile's own warnings about the ID and the stamp are restated below in our words
    tolerated = [
        t for t in (_warning_text(w) for w in caught)
        if "map id" not in t.lower() and "machine stamp" not in t.lower()
    ]

    map_id = bytes(header.map)
    if map_id != b"MAP ":
        msg = (
            f"the header lacks the 'MAP ' ID string (found {map_id!r}), so this is not an "
            "MRC2014 file or its header is corrupt"
        )
        if not permissive:
            raise InputError(p, msg + "; read it permissively (--permissive) to try anyway")
        tolerated.append(msg)
    machst = tuple(int(b) for b in header.machst[:2])
    if machst not in _KNOWN_MACHINE_STAMPS:
        msg = (
            "the machine stamp "
            + " ".join(f"0x{int(b):02X}" for b in header.machst)
            + " is not a valid byte-order code"
        )
        if not permissive:
            raise InputError(p, msg + "; read it permissively (--permissive) to guess the byte order")
        tolerated.append(msg)
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    if min(nx, ny, nz) <= 0:
        raise InputError(
            p, f"the header has non-positive dimensions (nx, ny, nz) = ({nx}, {ny}, {nz}); the header is corrupt"
        )
    mode = int(header.mode)
    if mode not in MODE_NAMES:
        raise InputError(
            p, f"unknown data mode {mode} (MRC2014 modes are 0, 1, 2, 3, 4, 6, 12, 101); the header is corrupt"
        )
    if mode not in _MODE_DTYPES:
        raise InputError(p, f"data mode {mode} ({MODE_NAMES[mode]}) is not supported by cryoset")
    axes = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(axes) != [1, 2, 3]:
        msg = (
            f"the axis mapping (MAPC, MAPR, MAPS) = {axes} is not a permutation of (1, 2, 3); "
            "the header is corrupt"
        )
        if not permissive:
            raise InputError(p, msg + "; read it permissively (--permissive) to assume (1, 2, 3)")
        tolerated.append(msg + "; assumed (1, 2, 3)")
    if int(header.nsymbt) < 0:
        raise InputError(p, f"the extended header size NSYMBT = {int(header.nsymbt)} is negative")
    info = _header_dict(header, compression, tolerated)
    if sorted(axes) != [1, 2, 3]:
        info["mapc"], info["mapr"], info["maps"] = 1, 2, 3
    return _Opened(header=header, info=info, compression=compression)


def _data_dtype(header: Any) -> np.dtype[Any]:
    base = np.dtype(_MODE_DTYPES[int(header.mode)])
    return base.newbyteorder(header.mode.dtype.byteorder)


def _extra_bytes(p: Path, h: Any, available: int, nbytes: int, permissive: bool,
                 warnings_out: list[str]) -> None:
    """A data block larger than the header implies: refused (strict) or noted (permissive).

    The size is what ``validate`` checks: more bytes than NX × NY × NZ × (bytes per voxel of
    MODE) mean the mode or the dimensions are wrong, so the values read would be garbage.
    """
    extra = available - nbytes
    if extra <= 0:
        return
    msg = (
        f"the data block holds {available} bytes but the header (mode {int(h.mode)}, "
        f"{int(h.nx)}×{int(h.ny)}×{int(h.nz)}) implies {nbytes}: its mode or dimensions are wrong"
    )
    if not permissive:
        raise InputError(p, msg + f"; read it permissively (--permissive) to ignore the {extra} extra bytes")
    warnings_out.append(f"{extra} extra bytes after the data block were ignored ({msg})")


def _load_raw(path: PathLike, opened: _Opened, *, mmap: bool, permissive: bool = False) -> NDArray[Any]:
    """The data block as stored, shape (nz, ny, nx) (memory-mapped when possible)."""
    p = Path(path)
    h = opened.header
    shape = (int(h.nz), int(h.ny), int(h.nx))
    dtype = _data_dtype(h)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if opened.compression is None:
        offset = HEADER_BYTES + int(h.nsymbt)
        available = p.stat().st_size - offset
        if available < nbytes:
            raise InputError(
                p,
                f"the file is truncated: the data block needs {nbytes} bytes "
                f"({shape[2]}×{shape[1]}×{shape[0]} mode {int(h.mode)}) but only {max(available, 0)} are present",
            )
        _extra_bytes(p, h, available, nbytes, permissive, opened.info["warnings"])
        arr: NDArray[Any] = np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=shape)
        if not mmap:
            arr = np.array(arr)
        return arr
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with mrcfile.open(p, mode="r", permissive=True) as mrc:
                data = None if mrc.data is None else np.array(mrc.data)
        except (ValueError, EOFError, OSError) as exc:
            raise InputError(p, f"the compressed file is truncated or corrupt ({exc})") from exc
    for w in caught:
        text = _warning_text(w)
        if text not in opened.info["warnings"]:
            opened.info["warnings"].append(text)
    if data is None or data.size * data.itemsize < nbytes:
        raise InputError(p, f"the file is truncated: the data block needs {nbytes} bytes after decompression")
    _extra_bytes(p, h, int(data.size * data.itemsize), nbytes, permissive, opened.info["warnings"])
    return data.reshape(-1)[: int(np.prod(shape, dtype=np.int64))].reshape(shape)


def _to_zyx(raw: NDArray[Any], info: Mapping[str, Any]) -> NDArray[Any]:
    """Transpose stored (section, row, column) data to (z, y, x) using MAPC/MAPR/MAPS."""
    stored = (info["maps"], info["mapr"], info["mapc"])  # axis meaning of stored axes 0, 1, 2
    if stored == (3, 2, 1):
        return raw
    order = [stored.index(3), stored.index(2), stored.index(1)]
    return np.transpose(raw, order)


def _shape_zyx(info: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(Z, Y, X)`` extent of the volume: the stored (sections, rows, columns) counts permuted."""
    counts = {info["mapc"]: info["nx"], info["mapr"]: info["ny"], info["maps"]: info["nz"]}
    return int(counts[3]), int(counts[2]), int(counts[1])


def _is_image_stack(info: Mapping[str, Any]) -> bool:
    """ISPG 0 marks an image stack in MRC2014 (a volume has ISPG 1, or 401-630 for volume stacks)."""
    return bool(info["ispg"] == 0)


def _voxel_size_xyz(info: Mapping[str, Any]) -> tuple[float, float, float]:
    out = []
    for cell, m in zip(info["cella_xyz"], info["mxyz"], strict=True):
        out.append(float(cell) / m if m > 0 else 0.0)
    return out[0], out[1], out[2]


def _origin_xyz(info: Mapping[str, Any], voxel_xyz: tuple[float, float, float]) -> tuple[float, float, float]:
    origin = info["origin_xyz"]
    if any(float(v) != 0.0 for v in origin) and all(np.isfinite(origin)):
        return float(origin[0]), float(origin[1]), float(origin[2])
    start_xyz = [0, 0, 0]
    for start, axis in zip(info["nstart_crs"], (info["mapc"], info["mapr"], info["maps"]), strict=True):
        start_xyz[axis - 1] = start
    return (
        start_xyz[0] * voxel_xyz[0],
        start_xyz[1] * voxel_xyz[1],
        start_xyz[2] * voxel_xyz[2],
    )


# --------------------------------------------------------------------------- readers


def read_header(path: PathLike, *, permissive: bool = False) -> dict[str, Any]:
    """Read and check an MRC header only (cheap: the data block is not read).

    Returns
    -------
    dict
        As ``MapData.header``, plus ``voxel_size_a``, ``origin_a`` and ``shape_zyx`` (the
        extent after MAPC/MAPR/MAPS are applied) in ``(z, y, x)``.
    """
    opened = _open_header(path, permissive)
    info = dict(opened.info)
    vx = _voxel_size_xyz(info)
    ox = _origin_xyz(info, vx)
    info["voxel_size_a"] = (vx[2], vx[1], vx[0])
    info["origin_a"] = (ox[2], ox[1], ox[0])
    info["shape_zyx"] = _shape_zyx(info)
    return info


def read_map(
    path: PathLike,
    *,
    permissive: bool = False,
    voxel_size_a: float | Sequence[float] | None = None,
) -> MapData:
    """Read a 3D map into the canonical ``(z, y, x)`` frame.

    Parameters
    ----------
    path
        ``.mrc``/``.map``/``.ccp4`` file, optionally gzip- or bzip2-compressed.
    permissive
        Tolerate a missing ``"MAP "`` ID, an unknown machine stamp, a bad axis mapping, bytes
        after the data block and NaN/infinite voxels (kept as they are; see the module
        docstring); what was tolerated is in ``header["warnings"]``.
    voxel_size_a
        Override of the header voxel size in Å (scalar or ``(z, y, x)``); required when the
        header voxel size is 0. The origin from ``nstart`` is then scaled by this size.

    Returns
    -------
    MapData
        float32 ``data`` of shape ``(z, y, x)``, ``voxel_size_a`` and ``origin_a`` in
        ``(z, y, x)`` order.

    Raises
    ------
    InputError
        Empty, truncated or corrupt file, a data block larger than the mode and dimensions
        imply, unsupported mode, complex data, NaN or infinite voxels (all of them even with
        ``permissive=True``), or an unset voxel size without an override.
    """
    p = Path(path)
    opened = _open_header(p, permissive)
    info = opened.info
    if int(opened.header.mode) == 4:
        raise InputError(p, "the file holds complex (Fourier-transform) data, not a real-space map")
    vx = _voxel_size_xyz(info)
    if voxel_size_a is not None:
        vz = np.broadcast_to(np.asarray(voxel_size_a, dtype=np.float64), (3,))
        if not np.all(np.isfinite(vz)) or np.any(vz <= 0):
            raise InputError(p, f"the voxel size override {voxel_size_a!r} must be positive")
        vx = (float(vz[2]), float(vz[1]), float(vz[0]))
        if any(float(v) != 0.0 for v in info["origin_xyz"]):
            info["warnings"].append("the header origin (Å) was kept although the voxel size was overridden")
    elif min(vx) <= 0 or not all(np.isfinite(vx)):
        raise InputError(
            p,
            f"the header voxel size {vx} (x, y, z) is 0 or invalid (unset); set it in the header or give "
            "the voxel size explicitly (--voxel-size-a)",
        )
    raw = _load_raw(p, opened, mmap=False, permissive=permissive)
    data = np.ascontiguousarray(_to_zyx(raw, info), dtype=np.float32)
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if data.size and n_bad == data.size:
        raise InputError(p, "the map contains no finite values (all NaN or infinite)")
    if n_bad:
        msg = f"{n_bad} of {data.size} voxels are NaN or infinite"
        if not permissive:
            raise InputError(p, msg + "; read it permissively (--permissive) to keep them")
        info["warnings"].append(msg)
    ox = _origin_xyz(info, vx)
    return MapData(
        data=data,
        voxel_size_a=(vx[2], vx[1], vx[0]),
        origin_a=(ox[2], ox[1], ox[0]),
        header=info,
    )


def read_stack(path: PathLike, *, permissive: bool = False, mmap: bool = True) -> StackData:
    """Open an image stack (``.mrcs``, or an ``.mrc`` holding images) as ``(n, y, x)``.

    Parameters
    ----------
    path
        The stack file. A single 2D image gives ``n = 1``.
    permissive
        As in :func:`read_map`.
    mmap
        Memory-map the data (default): nothing but the header is read now, and indexing
        reads only the requested images. Ignored for compressed files, which are read whole.

    Returns
    -------
    StackData
        ``data`` in the stored dtype (mode 0/1/2/6/12), ``pixel_size_a`` from the header's x
        voxel size or None when it is 0. A volume (ISPG != 0) stored with permuted axes is
        transposed to ``(z, y, x)`` (a view of the memory map); an image stack (ISPG 0) must be
        stored ``(1, 2, 3)``.
    """
    p = Path(path)
    opened = _open_header(p, permissive)
    info = opened.info
    if int(opened.header.mode) == 4:
        raise InputError(p, "the file holds complex (Fourier-transform) data, not images")
    axes = (info["mapc"], info["mapr"], info["maps"])
    if axes != (1, 2, 3) and _is_image_stack(info):
        raise InputError(
            p,
            f"an image stack (ISPG 0) must be stored with axis order (MAPC, MAPR, MAPS) = (1, 2, 3), "
            f"not {axes}",
        )
    # a volume (ISPG != 0) stored with permuted axes is transposed to (z, y, x) like read_map does
    raw = _to_zyx(_load_raw(p, opened, mmap=mmap, permissive=permissive), info)
    vx = _voxel_size_xyz(info)
    pixel = vx[0] if vx[0] > 0 and np.isfinite(vx[0]) else None
    if pixel is not None and vx[1] > 0 and abs(vx[1] - vx[0]) > 1e-6 * vx[0]:
        info["warnings"].append(f"non-square pixels ({vx[0]} × {vx[1]} Å); pixel_size_a is the x size")
    return StackData(data=raw, pixel_size_a=pixel, header=info)


# --------------------------------------------------------------------------- writers


def _label_text(provenance: Mapping[str, Any] | None) -> list[str]:
    from cryoset import __version__

    labels = [f"cryoset {__version__}"]
    if provenance:
        command = str(provenance.get("command", ""))
        created = str(provenance.get("created_utc", ""))
        text = " ".join(s for s in (f"cryoset {__version__}", command, created) if s)
        labels = [text]
    out = []
    for lab in labels:
        clean = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in lab)
        out.append(clean[:_MAX_LABEL_CHARS])
    return out


def _convert(data: ArrayLike, dtype: WriteDtype) -> NDArray[Any]:
    if dtype not in _WRITE_MODES:
        raise ValueError(f"dtype must be one of {sorted(_WRITE_MODES)}, not {dtype!r}")
    arr = np.asarray(data)
    if np.iscomplexobj(arr):
        raise ValueError("complex data cannot be written as a real-space MRC")
    target = np.dtype(_WRITE_MODES[dtype])
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("data contain NaN or infinite values, which MRC header statistics cannot describe")
    if target == np.int8:
        rounded = np.rint(arr.astype(np.float64))
        if rounded.size and (np.nanmin(rounded) < -128 or np.nanmax(rounded) > 127):
            raise ValueError("values outside [-128, 127] cannot be written as int8 (mode 0)")
        return rounded.astype(np.int8)
    if target == np.float16:
        finite = np.abs(arr[np.isfinite(arr)]) if arr.size else arr
        if finite.size and float(finite.max()) > float(np.finfo(np.float16).max):
            raise ValueError("values beyond ±65504 overflow float16 (mode 12)")
    return np.ascontiguousarray(arr, dtype=target)


def _finalise_header(mrc: Any, stats: tuple[float, float, float, float], labels: list[str]) -> None:
    h = mrc.header
    h.dmin, h.dmax, h.dmean, h.rms = stats
    h.nxstart = h.nystart = h.nzstart = 0
    h.label[:] = b""
    h.nlabl = 0
    for lab in labels:
        mrc.add_label(lab)


def write_map(
    path: PathLike,
    data: ArrayLike,
    voxel_size_a: float | Sequence[float],
    origin_a: Sequence[float] = (0.0, 0.0, 0.0),
    *,
    provenance: Mapping[str, Any] | None = None,
    dtype: WriteDtype = "float32",
) -> Path:
    """Write a 3D map atomically as MRC2014 (passes ``mrcfile.validate``).

    Parameters
    ----------
    path
        Output file; a ``.gz`` or ``.bz2`` suffix compresses it.
    data : array, shape (z, y, x)
    voxel_size_a
        Voxel size in Å, scalar or ``(z, y, x)``.
    origin_a
        Physical ``(z, y, x)`` position in Å of voxel ``data[0, 0, 0]``; stored in the header
        ``origin`` field (``nstart`` is 0).
    provenance
        A :func:`cryoset.provenance.make_provenance` record: summarised in an MRC label and
        written in full to the ``<path>.provenance.json`` sidecar.
    dtype
        ``"float32"`` (mode 2, default), ``"float16"`` (mode 12) or ``"int8"`` (mode 0; data
        are rounded and must lie in [-128, 127]).

    Returns
    -------
    Path
    """
    arr = _convert(data, dtype)
    if arr.ndim != 3:
        raise ValueError(f"a map must be 3D (z, y, x), got shape {arr.shape}")
    vz = np.broadcast_to(np.asarray(voxel_size_a, dtype=np.float64), (3,))
    oz = np.asarray(origin_a, dtype=np.float64).reshape(3)
    if np.any(vz <= 0) or not np.all(np.isfinite(vz)):
        raise ValueError(f"voxel_size_a must be positive, got {voxel_size_a!r}")
    out = Path(path)
    compression = _compression_for(out)
    with atomic_path(out) as tmp, mrcfile.new(tmp, compression=compression, overwrite=True) as mrc:
        mrc.set_data(arr)
        mrc.set_volume()
        mrc.voxel_size = (float(vz[2]), float(vz[1]), float(vz[0]))
        mrc.header.origin = (float(oz[2]), float(oz[1]), float(oz[0]))
        _finalise_header(mrc, _array_stats(arr), _label_text(provenance))
    if provenance is not None:
        write_provenance(out, provenance)
    return out


def _compression_for(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return "gzip"
    if suffix == ".bz2":
        return "bzip2"
    return None


@dataclass
class _StatsAccumulator:
    """One-pass min/max/mean/RMS deviation in float64, with a shift against cancellation."""

    n: int = 0
    lo: float = np.inf
    hi: float = -np.inf
    shift: float | None = None
    s1: float = 0.0
    s2: float = 0.0

    def add(self, chunk: NDArray[Any]) -> None:
        c = np.asarray(chunk)
        if c.size == 0:
            return
        if c.dtype != np.float64:
            c = c.astype(np.float32, copy=False)  # exact for int8/int16/uint16/float16
        if self.shift is None:
            self.shift = float(c.mean(dtype=np.float64))
        d = c - c.dtype.type(self.shift)
        self.n += int(c.size)
        self.lo = min(self.lo, float(c.min()))
        self.hi = max(self.hi, float(c.max()))
        self.s1 += float(d.sum(dtype=np.float64))
        self.s2 += float(np.square(d).sum(dtype=np.float64))

    def result(self) -> tuple[float, float, float, float]:
        if self.n == 0 or self.shift is None:
            return 0.0, 0.0, 0.0, 0.0
        m1 = self.s1 / self.n
        var = max(self.s2 / self.n - m1 * m1, 0.0)
        return self.lo, self.hi, self.shift + m1, float(np.sqrt(var))


def _array_stats(arr: NDArray[Any], chunk: int = 64) -> tuple[float, float, float, float]:
    """Header statistics (min, max, mean, rms deviation) computed in float64, chunk by chunk."""
    acc = _StatsAccumulator()
    if arr.ndim == 0:
        acc.add(arr)
    for start in range(0, arr.shape[0] if arr.ndim else 0, chunk):
        acc.add(arr[start : start + chunk])
    return acc.result()


def write_stack(
    path: PathLike,
    data: ArrayLike,
    pixel_size_a: float,
    *,
    provenance: Mapping[str, Any] | None = None,
    dtype: WriteDtype = "float32",
    chunk_images: int = 256,
) -> Path:
    """Write an image stack ``(n, y, x)`` atomically as an MRC2014 stack (ISPG 0).

    The data are copied in chunks of ``chunk_images`` images, so a memory-mapped input of any
    size is written without loading it whole. ``dtype`` and ``provenance`` as in
    :func:`write_map`. A 2D array is written as a stack of one image.

    Returns
    -------
    Path
    """
    src = data if isinstance(data, np.ndarray) else np.asarray(data)
    if src.ndim == 2:
        src = src[np.newaxis]
    if src.ndim != 3:
        raise ValueError(f"a stack must be (n, y, x), got shape {src.shape}")
    if not np.isfinite(pixel_size_a) or pixel_size_a <= 0:
        raise ValueError(f"pixel_size_a must be positive, got {pixel_size_a!r}")
    n = int(src.shape[0])
    if n == 0:
        raise ValueError("cannot write an empty stack")
    out = Path(path)
    mode_dtype = np.dtype(_WRITE_MODES[dtype]) if dtype in _WRITE_MODES else None
    if mode_dtype is None:
        raise ValueError(f"dtype must be one of {sorted(_WRITE_MODES)}, not {dtype!r}")
    # In-memory arrays are written in one go (a memory-mapped write pays an msync per file,
    # several times slower for the many small stacks of an extraction); memory-mapped or
    # very large inputs are copied chunk by chunk.
    in_memory = not isinstance(src, np.memmap) and src.nbytes <= _IN_MEMORY_WRITE_BYTES
    if _compression_for(out) is not None or in_memory:
        arr = _convert(src, dtype)
        with atomic_path(out) as tmp, mrcfile.new(tmp, compression=_compression_for(out), overwrite=True) as mrc:
            mrc.set_data(arr)
            mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size_a)
            _finalise_header(mrc, _array_stats(arr), _label_text(provenance))
    else:
        mode = {np.dtype(np.float32): 2, np.dtype(np.float16): 12, np.dtype(np.int8): 0}[mode_dtype]
        with atomic_path(out) as tmp:
            with mrcfile.new_mmap(tmp, shape=tuple(int(s) for s in src.shape), mrc_mode=mode, overwrite=True) as mrc:
                acc = _StatsAccumulator()
                for start in range(0, n, chunk_images):
                    block = _convert(src[start : start + chunk_images], dtype)
                    mrc.data[start : start + chunk_images] = block
                    acc.add(block)
                mrc.set_image_stack()
                mrc.voxel_size = float(pixel_size_a)
                _finalise_header(mrc, acc.result(), _label_text(provenance))
    if provenance is not None:
        write_provenance(out, provenance)
    return out


# --------------------------------------------------------------------------- validation


_VALID_EXTTYPES = (b"CCP4", b"MRCO", b"SERI", b"AGAR", b"FEI1", b"FEI2", b"HDF5")
_MRC2014_ITEM_BYTES: Mapping[int, float] = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2}


def _data_block_bytes(header: Any) -> int | None:
    nx, ny, nz, mode = int(header.nx), int(header.ny), int(header.nz), int(header.mode)
    if min(nx, ny, nz) < 0:
        return None
    if mode == 101:
        return ((nx + 1) // 2) * ny * nz
    if mode not in _MRC2014_ITEM_BYTES:
        return None
    return int(nx * ny * nz * _MRC2014_ITEM_BYTES[mode])


def _chunked_stats(data: NDArray[Any]) -> tuple[float, float, float, float]:
    flat = data.reshape(-1, *data.shape[-2:]) if data.ndim >= 2 else data.reshape(1, 1, -1)
    return _array_stats(flat, chunk=max(1, (1 << 24) // max(1, flat[0].size)))


def _statistics_problems(header: Any, data: NDArray[Any]) -> list[str]:
    """The MRC2014 statistics rule, computed in float64 chunk by chunk."""
    problems: list[str] = []
    if data.size == 0:
        return problems
    lo, hi, mean, rms = _chunked_stats(data)
    h_rms, h_min, h_max, h_mean = (float(header.rms), float(header.dmin), float(header.dmax), float(header.dmean))
    if h_rms >= 0 and not np.isclose(rms, h_rms, rtol=0.01):
        problems.append(
            f"The header RMS deviation {h_rms:g} does not match the data ({rms:g}); set it to "
            "the true value or to -1 (undetermined)."
        )
    if h_min < h_max:
        if h_min != np.float32(lo) or h_max != np.float32(hi):
            problems.append(
                f"The header minimum/maximum ({h_min:g}, {h_max:g}) do not match the data "
                f"({lo:g}, {hi:g}); set them to the true values or DMAX < DMIN (undetermined)."
            )
    if h_mean > min(h_min, h_max) and not np.isclose(mean, h_mean, rtol=0.01):
        problems.append(
            f"The header mean {h_mean:g} does not match the data ({mean:g}); set it to the true "
            "value or below min(DMIN, DMAX) (undetermined)."
        )
    return problems


def validate_mrc(path: PathLike) -> list[str]:
    """Check a file against the MRC2014 specification (Cheng et al. 2015).

    The rules are those of ``mrcfile.validate`` (and give the same verdict on the files
    mrcfile can read), reworded as sentences and computed lazily: the data block is
    memory-mapped and the statistics are accumulated in float64 chunk by chunk, so a stack of
    any size is checked in bounded memory and float16 data do not overflow. Rules: map ID,
    machine stamp, mode, non-negative dimensions and cell, axis mapping, volume-stack
    ``nz % mz``, labels, ``nversion`` 20140/20141, extended-header type, header statistics
    (DMIN/DMAX/DMEAN/RMS or their "undetermined" markers), file size.

    Returns
    -------
    list of str
        One sentence per failed rule; empty when the file is valid.

    Raises
    ------
    InputError
        The file is missing, empty or too short to hold an MRC header.
    """
    p = Path(path)
    _check_exists(p)
    compression = _compression(p)
    size = p.stat().st_size
    if compression is None and size < HEADER_BYTES:
        raise InputError(p, f"the file is truncated: {size} bytes, shorter than the 1024-byte MRC header")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(p, mode="r", permissive=True, header_only=True) as mrc:
                h = mrc.header.copy()
    except (ValueError, EOFError, OSError) as exc:
        raise InputError(p, f"cannot read the file as MRC ({exc})") from exc
    problems: list[str] = []
    found = bytes(h.map)
    if found != b"MAP ":
        problems.append(f"The map ID (bytes 209-212) is {found.decode('latin-1')!r}, not 'MAP '.")
    if tuple(int(b) for b in h.machst[:2]) not in _KNOWN_MACHINE_STAMPS:
        stamp = " ".join(f"0x{int(b):02X}" for b in h.machst)
        problems.append(
            f"The machine stamp {stamp} is not 0x44 0x44 0x00 0x00 or 0x44 0x41 0x00 0x00 "
            "(little-endian) or 0x11 0x11 0x00 0x00 (big-endian)."
        )
    mode = int(h.mode)
    if mode not in MODE_NAMES:
        problems.append(f"The mode {mode} is not an MRC2014 data mode (0, 1, 2, 3, 4, 6, 12, 101).")
    for name in ("nx", "ny", "nz", "mx", "my", "mz", "ispg", "nlabl"):
        if int(h[name]) < 0:
            problems.append(f"The header field {name.upper()} is negative ({int(h[name])}).")
    for axis in ("x", "y", "z"):
        if float(h.cella[axis]) < 0:
            problems.append(f"The cell dimension CELLA.{axis} is negative ({float(h.cella[axis]):g} Å).")
    axes = (int(h.mapc), int(h.mapr), int(h.maps))
    if sorted(axes) != [1, 2, 3]:
        problems.append(f"The axis mapping (MAPC, MAPR, MAPS) = {axes} is not a permutation of (1, 2, 3).")
    if 401 <= int(h.ispg) <= 630 and int(h.mz) > 0 and int(h.nz) % int(h.mz) != 0:
        problems.append(
            f"A volume stack (ISPG {int(h.ispg)}) needs NZ divisible by MZ, but NZ = {int(h.nz)} "
            f"and MZ = {int(h.mz)}."
        )
    used = [len(bytes(lab).strip()) > 0 for lab in h.label]
    if any(used[i] and not used[i - 1] for i in range(1, len(used))):
        problems.append("The header has empty labels between labels that contain text.")
    if sum(used) != int(h.nlabl):
        problems.append(f"NLABL is {int(h.nlabl)} but {sum(used)} labels contain text.")
    if int(h.nversion) not in (20140, 20141):
        problems.append(f"NVERSION is {int(h.nversion)}, not 20140 or 20141 (the file does not declare MRC2014).")
    if int(h.nsymbt) > 0 and bytes(h.exttyp) not in _VALID_EXTTYPES:
        problems.append(
            f"There is an extended header ({int(h.nsymbt)} bytes) but EXTTYP "
            f"{bytes(h.exttyp).decode('latin-1')!r} is not a known type (CCP4, MRCO, SERI, AGAR, FEI1, FEI2, HDF5)."
        )
    data_bytes = _data_block_bytes(h)
    if data_bytes is None or int(h.nsymbt) < 0:
        problems.append("The file size cannot be checked because the header dimensions or mode are invalid.")
        return problems
    expected = HEADER_BYTES + int(h.nsymbt) + data_bytes
    data: NDArray[Any] | None = None
    if compression is None:
        if size != expected:
            problems.append(
                f"The file is {size} bytes but the header implies {expected} "
                f"(1024 + {int(h.nsymbt)} extended header + {data_bytes} data)."
            )
        if mode in _MODE_DTYPES and size >= expected:
            data = np.memmap(
                p, dtype=_data_dtype(h), mode="r", offset=HEADER_BYTES + int(h.nsymbt),
                shape=(int(h.nz), int(h.ny), int(h.nx)),
            )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with mrcfile.open(p, mode="r", permissive=True) as mrc:
                    data = None if mrc.data is None else np.array(mrc.data)
            except (ValueError, EOFError, OSError):
                data = None
        if data is None or data.nbytes != data_bytes:
            problems.append(f"The decompressed data block does not hold the {data_bytes} bytes the header implies.")
            data = None
    if data is not None and mode != 4:
        problems.extend(_statistics_problems(h, data))
    return problems
