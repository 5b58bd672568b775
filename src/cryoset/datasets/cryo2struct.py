"""Reader for the Cryo2StructData layout and its cross-check against ``cryoset map prepare``.

One entry is a directory named after the EMDB entry holding::

    emd_normalized_map.mrc              resampled (1 Å) and normalised map, float32
    atom_emd_normalized_map.mrc         backbone labels: Cα=1, N=2, C=3
    atom_ca_emd_normalized_map.mrc      Cα only (1)
    amino_emd_normalized_map.mrc        amino-acid type of each Cα voxel, 1-20
    sec_struc_emd_normalized_map.mrc    coil=1, helix=2, strand=3
    *.pdb / *.cif, *.fasta              the deposited model and its sequence
    *.npz                               sub-grids: protein_grid, atom_grid, amino_grid

These are exactly the names :func:`cryoset.maps.dataset.prepare_map` writes, so one reader
serves both. The release also has ``metadata.csv`` and ``splits.csv`` tables
(:func:`read_table`). Sub-grid ``.npz`` arrays are ``(32, 32, 32)`` (one sub-grid) or
``(n, 32, 32, 32)``; their names map onto our Zarr array names: ``protein_grid`` →
``density``, ``atom_grid`` → ``backbone``, ``amino_grid`` → ``amino``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.io.mrc import MapData, read_map
from cryoset.maps.dataset import LABEL_FILES, NORMALISED_NAME

#: ``.npz`` key → our sub-grid array name.
NPZ_KEYS: Mapping[str, str] = {"protein_grid": "density", "atom_grid": "backbone", "amino_grid": "amino"}
#: Maximum distance (voxels) of two map origins from a whole-voxel offset.
OFFSET_TOLERANCE_VOX = 0.01


def normalise_emdb_id(value: object) -> str | None:
    """``"emd_5168"``, ``"EMD-5168"``, ``5168`` → ``"EMD-5168"`` (None when no id is found)."""
    m = re.search(r"(?:emd[-_]?)?(\d{4,5})", str(value), flags=re.IGNORECASE)
    return f"EMD-{m.group(1)}" if m else None


@dataclass
class Cryo2StructEntry:
    """One map of the Cryo2StructData layout (or a ``map prepare`` output directory)."""

    root: Path
    emdb_id: str | None
    density: MapData
    labels: dict[str, NDArray[np.uint8]]
    models: list[Path] = field(default_factory=list)
    fasta: list[Path] = field(default_factory=list)
    npz: list[Path] = field(default_factory=list)


def find_entries(path: str | os.PathLike[str]) -> list[Path]:
    """Every directory at or below ``path`` that holds ``emd_normalized_map.mrc``."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(p, "is not a directory")
    return sorted(f.parent for f in p.rglob(NORMALISED_NAME))


def read_cryo2struct_entry(path: str | os.PathLike[str]) -> Cryo2StructEntry:
    """Read the normalised map and every label map present in one entry directory."""
    root = Path(path)
    if not (root / NORMALISED_NAME).is_file():
        raise InputError(root, f"is not a Cryo2StructData entry (no {NORMALISED_NAME})")
    density = read_map(root / NORMALISED_NAME)
    labels: dict[str, NDArray[np.uint8]] = {}
    for name, fname in LABEL_FILES.items():
        if (root / fname).is_file():
            m = read_map(root / fname)
            if m.data.shape != density.data.shape:
                raise InputError(root / fname, f"shape {m.data.shape} differs from the map's {density.data.shape}")
            values = np.rint(m.data)
            if values.min(initial=0) < 0 or values.max(initial=0) > 255:
                raise InputError(root / fname, "label values outside 0..255")
            labels[name] = values.astype(np.uint8)
    models = sorted(p for p in root.iterdir() if p.suffix.lower() in (".pdb", ".cif", ".ent") or
                    p.name.lower().endswith((".pdb.gz", ".cif.gz")))
    fasta = sorted(p for p in root.iterdir() if p.suffix.lower() in (".fasta", ".fa", ".seq"))
    npz = sorted(root.rglob("*.npz"))
    return Cryo2StructEntry(root, normalise_emdb_id(root.name), density, labels, models, fasta, npz)


def read_npz_subgrids(path: str | os.PathLike[str]) -> dict[str, NDArray[Any]]:
    """Read a sub-grid ``.npz`` as ``{density, backbone, amino}`` arrays ``(n, b, b, b)``."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            present = {k: np.asarray(z[k]) for k in NPZ_KEYS if k in z.files}
            found = list(z.files)
    except (OSError, ValueError) as exc:
        raise InputError(p, f"is not a readable .npz file ({exc})") from None
    if "protein_grid" not in present:
        raise InputError(p, f"has no protein_grid array (arrays: {', '.join(found)})")
    shapes = {a.shape for a in present.values()}
    if len(shapes) != 1:
        raise InputError(p, f"arrays have different shapes {sorted(shapes)}")
    (shape,) = shapes
    if len(shape) not in (3, 4) or len(set(shape[-3:])) != 1:
        raise InputError(p, f"sub-grids must be cubes (b, b, b) or (n, b, b, b), got {shape}")
    return {NPZ_KEYS[k]: (a if a.ndim == 4 else a[None]) for k, a in present.items()}


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``metadata.csv`` / ``splits.csv`` (any columns); add ``emdb_id`` (``EMD-NNNN``).

    The EMD id column is the first whose name contains ``emd`` (case-insensitive); without
    one, ``emdb_id`` is not added.
    """
    p = Path(path)
    try:
        table = pd.read_csv(p, sep=None, engine="python")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(p, f"is not a readable CSV table ({exc})") from None
    id_cols = [c for c in table.columns if "emd" in str(c).lower()]
    if id_cols and "emdb_id" not in table.columns:
        table.insert(0, "emdb_id", [normalise_emdb_id(v) for v in table[id_cols[0]]])
    return table


