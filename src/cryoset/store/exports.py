"""Exports from and imports into the particle store.

* RELION: one ``.mrcs`` stack per experiment plus a RELION 3.1 particle STAR
  (:func:`export_relion`, :func:`import_relion`).
* cryoPANDA-style HDF5: ``images`` (n, 224, 224) uint8 and ``annotations``, a JSON
  dict of lists stored as a string dataset (:func:`export_hdf5`, :func:`import_hdf5`).
  The per-image ``image_offset``/``image_scale`` travel in the annotations, so a uint8
  store exported at its own box size and imported back is bit-identical.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_path
from cryoset.store.dataset import ParticleStore, Selection, decode, encode_uint8

#: Store columns that map onto the canonical particle table (identical names).
_CANONICAL_SHARED = (
    "micrograph", "x_px", "y_px", "score", "diameter_px", "pixel_size_a", "voltage_kv", "cs_mm",
    "amplitude_contrast", "defocus_u_a", "defocus_v_a", "defocus_angle_deg", "phase_shift_deg",
    "rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a", "class_number", "max_prob",
    "ess", "eca", "ctf_phase_flipped",
)
_STORE_ONLY = ("image_offset", "image_scale")


def resize_images(images: NDArray[Any], size: int) -> NDArray[np.float32]:
    """Fourier crop or zero-pad ``(n, y, x)`` square images to ``size`` × ``size``."""
    x = np.asarray(images, dtype=np.float32)
    n = x.shape[-1]
    if x.shape[-2] != n:
        raise ValueError(f"images: must be square, got {x.shape[-2:]}")
    if n == size:
        return x
    f = np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))
    out = np.zeros((len(x), size, size), dtype=np.complex128)
    m = min(n, size)
    so, sn = size // 2 - m // 2, n // 2 - m // 2
    out[:, so:so + m, so:so + m] = f[:, sn:sn + m, sn:sn + m]
    res = np.fft.ifft2(np.fft.ifftshift(out, axes=(-2, -1))).real * (size * size) / (n * n)
    return res.astype(np.float32)


def export_relion(store: ParticleStore, selection: Selection, out_dir: str | os.PathLike[str], *,
                  provenance: dict[str, Any] | None = None,
                  progress: Callable[[int], None] | None = None) -> Path:
    """Write ``<out>/stacks/<experiment>.mrcs`` and ``<out>/particles.star`` (RELION 3.1)."""
    from cryoset.io.mrc import write_stack
    from cryoset.io.particles import relion_path, write_particles

    out = Path(out_dir)
    (out / "stacks").mkdir(parents=True, exist_ok=True)
    tables = []
    done = 0
    for exp, idx in selection.groups():
        ann = store.annotations(exp).set_index("particle_index").loc[idx].reset_index()
        images = store.read_images(exp, idx)
        pix = float(ann["pixel_size_a"].iloc[0]) if "pixel_size_a" in ann and ann["pixel_size_a"].notna().all() else 1.0
        stack_rel = f"stacks/{exp}.mrcs"
        write_stack(out / stack_rel, images, pix)
        table = pd.DataFrame({c: ann[c] for c in _CANONICAL_SHARED if c in ann.columns})
        table["image_index"] = np.arange(len(ann), dtype=np.int64)
        table["image_path"] = relion_path(out / stack_rel, out / "particles.star")  # as RELION resolves
        table["image_size_px"] = images.shape[-1]
        if "pixel_size_a" not in table:
            table["pixel_size_a"] = pix
        table["rlnOpticsGroupName"] = exp
        tables.append(table)
        done += len(idx)
        if progress is not None:
            progress(done)
    if not tables:
        raise InputError("selection", "is empty: nothing to export")
    table = pd.concat(tables, ignore_index=True)
    groups = {name: i + 1 for i, name in enumerate(dict.fromkeys(table["rlnOpticsGroupName"]))}
    table["optics_group"] = table["rlnOpticsGroupName"].map(groups).astype(np.int64)
    table["optics_group_name"] = table.pop("rlnOpticsGroupName")
    for col, default in (("voltage_kv", 300.0), ("cs_mm", 2.7), ("amplitude_contrast", 0.1)):
        if col not in table:
            table[col] = default
        table[col] = table[col].fillna(default)
    star = write_particles(out / "particles.star", table, star_version="3.1", provenance=provenance)
    return star


def import_relion(star_path: str | os.PathLike[str], store: ParticleStore, experiment_id: str, *,
                  provenance: dict[str, Any] | None = None, block_particles: int = 1024,
                  replace: bool = False) -> int:
    """Add the particles of a RELION STAR (+ its stacks) to ``store`` as one experiment.

    ``replace`` swaps an experiment already stored under that id (see
    :meth:`ParticleStore.add_experiment`); without it an existing id is an InputError.

    Refused before anything is written (:class:`InputError`): a pixel size that is not positive (or NaN),
    a voltage, Cs or amplitude contrast the CTF model refuses,
    an image index outside its stack, an image size (``rlnImageSize``) that contradicts the
    stack; while the images are copied (the experiment then never appears): NaN or infinite
    pixels.
    """
    from cryoset.io.mrc import read_stack
    from cryoset.io.particles import read_particles

    star = Path(star_path)
    ps = read_particles(star, require=("image_path", "image_index"))
    table = ps.table.reset_index(drop=True)
    stacks: dict[str, Any] = {}
    paths: dict[str, Path] = {}

    def resolve(rel: str) -> Path:
        from cryoset.io.particles import resolve_image_path

        return resolve_image_path(rel, star)  # RELION's rule: the current directory, else beside the STAR

    # everything that can be checked without reading the images is checked before writing
    if "pixel_size_a" in table.columns:
        pixel = pd.to_numeric(table["pixel_size_a"], errors="coerce").to_numpy(np.float64)
        bad = ~(pixel > 0) | np.isinf(pixel)  # NaN too: a STAR that says nan has no pixel size
        if bad.any():
            raise InputError(star, f"the pixel size of {int(bad.sum())} particles is not a positive "
                             f"number (first: {pixel[np.argmax(bad)]:g} Å)")
    for column, low, high, what in (("voltage_kv", 0.0, np.inf, "> 0 kV"), ("cs_mm", -np.inf, np.inf, ">= 0 mm"),
                                    ("amplitude_contrast", -np.inf, 1.0, "in [0, 1)")):
        if column in table.columns:  # NaN (not given) is kept; a value the CTF model refuses is not
            v = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
            bad = ~np.isnan(v) & ~((v > low) & (v < high) & (v >= 0))
            if bad.any():
                raise InputError(star, f"{column} must be {what} but is {v[np.argmax(bad)]:g} for "
                                 f"{int(bad.sum())} particles")
    for key, rows in table.groupby(table["image_path"].astype(str), sort=False):
        paths[key] = resolve(key)
        stacks[key] = read_stack(paths[key], permissive=True)
        n, ny, nx = stacks[key].shape
        idx = rows["image_index"].to_numpy(np.int64)
        if idx.min() < 0 or idx.max() >= n:
            raise InputError(star, f"image {int(idx.max()) + 1} of {key} is out of range: the stack "
                             f"holds {n} images")
        if "image_size_px" in rows.columns:
            sizes = pd.to_numeric(rows["image_size_px"], errors="coerce").dropna().unique()
            wrong = [int(v) for v in sizes if int(v) != nx or int(v) != ny]
            if wrong:
                raise InputError(star, f"rlnImageSize {wrong[0]} contradicts the {ny}×{nx} px images "
                                 f"of {key}")

    def blocks() -> Any:
        for start in range(0, len(table), block_particles):
            part = table.iloc[start:start + block_particles]
            imgs = []
            for path_value, idx in zip(part["image_path"], part["image_index"], strict=True):
                key = str(path_value)
                image = stacks[key].images(int(idx))
                if not np.isfinite(image).all():
                    raise InputError(paths[key], f"image {int(idx) + 1} holds NaN or infinite pixels")
                imgs.append(image)
            yield np.stack(imgs)

    keep = [c for c in table.columns if c not in ("image_path", "image_index")]
    ann = table[keep].copy()
    return store.add_experiment(experiment_id, blocks(), ann, provenance=provenance, replace=replace)


def export_hdf5(store: ParticleStore, selection: Selection, path: str | os.PathLike[str], *,
                size: int = 224, provenance: dict[str, Any] | None = None) -> Path:
    """cryoPANDA-style HDF5: ``images`` (n, size, size) uint8 + ``annotations`` JSON dict of lists."""
    import h5py

    images_out: list[NDArray[np.uint8]] = []
    anns: list[pd.DataFrame] = []
    for exp, idx in selection.groups():
        ann = store.annotations(exp).set_index("particle_index").loc[idx].reset_index()
        arr = store.images_array(exp)
        same_box = arr.shape[-1] == size and arr.dtype == np.uint8
        if same_box:  # stored bytes and their scaling as they are: lossless
            stored, off, sc = store.read_stored(exp, idx)
        else:
            stored, off, sc = encode_uint8(resize_images(store.read_images(exp, idx), size))
        ann = ann.copy()
        ann["image_offset"], ann["image_scale"] = off, sc
        images_out.append(stored)
        anns.append(ann)
    if not anns:
        raise InputError("selection", "is empty: nothing to export")
    table = pd.concat(anns, ignore_index=True)
    annotations = {c: [None if (isinstance(v, float) and np.isnan(v)) else v for v in table[c].tolist()]
                   for c in table.columns}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("images", data=np.concatenate(images_out), compression="gzip", compression_opts=4)
        h5.create_dataset("annotations", data=json.dumps(annotations, default=str))
        h5.attrs["provenance"] = json.dumps(provenance or {}, default=str)
        h5.attrs["format"] = "cryopanda-particles"
    return Path(path)


def read_hdf5_layout(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype[Any], dict[str, list[Any]]]:
    """Check a cryoPANDA-style HDF5 file; return its image shape, image dtype and parsed annotations.

    The layout: ``images`` (n, y, x) and ``annotations`` a JSON dict of lists of length n;
    anything else raises :class:`InputError` naming the file. Images are not read.
    """
    import h5py

    p = Path(path)
    try:
        h5 = h5py.File(p, "r")
    except OSError as exc:
        raise InputError(p, f"is not a readable HDF5 file ({exc})") from None
    with h5:
        if "images" not in h5 or "annotations" not in h5:
            raise InputError(p, "lacks the 'images' and/or 'annotations' datasets")
        shape, dtype = tuple(int(n) for n in h5["images"].shape), h5["images"].dtype
        raw = h5["annotations"][()]
    if len(shape) != 3:
        raise InputError(p, f"images must be (n, y, x), got shape {shape}")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        annotations: Any = json.loads(text)
    except ValueError as exc:
        raise InputError(p, f"annotations are not valid JSON ({exc})") from None
    if not isinstance(annotations, dict) or not all(isinstance(v, list) for v in annotations.values()):
        raise InputError(p, "annotations are not a JSON dict of lists")
    lengths = {len(v) for v in annotations.values()}
    if lengths and lengths != {shape[0]}:
        raise InputError(p, f"annotation lists have lengths {sorted(lengths)} for {shape[0]} images")
    return shape, dtype, annotations


def read_hdf5_annotations(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The ``annotations`` of a cryoPANDA-style HDF5 file as a table (one row per image).

    The layout is checked by :func:`read_hdf5_layout` (:class:`InputError` naming the file).
    """
    _, _, annotations = read_hdf5_layout(path)
    table = pd.DataFrame(annotations)
    for col in table.columns:
        if table[col].dtype == object:
            converted = pd.to_numeric(table[col], errors="coerce")
            if converted.notna().sum() == table[col].notna().sum():
                table[col] = converted.astype(np.float64)
    return table



def import_hdf5(path: str | os.PathLike[str], store: ParticleStore, experiment_id: str, *,
                provenance: dict[str, Any] | None = None, replace: bool = False) -> int:
    """Add a cryoPANDA-style HDF5 file to ``store`` as one experiment (lossless for uint8 stores).

    ``replace`` as in :func:`import_relion`.
    """
    import h5py

    p = Path(path)
    table = read_hdf5_annotations(p)
    with h5py.File(p, "r") as h5:
        images = np.asarray(h5["images"])
    table = table.drop(columns=[c for c in ("experiment_id", "particle_index") if c in table])
    has_scaling = all(c in table for c in _STORE_ONLY)
    if images.dtype == np.uint8 and has_scaling and store.encoding == "uint8":
        return store.add_experiment(experiment_id, images, table, provenance=provenance, preencoded=True,
                                    replace=replace)
    if images.dtype == np.uint8 and has_scaling:
        decoded = decode(images, table["image_offset"].to_numpy(), table["image_scale"].to_numpy())
    else:
        decoded = images.astype(np.float32)
    table = table.drop(columns=[c for c in _STORE_ONLY if c in table])
    return store.add_experiment(experiment_id, decoded, table, provenance=provenance, replace=replace)
