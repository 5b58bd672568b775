"""The self-supervised particle corpus: simulated experiments plus real micrograph crops.

``build_ssl_corpus(shared_data, out_dir, options)`` writes two particle stores,

* ``OUT/train-store``: simulated experiments of the *training* structures under the
  *training* acquisition settings, plus random windows from the real EMPIAR-10028
  micrographs of ``shared/data/micrographs/empiar_10028`` (self-supervision needs no labels);
* ``OUT/heldout-store``: simulated experiments of other structures under other acquisition
  settings, for the frozen-feature probes of ``benchmarks/bench_ssl.py``,

and ``OUT/experiments.csv`` (one row per experiment: split, structure, model file, settings,
particles), ``OUT/structures/proc_NN.pdb`` (the procedural proteins), ``OUT/summary.json`` and
``OUT/provenance.json``. The whole folder is written atomically; the same seed and options
give the same images and annotations, bit for bit.

An **experiment** is one (structure, acquisition setting) pair, simulated with
:func:`cryoset.simulate.particles.simulate_particles` (projected potential in a uniformly
random pose, CTF at the particle's own defocus, white Gaussian noise) at one common box
(``box_px``, default 64) so one small ViT sees every image.

**Structures.** The real models of ``shared/data/structures`` (``*.pdb``, ``*.cif.gz`` and the
32 single chains of ``dssp/``; ``1mr1D_failing`` is the same chain as ``1mr1D`` and is left
out) plus ``3MFP`` of ``maps/emd_5168``, grouped by protein (:data:`PROTEIN_GROUPS`: open and
closed adenylate kinase, the two HIV-1 protease dimers, G-actin 1J6Z and F-actin 3MFP), and
``procedural_proteins`` procedural proteins (:func:`cryoset.simulate.protein.build_protein`, each
its own group). The annotation ``structure`` is the group: the protein identity. Groups, not
files, are split (seeded), so no protein chain is in both stores.

**Acquisition settings.** The grid :data:`PIXEL_SIZES_A` × :data:`VOLTAGES_KV` ×
:data:`DEFOCUS_RANGES_A` × :data:`DOSES_E_PER_A2`; a seeded ``heldout_settings_fraction`` of the
combinations is reserved for the held-out experiments, so no held-out experiment shares its
(pixel size, voltage, defocus range, dose) with a training one. The dose sets the noise: the
signal-to-noise variance ratio is ``snr_at_40_e · dose / 40`` (shot noise: variance ∝ 1/dose).
Each experiment also draws a CTF envelope B-factor in ``ctf_bfactor_range_a2``.

**Normalisation.** Every image — simulated or cropped — is normalised as extracted particles
are (:func:`cryoset.particles.extract.normalise_background`: mean 0, sd 1 outside a circle of
0.375 box), particles white: micrograph crops are contrast-inverted first (the 8-bit PNG shows
the ribosomes dark).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.provenance import make_provenance

__all__ = [
    "DEFOCUS_RANGES_A",
    "DOSES_E_PER_A2",
    "PIXEL_SIZES_A",
    "PROTEIN_GROUPS",
    "VOLTAGES_KV",
    "AcquisitionSetting",
    "CorpusExperiment",
    "SSLCorpusOptions",
    "acquisition_grid",
    "build_ssl_corpus",
    "micrograph_crops",
    "plan_experiments",
    "real_structures",
]

PathLike = str | os.PathLike[str]

#: Acquisition grid (every combination is one setting).
PIXEL_SIZES_A: tuple[float, ...] = (1.8, 2.2, 2.6, 3.0, 3.4)
VOLTAGES_KV: tuple[float, ...] = (200.0, 300.0)
DEFOCUS_RANGES_A: tuple[tuple[float, float], ...] = ((5000.0, 15000.0), (10000.0, 25000.0), (18000.0, 35000.0))
DOSES_E_PER_A2: tuple[float, ...] = (20.0, 40.0, 60.0)

#: File stem → protein group, for files of the shared data that hold the same protein.
PROTEIN_GROUPS: dict[str, str] = {
    "adk_open": "adk", "adk_closed": "adk",          # adenylate kinase 4AKE / 1AKE
    "1hvr": "hiv1_protease", "4E43": "hiv1_protease",  # HIV-1 protease dimers
    "1J6Z": "actin", "3MFP": "actin",                # G-actin and the F-actin subunit of EMD-5168
}

#: EMPIAR-10028 development micrographs (README of shared/data).
MICROGRAPH_PIXEL_SIZE_A = 5.36
MICROGRAPH_ORIGINAL_PIXEL_SIZE_A = 1.34
MICROGRAPH_VOLTAGE_KV = 300.0


@dataclass(frozen=True)
class SSLCorpusOptions:
    """Parameters of the corpus (all recorded in the provenance)."""

    particles_per_experiment: int = 300
    box_px: int = 64
    procedural_proteins: int = 16
    procedural_length_range: tuple[int, int] = (60, 400)
    heldout_real_groups: int = 6
    heldout_procedural: int = 4
    settings_per_structure: int = 2
    heldout_settings_fraction: float = 0.2
    crops_per_micrograph: int = 700
    snr_at_40_e: float = 0.2
    astigmatism_a: float = 400.0
    max_shift_a: float = 4.0
    ctf_bfactor_range_a2: tuple[float, float] = (20.0, 100.0)
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`InputError` naming the first option that makes no sense."""
        if self.particles_per_experiment < 1:
            raise InputError("--particles-per-experiment", f"must be >= 1, got {self.particles_per_experiment}")
        if self.box_px < 16 or self.box_px % 2:
            raise InputError("--box-px", f"must be even and >= 16, got {self.box_px}")
        if self.procedural_proteins < 0 or not 0 <= self.heldout_procedural <= self.procedural_proteins:
            raise InputError("procedural_proteins", "need 0 <= heldout_procedural <= procedural_proteins")
        if self.heldout_real_groups < 0:
            raise InputError("heldout_real_groups", f"must be >= 0, got {self.heldout_real_groups}")
        if self.settings_per_structure < 1:
            raise InputError("settings_per_structure", f"must be >= 1, got {self.settings_per_structure}")
        if not 0 < self.heldout_settings_fraction < 1:
            raise InputError("heldout_settings_fraction", "must be in (0, 1)")
        if self.crops_per_micrograph < 0:
            raise InputError("--crops-per-micrograph", f"must be >= 0, got {self.crops_per_micrograph}")
        lo, hi = self.procedural_length_range
        if not 30 <= lo <= hi:
            raise InputError("procedural_length_range", f"need 30 <= min <= max, got {lo}, {hi}")