def label_agreement(ours: Mapping[str, NDArray[Any]], theirs: Mapping[str, NDArray[Any]]) -> pd.DataFrame:
    """Per-label agreement of label maps on one grid (pure).

    Parameters
    ----------
    ours, theirs
        Label map name → integer array, same shapes per name; only names in both count.

    Returns
    -------
    DataFrame
        One row per (``map``, ``label``) for every non-zero label in either map, with
        ``n_ours``, ``n_theirs``, ``n_both`` (voxels with that label in both) and
        ``dice = 2 n_both / (n_ours + n_theirs)``; plus one row per map with
        ``label = -1`` summarising all non-zero labels (``n_both`` = voxels labelled
        non-zero in either map that carry the same label in both, ``dice`` = that over
        the mean count, and ``voxel_agreement`` = fraction of all voxels equal).
    """
    rows: list[dict[str, Any]] = []
    for name in [n for n in ours if n in theirs]:
        a, b = np.asarray(ours[name]), np.asarray(theirs[name])
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes differ {a.shape} vs {b.shape}")
        values = sorted(int(v) for v in np.union1d(np.unique(a), np.unique(b)) if v != 0)
        for v in values:
            na, nb = int(np.count_nonzero(a == v)), int(np.count_nonzero(b == v))
            both = int(np.count_nonzero((a == v) & (b == v)))
            rows.append({"map": name, "label": v, "n_ours": na, "n_theirs": nb, "n_both": both,
                         "dice": 2 * both / (na + nb) if na + nb else 1.0, "voxel_agreement": np.nan})
        na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
        same = int(np.count_nonzero((a == b) & (a != 0)))
        rows.append({"map": name, "label": -1, "n_ours": na, "n_theirs": nb, "n_both": same,
                     "dice": 2 * same / (na + nb) if na + nb else 1.0,
                     "voxel_agreement": float(np.mean(a == b)) if a.size else 1.0})
    return pd.DataFrame(rows, columns=["map", "label", "n_ours", "n_theirs", "n_both", "dice", "voxel_agreement"])


def overlap_slices(shape_a: tuple[int, ...], shape_b: tuple[int, ...], offset: tuple[int, ...]
                   ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of ``a`` and ``b`` covering their overlap when ``b[i] = a[i + offset]`` (pure)."""
    sa, sb = [], []
    for na, nb, o in zip(shape_a, shape_b, offset, strict=True):
        lo_b, hi_b = max(0, -o), min(nb, na - o)
        if hi_b <= lo_b:
            raise ValueError("the two grids do not overlap")
        sa.append(slice(lo_b + o, hi_b + o))
        sb.append(slice(lo_b, hi_b))
    return tuple(sa), tuple(sb)


def crosscheck(theirs: Cryo2StructEntry, ours: Cryo2StructEntry) -> dict[str, Any]:
    """Compare a published entry with our ``map prepare`` output of the same map.

    The grids must have the same voxel size and origins a whole number of voxels apart
    (the overlap is compared). Returns ``offset_vox`` (theirs relative to ours, z/y/x),
    ``overlap_shape``, ``density_correlation`` (Pearson, overlap), ``density_max_abs_diff``
    and ``labels`` (:func:`label_agreement` rows as records).
    """
    va, vb = np.asarray(ours.density.voxel_size_a), np.asarray(theirs.density.voxel_size_a)
    if not np.allclose(va, vb, rtol=0, atol=1e-3):
        raise InputError(theirs.root, f"voxel size {tuple(vb)} differs from ours {tuple(va)}")
    shift = (np.asarray(theirs.density.origin_a) - np.asarray(ours.density.origin_a)) / va
    offset = np.rint(shift).astype(int)
    if np.max(np.abs(shift - offset)) > OFFSET_TOLERANCE_VOX:
        raise InputError(theirs.root, f"origin is {tuple(np.round(shift, 3))} voxels from ours: "
                         "not on the same grid")
    try:
        sl_ours, sl_theirs = overlap_slices(ours.density.data.shape, theirs.density.data.shape,
                                            tuple(int(o) for o in offset))
    except ValueError:
        raise InputError(theirs.root, "the two maps do not overlap") from None
    da = ours.density.data[sl_ours].astype(np.float64).ravel()
    db = theirs.density.data[sl_theirs].astype(np.float64).ravel()
    corr = float(np.corrcoef(da, db)[0, 1]) if da.std() > 0 and db.std() > 0 else float("nan")
    table = label_agreement({k: v[sl_ours] for k, v in ours.labels.items()},
                            {k: v[sl_theirs] for k, v in theirs.labels.items()})
    return {
        "emdb_id": theirs.emdb_id or ours.emdb_id,
        "offset_vox": [int(o) for o in offset],
        "overlap_shape": [int(s.stop - s.start) for s in sl_ours],
        "density_correlation": corr,
        "density_max_abs_diff": float(np.max(np.abs(da - db))) if da.size else 0.0,
        "labels": table.to_dict(orient="records"),
    }
