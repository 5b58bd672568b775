"""Build Cryo2StructData-style training data: files in, files out.

One map (:func:`prepare_map`) gives, in its own directory (the paper's file names):

* ``emd_normalized_map.mrc``: resampled (default 1 Å) and normalised map, float32;
* with a model: ``atom_emd_normalized_map.mrc`` (Cα=1, N=2, C=3),
  ``atom_ca_emd_normalized_map.mrc``, ``amino_emd_normalized_map.mrc`` (1-20),
  ``sec_struc_emd_normalized_map.mrc`` (coil=1, helix=2, strand=3), all MRC mode 0 (int8);
* ``subgrids.zarr``: the sub-grids of the map and of every label map (Zarr v3);
* ``labels_report.json``: atoms outside the box, collisions, the Cα round trip, MRC validation.

Every MRC gets a provenance sidecar and is checked with ``mrcfile.validate``; the Zarr group
carries its provenance in its attributes. A list of maps (:func:`build_dataset`) is run in
a process pool and summarised in ``metadata.parquet`` / ``metadata.csv`` with a seeded,
resolution-stratified train/validation split and a fixed test list.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_directory, atomic_path, staged_directory, write_text_atomic
from cryoset.io.mrc import read_map, validate_mrc, write_map
from cryoset.maps.dssp import secondary_structure_from_atoms
from cryoset.maps.labels import LabelMaps, label_maps
from cryoset.maps.normalise import normalise
from cryoset.maps.resample import ResampleMethod, resample
from cryoset.maps.subgrids import box_starts, iter_blocks, stitch
from cryoset.maps.validate import ca_round_trip, check_normalised
from cryoset.provenance import make_provenance, write_provenance

__all__ = [
    "LABEL_FILES",
    "NORMALISED_NAME",
    "LoadedModel",
    "PrepareOptions",
    "build_dataset",
    "load_model",
    "prepare_map",
    "read_map_list",
    "read_subgrids",
    "split_dataset",
    "stitch_zarr",
    "write_metadata",
    "write_subgrids",
]

PathLike = str | os.PathLike[str]
NORMALISED_NAME = "emd_normalized_map.mrc"
#: Label map name → file name (the paper's names).
LABEL_FILES: Mapping[str, str] = {
    "backbone": "atom_emd_normalized_map.mrc",
    "ca": "atom_ca_emd_normalized_map.mrc",
    "amino": "amino_emd_normalized_map.mrc",
    "secondary": "sec_struc_emd_normalized_map.mrc",
}
#: Resolution strata (Å) of the train/validation split: [0,2), [2,3), [3,4), [4,∞), unknown.
RESOLUTION_BINS_A: tuple[float, ...] = (0.0, 2.0, 3.0, 4.0, math.inf)
_SHARD_BOXES = 256


@dataclass(frozen=True)
class PrepareOptions:
    """Parameters of :func:`prepare_map` (recorded in provenance)."""

    voxel_size_a: float = 1.0
    method: ResampleMethod = "trilinear"
    percentile: float = 95.0
    clip: tuple[float, float] | None = (0.0, 1.0)
    box: int = 32
    overlap: int = 6
    subgrids: bool = True


@dataclass
class LoadedModel:
    """Atoms table (:mod:`cryoset.io.structure` columns) and per-residue secondary structure.

    ``secondary`` has ``chain, residue_number, insertion_code, dssp``; ``source`` is
    ``"file"`` (HELIX/SHEET records) or ``"dssp"`` (computed).
    """

    atoms: pd.DataFrame
    secondary: pd.DataFrame
    source: str


def _secondary_from_records(helices: pd.DataFrame, sheets: pd.DataFrame, atoms: pd.DataFrame) -> pd.DataFrame | None:
    """Per-residue letters (H / E / -) from HELIX and SHEET tables; None when both are empty.

    A record covers every residue between its start and end residue in file order (so
    insertion codes are handled); records naming residues absent from the model are skipped.
    """
    if len(helices) == 0 and len(sheets) == 0:
        return None
    keys = atoms[["chain", "residue_number", "insertion_code"]].drop_duplicates().reset_index(drop=True)
    table = keys.copy()
    letters = np.full(len(table), "-", dtype="<U1")
    order = {
        (str(c), int(n), str(i)): k
        for k, (c, n, i) in enumerate(zip(table["chain"], table["residue_number"], table["insertion_code"], strict=True))
    }

    def mark(records: pd.DataFrame, letter: str) -> None:
        for rec in records.itertuples(index=False):
            chain = str(rec.chain)
            start: Any = rec.start_residue_number
            end: Any = rec.end_residue_number
            k0 = order.get((chain, int(start), str(rec.start_insertion_code or "").strip()))
            k1 = order.get((chain, int(end), str(rec.end_insertion_code or "").strip()))
            if k0 is not None and k1 is not None:
                lo, hi = sorted((k0, k1))
                letters[lo : hi + 1] = letter

    mark(sheets, "E")
    mark(helices, "H")
    table["dssp"] = letters
    return table


def load_model(path: PathLike) -> LoadedModel:
    """Read a model with :func:`cryoset.io.structure.read_structure`; add secondary structure.

    Secondary structure comes from the file's HELIX/SHEET records when it has any
    (``source="file"``), otherwise from :func:`cryoset.maps.dssp.secondary_structure_from_atoms`
    (``source="dssp"``).
    """
    from cryoset.io.structure import read_structure

    model = read_structure(path)
    atoms = model.atoms.copy()
    atoms["insertion_code"] = atoms["insertion_code"].fillna("").astype(str).str.strip()
    secondary = _secondary_from_records(model.helices, model.sheets, atoms)
    if secondary is not None:
        return LoadedModel(atoms, secondary, "file")
    return LoadedModel(atoms, secondary_structure_from_atoms(atoms), "dssp")


def _write_label(path: Path, vol: NDArray[np.uint8], voxel: Sequence[float], origin: Sequence[float],
                 prov: Mapping[str, Any]) -> None:
    write_map(path, vol.astype(np.int8), voxel, origin, provenance=prov, dtype="int8")


def write_subgrids(
    path: PathLike,
    volumes: Mapping[str, NDArray[Any]],
    *,
    box: int = 32,
    overlap: int = 6,
    attributes: Mapping[str, Any] | None = None,
) -> Path:
    """Store the sub-grids of several same-shape volumes in one Zarr v3 group (atomic).

    Each volume ``name`` becomes an array ``name`` of shape ``(n_boxes, box, box, box)``
    (one sub-grid per chunk, zstd-compressed, sharded 256 sub-grids per file); ``starts``
    ``(n_boxes, 3)`` holds each box's first map index. Group attributes: ``map_shape``,
    ``box``, ``overlap``, ``core`` and ``attributes`` (e.g. provenance, voxel size).
    """
    out = Path(path)
    shapes = {v.shape for v in volumes.values()}
    if len(shapes) > 1:
        raise ValueError(f"all volumes must share one shape, got {shapes}")
    if len(shapes) == 0:
        raise ValueError("no volume to store")
    (shape,) = shapes
    with atomic_directory(out) as tmp:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        starts = box_starts(shape, box, overlap)
        n = starts.shape[0]
        for name, vol in volumes.items():
            arr = group.create_array(
                name, shape=(n, box, box, box), dtype=vol.dtype,
                chunks=(1, box, box, box), shards=(min(n, _SHARD_BOXES), box, box, box),
            )
            for lo, blocks in iter_blocks(vol, box, overlap, batch=_SHARD_BOXES):
                arr[lo : lo + blocks.shape[0]] = blocks
        group.create_array("starts", data=starts)
        group.attrs.update(
            {
                "map_shape": [int(s) for s in shape],
                "box": box,
                "overlap": overlap,
                "core": box - 2 * overlap,
                **json.loads(json.dumps(dict(attributes or {}), default=str)),
            }
        )
    return out


def _codec_names(spec: Any) -> list[str]:
    """Every codec/filter/compressor name in Zarr v2 or v3 array metadata (nested ones too)."""
    names: list[str] = []
    if isinstance(spec, Mapping):
        for key in ("name", "id"):
            if isinstance(spec.get(key), str):
                names.append(spec[key])
        for value in spec.values():
            if isinstance(value, (Mapping, list)):
                names += _codec_names(value)
    elif isinstance(spec, list):
        for item in spec:
            names += _codec_names(item)
    return names


def _refuse_unpickling_codecs(path: Path) -> None:
    """Refuse a Zarr store any of whose arrays declares a codec that unpickles its chunks.

    Reading such a chunk runs ``pickle.loads`` on bytes from the file, which can execute
    arbitrary code; the metadata is checked before zarr reads any chunk.
    """
    for meta in sorted([*path.rglob("zarr.json"), *path.rglob(".zarray")]):
        try:
            doc = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(meta, f"is not valid Zarr metadata ({exc})") from None
        if not isinstance(doc, Mapping):
            raise InputError(meta, "is not valid Zarr metadata (not a JSON object)")
        specs = [doc.get(k) for k in ("codecs", "compressor", "compressors", "filters", "dtype")]
        unsafe = sorted({n for n in _codec_names(specs) if "pickle" in n.lower()})
        if unsafe or "object_codec_id" in json.dumps(doc.get("dtype")):
            raise InputError(meta, f"declares the codec {', '.join(unsafe) or 'object'!r}, which "
                             "unpickles its chunks (it could run code): refused")


def read_subgrids(path: PathLike, name: str = "density") -> tuple[NDArray[Any], dict[str, Any]]:
    """Read one array of a sub-grid store and the group attributes.

    Raises
    ------
    InputError
        Not a Zarr group, a missing array or attribute, an array that declares an
        unpickling codec (refused before any chunk is read), a chunk that cannot be decoded
        (truncated, checksum mismatch), or NaN/infinite values in a floating-point array.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such Zarr store")
    if not p.is_dir():
        raise InputError(p, "is not a Zarr store (a directory)")
    _refuse_unpickling_codecs(p)
    try:
        group = zarr.open_group(store=str(p), mode="r")
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        raise InputError(p, f"not a Zarr group ({exc})") from exc
    if name not in group:
        raise InputError(p, f"has no array {name!r} (arrays: {sorted(group.array_keys())})")
    attrs = dict(group.attrs)
    for key in ("map_shape", "box", "overlap"):
        if key not in attrs:
            raise InputError(p, f"is not a cryoset sub-grid store (attribute {key!r} missing)")
    array: Any = group[name]
    try:
        data = np.asarray(array[...])
    except (ValueError, OSError) as exc:
        text = " ".join(str(exc).split())
        raise InputError(p, f"array {name!r} cannot be read: a chunk is truncated or corrupt ({text})") from None
    if data.dtype.kind == "f":
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise InputError(p, f"array {name!r} holds {bad} NaN or infinite values")
    return data, attrs