@dataclass(frozen=True)
class AcquisitionSetting:
    """One acquisition combination of the grid."""

    index: int
    pixel_size_a: float
    voltage_kv: float
    defocus_range_a: tuple[float, float]
    dose_e_per_a2: float

    @property
    def name(self) -> str:
        """A short, directory-safe name, e.g. ``acq07``."""
        return f"acq{self.index:02d}"


@dataclass(frozen=True)
class CorpusExperiment:
    """One planned experiment (a structure file under one acquisition setting)."""

    experiment_id: str
    split: str  # "train" or "heldout"
    structure: str  # protein group (identity label)
    model: str  # file stem of the model (or proc_NN)
    setting: AcquisitionSetting
    seed: int
    ctf_bfactor_a2: float


def acquisition_grid() -> list[AcquisitionSetting]:
    """Every acquisition combination, in a fixed order."""
    combos = product(PIXEL_SIZES_A, VOLTAGES_KV, DEFOCUS_RANGES_A, DOSES_E_PER_A2)
    return [AcquisitionSetting(i, px, kv, df, dose) for i, (px, kv, df, dose) in enumerate(combos)]


def real_structures(shared_data: PathLike) -> dict[str, Path]:
    """The real models of the shared data: file stem → path (see the module docstring)."""
    root = Path(shared_data)
    sdir = root / "structures"
    if not sdir.is_dir():
        raise InputError(root, "has no structures/ folder (give the shared data folder)")
    files = sorted([*sdir.glob("*.pdb"), *sdir.glob("*.cif.gz"), *(sdir / "dssp").glob("*.pdb.gz")])
    files = [f for f in files if "failing" not in f.name]
    actin = root / "maps" / "emd_5168" / "3MFP.pdb"
    if actin.is_file():
        files.append(actin)
    if not files:
        raise InputError(sdir, "holds no structure files")
    return {f.name.split(".")[0]: f for f in files}


