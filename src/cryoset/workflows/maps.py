"""``cryoset map prepare`` / ``map build`` / ``map subgrids`` / ``map stitch``: Cryo2StructData-style
training data, files in, files out.

One map (:func:`prepare_map`) gives, in its own directory (the paper's file names):

* ``emd_normalized_map.mrc``: resampled (default 1 Å) and normalised map, float32;
* with a model: ``atom_emd_normalized_map.mrc`` (Cα=1, N=2, C=3),
  ``atom_ca_emd_normalized_map.mrc``, ``amino_emd_normalized_map.mrc`` (1-20),
  ``sec_struc_emd_normalized_map.mrc`` (coil=1, helix=2, strand=3), all MRC mode 0 (int8);
  voxels assigned by the nearest-centre rule or, with ``label_rule="cryo2struct"``, by the
  paper's Formula 1 (:mod:`cryoset.maps.labels`);
* ``subgrids.zarr``: the sub-grids of the map and of every label map (Zarr v3);
* ``labels_report.json``: atoms outside the box, collisions, the Cα round trip, MRC validation.

Every MRC gets a provenance sidecar and is checked with ``mrcfile.validate``; the Zarr group
carries its provenance in its attributes. A list of maps (:func:`build_dataset`) is run in
a process pool and summarised in ``metadata.parquet`` / ``metadata.csv`` with a seeded,
resolution-stratified train/validation split and a fixed test list.

The kernels are in :mod:`cryoset.maps` (resampling, normalisation, labels, sub-grid
blocks, validation); the file names, :class:`~cryoset.maps.dataset.PrepareOptions`,
:func:`~cryoset.maps.dataset.load_model` and :func:`~cryoset.maps.dataset.split_dataset` in
:mod:`cryoset.maps.dataset`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
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
from cryoset.io.mrc import MapData, read_map, validate_mrc, write_map
from cryoset.maps.dataset import (
    LABEL_FILES,
    NORMALISED_NAME,
    PathLike,
    PrepareOptions,
    load_model,
    split_dataset,
)
from cryoset.maps.labels import LabelMaps, label_maps
from cryoset.maps.normalise import normalise
from cryoset.maps.resample import resample
from cryoset.maps.subgrids import box_starts, iter_blocks, stitch
from cryoset.maps.validate import ca_round_trip, check_normalised
from cryoset.provenance import make_provenance, write_provenance

__all__ = [
    "build_dataset",
    "prepare_map",
    "read_map_list",
    "read_subgrids",
    "read_test_ids",
    "stitch_map",
    "stitch_zarr",
    "subgrid_maps",
    "write_metadata",
    "write_subgrids",
]

_SHARD_BOXES = 256


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


def normalised_map(src: MapData, path: PathLike, options: PrepareOptions = PrepareOptions()
                   ) -> NDArray[np.float32]:
    """A read map resampled to ``options.voxel_size_a`` and normalised, as ``map prepare`` writes it.

    A map that cannot be normalised (no positive value) raises :class:`InputError` naming ``path``.
    """
    res = resample(src.data, src.voxel_size_a, options.voxel_size_a, method=options.method)
    try:
        return normalise(res, percentile=options.percentile, clip=options.clip)
    except ValueError as exc:
        raise InputError(path, str(exc)) from exc


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
    norm = normalised_map(src, mpath, options)
    voxel = (options.voxel_size_a,) * 3
    origin = src.origin_a
    labels: LabelMaps | None = None
    if loaded is not None:
        labels = label_maps(
            loaded.atoms, norm.shape, voxel, origin,
            secondary=loaded.secondary, secondary_source=loaded.source, source=model_path,
            rule=options.label_rule,
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


def subgrid_maps(maps: Sequence[PathLike], out: PathLike, *, names: Sequence[str] | None = None,
                 box: int = 32, overlap: int = 6) -> Path:
    """``cryoset map subgrids``: cut same-shape maps into one sub-grid store (:func:`write_subgrids`).

    ``names`` (default: the file stems) name the arrays; the store's attributes carry the
    first map's voxel size and origin and the provenance.

    Raises
    ------
    InputError
        Names not one distinct per map, or maps of different shapes.
    """
    paths = [Path(p) for p in maps]
    labels = list(names) if names else [p.name.split(".")[0] for p in paths]
    if len(labels) != len(paths) or len(set(labels)) != len(labels):
        raise InputError("--names", "give one distinct name per map")
    loaded = [read_map(p) for p in paths]
    shapes = {m.data.shape for m in loaded}
    if len(shapes) != 1:
        raise InputError(paths[1], f"shapes differ: {sorted(shapes)}")
    prov = make_provenance("map subgrids", {"box": box, "overlap": overlap, "names": labels}, paths)
    vols = {n: m.data for n, m in zip(labels, loaded, strict=True)}
    return write_subgrids(out, vols, box=box, overlap=overlap,
                          attributes={"voxel_size_a": list(loaded[0].voxel_size_a),
                                      "origin_a": list(loaded[0].origin_a), "provenance": prov})


def stitch_map(store: PathLike, out: PathLike, array: str = "density") -> dict[str, Any]:
    """``cryoset map stitch``: rebuild the full volume ``array`` of a sub-grid store as an MRC
    file (float32, or int8 for label maps); returns ``out``, ``shape_zyx`` and ``voxel_size_a``."""
    vol, attrs = stitch_zarr(store, array)
    voxel = attrs.get("voxel_size_a", [1.0, 1.0, 1.0])
    origin = attrs.get("origin_a", [0.0, 0.0, 0.0])
    prov = make_provenance("map stitch", {"array": array}, [store])
    data = vol.astype(np.float32) if vol.dtype.kind == "f" else vol.astype(np.int8)
    write_map(out, data, voxel, origin, provenance=prov,
              dtype="float32" if vol.dtype.kind == "f" else "int8")
    return {"out": str(out), "shape_zyx": list(vol.shape), "voxel_size_a": list(voxel)}


def read_test_ids(path: PathLike) -> list[str]:
    """The EMDB ids of a test list (one a line; blank lines and ``#`` lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such test list")
    return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.startswith("#")]
