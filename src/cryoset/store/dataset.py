"""The particle store: one directory, one experiment per sub-directory.

Layout::

    STORE/
      store.json                         format, schema version, encoding, codec
      experiments/
        EMPIAR-10028/
          images.zarr                    Zarr v3 array (n, y, x), chunked along n
          annotations.parquet            one row per particle (cryoset.store.schema)
          provenance.json
      experiments/.EMPIAR-10017.<random>.part   an experiment being written (invisible)

Appending an experiment writes a hidden temporary directory and renames it into place
when complete, so readers never see a half-written experiment and the other experiments
are never rewritten. The rename is exclusive (a second writer of the same id fails, unless
it asked to replace) and commits are serialised by an ``flock`` on ``STORE/.commit.lock``. Images are stored as uint8 with a per-particle linear scaling
(``image_offset + image_scale * stored``; the scaling is in the Parquet table) or as
float16; chunks are compressed with Blosc-Zstd + bit-shuffle (the measured choice, see
docs/store.md).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from cryoset import __version__
from cryoset.errors import InputError
from cryoset.io.atomic import (
    DestinationExists,
    atomic_directory,
    atomic_path,
    exclusive_lock,
    remove_stale_parts,
    write_text_atomic,
)
from cryoset.store.schema import FIELD_TYPES, REQUIRED, SCHEMA_VERSION

Encoding = Literal["uint8", "float16"]
STORE_FORMAT = "cryoset-particle-store"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def encode_uint8(images: NDArray[Any], clip_percentile: float = 0.05
                 ) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]]:
    """Per-image linear quantisation to uint8.

    Parameters
    ----------
    images : array, shape (n, y, x)
    clip_percentile
        Values below the ``p``-th and above the ``(100 - p)``-th percentile of each image
        are clipped (0 keeps the full range).

    Returns
    -------
    stored : uint8 (n, y, x)
    offset, scale : float32 (n,)
        ``decoded = offset + scale * stored``; the error is at most ``scale / 2`` inside
        the clip range.
    """
    x = np.asarray(images, dtype=np.float32)
    flat = x.reshape(len(x), -1)
    if clip_percentile > 0:
        lo, hi = np.percentile(flat, [clip_percentile, 100 - clip_percentile], axis=1)
    else:
        lo, hi = flat.min(axis=1), flat.max(axis=1)
    lo = lo.astype(np.float32)
    scale = ((hi - lo) / 255.0).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    q = np.rint((x - lo[:, None, None]) / scale[:, None, None])
    return np.clip(q, 0, 255).astype(np.uint8), lo, scale


@numba.njit(cache=True, nogil=True)
def _gather_decode_u8(stored: NDArray[np.uint8], rows: NDArray[np.int64], offset: NDArray[np.float32],
                      scale: NDArray[np.float32], out: NDArray[np.float32]) -> None:  # pragma: no cover
    ny, nx = stored.shape[1], stored.shape[2]
    for i in range(rows.shape[0]):
        j = rows[i]
        o = offset[j]
        s = scale[j]
        for y in range(ny):
            for x in range(nx):
                out[i, y, x] = stored[j, y, x] * s + o


def decode(stored: NDArray[Any], offset: NDArray[Any], scale: NDArray[Any], rows: NDArray[Any] | None = None,
           out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    """Inverse of the storage encoding: ``offset + scale * stored`` per image (float32).

    Parameters
    ----------
    stored : array, uint8 or float16, shape (n, y, x)
    offset, scale : array, shape (n,)
    rows : int array, shape (k,), optional
        Decode only these images, in this order (a gather fused with the decode: one pass
        over the output, no intermediate copy). Default: all ``n``.
    out : float32 array, shape (k, y, x), optional
        Where to write (e.g. the memory of a ``torch.empty`` tensor); C-contiguous.

    Returns
    -------
    float32 array, shape (k, y, x)
        ``stored[rows] * scale[rows] + offset[rows]`` computed in float32 (the same bits
        whichever path: uint8 stores use a compiled single-pass kernel).
    """
    src = np.asarray(stored)
    idx = np.arange(len(src), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(src)):
        raise IndexError(f"rows: out of range 0..{len(src) - 1}")
    shape = (idx.size, *src.shape[1:])
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out: need a C-contiguous float32 array of shape {shape}")
    off = np.ascontiguousarray(offset, dtype=np.float32)
    sc = np.ascontiguousarray(scale, dtype=np.float32)
    if src.dtype == np.uint8 and src.ndim == 3:
        _gather_decode_u8(np.ascontiguousarray(src), idx, off, sc, out)
        return out
    np.multiply(src[idx] if rows is not None else src, sc[idx, None, None], out=out, dtype=np.float32)
    out += off[idx, None, None]
    return out


@dataclass
class Selection:
    """A set of particles: at least ``experiment_id`` and ``particle_index`` columns.

    Loaders and exports accept a selection; extra columns (annotations) ride along.
    """

    table: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in ("experiment_id", "particle_index") if c not in self.table.columns]
        if missing:
            raise InputError("selection", f"lacks column(s) {', '.join(missing)}")
        self.table = self.table.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.table)

    def groups(self) -> Iterator[tuple[str, NDArray[np.int64]]]:
        """(experiment_id, particle indices) in selection order within each experiment."""
        for exp, sub in self.table.groupby("experiment_id", sort=True):
            yield str(exp), sub["particle_index"].to_numpy(np.int64)


#: Chunk codecs a store can be created with (measured in docs/benchmarks.md, store section).
CODECS = ("blosc-zstd-3-bitshuffle", "zstd-9", "none")
DEFAULT_CODEC = "blosc-zstd-3-bitshuffle"
#: The store's kept flags (:meth:`ParticleStore.write_selection`), queried as the ``selection`` view.
SELECTION_FILE = "selection.parquet"
POSES_FILE = "poses.parquet"
#: The per-particle pose columns of ``STORE/poses.parquet`` (:meth:`ParticleStore.write_poses`): the
#: schema's pose3d names; ``alignment_error_deg`` is the angular error (cryoPANDA's ``3DAlignmentError``,
#: unit unstated, stays ``alignment_error_3d``), ``random_subset`` the gold-standard half (1/2; 0: none).
POSE_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("rot_deg", pa.float64()), ("tilt_deg", pa.float64()), ("psi_deg", pa.float64()),
    ("shift_x_a", pa.float64()), ("shift_y_a", pa.float64()), ("alignment_error_deg", pa.float64()),
    ("max_prob", pa.float64()), ("random_subset", pa.int8()))


def _compressors(codec: str) -> list[Any]:
    """The Zarr v3 compressors of a codec name from :data:`CODECS`."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if codec == "blosc-zstd-3-bitshuffle":
        return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")]
    if codec == "zstd-9":
        return [ZstdCodec(level=9)]
    if codec == "none":
        return []
    raise ValueError(f"codec: must be one of {', '.join(CODECS)}, got {codec!r}")