def _child_seeds(seed: int, key: int, n: int) -> list[int]:
    children = np.random.SeedSequence([seed, key]).spawn(n)
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


def plan_experiments(model_stems: Sequence[str], options: SSLCorpusOptions
                     ) -> tuple[list[CorpusExperiment], dict[str, str], list[AcquisitionSetting]]:
    """Split protein groups and acquisition settings; one experiment per (model, setting) pair.

    Parameters
    ----------
    model_stems
        Stems of the real models (grouped by :data:`PROTEIN_GROUPS`) and of the procedural
        proteins (``proc_NN``, each its own group).

    Returns
    -------
    experiments
        In a fixed order (train first).
    split_of_group
        Protein group → ``"train"`` / ``"heldout"``.
    heldout_settings
        The acquisition settings reserved for the held-out experiments.
    """
    rng = np.random.default_rng([options.seed, 1])
    groups: dict[str, list[str]] = {}
    for stem in model_stems:
        groups.setdefault(PROTEIN_GROUPS.get(stem, stem), []).append(stem)
    real = sorted(g for g in groups if not g.startswith("proc_"))
    proc = sorted(g for g in groups if g.startswith("proc_"))
    held = {real[i] for i in rng.permutation(len(real))[:min(options.heldout_real_groups, len(real))]}
    held |= {proc[i] for i in rng.permutation(len(proc))[:min(options.heldout_procedural, len(proc))]}
    split_of_group = {g: ("heldout" if g in held else "train") for g in sorted(groups)}

    grid = acquisition_grid()
    n_held = max(options.settings_per_structure, round(options.heldout_settings_fraction * len(grid)))
    order = rng.permutation(len(grid))
    heldout_settings = [grid[i] for i in sorted(order[:n_held])]
    train_settings = [grid[i] for i in sorted(order[n_held:])]

    experiments: list[CorpusExperiment] = []
    for split, settings in (("train", train_settings), ("heldout", heldout_settings)):
        for group in sorted(g for g, s in split_of_group.items() if s == split):
            stems = sorted(groups[group])
            picks = rng.choice(len(settings), size=min(options.settings_per_structure, len(settings)),
                               replace=False)
            for k, s in enumerate(sorted(int(i) for i in picks)):
                setting = settings[s]
                model = stems[k % len(stems)]
                bf = float(rng.uniform(*options.ctf_bfactor_range_a2))
                experiments.append(CorpusExperiment(
                    f"sim-{model}-{setting.name}", split, group, model, setting, 0, round(bf, 1)))
    seeds = _child_seeds(options.seed, 2, len(experiments))
    experiments = [CorpusExperiment(e.experiment_id, e.split, e.structure, e.model, e.setting, sd, e.ctf_bfactor_a2)
                   for e, sd in zip(experiments, seeds, strict=True)]
    return experiments, split_of_group, heldout_settings


def _molecular_weight_kda(elements: NDArray[np.str_]) -> float:
    import gemmi

    masses = {e: gemmi.Element(str(e)).weight for e in np.unique(elements)}
    return float(sum(masses[e] * c for e, c in zip(*np.unique(elements, return_counts=True), strict=True))) / 1000.0


