"""Reader for the Cryo2StructData layout and its cross-check against ``cryoset map prepare``.

One entry is a directory named after the EMDB entry holding::

    emd_normalized_map.mrc              resampled (1 Å) and normalised map, float32
    atom_emd_normalized_map.mrc         backbone labels: Cα=1, N=2, C=3
    atom_ca_emd_normalized_map.mrc      Cα only (1)
    amino_emd_normalized_map.mrc        amino-acid type of each Cα voxel, 1-20
    sec_struc_emd_normalized_map.mrc    coil=1, helix=2, strand=3
    *.pdb / *.cif, *.fasta              the deposited model and its sequence
    *.npz                               sub-grids: protein_grid, atom_grid, amino_grid

These are exactly the names :func:`cryoset.workflows.maps.prepare_map` writes, so one reader
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


# ------------------------------------------------------------------ published sub-grid files
#: The published grid division: 32³ boxes, 20³ cores (6 voxels of margin on each face).
NPZ_BOX = 32
NPZ_OVERLAP = 6


def published_box_order(shape: tuple[int, ...], box: int = NPZ_BOX, overlap: int = NPZ_OVERLAP) -> NDArray[np.int64]:
    """Our (z-major, :func:`cryoset.maps.subgrids.split`) box number of each published box.

    The published division (``grid_division.py``) uses the same boxes — start ``q·20 − 6``
    along each array axis, ``ceil(n / 20)`` per axis — but numbers them with array axis 0
    fastest and axis 2 slowest; ours numbers them axis 2 fastest. ``order[i]`` is our index of
    their box ``i`` (file ``<EMD>_<i>.npz``).
    """
    from cryoset.maps.subgrids import box_grid

    g = box_grid(shape, box, overlap)
    ours = np.arange(g[0] * g[1] * g[2], dtype=np.int64).reshape(g)
    return np.ascontiguousarray(ours.transpose(2, 1, 0)).reshape(-1)


def write_npz_subgrids(out_dir: str | os.PathLike[str], stem: str, density: NDArray[Any],
                       labels: Mapping[str, NDArray[Any]] | None = None) -> list[Path]:
    """Write ``OUT/<stem>_<i>.npz`` per sub-grid in the published box order.

    Keys: ``protein_grid`` (the density, float32) and, when given in ``labels`` under our
    names ``backbone`` / ``amino``, ``atom_grid`` / ``amino_grid`` (float32, integral values,
    as the published label MRC files hold them). Each file is written atomically.
    """
    from cryoset.io.atomic import atomic_path
    from cryoset.maps.subgrids import split

    vol = np.asarray(density, dtype=np.float32)
    arrays = {"protein_grid": split(vol, NPZ_BOX, NPZ_OVERLAP)[0]}
    ours_to_key = {v: k for k, v in NPZ_KEYS.items()}
    for name, lab in (labels or {}).items():
        if name not in ours_to_key or name == "density":
            raise InputError(name, f"is not a sub-grid label the published files hold ({', '.join(NPZ_KEYS.values())})")
        if np.shape(lab) != vol.shape:
            raise InputError(name, f"shape {np.shape(lab)} differs from the density's {vol.shape}")
        arrays[ours_to_key[name]] = split(np.asarray(lab, dtype=np.float32), NPZ_BOX, NPZ_OVERLAP)[0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, j in enumerate(published_box_order(vol.shape).tolist()):
        target = out / f"{stem}_{i}.npz"
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{k: a[j] for k, a in arrays.items()})
        written.append(target)
    return written


def _box_number(path: Path) -> int:
    m = re.search(r"_(\d+)\.npz$", path.name)
    if m is None:
        raise InputError(path, "is not named <stem>_<i>.npz (the published sub-grid naming)")
    return int(m.group(1))


def read_npz_subgrid_files(paths: list[Path] | str | os.PathLike[str], shape: tuple[int, ...]
                           ) -> dict[str, NDArray[Any]]:
    """Published ``<stem>_<i>.npz`` files of one map (a list, or a directory) as our arrays
    ``{density, backbone, amino}`` ``(n, 32, 32, 32)`` in our box order, ready for
    :func:`cryoset.maps.subgrids.stitch` with the map ``shape``. Every box must be present."""
    files = sorted(Path(paths).glob("*.npz")) if not isinstance(paths, list) else list(paths)
    if not files:
        raise InputError(str(paths), "holds no .npz sub-grid file")
    order = published_box_order(shape)
    numbered = {_box_number(f): f for f in files}
    missing = sorted(set(range(order.size)) - set(numbered))
    if missing or len(numbered) != order.size:
        raise InputError(files[0].parent, f"{len(numbered)} sub-grid files for the {order.size} boxes of a "
                         f"{'×'.join(map(str, shape))} map (first missing: {missing[0] if missing else 'none'})")
    out: dict[str, NDArray[Any]] = {}
    for i, f in sorted(numbered.items()):
        arrays = read_npz_subgrids(f)
        for name, a in arrays.items():
            if a.shape[0] != 1 or a.shape[1:] != (NPZ_BOX,) * 3:
                raise InputError(f, f"holds {a.shape}, not one {NPZ_BOX}³ sub-grid")
            if name not in out:
                out[name] = np.empty((order.size, NPZ_BOX, NPZ_BOX, NPZ_BOX), dtype=a.dtype)
            out[name][order[i]] = a[0]
    return out


# ------------------------------------------------------------------ sequences per entry
@dataclass
class EntrySequences:
    """The sequence files of one entry, as the release ships them.

    ``deposited``: the records of the RCSB FASTA (``<pdb>.fasta``; header → sequence);
    ``combined``: all chains of it joined (``<pdb>_all_chain_combined.fasta``, one line);
    ``atomic``: the sequence of the modelled residues (``atomic.fasta``, one line);
    ``alignment``: the Clustal Omega alignment ``{"original": …, "atom": …}`` with gaps
    (``dealign_clustal_output.fasta``), or None.
    """

    deposited: dict[str, str]
    combined: str | None
    atomic: str | None
    alignment: dict[str, str] | None


def _fasta_records(text: str) -> dict[str, str]:
    records: dict[str, list[str]] = {}
    header = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(">"):
            header = line[1:].strip()
            records[header] = []
        elif line and header is not None:
            records[header].append(line)
    return {h: "".join(parts) for h, parts in records.items()}


def _first_line(path: Path) -> str | None:
    if not path.is_file():
        return None
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith(">")]
    return lines[0] if lines else None


def read_entry_sequences(path: str | os.PathLike[str]) -> EntrySequences:
    """The deposited FASTA, the combined and atomic sequences and their alignment of one entry."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(root, "is not a directory")
    derived = ("_all_chain_combined.fasta", "atomic.fasta", "dealign_clustal_input.fasta",
               "dealign_clustal_output.fasta")
    deposited: dict[str, str] = {}
    for f in sorted(root.glob("*.fasta")):
        if not f.name.endswith(derived):
            deposited.update(_fasta_records(f.read_text()))
    combined_files = sorted(root.glob("*_all_chain_combined.fasta"))
    combined = _first_line(combined_files[0]) if combined_files else None
    atomic = _first_line(root / "atomic.fasta")
    alignment = None
    if (root / "dealign_clustal_output.fasta").is_file():
        alignment = _fasta_records((root / "dealign_clustal_output.fasta").read_text())
        if set(alignment) != {"original", "atom"} or len({len(s) for s in alignment.values()}) != 1:
            raise InputError(root / "dealign_clustal_output.fasta",
                             "is not a two-sequence alignment named original and atom of equal length")
    return EntrySequences(deposited, combined, atomic, alignment)


