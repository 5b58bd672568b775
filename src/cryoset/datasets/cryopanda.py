"""cryoPANDA per-experiment particle files, ``<EXPERIMENT>_particles.h5``, in both directions.

Published layout (the authors' ``create_h5_dataset`` notebook and ``MultiH5Dataset`` reader):
exactly two root datasets and no attributes —

* ``images``: uint8 ``(n, 224, 224)``; every particle resized to 224 px by bilinear
  interpolation with antialiasing (``align_corners=False``) in float32, then min–max scaled
  per image, ``round((p - min) / (max - min + 1e-8) · 255)``;
* ``annotations``: one scalar string, ``json.dumps`` of a dict ``column → list of n values``,
  in the published column order (:data:`CRYOPANDA_KEYS`, 48 keys for experiments that started
  from micrographs, 38 for those that started from picked particles).

:func:`import_cryopanda` maps the published keys onto the store schema (our names and units,
``docs/formats-particles.md``), streams the images in blocks (memory bounded by the block, not
the file) and records how each key was written (value kinds, identifier forms, key order) in
the experiment's provenance, so :func:`export_cryopanda` writes the same file back.
:func:`export_cryopanda` writes the exact layout from any store selection;
:func:`read_probe_selection` turns the authors' probe / index Parquet files into store
selections.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.store.exports import read_hdf5_annotations, read_hdf5_layout

#: The published annotation keys in their order: (key, store column, conversion).
#: Conversions: ``=`` the value as is (units already those of the column name);
#: ``id`` normalised accession (``EMPIAR-NNNNN``, ``EMD-NNNN``, upper-case PDB id);
#: ``text`` kept as text.
CRYOPANDA_KEYS: tuple[tuple[str, str, str], ...] = (
    ("uid", "uid", "="),
    ("ImageName", "image_name", "text"),
    ("AngleRot", "rot_deg", "="),
    ("AngleTilt", "tilt_deg", "="),
    ("AnglePsi", "psi_deg", "="),
    ("OriginXAngst", "shift_x_a", "="),
    ("OriginYAngst", "shift_y_a", "="),
    ("DefocusU", "defocus_u_a", "="),
    ("DefocusV", "defocus_v_a", "="),
    ("DefocusAngle", "defocus_angle_deg", "="),
    ("ClassNumber", "class_number", "="),
    ("2DAlignmentClassESS", "ess", "="),
    ("ClassECA", "eca", "="),
    ("MicrographName", "micrograph", "text"),
    ("MicrographShapeX", "micrograph_nx_px", "="),
    ("MicrographShapeY", "micrograph_ny_px", "="),
    ("ParticleXFrac", "x_frac", "="),
    ("ParticleYFrac", "y_frac", "="),
    ("MicrographPixelSize", "micrograph_pixel_size_a", "="),
    ("NCCScore", "ncc_score", "="),
    ("CoordinateX", "x_px", "="),
    ("CoordinateY", "y_px", "="),
    ("CoordinateYTransposed", "coordinate_y_transposed", "="),
    ("ClassResolution", "class_resolution_a", "="),
    ("3DAlignmentError", "alignment_error_3d", "="),
    ("EMPIAR_ID", "empiar_id", "id"),
    ("EMD_ID", "emdb_id", "id"),
    ("PDB_ID", "pdb_id", "id"),
    ("Voltage", "voltage_kv", "="),
    ("ElectronDose", "dose_e_per_a2", "="),
    ("SphericalAberration", "cs_mm", "="),
    ("AmplitudeContrast", "amplitude_contrast", "="),
    ("ImageSize", "image_size_px", "="),
    ("OriginalPixelSize", "original_pixel_size_a", "="),
    ("ImagePixelSize", "box_pixel_size_a", "="),
    ("ReconstructionResolution", "reconstruction_resolution_a", "="),
    ("EMD_Resolution", "emd_resolution_a", "="),
    ("MolecularWeight_kDa", "molecular_weight_kda", "="),
    ("Subunits", "subunits", "="),
    ("MaxDiameter", "max_diameter_a", "="),
    ("Symmetry", "symmetry", "text"),
    ("DNA", "dna", "="),
    ("RNA", "rna", "="),
    ("ProteinClass", "protein_class", "text"),
    ("SampleName", "sample_name", "text"),
    ("NumberOfParticles", "number_of_particles", "="),
    ("DataSourceType", "data_source_type", "text"),
    ("BadReconstruction", "bad_reconstruction", "="),
)

#: The 10 keys absent from experiments that started from picked particles.
MICROGRAPH_KEYS: tuple[str, ...] = (
    "MicrographName", "MicrographShapeX", "MicrographShapeY", "ParticleXFrac", "ParticleYFrac",
    "MicrographPixelSize", "NCCScore", "CoordinateX", "CoordinateY", "CoordinateYTransposed")

KEY_TO_COLUMN: dict[str, str] = {k: c for k, c, _ in CRYOPANDA_KEYS}
COLUMN_TO_KEY: dict[str, str] = {c: k for k, c, _ in CRYOPANDA_KEYS}
#: The published image side (pixels).
IMAGE_PX = 224
#: Columns of the probe / index Parquet files (``df_ann.parquet``, probe sets).
PROBE_COLUMNS: tuple[str, ...] = ("FileIndex", "FileName", "FileParticleIndex", "BinIndex", "BinCenter",
                                  "AnnotationValue")
_PROBE_TO_OURS = {"FileIndex": "file_index", "FileName": "file_name", "BinIndex": "bin_index",
                  "BinCenter": "bin_center", "AnnotationValue": "annotation_value"}
_STORE_INTERNAL = ("experiment_id", "particle_index", "image_offset", "image_scale", "pixel_size_a")

_NAME = re.compile(r"^(.+)_particles\.h5$", re.IGNORECASE)


def experiment_id_of(file_name: str) -> str:
    """Store experiment id of a cryoPANDA file name: ``10004_particles.h5`` → ``EMPIAR-10004``,
    ``Kastritis_MIPS_particles.h5`` → ``Kastritis_MIPS`` (anything else kept as written)."""
    m = _NAME.match(Path(file_name).name)
    if m is None:
        raise InputError(file_name, "is not named <EXPERIMENT>_particles.h5")
    stem = m.group(1)
    num = re.fullmatch(r"(?:EMPIAR[-_]?)?(\d{5})", stem, re.IGNORECASE)
    return f"EMPIAR-{num.group(1)}" if num else stem


def file_name_of(experiment_id: str) -> str:
    """Inverse of :func:`experiment_id_of`: ``EMPIAR-10004`` → ``10004_particles.h5``."""
    m = re.fullmatch(r"EMPIAR-(\d{5})", experiment_id)
    return f"{m.group(1) if m else experiment_id}_particles.h5"


def find_cryopanda_files(path: str | os.PathLike[str]) -> dict[str, Path]:
    """Experiment id (:func:`experiment_id_of`) → file for every ``*_particles.h5`` at or below ``path``."""
    p = Path(path)
    if p.is_file():
        candidates = [p]
    elif p.is_dir():
        candidates = sorted(p.rglob("*_particles.h5"))
    else:
        raise InputError(p, "no such file or directory")
    out: dict[str, Path] = {}
    for f in candidates:
        if _NAME.match(f.name):
            out[experiment_id_of(f.name)] = f
    if not out:
        raise InputError(p, "holds no <EMPIAR>_particles.h5 file")
    return out


read_annotations = read_hdf5_annotations


# ------------------------------------------------------------------ value conversion
def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else "float"
    return "str" if isinstance(v, str) else "other"


def normalise_id(key: str, value: Any) -> str | None:
    """Accession in our form: ``EMPIAR-NNNNN``, ``EMD-NNNN`` (4–5 digits), upper-case PDB id."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value).strip()
    if not text or text.lower() in ("nan", "none", "-"):
        return None
    if key == "EMPIAR_ID":
        m = re.fullmatch(r"(?:EMPIAR[-_]?)?(\d{5})(?:[._].*)?", text, re.IGNORECASE)
        return f"EMPIAR-{m.group(1)}" if m else text
    if key == "EMD_ID":
        m = re.fullmatch(r"(?:EMD[-_]?)?(\d{4,5})", text, re.IGNORECASE)
        return f"EMD-{m.group(1)}" if m else text
    return text.upper()