def _simulate_experiment(exp: CorpusExperiment, atoms: Any, n_chains: int, pdb_id: str | None,
                         options: SSLCorpusOptions) -> tuple[NDArray[np.float32], pd.DataFrame]:
    """Images (background-normalised) and annotations of one simulated experiment."""
    from cryoset.particles.extract import default_bg_radius_px, normalise_background
    from cryoset.simulate.particles import ParticleSettings, simulate_particles

    st = exp.setting
    snr = options.snr_at_40_e * st.dose_e_per_a2 / 40.0
    settings = ParticleSettings(
        n=options.particles_per_experiment, box_px=options.box_px, pixel_size_a=st.pixel_size_a,
        defocus_range_a=st.defocus_range_a, astigmatism_a=options.astigmatism_a, voltage_kv=st.voltage_kv,
        cs_mm=options.cs_mm, amplitude_contrast=options.amplitude_contrast, ctf_bfactor_a2=exp.ctf_bfactor_a2,
        snr=snr, junk_fraction=0.0, max_shift_a=options.max_shift_a)
    result = simulate_particles(atoms, settings, exp.seed)
    images = normalise_background(result.images, default_bg_radius_px(options.box_px))
    t = result.table
    n = len(t)
    ann = pd.DataFrame({
        "sample_name": exp.model,
        "pdb_id": pdb_id,
        "data_source_type": "simulated particles",
        "number_of_particles": np.full(n, n, dtype=np.int64),
        "voltage_kv": t["voltage_kv"], "cs_mm": t["cs_mm"], "amplitude_contrast": t["amplitude_contrast"],
        "dose_e_per_a2": st.dose_e_per_a2,
        "pixel_size_a": t["pixel_size_a"], "box_pixel_size_a": t["pixel_size_a"],
        "image_size_px": t["image_size_px"],
        "detector": "simulated",
        "defocus_u_a": t["defocus_u_a"], "defocus_v_a": t["defocus_v_a"],
        "defocus_angle_deg": t["defocus_angle_deg"],
        "astigmatism_a": (t["defocus_u_a"] - t["defocus_v_a"]).abs(),
        "phase_shift_deg": t["phase_shift_deg"], "ctf_phase_flipped": np.zeros(n, dtype=np.int8),
        "rot_deg": t["rot_deg"], "tilt_deg": t["tilt_deg"], "psi_deg": t["psi_deg"],
        "shift_x_a": t["shift_x_a"], "shift_y_a": t["shift_y_a"],
        "molecular_weight_kda": _molecular_weight_kda(atoms.elements),
        "subunits": np.full(n, n_chains, dtype=np.int32),
        "max_diameter_a": 2.0 * atoms.radius_a,
        "dna": np.zeros(n, dtype=np.int8), "rna": np.zeros(n, dtype=np.int8),
        "split": "train" if exp.split == "train" else "test",
        # columns outside the schema (kept by the store)
        "structure": exp.structure,
        "source": "simulated",
        "acquisition": exp.setting.name,
        "defocus_a": 0.5 * (t["defocus_u_a"] + t["defocus_v_a"]),
        "defocus_min_a": st.defocus_range_a[0], "defocus_max_a": st.defocus_range_a[1],
        "snr": snr,
        "ctf_bfactor_a2": exp.ctf_bfactor_a2,
    })
    return images, ann