def stitch_zarr(path: PathLike, name: str = "density") -> tuple[NDArray[Any], dict[str, Any]]:
    """Rebuild the full volume ``name`` of a sub-grid store from the 20³ cores."""
    blocks, attrs = read_subgrids(path, name)
    return stitch(blocks, attrs["map_shape"], int(attrs["box"]), int(attrs["overlap"])), attrs


def prepare_map(
    map_path: PathLike,
    out_dir: PathLike,
    model_path: PathLike | None = None,
    *,
    options: PrepareOptions = PrepareOptions(),
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Resample, normalise, label and sub-grid one map; return its metadata row.

    Parameters
    ----------
    map_path
        The EMDB map (MRC/CCP4, optionally gzipped).
    out_dir
        Output directory (created).
    model_path
        The deposited model (PDB/mmCIF) in the map frame; None for the map products only.
    options
        :class:`PrepareOptions`.
    meta
        Extra columns for the metadata row (``emdb_id``, ``pdb_id``, ``resolution_a``).

    Returns
    -------
    dict
        The metadata row (also written to ``labels_report.json``).
    """
    mpath = Path(map_path)
    out = Path(out_dir)
    inputs = [mpath] + ([Path(model_path)] if model_path is not None else [])
    prov = make_provenance("map prepare", {**asdict(options), **dict(meta or {})}, inputs)
    # every input is read and checked before anything is written
    src = read_map(mpath)
    loaded = load_model(Path(model_path)) if model_path is not None else None
    res = resample(src.data, src.voxel_size_a, options.voxel_size_a, method=options.method)
    try:
        norm = normalise(res, percentile=options.percentile, clip=options.clip)
    except ValueError as exc:
        raise InputError(mpath, str(exc)) from exc
    voxel = (options.voxel_size_a,) * 3
    origin = src.origin_a
    labels: LabelMaps | None = None
    if loaded is not None:
        labels = label_maps(
            loaded.atoms, norm.shape, voxel, origin,
            secondary=loaded.secondary, secondary_source=loaded.source, source=model_path,
        )
    low, high = options.clip if options.clip is not None else (-math.inf, math.inf)
    row: dict[str, Any] = {
        "emdb_id": None,
        "pdb_id": None,
        "resolution_a": float("nan"),
        **dict(meta or {}),
        "map_path": str(mpath),
        "model_path": None if model_path is None else str(model_path),
        "voxel_size_z_a": src.voxel_size_a[0],
        "voxel_size_y_a": src.voxel_size_a[1],
        "voxel_size_x_a": src.voxel_size_a[2],
        "shape_z": norm.shape[0],
        "shape_y": norm.shape[1],
        "shape_x": norm.shape[2],
        "normalised_ok": check_normalised(norm, low, high)["ok"],
        "output_dir": str(out),
        "warnings": "; ".join(f"{model_path}: {w}" for w in (labels.report["warnings"] if labels else [])),
    }
    report: dict[str, Any] = {"map": str(mpath), "shape": list(norm.shape)}
    volumes: dict[str, NDArray[Any]] = {"density": norm}
    # written into a temporary folder beside ``out``, moved into ``out`` only when complete
    with staged_directory(out) as tmp:
        write_map(tmp / NORMALISED_NAME, norm, voxel, origin, provenance=prov)
        written = [tmp / NORMALISED_NAME]
        if labels is not None:
            for name, vol in labels.volumes().items():
                _write_label(tmp / LABEL_FILES[name], vol, voxel, origin, prov)
                written.append(tmp / LABEL_FILES[name])
                volumes[name] = vol
            ca_xyz = labels.ca_table[["x_a", "y_a", "z_a"]].to_numpy()
            trip = ca_round_trip(labels.ca, ca_xyz, voxel, origin)
            report.update(labels=labels.report, round_trip=trip,
                          collisions=labels.collisions.to_dict(orient="records"))
            counts = labels.report["label_counts"]
            row.update(
                n_ca=labels.report["n_ca"],
                n_ca_labelled=counts["ca"],
                n_n_labelled=counts["n"],
                n_c_labelled=counts["c"],
                n_helix=counts["helix"],
                n_strand=counts["strand"],
                n_coil=counts["coil"],
                n_atoms_outside=sum(labels.report["n_outside"].values()),
                n_collisions=sum(labels.report["n_collisions"].values()),
                secondary_source=labels.report["secondary_source"],
                ca_exact_fraction=trip["exact_fraction"],
            )
        mrc_problems = {p.name: validate_mrc(p) for p in written}
        report["mrc_validation"] = mrc_problems
        row["mrc_valid"] = all(not v for v in mrc_problems.values())
        if options.subgrids:
            attrs = {"voxel_size_a": list(voxel), "origin_a": list(origin), "provenance": prov}
            write_subgrids(tmp / "subgrids.zarr", volumes, box=options.box, overlap=options.overlap,
                           attributes=attrs)
            row["n_subgrids"] = int(np.prod([-(-s // (options.box - 2 * options.overlap)) for s in norm.shape]))
        report["row"] = row
        write_text_atomic(tmp / "labels_report.json", json.dumps(report, indent=2, default=str) + "\n")
    return row


_LIST_COLUMNS = ("emdb_id", "map", "model", "resolution_a", "pdb_id")


def read_map_list(path: PathLike) -> pd.DataFrame:
    """Read a map list: CSV with ``emdb_id,map`` and optional ``model,resolution_a,pdb_id``.

    Relative paths are taken relative to the list file; ``#`` starts a comment. An empty
    ``model`` means a model-less map.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such map list")
    try:
        table = pd.read_csv(p, comment="#", dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(p, f"cannot read the map list as CSV ({exc})") from exc
    missing = {"emdb_id", "map"} - set(table.columns)
    if missing:
        raise InputError(p, f"the map list lacks column(s) {sorted(missing)}; expected {list(_LIST_COLUMNS)}")
    for col in ("model", "resolution_a", "pdb_id"):
        if col not in table.columns:
            table[col] = ""
    if table["emdb_id"].duplicated().any():
        dup = table.loc[table["emdb_id"].duplicated(), "emdb_id"].iloc[0]
        raise InputError(p, f"EMDB id {dup!r} is listed twice")
    for col in ("map", "model"):
        table[col] = [
            "" if not v else str(Path(v) if Path(v).is_absolute() else (p.parent / v)) for v in table[col]
        ]
    for v in table["emdb_id"]:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise InputError(p, f"EMDB id {v!r} is not a plain name (letters, digits, _ . -)")
    try:
        table["resolution_a"] = [float(v) if v else math.nan for v in table["resolution_a"]]
    except ValueError as exc:
        raise InputError(p, f"resolution_a must be a number ({exc})") from exc
    return table[list(_LIST_COLUMNS)]


def split_dataset(
    table: pd.DataFrame,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    test_ids: Iterable[str] = (),
    bins_a: Sequence[float] = RESOLUTION_BINS_A,
) -> pd.Series:
    """Assign ``train`` / ``validation`` / ``test`` per row, stratified by resolution.

    Rows whose ``emdb_id`` is in ``test_ids`` are ``test``. The others are grouped by
    resolution bin (``bins_a``; unknown resolution is its own group) and, within each group,
    ``round(validation_fraction * n)`` rows chosen with ``np.random.default_rng(seed)``
    become ``validation``.

    Returns
    -------
    Series of str, aligned with ``table``.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    rng = np.random.default_rng(seed)
    test = set(test_ids)
    out = pd.Series("train", index=table.index, dtype=object)
    ids = table["emdb_id"].astype(str)
    out[ids.isin(test)] = "test"
    res = pd.to_numeric(table["resolution_a"], errors="coerce").to_numpy(dtype=float)
    stratum = np.where(np.isnan(res), -1, np.digitize(np.nan_to_num(res, nan=0.0), bins_a[1:-1]))
    for s in np.unique(stratum):
        rows = np.flatnonzero((stratum == s) & ~ids.isin(test).to_numpy())
        n_val = round(validation_fraction * rows.size)
        if n_val:
            chosen = rng.choice(rows, size=n_val, replace=False)
            out.iloc[np.sort(chosen)] = "validation"
    return out


def write_metadata(table: pd.DataFrame, out_dir: PathLike, provenance: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``metadata.parquet`` (provenance in the schema metadata) and ``metadata.csv``."""
    out = Path(out_dir)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[b"cryoset_provenance"] = json.dumps(provenance, default=str).encode()
    arrow = arrow.replace_schema_metadata(meta)
    parquet = out / "metadata.parquet"
    with atomic_path(parquet) as tmp:
        pq.write_table(arrow, tmp)
    csv = out / "metadata.csv"
    write_text_atomic(csv, table.to_csv(index=False))
    write_provenance(parquet, provenance)
    write_provenance(csv, provenance)
    return parquet, csv


def _prepare_entry(entry: dict[str, Any], out_dir: str, options: PrepareOptions) -> dict[str, Any]:
    meta = {"emdb_id": entry["emdb_id"], "pdb_id": entry["pdb_id"] or None,
            "resolution_a": entry["resolution_a"]}
    model = entry["model"] or None
    try:
        row = prepare_map(entry["map"], Path(out_dir) / entry["emdb_id"], model, options=options, meta=meta)
        row["status"] = "ok"
        row["error"] = ""
    except (InputError, ValueError, OSError) as exc:
        row = {**meta, "map_path": entry["map"], "model_path": model, "status": "failed", "error": str(exc)}
    return row


def build_dataset(
    list_path: PathLike,
    out_dir: PathLike,
    *,
    options: PrepareOptions = PrepareOptions(),
    workers: int = 2,
    validation_fraction: float = 0.1,
    seed: int = 0,
    test_ids: Iterable[str] = (),
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Prepare every map of a list in a process pool and write the metadata table.

    Parameters
    ----------
    list_path
        A map list (:func:`read_map_list`).
    out_dir
        Output root: one directory per EMDB id plus ``metadata.parquet`` / ``.csv``.
    workers
        Worker processes (``concurrent.futures.ProcessPoolExecutor``); 1 runs in-process.
    on_done
        Called with each finished row (e.g. to advance a progress bar).

    Returns
    -------
    DataFrame
        The metadata table, with ``split`` and ``status`` columns, in list order.
    """
    entries: list[dict[str, Any]] = [
        {str(k): v for k, v in e.items()} for e in read_map_list(list_path).to_dict(orient="records")
    ]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    test = list(test_ids)
    rows: dict[str, dict[str, Any]] = {}
    if workers <= 1:
        for e in entries:
            rows[e["emdb_id"]] = _prepare_entry(e, str(out), options)
            if on_done is not None:
                on_done(rows[e["emdb_id"]])
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_prepare_entry, e, str(out), options): e["emdb_id"] for e in entries}
            for fut in as_completed(futures):
                rows[futures[fut]] = fut.result()
                if on_done is not None:
                    on_done(rows[futures[fut]])
    table = pd.DataFrame([rows[e["emdb_id"]] for e in entries])
    table["split"] = split_dataset(table, validation_fraction=validation_fraction, seed=seed, test_ids=test)
    prov = make_provenance(
        "map build",
        {**asdict(options), "workers": workers, "validation_fraction": validation_fraction,
         "seed": seed, "test_ids": test},
        [list_path],
    )
    write_metadata(table, out, prov)
    return table