def _read_ranges(reads: Sequence[tuple[Any, int, int]]) -> list[NDArray[Any]]:
    """``arr[lo:hi]`` for each ``(arr, lo, hi)``, read concurrently through Zarr's event loop
    (its I/O and codec work overlap); sequentially if that loop is not available."""
    if len(reads) == 1:
        arr, lo, hi = reads[0]
        return [np.asarray(arr[lo:hi])]
    try:
        from zarr.core.sync import sync
    except ImportError:  # pragma: no cover - a Zarr without the sync helper
        return [np.asarray(arr[lo:hi]) for arr, lo, hi in reads]

    async def gather() -> list[Any]:
        return list(await asyncio.gather(*(arr.async_array.getitem(slice(lo, hi)) for arr, lo, hi in reads)))

    return [np.asarray(b) for b in sync(gather())]


@dataclass(frozen=True)
class ChunkFiles:
    """Whole-chunk reads of an experiment's ``images.zarr`` straight from its chunk files.

    Zarr's Python machinery costs about four times the file read and decompression of a
    chunk (docs/benchmarks.md, store section), which bounds a loader at 128² and above. This
    reader handles exactly the layout this store writes — Zarr v3, a regular grid chunked
    along ``n`` only, the default ``c/<i>/0/0`` chunk keys, the ``bytes`` codec (little-endian)
    followed by nothing, Blosc or Zstd, no storage transformers — and :meth:`probe` returns
    None for anything else, so Zarr reads it. A chunk file that is absent holds only the fill
    value (Zarr does not write such chunks), as in Zarr.
    """

    directory: Path
    shape: tuple[int, int, int]
    chunk_rows: int
    dtype: np.dtype[Any]
    fill_value: float
    codec: str  # "none", "blosc" or "zstd"

    @classmethod
    def probe(cls, directory: Path) -> ChunkFiles | None:
        """The reader for the array at ``directory``, or None when its layout is not ours."""
        try:
            meta = json.loads((directory / "zarr.json").read_text())
            shape = tuple(int(v) for v in meta["shape"])
            chunks = tuple(int(v) for v in meta["chunk_grid"]["configuration"]["chunk_shape"])
            dtype = np.dtype({"uint8": "u1", "float16": "<f2"}[meta["data_type"]])
            codecs = meta["codecs"]
            fill = float(meta["fill_value"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        ok = (meta.get("zarr_format") == 3 and meta.get("node_type") == "array" and len(shape) == 3
              and meta["chunk_grid"].get("name") == "regular" and len(chunks) == 3
              and chunks[1:] == shape[1:] and chunks[0] > 0 and not meta.get("storage_transformers")
              and meta.get("chunk_key_encoding") == {"name": "default", "configuration": {"separator": "/"}}
              and isinstance(codecs, list) and 1 <= len(codecs) <= 2 and codecs[0].get("name") == "bytes"
              and codecs[0].get("configuration", {"endian": "little"}).get("endian", "little") == "little")
        names = [c.get("name") for c in codecs[1:]] if ok else []
        if not ok or names not in ([], ["blosc"], ["zstd"]):
            return None
        return cls(directory, (shape[0], shape[1], shape[2]), chunks[0], dtype, fill, names[0] if names else "none")

    def rows_in(self, chunk: int) -> int:
        """How many rows chunk ``chunk`` holds (the last one may be short)."""
        rows = min(self.chunk_rows, self.shape[0] - chunk * self.chunk_rows)
        if chunk < 0 or rows <= 0:
            raise IndexError(f"chunk {chunk} out of range for {self.directory}")
        return rows

    def read(self, chunk: int, out: NDArray[Any] | None = None) -> NDArray[Any]:
        """Rows ``[chunk · c, min((chunk + 1) · c, n))`` as an array ``(rows, y, x)``.

        ``out`` (C-contiguous, ``(rows, y, x)``, the stored dtype) receives a whole chunk
        without an intermediate copy (the short last chunk goes through a temporary).
        """
        rows = self.rows_in(chunk)
        path = self.directory / "c" / str(chunk) / "0" / "0"
        full = (self.chunk_rows, self.shape[1], self.shape[2])
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if out is not None:
                out[...] = self.fill_value
                return out
            return np.full((rows, *full[1:]), self.fill_value, dtype=self.dtype)
        expected = int(np.prod(full)) * self.dtype.itemsize
        if self.codec == "none":
            if len(raw) != expected:
                raise InputError(path, f"chunk holds {len(raw)} bytes, expected {expected}")
            block = np.frombuffer(raw, dtype=self.dtype).reshape(full)[:rows]
            if out is not None:
                out[...] = block
                return out
            return block
        import numcodecs

        codec = numcodecs.Blosc() if self.codec == "blosc" else numcodecs.Zstd()
        direct = out is not None and rows == self.chunk_rows and out.flags.c_contiguous
        dest = out if direct and out is not None else np.empty(full, dtype=self.dtype)
        try:  # decompress straight into the array; the codecs check the decoded size
            if self.codec == "blosc":
                # Blosc trusts its 16-byte header (uint32 LE: decoded size at bytes 4–7,
                # frame size at 12–15): check the frame is whole before decompressing
                nbytes, cbytes = (int.from_bytes(raw[4:8], "little"), int.from_bytes(raw[12:16], "little"))
                if len(raw) < 16 or cbytes != len(raw) or nbytes != expected:
                    raise ValueError(f"frame of {len(raw)} bytes says {cbytes} compressed, {nbytes} decoded")
            codec.decode(raw, out=dest)
        except Exception as exc:  # any codec failure (their exception types vary) is a corrupt chunk
            raise InputError(path, f"chunk does not decode with {self.codec} ({exc})") from None
        if out is not None and not direct:
            out[...] = dest[:rows]
            return out
        return dest[:rows]


@dataclass
class ParticleStore:
    """A particle store on disk. Use :meth:`create` or :meth:`open`."""

    root: Path
    encoding: Encoding = "uint8"
    chunk_particles: int = 256
    codec: str = DEFAULT_CODEC
    _arrays: dict[str, Any] = field(default_factory=dict, repr=False)
    _chunk_files: dict[str, ChunkFiles | None] = field(default_factory=dict, repr=False)
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    _scalings: dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]] = field(default_factory=dict, repr=False)

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, root: str | os.PathLike[str], *, encoding: Encoding = "uint8",
               chunk_particles: int = 256, codec: str = DEFAULT_CODEC) -> ParticleStore:
        """Create an empty store (a directory that must not already hold one).

        ``codec`` (one of :data:`CODECS`) compresses every chunk written to this store:
        the default Blosc-Zstd-3 + bit-shuffle; ``zstd-9`` is smaller and slower to write
        (archival); ``none`` reads fastest (real particle images barely compress).
        """
        _compressors(codec)
        if encoding not in ("uint8", "float16"):
            raise ValueError(f"encoding: must be 'uint8' or 'float16', got {encoding!r}")
        if chunk_particles < 1:
            raise ValueError(f"chunk_particles: must be >= 1, got {chunk_particles}")
        path = Path(root)
        if (path / "store.json").exists():
            raise InputError(path, "already holds a particle store")
        (path / "experiments").mkdir(parents=True, exist_ok=True)
        meta = {"format": STORE_FORMAT, "schema_version": SCHEMA_VERSION, "encoding": encoding,
                "chunk_particles": chunk_particles, "codec": codec,
                "created_by": f"cryoset {__version__}"}
        write_text_atomic(path / "store.json", json.dumps(meta, indent=2) + "\n")
        return cls(path, encoding, chunk_particles, codec)

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> ParticleStore:
        """Open an existing store (InputError when ``root`` is not one)."""
        path = Path(root)
        meta_path = path / "store.json"
        if not meta_path.exists():
            raise InputError(path, "is not a particle store (no store.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise InputError(meta_path, f"is not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise InputError(meta_path, f"format is not {STORE_FORMAT!r}")
        major = str(meta.get("schema_version", "0")).split(".")[0]
        if major != SCHEMA_VERSION.split(".")[0]:
            raise InputError(meta_path, f"schema version {meta.get('schema_version')} is not "
                             f"readable by this cryoset (schema {SCHEMA_VERSION})")
        codec = str(meta.get("codec", DEFAULT_CODEC))
        if codec not in CODECS:
            raise InputError(meta_path, f"codec {codec!r} is not one of {', '.join(CODECS)}")
        return cls(path, meta["encoding"], int(meta["chunk_particles"]), codec)

    # ------------------------------------------------------------------- writing
    def add_experiment(
        self,
        experiment_id: str,
        images: NDArray[Any] | Iterable[NDArray[Any]],
        annotations: pd.DataFrame,
        *,
        provenance: dict[str, Any] | None = None,
        progress: Callable[[int], None] | None = None,
        preencoded: bool = False,
        replace: bool = False,
    ) -> int:
        """Append one experiment; returns its particle count.

        Parameters
        ----------
        experiment_id
            Directory-safe key (letters, digits, ``._-``), unique in the store.
        images
            An array ``(n, y, x)`` or an iterable of such blocks (streamed: memory stays at
            one block).
        annotations
            One row per particle, in image order; schema columns are cast to their types.
        provenance
            Stored as ``provenance.json`` and in the Parquet metadata.
        progress
            Called with the number of particles written after each block.
        preencoded
            ``images`` are already uint8 stored values and ``annotations`` carry their
            ``image_offset`` / ``image_scale`` (lossless import into a uint8 store).
        replace
            Swap an experiment already stored under ``experiment_id`` for this one. Without
            it the commit is exclusive: when the id exists — or another writer commits it
            while this one writes — this call raises :class:`InputError` and the stored
            experiment is untouched.

        Notes
        -----
        Commits (the rename of the complete hidden directory into place, and a replacement)
        are serialised by an ``flock`` on ``STORE/.commit.lock``; the data are written
        before it is taken, so concurrent appends of different experiments run in parallel.
        Hidden ``.<id>.….part`` directories left by killed writers are removed under the
        lock (directories of live writers are recognised by their writer's lock and kept).
        """
        if not _ID.match(experiment_id):
            raise InputError(experiment_id, "experiment id must be letters, digits, '.', '_' or '-'")
        final = self.root / "experiments" / experiment_id
        taken = (f"experiment {experiment_id!r} is already in the store (experiments are never rewritten; "
                 "replace it explicitly)")
        if final.exists() and not replace:
            raise InputError(final, taken)
        with exclusive_lock(self.commit_lock_path):
            remove_stale_parts(self.root / "experiments", f".{experiment_id}.*.part")
        blocks: Iterable[NDArray[Any]] = [images] if isinstance(images, np.ndarray) else images
        try:
            n = self._write_experiment(final, experiment_id, blocks, annotations, provenance, progress,
                                       preencoded, replace)
        except DestinationExists:
            raise InputError(final, taken + ": another writer added it first") from None
        self._arrays.pop(experiment_id, None)
        self._tables.pop(experiment_id, None)
        self._scalings.pop(experiment_id, None)
        self._chunk_files.pop(experiment_id, None)
        return n

    @property
    def commit_lock_path(self) -> Path:
        """The lock file that serialises commits into this store."""
        return self.root / ".commit.lock"

    def _write_experiment(self, final: Path, experiment_id: str, blocks: Iterable[NDArray[Any]],
                          annotations: pd.DataFrame, provenance: dict[str, Any] | None,
                          progress: Callable[[int], None] | None, preencoded: bool, replace: bool) -> int:
        """Write one experiment into a hidden directory and commit it (see :meth:`add_experiment`);
        returns its particle count."""
        import zarr

        offsets: list[NDArray[np.float32]] = []
        scales: list[NDArray[np.float32]] = []
        with atomic_directory(final, replace=replace, lock=self.commit_lock_path) as tmp:
            arr = None
            n = 0
            for block in blocks:
                b = np.asarray(block)
                if b.ndim != 3:
                    raise InputError(experiment_id, f"images must be (n, y, x), got shape {b.shape}")
                if arr is None:
                    dtype = np.uint8 if self.encoding == "uint8" else np.float16
                    arr = zarr.create_array(
                        store=str(tmp / "images.zarr"), shape=(0, b.shape[1], b.shape[2]),
                        chunks=(self.chunk_particles, b.shape[1], b.shape[2]), dtype=dtype,
                        compressors=_compressors(self.codec), zarr_format=3,
                        attributes={"encoding": self.encoding, "axes": ["n", "y", "x"]})
                elif b.shape[1:] != arr.shape[1:]:
                    raise InputError(experiment_id, f"image shape changed from {arr.shape[1:]} to {b.shape[1:]}")
                if preencoded:
                    if self.encoding != "uint8" or b.dtype != np.uint8:
                        raise InputError(experiment_id, "preencoded images must be uint8 for a uint8 store")
                    rows = slice(n, n + len(b))
                    stored = b
                    off = annotations["image_offset"].to_numpy(np.float32)[rows]
                    sc = annotations["image_scale"].to_numpy(np.float32)[rows]
                elif self.encoding == "uint8":
                    stored, off, sc = encode_uint8(b)
                else:
                    stored = b.astype(np.float16)
                    off = np.zeros(len(b), np.float32)
                    sc = np.ones(len(b), np.float32)
                arr.resize((n + len(b), *arr.shape[1:]))
                arr[n:n + len(b)] = stored
                offsets.append(off)
                scales.append(sc)
                n += len(b)
                if progress is not None:
                    progress(n)
            if arr is None:
                raise InputError(experiment_id, "no images")
            if len(annotations) != n:
                raise InputError(experiment_id, f"{len(annotations)} annotation rows for {n} images")
            user = annotations.reset_index(drop=True).drop(
                columns=[c for c in REQUIRED if c in annotations.columns])
            table = pd.concat([
                pd.DataFrame({"experiment_id": [experiment_id] * n,
                              "particle_index": np.arange(n, dtype=np.int64)}),
                user,
                pd.DataFrame({"image_offset": np.concatenate(offsets),
                              "image_scale": np.concatenate(scales)}),
            ], axis=1)
            record = provenance or {}
            pq.write_table(_to_arrow(table, record), tmp / "annotations.parquet", compression="zstd")
            (tmp / "provenance.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        return n

    # ------------------------------------------------------------------- reading
    def experiments(self) -> list[str]:
        """Committed experiments, sorted (hidden ``.…part`` directories are in-flight writes)."""
        exp_dir = self.root / "experiments"
        return sorted(p.name for p in exp_dir.iterdir()
                      if p.is_dir() and not p.name.startswith(".")) if exp_dir.exists() else []

    def _exp_dir(self, experiment_id: str) -> Path:
        d = self.root / "experiments" / experiment_id
        if experiment_id.startswith(".") or not d.is_dir():
            raise InputError(self.root, f"no experiment {experiment_id!r} in the store")
        return d

    def images_array(self, experiment_id: str) -> Any:
        """The raw Zarr array of one experiment (stored dtype)."""
        if experiment_id not in self._arrays:
            import zarr

            self._arrays[experiment_id] = zarr.open_array(str(self._exp_dir(experiment_id) / "images.zarr"),
                                                          mode="r")
        return self._arrays[experiment_id]

    def annotations(self, experiment_id: str) -> pd.DataFrame:
        """One experiment's annotation table (cached)."""
        if experiment_id not in self._tables:
            self._tables[experiment_id] = pq.read_table(
                self._exp_dir(experiment_id) / "annotations.parquet").to_pandas()
        return self._tables[experiment_id]

    def num_particles(self, experiment_id: str) -> int:
        return int(self.images_array(experiment_id).shape[0])

    def _scaling(self, experiment_id: str) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Per-particle ``(image_offset, image_scale)`` arrays of one experiment (cached)."""
        if experiment_id not in self._scalings:
            ann = self.annotations(experiment_id)
            self._scalings[experiment_id] = (ann["image_offset"].to_numpy(np.float32),
                                             ann["image_scale"].to_numpy(np.float32))
        return self._scalings[experiment_id]

    def read_stored(self, experiment_id: str, indices: NDArray[Any] | list[int], out: NDArray[Any] | None = None
                    ) -> tuple[NDArray[Any], NDArray[np.float32], NDArray[np.float32]]:
        """Stored (undecoded) images ``(k, y, x)`` with their offsets and scales ``(k,)``.

        Reads each Zarr chunk touched once, whatever the order of ``indices``; ``out`` (stored
        dtype, shape ``(k, y, x)``) receives the images when given.
        """
        return self.read_stored_many([(experiment_id, indices)], out)

    def chunk_files(self, experiment_id: str) -> ChunkFiles | None:
        """The direct chunk reader of an experiment's images (None: read through Zarr)."""
        if experiment_id not in self._chunk_files:
            self._chunk_files[experiment_id] = ChunkFiles.probe(self._exp_dir(experiment_id) / "images.zarr")
        return self._chunk_files[experiment_id]

    def read_chunks(self, keys: Sequence[tuple[str, int]]) -> list[NDArray[Any]]:
        """Whole chunks ``(experiment_id, chunk)``: ``(rows, y, x)`` stored values each.

        Read straight from the chunk files when the layout is ours (:class:`ChunkFiles`),
        else through Zarr, all such chunks concurrently.
        """
        out: list[NDArray[Any] | None] = [None] * len(keys)
        via_zarr: list[tuple[int, tuple[Any, int, int]]] = []
        cp = self.chunk_particles
        for k, (exp, c) in enumerate(keys):
            files = self.chunk_files(exp)
            if files is not None and files.chunk_rows == cp:
                out[k] = files.read(c)
            else:
                arr = self.images_array(exp)
                via_zarr.append((k, (arr, c * cp, min((c + 1) * cp, arr.shape[0]))))
        for (k, _), block in zip(via_zarr, _read_ranges([r for _, r in via_zarr]) if via_zarr else [], strict=True):
            out[k] = block
        return [b for b in out if b is not None]

    def read_stored_many(self, requests: Sequence[tuple[str, NDArray[Any] | list[int]]],
                         out: NDArray[Any] | None = None
                         ) -> tuple[NDArray[Any], NDArray[np.float32], NDArray[np.float32]]:
        """:meth:`read_stored` of several ``(experiment_id, indices)`` requests, concatenated.

        Every chunk touched is read once (:meth:`read_chunks`). The experiments must share
        one image shape and dtype.
        """
        plans = []
        for experiment_id, indices in requests:
            idx = np.asarray(indices, dtype=np.int64)
            arr = self.images_array(experiment_id)
            n = arr.shape[0]
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise IndexError(f"particle index out of range 0..{n - 1} for {experiment_id}")
            plans.append((experiment_id, idx, arr))
        if not plans:
            raise ValueError("requests: need at least one (experiment_id, indices) pair")
        first = plans[0][2]
        shape = (sum(p[1].size for p in plans), *first.shape[1:])
        if any(p[2].shape[1:] != first.shape[1:] or p[2].dtype != first.dtype for p in plans):
            raise ValueError("requests: experiments with different image shapes or dtypes")
        if out is None:
            out = np.empty(shape, dtype=first.dtype)
        elif out.shape != shape or out.dtype != first.dtype:
            raise ValueError(f"out: need shape {shape} and dtype {first.dtype}")
        cp = self.chunk_particles
        keys: dict[tuple[str, int], int] = {}
        kinds: list[str] = []  # per request: "direct", "run" (contiguous) or "gather"
        pos = 0
        for exp, idx, arr in plans:
            files = self.chunk_files(exp)
            run = bool(idx.size) and idx[-1] - idx[0] == idx.size - 1 and bool(np.all(np.diff(idx) == 1))
            if (files is not None and files.chunk_rows == cp and run and idx[0] % cp == 0
                    and ((idx[-1] + 1) % cp == 0 or idx[-1] + 1 == arr.shape[0])):
                kinds.append("direct")  # whole chunks: decompress straight into ``out``
                for c in range(int(idx[0]) // cp, int(idx[-1]) // cp + 1):
                    lo = pos + c * cp - int(idx[0])
                    files.read(c, out=out[lo:lo + files.rows_in(c)])
            else:
                kinds.append("run" if run else "gather")
                for c in np.unique(idx // cp).tolist():
                    keys.setdefault((exp, int(c)), len(keys))
            pos += idx.size
        blocks = self.read_chunks(list(keys))
        pos = 0
        for (exp, idx, _arr), kind in zip(plans, kinds, strict=True):
            chunk_of = idx // cp
            if kind == "direct":
                pass
            elif kind == "run":
                # a contiguous run (whole chunks, typically): slice copies, no gather
                for c in range(int(chunk_of[0]), int(chunk_of[-1]) + 1):
                    lo, hi = max(int(idx[0]), c * cp), min(int(idx[-1]) + 1, (c + 1) * cp)
                    out[pos + lo - int(idx[0]):pos + hi - int(idx[0])] = blocks[keys[(exp, c)]][lo - c * cp:hi - c * cp]
            elif idx.size:  # gather
                order = np.argsort(chunk_of, kind="stable")
                starts = np.flatnonzero(np.r_[True, chunk_of[order][1:] != chunk_of[order][:-1]]).tolist()
                for a, b in itertools.pairwise([*starts, idx.size]):
                    members = order[a:b]
                    c = int(chunk_of[members[0]])
                    out[pos + members] = blocks[keys[(exp, c)]][idx[members] - c * cp]
            pos += idx.size
        offs, scales = [], []
        for exp, idx, _arr in plans:
            off, sc = self._scaling(exp)
            offs.append(off[idx])
            scales.append(sc[idx])
        return out, np.concatenate(offs), np.concatenate(scales)

    def read_images(self, experiment_id: str, indices: NDArray[Any] | list[int]) -> NDArray[np.float32]:
        """Decoded float32 images ``(k, y, x)`` for particle indices of one experiment."""
        return decode(*self.read_stored(experiment_id, indices))

    # ----------------------------------------------------------------- selection
    @property
    def selection_path(self) -> Path:
        """``STORE/selection.parquet``: the kept flags written by :meth:`write_selection`."""
        return self.root / SELECTION_FILE

    def read_selection(self) -> pd.DataFrame:
        """The kept flags (``experiment_id``, ``particle_index``, ``kept``), sorted; empty when none were written."""
        if not self.selection_path.is_file():
            return pd.DataFrame({"experiment_id": pd.Series([], dtype=object),
                                 "particle_index": pd.Series([], dtype=np.int64),
                                 "kept": pd.Series([], dtype=bool)})
        return pq.read_table(self.selection_path).to_pandas()

    def write_selection(self, experiment_ids: Sequence[str], particle_indices: NDArray[Any] | Sequence[int],
                        kept: NDArray[Any] | Sequence[bool], *, provenance: dict[str, Any] | None = None) -> int:
        """Set the kept flag of some particles (a curation decision, e.g. a 2D class selection).

        The flags of the particles given replace theirs; every other particle keeps its flag
        (or has none). The whole of ``STORE/selection.parquet`` is rewritten under a temporary
        name and renamed into place while the commit lock is held, so a reader sees the old or
        the new flags, never a mix, and two writers do not lose each other's particles.
        Queries see it as the ``selection`` view (:meth:`connect`). Experiments are not touched.

        Returns
        -------
        int
            The number of particles now flagged (all experiments).

        Raises
        ------
        InputError
            An unknown experiment, an index outside it, a repeated particle or unequal lengths.
        """
        exp = np.asarray([str(e) for e in experiment_ids], dtype=object)
        idx = np.asarray(particle_indices, dtype=np.int64)
        flag = np.asarray(kept, dtype=bool)
        if not len(exp) == len(idx) == len(flag):
            raise InputError(self.root, f"selection: {len(exp)} experiment ids, {len(idx)} indices, {len(flag)} flags")
        for e in sorted(set(exp.tolist())):
            n = self.num_particles(e)
            mine = idx[exp == e]
            if mine.size and (mine.min() < 0 or mine.max() >= n):
                raise InputError(self.root, f"selection: particle index outside experiment {e!r} (0…{n - 1})")
        new = pd.DataFrame({"experiment_id": exp, "particle_index": idx, "kept": flag})
        if new.duplicated(["experiment_id", "particle_index"]).any():
            raise InputError(self.root, "selection: a particle is given twice")
        with exclusive_lock(self.commit_lock_path):
            old = self.read_selection()
            key = pd.MultiIndex.from_frame(new[["experiment_id", "particle_index"]])
            keep_old = ~pd.MultiIndex.from_frame(old[["experiment_id", "particle_index"]]).isin(key)
            table = (pd.concat([old[keep_old], new], ignore_index=True)
                     .sort_values(["experiment_id", "particle_index"], kind="stable").reset_index(drop=True))
            arrow = pa.table({"experiment_id": pa.array(table["experiment_id"].astype(str), type=pa.string()),
                              "particle_index": pa.array(table["particle_index"], type=pa.int64()),
                              "kept": pa.array(table["kept"].astype(bool), type=pa.bool_())})
            arrow = arrow.replace_schema_metadata(
                {b"cryoset_provenance": json.dumps(provenance or {}, default=str).encode()})
            with atomic_path(self.selection_path) as tmp:
                pq.write_table(arrow, tmp, compression="zstd")
        return len(table)

    # ----------------------------------------------------------------- poses
    @property
    def poses_path(self) -> Path:
        """``STORE/poses.parquet``: the 3D poses written by :meth:`write_poses`."""
        return self.root / POSES_FILE

    def read_poses(self) -> pd.DataFrame:
        """The 3D poses (``experiment_id``, ``particle_index``, :data:`POSE_FIELDS`), sorted; empty when none."""
        if not self.poses_path.is_file():
            return pd.DataFrame({"experiment_id": pd.Series([], dtype=object),
                                 "particle_index": pd.Series([], dtype=np.int64),
                                 **{n: pd.Series([], dtype=np.float64) for n, _t in POSE_FIELDS}})
        return pq.read_table(self.poses_path).to_pandas()

    def write_poses(self, experiment_id: str, particle_indices: NDArray[Any] | Sequence[int], poses: pd.DataFrame,
                    *, provenance: dict[str, Any] | None = None) -> int:
        """Set the 3D poses of some particles of one experiment (``cryoset poses export``).

        ``poses`` holds the :data:`POSE_FIELDS` columns, one row per index. As with
        :meth:`write_selection`, the poses given replace those of the same particles, the
        others are kept, and ``STORE/poses.parquet`` is rewritten under a temporary name and
        renamed while the commit lock is held; queries see it as the ``poses`` view.
        Experiments are not touched.

        Returns
        -------
        int
            The number of particles with poses (all experiments).

        Raises
        ------
        InputError
            An unknown experiment, an index outside it, a repeated particle, a missing column
            or unequal lengths.
        """
        idx = np.asarray(particle_indices, dtype=np.int64)
        n = self.num_particles(experiment_id)
        lack = [name for name, _t in POSE_FIELDS if name not in poses.columns]
        if lack:
            raise InputError(self.root, f"poses: lack column(s) {', '.join(lack)}")
        if len(poses) != len(idx):
            raise InputError(self.root, f"poses: {len(idx)} indices, {len(poses)} rows")
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise InputError(self.root, f"poses: particle index outside experiment {experiment_id!r} (0…{n - 1})")
        if len(np.unique(idx)) != len(idx):
            raise InputError(self.root, "poses: a particle is given twice")
        new = pd.DataFrame({"experiment_id": str(experiment_id), "particle_index": idx,
                            **{name: poses[name].to_numpy() for name, _t in POSE_FIELDS}})
        with exclusive_lock(self.commit_lock_path):
            old = self.read_poses()
            keep_old = ~((old["experiment_id"].astype(str) == str(experiment_id)).to_numpy()
                         & np.isin(old["particle_index"].to_numpy(np.int64), idx))
            table = (pd.concat([old[keep_old], new], ignore_index=True)
                     .sort_values(["experiment_id", "particle_index"], kind="stable").reset_index(drop=True))
            arrow = pa.table({"experiment_id": pa.array(table["experiment_id"].astype(str), type=pa.string()),
                              "particle_index": pa.array(table["particle_index"], type=pa.int64()),
                              **{name: pa.array(table[name], type=typ, from_pandas=True) for name, typ in POSE_FIELDS}})
            arrow = arrow.replace_schema_metadata(
                {b"cryoset_provenance": json.dumps(provenance or {}, default=str).encode()})
            with atomic_path(self.poses_path) as tmp:
                pq.write_table(arrow, tmp, compression="zstd")
        return len(table)

    # ------------------------------------------------------------------- queries
    def parquet_files(self) -> list[Path]:
        return [self.root / "experiments" / e / "annotations.parquet" for e in self.experiments()]

    def connect(self) -> Any:
        """A read-only DuckDB connection with a ``particles`` view over every committed experiment
        (and a ``selection`` view of the kept flags once :meth:`write_selection` wrote some).

        It can read the store's Parquet files and nothing else (no other file, URL,
        database or extension; configuration locked): see :mod:`cryoset.store.sql`.
        """
        from cryoset.store.sql import read_only_connection

        views: dict[str, list[Path]] = dict(self.embedding_views())
        if self.selection_path.is_file():
            views["selection"] = [self.selection_path]
        if self.poses_path.is_file():
            views["poses"] = [self.poses_path]
        return read_only_connection(self.parquet_files(), extra_views=views)

    def embedding_views(self) -> dict[str, list[Path]]:
        """``embeddings_<name>`` → the ``index.parquet`` files of every committed embedding
        ``experiments/<id>/embeddings/<name>/`` (written by ``cryoset embed``)."""
        views: dict[str, list[Path]] = {}
        for exp in self.experiments():
            d = self.root / "experiments" / exp / "embeddings"
            if not d.is_dir():
                continue
            for sub in sorted(d.iterdir()):
                if (sub.is_dir() and re.fullmatch(r"[a-z][a-z0-9_]{0,62}", sub.name)
                        and (sub / "index.parquet").is_file()):
                    views.setdefault(f"embeddings_{sub.name}", []).append(sub / "index.parquet")
        return views

    def query(self, sql: str) -> pd.DataFrame:
        """Run one read-only SELECT against the ``particles`` view; returns a DataFrame.

        Anything but a single SELECT (``COPY``, ``ATTACH``, ``SET``, ``INSTALL``…) and any
        access outside the store is an :class:`InputError` (``query: …``).
        """
        from cryoset.store.sql import run_select

        con = self.connect()
        try:
            return run_select(con, sql)
        finally:
            con.close()

    def select(self, sql: str | None = None) -> Selection:
        """A :class:`Selection` from SQL (must return experiment_id and particle_index), or all."""
        frame = self.query(sql or "SELECT * FROM particles ORDER BY experiment_id, particle_index")
        return Selection(frame)


def _to_arrow(table: pd.DataFrame, provenance: dict[str, Any]) -> pa.Table:
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise InputError("annotations", f"lack required column(s) {', '.join(missing)}")
    arrays = []
    names = []
    for col in table.columns:
        typ = FIELD_TYPES.get(str(col))
        series = table[col]
        if typ is not None:
            values = series.astype(object).where(series.notna(), None) if typ == pa.string() else series
            arrays.append(pa.array(values, type=typ, from_pandas=True))
        else:
            arrays.append(pa.array(series, from_pandas=True))
        names.append(str(col))
    meta = {b"cryoset_schema_version": SCHEMA_VERSION.encode(),
            b"cryoset_provenance": json.dumps(provenance, default=str).encode()}
    return pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(meta)