def micrograph_crops(image: NDArray[Any], n: int, box_px: int, rng: np.random.Generator,
                     particle_xy: NDArray[np.float64] | None = None, diameter_px: float = 56.0
                     ) -> tuple[NDArray[np.float32], pd.DataFrame]:
    """``n`` random square windows of a micrograph, normalised as extracted particles.

    Windows are uniform over the positions that keep them inside the image; each is
    contrast-inverted (particles white) and background-normalised
    (:func:`cryoset.particles.extract.normalise_background`). ``particle_xy`` (``(k, 2)``, x, y
    of labelled particles) marks windows whose centre is within ``diameter_px / 2`` of one.

    Returns
    -------
    images : ndarray of float32, shape (n, box_px, box_px)
    table : DataFrame with ``x_px``, ``y_px`` (window centre, ``box_px // 2`` from its corner)
        and ``labelled_particle`` (int8).
    """
    from cryoset.particles.extract import cut_boxes, default_bg_radius_px, normalise_background

    img = np.asarray(image, dtype=np.float32)
    ny, nx = img.shape
    if ny < box_px or nx < box_px:
        raise InputError("micrograph", f"is smaller ({ny}×{nx}) than the box {box_px}")
    half = box_px // 2
    x = rng.integers(half, nx - box_px + half + 1, size=n).astype(np.float64)
    y = rng.integers(half, ny - box_px + half + 1, size=n).astype(np.float64)
    boxes, kept = cut_boxes(-img, np.stack([x, y], axis=1), box_px)
    assert kept.all()
    images = normalise_background(boxes, default_bg_radius_px(box_px))
    near = np.zeros(n, dtype=np.int8)
    if particle_xy is not None and len(particle_xy):
        d2 = (x[:, None] - particle_xy[None, :, 0]) ** 2 + (y[:, None] - particle_xy[None, :, 1]) ** 2
        near = (d2.min(axis=1) <= (diameter_px / 2) ** 2).astype(np.int8)
    return images, pd.DataFrame({"x_px": x, "y_px": y, "labelled_particle": near})


def _micrograph_experiments(shared_data: Path, options: SSLCorpusOptions
                            ) -> list[tuple[str, Path, Path | None]]:
    mdir = shared_data / "micrographs" / "empiar_10028" / "images"
    if not mdir.is_dir():
        raise InputError(shared_data, "has no micrographs/empiar_10028/images folder")
    out = []
    for png in sorted(mdir.glob("*.png")):
        coords = mdir.parent / "coords" / (png.stem + ".csv")
        out.append((f"empiar-10028-{png.stem.split('_')[0]}", png, coords if coords.is_file() else None))
    if not out:
        raise InputError(mdir, "holds no PNG micrographs")
    return out


def _crop_experiment(name: str, png: Path, coords: Path | None, seed: int, options: SSLCorpusOptions
                     ) -> tuple[NDArray[np.float32], pd.DataFrame]:
    from PIL import Image

    try:
        with Image.open(png) as im:
            image = np.asarray(im.convert("L"), dtype=np.float32)
    except OSError as exc:
        raise InputError(png, f"is not a readable image ({exc})") from None
    xy = None
    diameter = 56.0
    if coords is not None:
        table = pd.read_csv(coords)
        missing = {"x_px", "y_px"} - set(table.columns)
        if missing:
            raise InputError(coords, f"lacks column(s) {', '.join(sorted(missing))}")
        xy = table[["x_px", "y_px"]].to_numpy(np.float64)
        if "diameter_px" in table.columns and len(table):
            diameter = float(table["diameter_px"].median())
    rng = np.random.default_rng(seed)
    images, t = micrograph_crops(image, options.crops_per_micrograph, options.box_px, rng, xy, diameter)
    ny, nx = image.shape
    n = len(t)
    ann = pd.DataFrame({
        "empiar_id": "EMPIAR-10028",
        "sample_name": "Plasmodium falciparum 80S ribosome",
        "data_source_type": "micrographs",
        "voltage_kv": MICROGRAPH_VOLTAGE_KV,
        "pixel_size_a": MICROGRAPH_PIXEL_SIZE_A, "box_pixel_size_a": MICROGRAPH_PIXEL_SIZE_A,
        "micrograph_pixel_size_a": MICROGRAPH_PIXEL_SIZE_A,
        "original_pixel_size_a": MICROGRAPH_ORIGINAL_PIXEL_SIZE_A,
        "image_size_px": np.full(n, options.box_px, dtype=np.int32),
        "micrograph": f"micrographs/empiar_10028/images/{png.name}",
        "x_px": t["x_px"], "y_px": t["y_px"],
        "micrograph_nx_px": np.full(n, nx, dtype=np.int32), "micrograph_ny_px": np.full(n, ny, dtype=np.int32),
        "x_frac": t["x_px"] / nx, "y_frac": t["y_px"] / ny,
        "diameter_px": diameter,
        "rna": np.ones(n, dtype=np.int8),
        "split": "train",
        "structure": None,
        "source": "micrograph",
        "acquisition": "empiar-10028",
        "labelled_particle": t["labelled_particle"],
    })
    return images, ann


