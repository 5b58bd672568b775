"""``cryoset embed``: one ViT feature vector per particle, stored beside the images.

Layout (inside each embedded experiment of the store)::

    STORE/experiments/<experiment_id>/embeddings/<name>/
        vectors.zarr      Zarr v3 array (k, D) float16, row r = r-th embedded particle,
                          chunked like the images (store.chunk_particles rows)
        index.parquet     experiment_id, particle_index, row, embedding (fixed-size list of
                          float16, the same vector as vectors.zarr[row])
        embedding.json    name, kind, dimension, checkpoint (path, SHA-256), normalisation,
                          input size, batch size, particle count, provenance

``k`` is every particle of the experiment unless ``--where`` selected fewer; rows follow
``particle_index`` order. Each experiment's embedding directory is written hidden and renamed
into place when complete (like the store's own commits), so a reader never sees half an
embedding. Queries (``cryoset query``, ``store.query``) see one view per name,
``embeddings_<name>``, over every experiment's ``index.parquet``, joinable with ``particles``
on ``(experiment_id, particle_index)``.

**Resumable.** Work goes into ``embeddings/.<name>.work/``: ``state.json`` (the settings) and
one ``part-NNNNNN.npy`` per block of ``chunk_particles`` selected particles, each written
atomically. A killed run, started again with the same settings, keeps the finished blocks and
computes the others; different settings start that experiment's work afresh. A complete
embedding with the same settings is skipped; with other settings it is refused unless
``replace``.

**Deterministic.** Blocks and the batches inside them depend only on the selection and
``batch_size``, so the same store, checkpoint and settings give the same vectors bit for bit,
resumed or not (on one machine and device); only the provenance timestamp differs.

**Images.** As the checkpoint's metadata says (:func:`cryoset.learn.vit_weights.model_input`):
``store`` — the decoded images, resized (bilinear, antialiased) to ``input_size``; ``uint8`` —
cryoPANDA's constants on the stored 8-bit values (uint8 stores) or on the per-image min–max
scaled image (float16 stores).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_directory, atomic_path
from cryoset.provenance import make_provenance, sha256_file
from cryoset.store.dataset import ParticleStore, decode

__all__ = ["EMBEDDING_KINDS", "embed_particles", "embed_store", "embedding_names", "read_embeddings"]

PathLike = str | os.PathLike[str]
EMBEDDING_KINDS = ("cls", "patch_mean", "both")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PART = "part-{:06d}.npy"


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError("--name", f"{name!r} must be lower-case letters, digits or '_', starting with a letter")
    return name


def embedding_names(store: ParticleStore) -> list[str]:
    """Names with at least one committed embedding in the store."""
    names: set[str] = set()
    for exp in store.experiments():
        d = store.root / "experiments" / exp / "embeddings"
        if d.is_dir():
            names.update(p.name for p in d.iterdir()
                         if p.is_dir() and not p.name.startswith(".") and (p / "index.parquet").is_file())
    return sorted(names)


def _selection(store: ParticleStore, where: str | None) -> dict[str, NDArray[np.int64]]:
    """Experiment → sorted particle indices to embed."""
    if where is None:
        return {exp: np.arange(store.num_particles(exp), dtype=np.int64) for exp in store.experiments()}
    frame = store.query("SELECT experiment_id, particle_index FROM particles WHERE " + where)
    out: dict[str, NDArray[np.int64]] = {}
    for exp, sub in frame.groupby("experiment_id", sort=True):
        out[str(exp)] = np.unique(sub["particle_index"].to_numpy(np.int64))
    return out


def _settings(ckpt: Path, ckpt_sha: str, kind: str, meta: dict[str, Any], batch_size: int, dim: int,
              idx: NDArray[np.int64], block: int) -> dict[str, Any]:
    return {"kind": kind, "checkpoint_sha256": ckpt_sha, "normalization": meta["normalization"],
            "input_size": int(meta["input_size"]), "batch_size": int(batch_size), "dim": int(dim),
            "n_particles": int(idx.size), "block_particles": int(block),
            "particles_sha256": hashlib.sha256(np.ascontiguousarray(idx, dtype="<i8").tobytes()).hexdigest()}


def embed_particles(store: ParticleStore, exp: str, idx: NDArray[np.int64], model: Any, kind: str,
                    meta: dict[str, Any], batch_size: int, device: str) -> NDArray[np.float16]:
    """Features ``(len(idx), D)`` float16 of particles ``idx`` of experiment ``exp``, the images
    normalised as ``meta`` (the checkpoint's metadata) says, in batches of ``batch_size``."""
    import torch

    from cryoset.learn.vit_weights import model_input

    stored, off, sc = store.read_stored(exp, idx)
    u8 = meta["normalization"]["kind"] == "uint8" and stored.dtype == np.uint8
    images = torch.from_numpy(np.asarray(stored, dtype=np.float32) if u8 else decode(stored, off, sc))
    out = np.empty((idx.size, model.feature_dim(kind)), np.float16)
    with torch.inference_mode():
        for lo in range(0, idx.size, batch_size):
            x = model_input(images[lo:lo + batch_size], meta["normalization"], int(meta["input_size"]),
                            uint8_values=u8)
            out[lo:lo + batch_size] = model.features(x.to(device), kind).float().cpu().numpy().astype(np.float16)
    return out


def _write_embedding(final: Path, exp: str, idx: NDArray[np.int64], vectors: NDArray[np.float16],
                     record: dict[str, Any], chunk: int, replace: bool, lock: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr
    from zarr.codecs import ZstdCodec

    k, dim = vectors.shape
    with atomic_directory(final, replace=replace, lock=lock) as tmp:
        arr = zarr.create_array(store=str(tmp / "vectors.zarr"), shape=(k, dim), chunks=(max(1, min(chunk, k)), dim),
                                dtype=np.float16, compressors=[ZstdCodec(level=3)], zarr_format=3,
                                attributes={"axes": ["particle", "feature"], "name": record["name"],
                                            "kind": record["kind"]})
        if k:
            arr[:] = vectors
        flat = pa.array(np.ascontiguousarray(vectors).reshape(-1), type=pa.float16())
        table = pa.table({
            "experiment_id": pa.array([exp] * k, type=pa.string()),
            "particle_index": pa.array(idx, type=pa.int64()),
            "row": pa.array(np.arange(k, dtype=np.int64), type=pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
        }).replace_schema_metadata({b"cryoset_embedding": json.dumps(
            {k2: v for k2, v in record.items() if k2 != "provenance"}, sort_keys=True).encode()})
        pq.write_table(table, tmp / "index.parquet", compression="zstd")
        (tmp / "embedding.json").write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")


def embed_store(
    store_path: PathLike,
    *,
    checkpoint: PathLike | None = None,
    kind: str = "cls",
    name: str | None = None,
    batch_size: int = 64,
    where: str | None = None,
    device: str = "cpu",
    replace: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Embed the (selected) particles of a store with a ViT checkpoint; see the module docstring.

    Parameters
    ----------
    store_path
        A particle store.
    checkpoint
        ViT weights (our safetensors or a published teacher ``.pth``); default the shipped one.
    kind
        ``cls`` (D), ``patch_mean`` (D) or ``both`` ([CLS, patch mean], 2D).
    name
        Embedding name (default: ``kind``); the SQL view is ``embeddings_<name>``.
    batch_size
        Images per forward pass.
    where
        SQL condition on the ``particles`` view selecting what to embed (default: all).
    replace
        Replace a complete embedding of this name made with other settings.
    on_progress
        Called with ``(particles done, particles to do)`` after each block.

    Returns
    -------
    dict
        ``name``, ``kind``, ``dim``, ``checkpoint``, ``experiments`` (per experiment: particles and
        ``computed`` / ``resumed`` / ``skipped``), ``particles``.
    """
    import torch

    from cryoset.learn.vit_weights import load_vit, resolve_vit_checkpoint

    if kind not in EMBEDDING_KINDS:
        raise InputError("--kind", f"must be one of {', '.join(EMBEDDING_KINDS)}, got {kind!r}")
    if batch_size < 1:
        raise InputError("--batch-size", f"must be at least 1, got {batch_size}")
    name = _check_name(name or kind)
    store = ParticleStore.open(store_path)
    ckpt = resolve_vit_checkpoint(checkpoint)
    model, meta = load_vit(ckpt)
    model = model.to(device).eval()
    ckpt_sha = sha256_file(ckpt) if ckpt.is_file() else sha256_file(ckpt / "model.safetensors")
    dim = model.feature_dim(kind)
    selection = _selection(store, where)
    block = store.chunk_particles
    total = int(sum(v.size for v in selection.values()))
    done = 0
    report: dict[str, Any] = {}
    torch.manual_seed(0)  # nothing is random in eval mode; seeded anyway
    for exp, idx in selection.items():
        exp_dir = store.root / "experiments" / exp
        final = exp_dir / "embeddings" / name
        work = exp_dir / "embeddings" / f".{name}.work"
        settings = _settings(ckpt, ckpt_sha, kind, meta, batch_size, dim, idx, block)
        if final.is_dir():
            try:
                old = json.loads((final / "embedding.json").read_text())
            except (OSError, ValueError):
                old = {}
            if old.get("settings") == settings:
                report[exp] = {"particles": int(idx.size), "status": "skipped"}
                done += int(idx.size)
                if on_progress is not None:
                    on_progress(done, total)
                continue
            if not replace:
                raise InputError(final, f"already holds embedding {name!r} made with other settings "
                                        "(checkpoint, kind, selection or batch size); pass --replace "
                                        "or choose another --name")
        status = "computed"
        state_path = work / "state.json"
        if work.is_dir():
            try:
                same = json.loads(state_path.read_text()) == settings
            except (OSError, ValueError):
                same = False
            if same:
                status = "resumed"
            else:
                shutil.rmtree(work)
        if not work.is_dir():
            work.mkdir(parents=True)
            with atomic_path(state_path) as tmp:
                tmp.write_text(json.dumps(settings, sort_keys=True))
        n_blocks = -(-idx.size // block)
        parts: list[NDArray[np.float16]] = []
        for b in range(n_blocks):
            rows = idx[b * block:(b + 1) * block]
            part = work / _PART.format(b)
            vec = None
            if part.is_file():
                try:
                    vec = np.load(part, allow_pickle=False)
                except (OSError, ValueError):
                    vec = None
                if vec is not None and (vec.shape != (rows.size, dim) or vec.dtype != np.float16):
                    vec = None
            if vec is None:
                vec = embed_particles(store, exp, rows, model, kind, meta, batch_size, device)
                with atomic_path(part) as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, vec, allow_pickle=False)
            parts.append(vec)
            done += int(rows.size)
            if on_progress is not None:
                on_progress(done, total)
        vectors = np.concatenate(parts) if parts else np.zeros((0, dim), np.float16)
        prov = make_provenance("embed", {"store": str(store.root), "experiment_id": exp, "name": name,
                                         "kind": kind, "checkpoint": str(ckpt), "batch_size": batch_size,
                                         "where": where, "device": device}, [ckpt], argv=argv)
        record = {"name": name, "kind": kind, "dim": dim, "experiment_id": exp, "checkpoint": str(ckpt),
                  "settings": settings, "checkpoint_metadata": {k: v for k, v in meta.items()
                                                                if k in ("normalization", "input_size")},
                  "provenance": prov}
        _write_embedding(final, exp, idx, vectors, record, block, replace=True, lock=store.commit_lock_path)
        shutil.rmtree(work, ignore_errors=True)
        report[exp] = {"particles": int(idx.size), "status": status}
    return {"store": str(store.root), "name": name, "kind": kind, "dim": dim, "checkpoint": str(ckpt),
            "view": f"embeddings_{name}", "particles": total, "experiments": report}


def read_embeddings(store_path: PathLike | ParticleStore, name: str, experiments: list[str] | None = None
                    ) -> tuple[pd.DataFrame, NDArray[np.float16]]:
    """All committed vectors of embedding ``name``: ``(index table, vectors (k, D) float16)``.

    The table has ``experiment_id``, ``particle_index`` and ``row`` (the row of ``vectors``).
    """
    import zarr

    store = store_path if isinstance(store_path, ParticleStore) else ParticleStore.open(store_path)
    _check_name(name)
    frames: list[pd.DataFrame] = []
    blocks: list[NDArray[np.float16]] = []
    offset = 0
    for exp in experiments or store.experiments():
        d = store.root / "experiments" / exp / "embeddings" / name
        if not (d / "index.parquet").is_file():
            continue
        import pyarrow.parquet as pq

        table = pq.read_table(d / "index.parquet", columns=["experiment_id", "particle_index", "row"]).to_pandas()
        vec = np.asarray(zarr.open_array(str(d / "vectors.zarr"), mode="r")[:], dtype=np.float16)
        if len(vec) != len(table):
            raise InputError(d, f"vectors.zarr holds {len(vec)} rows, index.parquet {len(table)}")
        table["row"] = table["row"].to_numpy(np.int64) + offset
        offset += len(vec)
        frames.append(table)
        blocks.append(vec)
    if not frames:
        raise InputError(store.root, f"holds no embedding named {name!r}")
    return pd.concat(frames, ignore_index=True), np.concatenate(blocks)
