"""A reproducible training corpus for the voxel network: simulated maps of real structures.

``build_voxel_corpus(structures, out_dir, …)`` makes, for every structure and every variant,
a simulated map at a random resolution in ``resolution_range_a`` (Gaussian blur σ = 0.225 d on
top of the atoms' own B-factors, clipped to [5, 150] Å²), with

* disorder: the side-chain atoms of a random ``disorder_fraction`` of the residues are left
  out of the density (their labels stay: the network must still find the Cα);
* noise: white Gaussian noise low-passed at the map's resolution, at a random ``noise_sd``
  (fraction of the 95th percentile of the positive density);
* masked solvent: with probability ½ the map is multiplied by a soft mask 3–6 Å around the
  model, as many deposited maps are;

then runs it through :func:`cryoset.workflows.maps.prepare_map` (1 Å, normalisation, labels,
sub-grids). Splits are by *structure group* (all variants of a structure, and structures
named in one group, e.g. the open and closed adenylate kinase, share a split), seeded, so no
chain is in two splits. ``metadata.parquet`` is the ``map build`` table, so
``cryoset train voxel`` reads the corpus like any map build.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.errors import InputError
from cryoset.provenance import make_provenance

__all__ = ["CorpusOptions", "build_voxel_corpus", "simulate_training_map"]

PathLike = str | os.PathLike[str]
_BACKBONE = {"N", "CA", "C", "O", "CB"}


@dataclass(frozen=True)
class CorpusOptions:
    """Simulation parameters of the corpus (recorded in provenance)."""

    variants: int = 2
    resolution_range_a: tuple[float, float] = (2.5, 5.0)
    noise_sd_range: tuple[float, float] = (0.02, 0.25)
    disorder_fraction: float = 0.05
    mask_probability: float = 0.5
    margin_a: float = 8.0
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0


def _atoms_table(path: Path) -> pd.DataFrame:
    from cryoset.io.structure import read_structure

    atoms = read_structure(path).atoms
    atoms = atoms[atoms["model"] == atoms["model"].iloc[0]] if len(atoms) else atoms
    keep = ~atoms["element"].astype(str).str.upper().isin(["H", "D"])
    if "residue_name" in atoms.columns:
        keep &= ~atoms["residue_name"].astype(str).isin(["HOH", "WAT", "DOD"])
    return atoms[keep].reset_index(drop=True)


def simulate_training_map(
    structure: PathLike,
    map_path: PathLike,
    *,
    seed: int,
    options: CorpusOptions = CorpusOptions(),
) -> dict[str, Any]:
    """Simulate one noisy, partly disordered, optionally masked map of ``structure``.

    Returns the simulation parameters (resolution, noise, disorder, mask) of this map.
    """
    from scipy import ndimage

    from cryoset.simulate.density import lowpass_filter, simulate_map
    from cryoset.workflows.simulate import write_simulated_map

    rng = np.random.default_rng(seed)
    atoms = _atoms_table(Path(structure))
    if atoms.empty:
        raise InputError(structure, "has no atoms")
    xyz = atoms[["x_a", "y_a", "z_a"]].to_numpy(dtype=np.float64)
    lo_r, hi_r = options.resolution_range_a
    res = float(rng.uniform(lo_r, hi_r))
    names = atoms["atom_name"].astype(str).str.strip().to_numpy()
    residue_key = (atoms["chain"].astype(str) + ":" + atoms["residue_number"].astype(str)).to_numpy()
    uniq = np.unique(residue_key)
    disordered = set(rng.choice(uniq, size=round(options.disorder_fraction * uniq.size), replace=False))
    drop = np.array([k in disordered for k in residue_key]) & ~np.isin(names, list(_BACKBONE))
    b = np.clip(atoms["b_factor"].to_numpy(dtype=np.float64), 5.0, 150.0) if "b_factor" in atoms.columns \
        else np.full(len(atoms), 30.0)
    lo = xyz.min(axis=0) - options.margin_a - 2 * res
    hi = xyz.max(axis=0) + options.margin_a + 2 * res
    shape_xyz = np.ceil(hi - lo).astype(int) + 1
    shape = (int(shape_xyz[2]), int(shape_xyz[1]), int(shape_xyz[0]))
    origin = (float(lo[2]), float(lo[1]), float(lo[0]))
    vol = simulate_map(xyz[~drop], atoms["element"].astype(str).to_numpy()[~drop], b[~drop],
                       shape=shape, voxel_size_a=1.0, origin_a=origin, resolution_a=res, permissive=True)
    positive = vol[vol > 0]
    scale = float(np.percentile(positive, 95)) if positive.size else 1.0
    noise_sd = float(rng.uniform(*options.noise_sd_range))
    noise = lowpass_filter(rng.normal(0.0, 1.0, shape).astype(np.float32), 1.0, res * 0.8)
    noise *= noise_sd * scale / max(float(noise.std()), 1e-12)
    vol = vol + noise
    masked = bool(rng.random() < options.mask_probability)
    if masked:
        width = float(rng.uniform(3.0, 6.0))
        idx = np.round((xyz[:, ::-1] - np.asarray(origin)) / 1.0).astype(int)
        occ = np.zeros(shape, dtype=bool)
        ok = np.all((idx >= 0) & (idx < np.asarray(shape)), axis=1)
        occ[tuple(idx[ok].T)] = True
        dist = ndimage.distance_transform_edt(~occ)
        soft = np.clip(1.0 - (dist - width) / 3.0, 0.0, 1.0)
        vol = vol * (0.5 - 0.5 * np.cos(np.pi * soft)).astype(np.float32)
    params = {"structure": str(structure), "seed": seed, "resolution_a": res, "noise_sd": noise_sd,
              "disordered_residues": len(disordered), "masked": masked, "shape": list(shape)}
    write_simulated_map(map_path, vol.astype(np.float32), 1.0, origin, parameters=params, inputs=[structure])
    return params


def _group_splits(groups: Sequence[str], options: CorpusOptions) -> dict[str, str]:
    uniq = sorted(set(groups))
    order = np.random.default_rng([options.seed, 11]).permutation(len(uniq))
    n_test = max(1, round(options.test_fraction * len(uniq))) if options.test_fraction > 0 else 0
    n_val = max(1, round(options.validation_fraction * len(uniq))) if options.validation_fraction > 0 else 0
    out: dict[str, str] = {}
    for rank, i in enumerate(order):
        out[uniq[i]] = "test" if rank < n_test else ("validation" if rank < n_test + n_val else "train")
    return out


def build_voxel_corpus(
    structures: Sequence[PathLike],
    out_dir: PathLike,
    *,
    groups: Mapping[str, str] | None = None,
    options: CorpusOptions = CorpusOptions(),
    on_done: Callable[[dict[str, Any]], None] | None = None,
    argv: list[str] | None = None,
) -> pd.DataFrame:
    """Simulate and prepare every structure × variant; write ``metadata.parquet`` with splits.

    Parameters
    ----------
    structures
        PDB/mmCIF files (optionally gzipped).
    out_dir
        The corpus folder (one sub-folder per map, as ``map build`` lays it out).
    groups
        Structure file stem → group name; structures of one group share a split (default:
        each structure its own group).
    """
    from cryoset.maps.dataset import PrepareOptions
    from cryoset.workflows.maps import prepare_map, write_metadata

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in structures]
    if not paths:
        raise InputError("structures", "no structure given")
    stems = [p.name.split(".")[0] for p in paths]
    if len(set(stems)) != len(stems):
        raise InputError("structures", "two structures share a file name stem")
    group_of = {s: (groups or {}).get(s, s) for s in stems}
    split_of = _group_splits(list(group_of.values()), options)
    seeds = np.random.SeedSequence(options.seed).spawn(len(paths) * options.variants)
    rows: list[dict[str, Any]] = []
    for i, (path, stem) in enumerate(zip(paths, stems, strict=True)):
        for v in range(options.variants):
            entry = f"{stem}_v{v}"
            seed = int(seeds[i * options.variants + v].generate_state(1)[0])
            entry_dir = out / entry
            entry_dir.mkdir(parents=True, exist_ok=True)
            try:
                params = simulate_training_map(path, entry_dir / "map.mrc", seed=seed, options=options)
                row = prepare_map(entry_dir / "map.mrc", entry_dir, path,
                                  options=PrepareOptions(),
                                  meta={"emdb_id": entry, "pdb_id": stem, "resolution_a": params["resolution_a"]})
                row.update(status="ok", error="", noise_sd=params["noise_sd"], masked=params["masked"])
            except (InputError, ValueError, OSError) as exc:
                row = {"emdb_id": entry, "pdb_id": stem, "status": "failed", "error": str(exc)}
            row.update(group=group_of[stem], split=split_of[group_of[stem]])
            rows.append(row)
            if on_done is not None:
                on_done(row)
    table = pd.DataFrame(rows)
    prov = make_provenance("voxel corpus", {**asdict(options), "groups": dict(group_of)}, paths, argv=argv)
    write_metadata(table, out, prov)
    return table


def default_structures(shared_data: PathLike) -> tuple[list[Path], dict[str, str]]:
    """The real structures of ``shared/data/structures`` usable for training, and their groups.

    Left out: G-actin ``1J6Z`` (EMD-5168/3MFP, an actin filament, is the evaluation map: an
    actin structure in training would leak it) and files without protein.
    """
    root = Path(shared_data) / "structures"
    files = sorted([*root.glob("*.pdb"), *root.glob("*.cif.gz"), *(root / "dssp").glob("*.pdb.gz")])
    files = [f for f in files if not f.name.startswith("1J6Z") and "failing" not in f.name]
    groups = {"adk_open": "adk", "adk_closed": "adk"}
    return files, groups