def _real_atoms(stem: str, path: Path) -> tuple[Any, int, str | None]:
    """(atoms, polymer chains, PDB id) of a real model; InputError naming a bad file."""
    from cryoset.io.structure import read_structure
    from cryoset.simulate.micrograph import atoms_from_file

    atoms = atoms_from_file(str(path))
    table = read_structure(path).atoms
    n_chains = int(table.loc[table["entity_type"] == "polymer", "chain"].nunique())
    pdb = stem[:4].upper() if stem[:1].isdigit() else {"adk_open": "4AKE", "adk_closed": "1AKE"}.get(stem)
    return atoms, max(1, n_chains), pdb


def _check_micrograph(png: Path, coords: Path | None, box_px: int) -> None:
    """Refuse (one line) a micrograph that is not a readable image at least ``box_px`` wide, or
    a coordinates file without x_px / y_px."""
    from PIL import Image

    try:
        with Image.open(png) as im:
            im.load()
            size = im.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(png, f"is not a readable image ({exc})") from None
    if min(size) < box_px:
        raise InputError(png, f"is smaller ({size[1]}×{size[0]}) than the box {box_px}")
    if coords is not None:
        try:
            head = pd.read_csv(coords, nrows=1)
        except (OSError, ValueError) as exc:
            raise InputError(coords, f"is not a CSV table ({exc})") from None
        missing = {"x_px", "y_px"} - set(head.columns)
        if missing:
            raise InputError(coords, f"lacks column(s) {', '.join(sorted(missing))}")


