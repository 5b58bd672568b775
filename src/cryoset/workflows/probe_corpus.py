"""The probe corpus: a small multi-experiment particle store with every probe target filled.

``build_probe_corpus(out_dir, options)`` writes ``OUT/store`` (a :class:`ParticleStore`),
``OUT/experiments.csv`` (one row per experiment), ``OUT/summary.json`` and
``OUT/provenance.json``; the folder appears whole (atomic) and the same seed and options give
the same images and annotations.

**Assemblies.** Chains are procedural proteins (:func:`cryoset.simulate.protein.build_protein`,
seeded lengths) and, when ``shared_data`` is given, real single chains of
``shared/data/structures/dssp``. Each chain, turned by a seeded random rotation and moved off
the symmetry axes (centroid at ``0.55 × its max radius`` along (1, 0.7, 0.4)), is copied by the
operators of a point group: ``C1`` (itself), ``C2``/``C3`` (rotations by 360°/n about z),
``D2`` (identity and 180° about x, y and z). One experiment per (chain, point group) pair.

**Targets** (store columns): ``symmetry``; ``molecular_weight_kda`` (sum of the atomic
weights of the assembly); ``max_diameter_a`` (the largest distance between two atoms);
``emd_resolution_a`` (the resolution the assembly is simulated at: every atom gets the
B-factor ``4 d²``, a Gaussian blur whose 1/e fall-off lies near ``1/d``); ``pixel_size_a`` and
``image_size_px`` (the box holds ``1.5 ×`` the max diameter, even, 48–128 px); ``defocus_a``
(per particle, mean of U and V) and the experiment's defocus range; ``voltage_kv``;
``dose_e_per_a2`` (sets the noise: SNR = ``snr_at_40_e · dose / 40``); ``cs_mm``; ``detector``
(a label drawn per experiment; the simulation does not model detectors). Acquisition values
are drawn per experiment, seeded, independently of the assembly.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.provenance import make_provenance

__all__ = ["SYMMETRY_GROUPS", "ProbeCorpusOptions", "build_probe_corpus", "symmetry_operators"]

PathLike = str | os.PathLike[str]
SYMMETRY_GROUPS: tuple[str, ...] = ("C1", "C2", "C3", "D2")
PIXEL_SIZES_A: tuple[float, ...] = (1.2, 1.6, 2.0, 2.5, 3.0)
VOLTAGES_KV: tuple[float, ...] = (200.0, 300.0)
DOSES_E_PER_A2: tuple[float, ...] = (20.0, 40.0, 60.0)
DEFOCUS_RANGES_A: tuple[tuple[float, float], ...] = ((5000.0, 15000.0), (10000.0, 25000.0), (18000.0, 35000.0))
CS_MM: tuple[float, ...] = (2.7, 0.01)
DETECTORS: tuple[str, ...] = ("K2", "K3", "Falcon4")
RESOLUTIONS_A: tuple[float, ...] = (2.5, 3.5, 4.5, 6.0)


@dataclass(frozen=True)
class ProbeCorpusOptions:
    """Size and seed of the corpus (recorded in the provenance)."""

    procedural_chains: int = 6
    real_chains: int = 3
    chain_length_range: tuple[int, int] = (50, 220)
    particles_per_experiment: int = 120
    snr_at_40_e: float = 0.3
    max_shift_a: float = 3.0
    seed: int = 0

    def check(self) -> None:
        """:class:`InputError` naming the first option that makes no sense."""
        if self.particles_per_experiment < 4:
            raise InputError("--particles-per-experiment", f"must be >= 4, got {self.particles_per_experiment}")
        if self.procedural_chains < 0 or self.real_chains < 0 or self.procedural_chains + self.real_chains < 1:
            raise InputError("--procedural-chains", "need at least one chain")
        lo, hi = self.chain_length_range
        if not 30 <= lo <= hi:
            raise InputError("chain_length_range", f"need 30 <= min <= max, got {lo}, {hi}")


def _rot(axis: str, deg: float) -> NDArray[np.float64]:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def symmetry_operators(group: str) -> list[NDArray[np.float64]]:
    """Rotation matrices (acting on column vectors (x, y, z)) of ``C<n>`` or ``D2``."""
    if group == "D2":
        return [np.eye(3), _rot("z", 180.0), _rot("x", 180.0), _rot("y", 180.0)]
    if group.startswith("C") and group[1:].isdigit() and int(group[1:]) >= 1:
        n = int(group[1:])
        return [_rot("z", 360.0 * k / n) for k in range(n)]
    raise ValueError(f"unsupported point group {group!r}")


def _assembly(atoms: Any, group: str, rng: np.random.Generator) -> Any:
    from scipy.spatial.transform import Rotation

    from cryoset.simulate.micrograph import AtomSet

    a = atoms.centred()
    turn = Rotation.random(random_state=rng).as_matrix()
    xyz = a.xyz_a @ turn.T
    if group != "C1":
        direction = np.array([1.0, 0.7, 0.4]) / np.linalg.norm([1.0, 0.7, 0.4])
        xyz = xyz + 0.55 * a.radius_a * direction
    ops = symmetry_operators(group)
    out = AtomSet(np.concatenate([xyz @ op.T for op in ops]), np.concatenate([a.elements] * len(ops)),
                  np.concatenate([a.b_factors_a2] * len(ops)))
    return out.centred()


def _max_diameter_a(xyz: NDArray[np.float64]) -> float:
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist

    pts = xyz[ConvexHull(xyz).vertices] if len(xyz) > 4 else xyz
    return float(pdist(pts).max()) if len(pts) > 1 else 0.0


def _molecular_weight_kda(elements: NDArray[np.str_]) -> float:
    import gemmi

    names, counts = np.unique(elements, return_counts=True)
    return float(sum(gemmi.Element(str(e)).weight * c for e, c in zip(names, counts, strict=True))) / 1000.0


def _chains(options: ProbeCorpusOptions, shared_data: Path | None) -> list[tuple[str, Any]]:
    from cryoset.simulate.micrograph import atoms_from_file, atoms_from_protein
    from cryoset.simulate.protein import build_protein

    rng = np.random.default_rng([options.seed, 11])
    lo, hi = options.chain_length_range
    out: list[tuple[str, Any]] = []
    for i in range(options.procedural_chains):
        length = int(rng.integers(lo, hi + 1))
        out.append((f"proc_{i:02d}", atoms_from_protein(build_protein(length, int(rng.integers(2**31))))))
    if shared_data is not None and options.real_chains:
        files = sorted((shared_data / "structures" / "dssp").glob("*.pdb.gz"))
        files = [f for f in files if "failing" not in f.name]
        if not files:
            raise InputError(shared_data, "has no structures/dssp/*.pdb.gz chains")
        for k in sorted(rng.choice(len(files), size=min(options.real_chains, len(files)), replace=False)):
            out.append((files[int(k)].name.split(".")[0], atoms_from_file(str(files[int(k)]))))
    return out


def build_probe_corpus(out_dir: PathLike, options: ProbeCorpusOptions = ProbeCorpusOptions(), *,
                       shared_data: PathLike | None = None,
                       on_start: Callable[[int], None] | None = None,
                       on_done: Callable[[str, int], None] | None = None,
                       argv: list[str] | None = None) -> dict[str, Any]:
    """Build the probe corpus (module docstring); returns its summary."""
    from cryoset.io.atomic import atomic_directory
    from cryoset.io.provenance import write_provenance
    from cryoset.particles.extract import default_bg_radius_px, normalise_background
    from cryoset.simulate.micrograph import AtomSet
    from cryoset.simulate.particles import ParticleSettings, simulate_particles
    from cryoset.store.dataset import ParticleStore

    options.check()
    shared = None if shared_data is None else Path(shared_data)
    if shared is not None and not shared.is_dir():
        raise InputError(shared, "no such shared data folder")
    t0 = time.perf_counter()
    chains = _chains(options, shared if options.real_chains else None)
    plan = [(name, atoms, group) for name, atoms in chains for group in SYMMETRY_GROUPS]
    if on_start is not None:
        on_start(len(plan))
    seeds = np.random.SeedSequence([options.seed, 12]).spawn(len(plan))
    prov = make_provenance("probe-corpus", {**asdict(options), "shared_data": None if shared is None else str(shared)},
                           [], argv=argv)
    rows: list[dict[str, Any]] = []
    with atomic_directory(out_dir) as tmp:
        store = ParticleStore.create(tmp / "store")
        for (name, atoms, group), ss in zip(plan, seeds, strict=True):
            rng = np.random.default_rng(ss)
            asm = _assembly(atoms, group, rng)
            res_a = float(RESOLUTIONS_A[int(rng.integers(len(RESOLUTIONS_A)))])
            asm = AtomSet(asm.xyz_a, asm.elements, np.full(len(asm.elements), 4.0 * res_a ** 2))
            diam = _max_diameter_a(asm.xyz_a)
            px = float(PIXEL_SIZES_A[int(rng.integers(len(PIXEL_SIZES_A)))])
            box = int(min(128, max(48, 2 * math.ceil(0.75 * diam / px))))
            kv = float(VOLTAGES_KV[int(rng.integers(len(VOLTAGES_KV)))])
            dose = float(DOSES_E_PER_A2[int(rng.integers(len(DOSES_E_PER_A2)))])
            dfr = DEFOCUS_RANGES_A[int(rng.integers(len(DEFOCUS_RANGES_A)))]
            cs = float(CS_MM[int(rng.integers(len(CS_MM)))])
            det = DETECTORS[int(rng.integers(len(DETECTORS)))]
            snr = options.snr_at_40_e * dose / 40.0
            settings = ParticleSettings(n=options.particles_per_experiment, box_px=box, pixel_size_a=px,
                                        defocus_range_a=dfr, voltage_kv=kv, cs_mm=cs, snr=snr,
                                        junk_fraction=0.0, max_shift_a=options.max_shift_a, ctf_bfactor_a2=50.0)
            sim = simulate_particles(asm, settings, int(rng.integers(2**31)))
            images = normalise_background(sim.images, default_bg_radius_px(box))
            t = sim.table
            n = len(t)
            mw = _molecular_weight_kda(asm.elements)
            exp_id = f"probe-{name}-{group}"
            ann = pd.DataFrame({
                "sample_name": f"{name} {group}", "data_source_type": "simulated particles",
                "number_of_particles": np.full(n, n, dtype=np.int64),
                "voltage_kv": t["voltage_kv"], "cs_mm": t["cs_mm"], "amplitude_contrast": t["amplitude_contrast"],
                "dose_e_per_a2": dose, "pixel_size_a": t["pixel_size_a"], "box_pixel_size_a": t["pixel_size_a"],
                "image_size_px": t["image_size_px"], "detector": det,
                "defocus_u_a": t["defocus_u_a"], "defocus_v_a": t["defocus_v_a"],
                "defocus_angle_deg": t["defocus_angle_deg"], "phase_shift_deg": t["phase_shift_deg"],
                "rot_deg": t["rot_deg"], "tilt_deg": t["tilt_deg"], "psi_deg": t["psi_deg"],
                "emd_resolution_a": res_a, "molecular_weight_kda": mw,
                "subunits": np.full(n, len(symmetry_operators(group)), dtype=np.int32),
                "max_diameter_a": diam, "symmetry": group,
                "structure": name, "source": "simulated",
                "defocus_a": 0.5 * (t["defocus_u_a"] + t["defocus_v_a"]),
                "defocus_min_a": dfr[0], "defocus_max_a": dfr[1], "snr": snr,
            })
            store.add_experiment(exp_id, images, ann, provenance={**prov, "experiment": exp_id})
            rows.append({"experiment_id": exp_id, "chain": name, "symmetry": group, "particles": n,
                         "molecular_weight_kda": round(mw, 2), "max_diameter_a": round(diam, 2),
                         "emd_resolution_a": res_a, "pixel_size_a": px, "image_size_px": box, "voltage_kv": kv,
                         "dose_e_per_a2": dose, "defocus_min_a": dfr[0], "defocus_max_a": dfr[1], "cs_mm": cs,
                         "detector": det})
            if on_done is not None:
                on_done(exp_id, n)
        table = pd.DataFrame(rows)
        table.to_csv(tmp / "experiments.csv", index=False)
        summary = {"out": str(out_dir), "store": str(Path(out_dir) / "store"), "experiments": len(rows),
                   "particles": int(table["particles"].sum()), "chains": [c for c, _ in chains],
                   "symmetries": list(SYMMETRY_GROUPS), "seed": options.seed,
                   "build_seconds": round(time.perf_counter() - t0, 1)}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_provenance(tmp, prov)
    return summary