def subsequence_alignment(original: str, atomic: str) -> dict[str, str]:
    """The gapped alignment of a modelled sequence that is a subsequence of the original
    (disordered residues not modelled): ``atom`` carries ``-`` where a residue is missing.
    InputError when ``atomic`` is not a subsequence (pass a real alignment then)."""
    out = []
    pos = 0
    for ch in original:
        if pos < len(atomic) and atomic[pos] == ch:
            out.append(ch)
            pos += 1
        else:
            out.append("-")
    if pos != len(atomic):
        raise InputError("atomic", "is not a subsequence of the original sequence: give the alignment")
    return {"original": original, "atom": "".join(out)}


def write_entry_sequences(path: str | os.PathLike[str], pdb_id: str, deposited: Mapping[str, str],
                          atomic: str, alignment: Mapping[str, str] | None = None) -> list[Path]:
    """Write the sequence files of one entry as the release names them: ``<pdb>.fasta``,
    ``<pdb>_all_chain_combined.fasta``, ``atomic.fasta``, ``dealign_clustal_input.fasta`` and
    ``dealign_clustal_output.fasta`` (FASTA, 60 residues a line, as Clustal Omega writes).
    ``alignment`` defaults to :func:`subsequence_alignment`."""
    from cryoset.io.atomic import write_text_atomic

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    pdb = pdb_id.lower()
    combined = "".join(deposited.values())
    aln = dict(alignment) if alignment is not None else subsequence_alignment(combined, atomic)

    def wrap(seq: str) -> str:
        return "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60))

    files = {
        f"{pdb}.fasta": "".join(f">{h}\n{s}\n" for h, s in deposited.items()),
        f"{pdb}_all_chain_combined.fasta": combined + "\n",
        "atomic.fasta": atomic + "\n",
        "dealign_clustal_input.fasta": f">original\n{combined}\n\n>atom\n{atomic}\n",
        "dealign_clustal_output.fasta": f">original\n{wrap(aln['original'])}\n>atom\n{wrap(aln['atom'])}\n",
    }
    written = []
    for name, text in files.items():
        write_text_atomic(root / name, text)
        written.append(root / name)
    return written