def _numeric(values: list[Any], column: str) -> pd.Series | None:
    """``values`` as a numeric column fitting the schema type of ``column``, or None when they
    do not fit (text, or fractions in an integer column): the key is then kept as published."""
    from cryoset.store.schema import FIELD_TYPES

    present = [v for v in values if _kind(v) not in ("null", "nan")]
    if any(_kind(v) not in ("int", "float", "bool") for v in present):
        return None
    if str(FIELD_TYPES.get(column, "")) in ("int64", "uint64") and all(_kind(v) == "int" for v in present):
        if any(_kind(v) in ("null", "nan") for v in values):  # exact integers beyond 2**53, with gaps
            return pd.Series([v if _kind(v) == "int" else None for v in values], dtype=object)
        return pd.Series(values, dtype=np.uint64 if min(present, default=0) >= 0 else np.int64)
    series = pd.Series([np.nan if _kind(v) in ("null", "nan") else float(v) for v in values], dtype=np.float64)
    typ = str(FIELD_TYPES.get(column, "double"))
    if typ.startswith("int") and not all(float(v).is_integer() for v in present):
        return None
    if typ == "string":
        return None
    return series


def _published_table(raw: dict[str, list[Any]]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The annotations in our columns, and the record of how each key was written
    (key order, value kinds per key, the published form of each identifier, key → column)."""
    kinds: dict[str, list[str]] = {}
    ids: dict[str, dict[str, Any]] = {}
    columns: dict[str, str] = {}
    cols: dict[str, Any] = {}
    conversions = {k: c for k, _, c in CRYOPANDA_KEYS}
    for key, values in raw.items():
        found = {_kind(v) for v in values}
        floats = [v for v in values if _kind(v) == "float"]
        if floats and all(float(np.float32(v)) == v for v in floats):
            found.add("float32")  # float32 values widened (cryoSPARC's): written back widened
        kinds[key] = sorted(found)
        col = KEY_TO_COLUMN.get(key, key)
        conv = conversions.get(key, "")
        if conv == "id":
            norm = [normalise_id(key, v) for v in values]
            ids[key] = {n: v for n, v in zip(norm, values, strict=True) if n is not None}
            cols[col] = pd.Series(norm, dtype=object)
        elif conv == "text":
            cols[col] = pd.Series([None if _kind(v) in ("null", "nan") else str(v) for v in values], dtype=object)
        else:
            series = _numeric(values, col) if conv == "=" else None
            if series is None:  # not our type (or not a published key): kept under the published name
                col = key
                series = pd.Series(values)
            cols[col] = series
        columns[key] = col
    record = {"keys": list(raw), "kinds": kinds, "ids": ids, "columns": columns}
    return pd.DataFrame(cols), record


# ------------------------------------------------------------------ import
def _read_layout(p: Path) -> tuple[int, int, np.dtype[Any], dict[str, list[Any]]]:
    """Image count, width, dtype and the parsed annotations of a file, checked as
    :func:`read_annotations` checks them (InputError naming the file)."""
    shape, dtype, raw = read_hdf5_layout(p)
    return shape[0], shape[2], dtype, raw


def import_cryopanda(path: str | os.PathLike[str], store: Any, experiment_id: str | None = None, *,
                     provenance: dict[str, Any] | None = None, block_particles: int = 1024,
                     replace: bool = False, progress: Callable[[int], None] | None = None) -> int:
    """Add one cryoPANDA file to a :class:`cryoset.store.ParticleStore` under our column names.

    The published keys become store columns (:data:`CRYOPANDA_KEYS`); keys outside that list
    are kept under their published name. ``pixel_size_a`` (that of the stored 224-px image) is
    ``ImagePixelSize · ImageSize / 224``; ``ImagePixelSize`` itself lands in ``box_pixel_size_a``.
    Images are read ``block_particles`` at a time and stored byte for byte in a uint8 store
    (``image_offset`` 0, ``image_scale`` 1). A file written by :func:`cryoset.store.exports.export_hdf5`
    (our names, with ``image_offset``/``image_scale``) imports with its scaling.
    ``experiment_id`` defaults to :func:`experiment_id_of` the file name. Returns the count.
    """
    import h5py

    p = Path(path)
    n, nx, dtype, raw = _read_layout(p)  # checked with a clear message; the JSON parsed once
    table, record = _published_table(raw)
    del raw
    if experiment_id is None:
        experiment_id = experiment_id_of(p.name) if _NAME.match(p.name) else p.stem
    table = table.drop(columns=[c for c in ("experiment_id", "particle_index") if c in table])
    has_scaling = all(c in table for c in ("image_offset", "image_scale"))
    if "pixel_size_a" not in table and "box_pixel_size_a" in table:
        box = pd.to_numeric(table["box_pixel_size_a"], errors="coerce")
        size = pd.to_numeric(table["image_size_px"], errors="coerce") if "image_size_px" in table else float(nx)
        table["pixel_size_a"] = (box * size / nx).astype(np.float64)
    preencoded = dtype == np.uint8 and store.encoding == "uint8"
    if preencoded and not has_scaling:
        table["image_offset"] = np.zeros(n, np.float32)
        table["image_scale"] = np.ones(n, np.float32)
    offsets = table["image_offset"].to_numpy(np.float32) if has_scaling else np.zeros(n, np.float32)
    scales = table["image_scale"].to_numpy(np.float32) if has_scaling else np.ones(n, np.float32)
    if not preencoded:
        table = table.drop(columns=[c for c in ("image_offset", "image_scale") if c in table])

    def blocks() -> Iterator[NDArray[Any]]:
        with h5py.File(p, "r") as h5:
            images = h5["images"]
            for start in range(0, n, block_particles):
                block = np.asarray(images[start:start + block_particles])
                if preencoded:
                    yield block
                else:
                    stop = start + len(block)
                    yield (block.astype(np.float32) * scales[start:stop, None, None]
                           + offsets[start:stop, None, None])

    prov = dict(provenance or {})
    prov["cryopanda"] = {"file": p.name, **record}
    return int(store.add_experiment(experiment_id, blocks(), table, provenance=prov, preencoded=preencoded,
                                    replace=replace, progress=progress))


# ------------------------------------------------------------------ export
def resize_minmax_uint8(images: NDArray[Any], size: int = IMAGE_PX) -> NDArray[np.uint8]:
    """The published image transform: antialiased bilinear resize to ``size`` (float32,
    ``align_corners=False``; skipped when already that size), then per-image
    ``round((p - min) / (max - min + 1e-8) · 255)`` as uint8."""
    x = np.ascontiguousarray(images, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"images: must be (n, y, x), got shape {x.shape}")
    if x.shape[1:] != (size, size):
        import torch

        with torch.no_grad():
            t = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=(size, size), mode="bilinear",
                                                align_corners=False, antialias=True)
        x = t[:, 0].numpy()
    mn = x.min(axis=(1, 2), keepdims=True)
    mx = x.max(axis=(1, 2), keepdims=True)
    scaled = (x - mn) / (mx - mn + np.float32(1e-8)) * np.float32(255)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _stored_provenance(store: Any, experiment_id: str) -> dict[str, Any]:
    path = Path(store.root) / "experiments" / experiment_id / "provenance.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _json_values(key: str, series: pd.Series, kinds: list[str] | None, ids: dict[str, Any] | None,
                 float32: bool) -> list[Any]:
    """One annotation list as published: the value kinds recorded at import (``kinds``) when
    known, else pandas' (NaN for a missing number, null for missing text)."""
    kset = set(kinds or [])
    numeric = pd.api.types.is_numeric_dtype(series.dtype)
    if kinds is not None:
        missing: Any = None if ("null" in kset or "nan" not in kset) else float("nan")
    else:
        missing = float("nan") if numeric else None
    as_int = ("int" in kset and "float" not in kset) or (kinds is None and _integral_column(key))
    out: list[Any] = []
    for v in series.tolist():
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            out.append(missing)
        elif ids is not None:
            out.append(ids.get(str(v), _export_id(key, str(v))))
        elif isinstance(v, str):
            out.append(int(v) if kset and kset <= {"int", "null", "nan"} and re.fullmatch(r"-?\d+", v) else v)
        elif isinstance(v, bool) or ("bool" in kset and not kset & {"int", "float"}):
            out.append(bool(v))
        elif isinstance(v, int):
            out.append(float(v) if "float" in kset and "int" not in kset else v)
        elif isinstance(v, float):
            f = v if not float32 or "float32" in kset else float(str(np.float32(v)))
            out.append(int(f) if as_int and f.is_integer() else f)
        else:
            out.append(v)
    return out


def _integral_column(key: str) -> bool:
    from cryoset.store.schema import FIELD_TYPES

    typ = FIELD_TYPES.get(KEY_TO_COLUMN.get(key, key))
    return typ is not None and str(typ).startswith("int")


def _export_id(key: str, value: str) -> Any:
    if key == "EMPIAR_ID":
        m = re.fullmatch(r"EMPIAR-(\d{5})", value)
        return m.group(1) if m else value
    return value


def cryopanda_annotations(store: Any, experiment_id: str, ann: pd.DataFrame, *, extras: bool = True,
                          image_px: int | None = None) -> dict[str, list[Any]]:
    """The ``annotations`` dict (published keys, order and value kinds) of store rows ``ann``.

    Keys come in the order the experiment was imported with (its provenance), else
    :data:`CRYOPANDA_KEYS` (without :data:`MICROGRAPH_KEYS` when the rows have no micrograph
    columns). Missing columns are written as null. ``ImagePixelSize``/``ImageSize`` fall back to
    ``pixel_size_a`` and ``image_px`` (the stored box). With ``extras`` our columns that have
    no published key follow, under our names.
    """
    from cryoset.store.schema import FIELD_TYPES

    record = _stored_provenance(store, experiment_id).get("cryopanda") or {}
    kinds: dict[str, list[str]] = record.get("kinds") or {}
    columns: dict[str, str] = record.get("columns") or {}
    ids: dict[str, dict[str, Any]] = record.get("ids") or {}
    ann = ann.copy()
    if "box_pixel_size_a" not in ann and "pixel_size_a" in ann:
        ann["box_pixel_size_a"] = ann["pixel_size_a"]
    if "image_size_px" not in ann and image_px is not None:
        ann["image_size_px"] = np.full(len(ann), image_px, np.int64)
    if "empiar_id" not in ann and re.fullmatch(r"EMPIAR-\d{5}", experiment_id):
        ann["empiar_id"] = experiment_id
    keys: list[str] = list(record.get("keys") or [])
    if not keys:
        has_mic = any(c in ann and ann[c].notna().any() for c in ("micrograph", "x_px", "y_px"))
        keys = [k for k, _, _ in CRYOPANDA_KEYS if has_mic or k not in MICROGRAPH_KEYS]
    out: dict[str, list[Any]] = {}
    used = set(_STORE_INTERNAL)
    for key in keys:
        col = columns.get(key) or KEY_TO_COLUMN.get(key, key)
        used.add(col)
        if col not in ann:
            out[key] = [None] * len(ann)
            continue
        conv = next((c for k, _, c in CRYOPANDA_KEYS if k == key), "=")
        float32 = str(FIELD_TYPES.get(col, "")) == "float"
        out[key] = _json_values(key, ann[col], kinds.get(key) if key in kinds else None,
                                ids.get(key, {}) if conv == "id" else None, float32)
    if extras:
        for col in ann.columns:
            if col not in used and col not in out:
                float32 = str(FIELD_TYPES.get(col, "")) == "float"
                out[str(col)] = _json_values(str(col), ann[col], None, None, float32)
    return out


def export_cryopanda(store: Any, selection: Any, out_dir: str | os.PathLike[str], *, extras: bool = True,
                     block_particles: int = 512) -> list[Path]:
    """Write ``OUT/<EXPERIMENT>_particles.h5`` per experiment of ``selection``, in the published layout.

    Images: :func:`resize_minmax_uint8` of the decoded store images, written block by block
    into a contiguous ``images`` dataset; ``annotations``: :func:`cryopanda_annotations` as one
    JSON string (``json.dumps``, NaN for missing floats as pandas writes them). No attributes,
    no compression, as published. Each file is written under a temporary name and renamed; it
    takes the name of the file the experiment was imported from (:func:`file_name_of` otherwise).
    The selection is checked against the store before anything is written (InputError).
    """
    import h5py

    from cryoset.io.atomic import atomic_path

    groups = list(selection.groups())
    have = set(store.experiments())
    for exp, idx in groups:  # everything is checked before the first file is written
        if exp not in have:
            raise InputError("selection", f"names experiment {exp!r}, which is not in the store")
        n = store.num_particles(exp)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise InputError("selection", f"particle index out of range 0..{n - 1} for {exp}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for exp, idx in groups:
        full = store.annotations(exp)
        ann = full.set_index("particle_index").loc[idx].reset_index()
        stored_px = int(store.images_array(exp).shape[-1])
        annotations = cryopanda_annotations(store, exp, ann, extras=extras, image_px=stored_px)
        published = (_stored_provenance(store, exp).get("cryopanda") or {}).get("file")
        name = str(published) if isinstance(published, str) and _NAME.match(published) \
            and "/" not in published else file_name_of(exp)
        target = out / name  # the imported file's own name, else <EXPERIMENT>_particles.h5
        with atomic_path(target) as tmp, h5py.File(tmp, "w") as h5:
            images = h5.create_dataset("images", shape=(len(idx), IMAGE_PX, IMAGE_PX), dtype=np.uint8)
            for start in range(0, len(idx), block_particles):
                part = idx[start:start + block_particles]
                images[start:start + len(part)] = resize_minmax_uint8(store.read_images(exp, part))
            h5.create_dataset("annotations", data=json.dumps(annotations))
        written.append(target)
    if not written:
        raise InputError("selection", "is empty: nothing to export")
    return written


# ------------------------------------------------------------------ probe / index files
def read_probe_selection(path: str | os.PathLike[str], store: Any | None = None) -> Any:
    """A probe / index Parquet file (``FileIndex``, ``FileName``, ``FileParticleIndex``, and for
    probe sets ``BinIndex``, ``BinCenter``, ``AnnotationValue``) as a store :class:`Selection`.

    ``FileName`` gives ``experiment_id`` (:func:`experiment_id_of`), ``FileParticleIndex`` the
    ``particle_index``; the other columns ride along as ``file_index``, ``file_name``,
    ``bin_index``, ``bin_center``, ``annotation_value`` (and any further column as it is). With
    ``store``, every experiment must be in it and every index in range (else InputError).
    """
    import pyarrow.parquet as pq

    from cryoset.store.dataset import Selection

    p = Path(path)
    try:
        frame = pq.read_table(p).to_pandas()
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise InputError(p, f"is not a readable Parquet file ({exc})") from None
    missing = [c for c in ("FileName", "FileParticleIndex") if c not in frame.columns]
    if missing:
        raise InputError(p, f"lacks column(s) {', '.join(missing)} of a cryoPANDA probe/index file")
    names = frame["FileName"].astype(str)
    uniq = {n: experiment_id_of(n) for n in names.unique()}
    table = pd.DataFrame({"experiment_id": names.map(uniq),
                          "particle_index": pd.to_numeric(frame["FileParticleIndex"]).astype(np.int64)})
    for col in frame.columns:
        if col != "FileParticleIndex":
            table[_PROBE_TO_OURS.get(col, col)] = frame[col].to_numpy()
    if store is not None:
        have = set(store.experiments())
        for exp, sub in table.groupby("experiment_id"):
            if exp not in have:
                raise InputError(p, f"names {exp!r}, which is not in the store")
            n = store.num_particles(str(exp))
            bad = sub["particle_index"][(sub["particle_index"] < 0) | (sub["particle_index"] >= n)]
            if len(bad):
                raise InputError(p, f"particle {int(bad.iloc[0])} of {exp} is out of range (it holds {n})")
    return Selection(table)