def build_ssl_corpus(
    shared_data: PathLike,
    out_dir: PathLike,
    options: SSLCorpusOptions = SSLCorpusOptions(),
    *,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[str, int], None] | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Build the corpus (see the module docstring); returns its summary (JSON-serialisable).

    ``on_start(n)`` is called with the number of experiments once they are planned,
    ``on_done(experiment_id, particles)`` after each one is stored.
    """
    from cryoset.io.atomic import atomic_directory
    from cryoset.io.provenance import write_provenance
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.protein import build_protein
    from cryoset.store.dataset import ParticleStore
    from cryoset.workflows.simulate import write_structure

    options.check()
    shared = Path(shared_data)
    if not shared.is_dir():
        raise InputError(shared, "no such shared data folder")
    t0 = time.perf_counter()
    real = real_structures(shared)
    # every input is read (and refused with one line) before anything is simulated or written
    atoms_of: dict[str, tuple[Any, int, str | None]] = {stem: _real_atoms(stem, path) for stem, path in real.items()}
    mics = _micrograph_experiments(shared, options) if options.crops_per_micrograph > 0 else []
    for _, png, coords in mics:
        _check_micrograph(png, coords, options.box_px)
    lo, hi = options.procedural_length_range
    proc_rng = np.random.default_rng([options.seed, 3])
    proc_lengths = [int(v) for v in proc_rng.integers(lo, hi + 1, size=options.procedural_proteins)]
    proc_seeds = _child_seeds(options.seed, 4, options.procedural_proteins)
    proc_names = [f"proc_{i:02d}" for i in range(options.procedural_proteins)]
    experiments, split_of_group, heldout_settings = plan_experiments([*real, *proc_names], options)
    if on_start is not None:
        on_start(len(experiments) + len(mics))

    params = {**asdict(options), "split_of_group": split_of_group,
              "heldout_settings": [s.name for s in heldout_settings],
              "procedural_lengths": dict(zip(proc_names, proc_lengths, strict=True))}
    prov = make_provenance("train ssl-corpus", params, [*real.values(), *(p for _, p, _ in mics)], argv=argv)
    counts = {"train": 0, "heldout": 0}
    rows: list[dict[str, Any]] = []
    with atomic_directory(out_dir) as tmp:
        stores = {"train": ParticleStore.create(tmp / "train-store"),
                  "heldout": ParticleStore.create(tmp / "heldout-store")}
        (tmp / "structures").mkdir()
        for name, length, sd in zip(proc_names, proc_lengths, proc_seeds, strict=True):
            protein = build_protein(length, sd)
            write_structure(protein, tmp / "structures" / f"{name}.pdb")
            atoms_of[name] = (atoms_from_protein(protein), 1, None)
        for exp in experiments:
            atoms, n_chains, pdb = atoms_of[exp.model]
            images, ann = _simulate_experiment(exp, atoms, n_chains, pdb, options)
            sub = {**prov, "experiment": {**asdict(exp), "setting": asdict(exp.setting)}}
            n = stores[exp.split].add_experiment(exp.experiment_id, images, ann, provenance=sub)
            counts[exp.split] += n
            st = exp.setting
            rows.append({"experiment_id": exp.experiment_id, "split": exp.split, "structure": exp.structure,
                         "model": exp.model, "acquisition": st.name, "pixel_size_a": st.pixel_size_a,
                         "voltage_kv": st.voltage_kv, "defocus_min_a": st.defocus_range_a[0],
                         "defocus_max_a": st.defocus_range_a[1], "dose_e_per_a2": st.dose_e_per_a2,
                         "ctf_bfactor_a2": exp.ctf_bfactor_a2, "particles": n, "seed": exp.seed})
            if on_done is not None:
                on_done(exp.experiment_id, n)
        for (name, png, coords), sd in zip(mics, _child_seeds(options.seed, 5, len(mics)), strict=True):
            images, ann = _crop_experiment(name, png, coords, sd, options)
            sub = {**prov, "experiment": {"experiment_id": name, "micrograph": str(png), "seed": sd}}
            n = stores["train"].add_experiment(name, images, ann, provenance=sub)
            counts["train"] += n
            rows.append({"experiment_id": name, "split": "train", "structure": None, "model": None,
                         "acquisition": "empiar-10028", "pixel_size_a": MICROGRAPH_PIXEL_SIZE_A,
                         "voltage_kv": MICROGRAPH_VOLTAGE_KV, "defocus_min_a": math.nan,
                         "defocus_max_a": math.nan, "dose_e_per_a2": math.nan, "ctf_bfactor_a2": math.nan,
                         "particles": n, "seed": sd})
            if on_done is not None:
                on_done(name, n)
        table = pd.DataFrame(rows)
        table.to_csv(tmp / "experiments.csv", index=False)
        summary = {
            "out": str(out_dir), "box_px": options.box_px, "seed": options.seed,
            "train_particles": counts["train"], "heldout_particles": counts["heldout"],
            "train_experiments": int((table["split"] == "train").sum()),
            "heldout_experiments": int((table["split"] == "heldout").sum()),
            "micrograph_crops": int(table.loc[table["acquisition"] == "empiar-10028", "particles"].sum()),
            "train_structures": sorted(g for g, s in split_of_group.items() if s == "train"),
            "heldout_structures": sorted(g for g, s in split_of_group.items() if s == "heldout"),
            "heldout_settings": [s.name for s in heldout_settings],
            "build_seconds": round(time.perf_counter() - t0, 1),
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_provenance(tmp, prov)
    return summary
