"""The stages of a dataset build, one experiment at a time.

Each stage reads the outputs of earlier stages from the experiment's work directory and
writes its own into a fresh directory ``out`` (made atomic by the runner). The stages are
deterministic: the same inputs and parameters give the same outputs, bit for bit.

=============  =====================================================================
stage          outputs (in ``work/<experiment>/<stage>/``)
=============  =====================================================================
micrographs    ``micrographs.csv`` (name, path, acquisition); simulated: the MRC files,
               ``truth.csv``, ``coordinates/`` (the true picks, one STAR per micrograph)
               and ``info.json`` (particle diameter)
ctf            what ``cryoset ctf`` writes (:func:`cryoset.workflows.ctf.run_ctf`)
pick           ``coordinates/``: what ``cryoset pick`` writes
               (:func:`cryoset.workflows.pick.run_pick`); template picking from class
               averages adds ``bootstrap/``
extract        what ``cryoset extract`` writes (:func:`cryoset.workflows.pick.run_extract`)
classify       what ``cryoset classify2d --rounds N`` writes (round 1, then ``round2/``…,
               each round on the particles the previous kept), with the CryoVirusDB
               collective CSV ``particles_selected.csv`` of each round's kept particles
               (y flipped with the heights of the experiment's micrographs)
abinitio       only with ``refine:`` in the configuration: what ``cryoset abinitio`` writes
               (:func:`cryoset.workflows.abinitio.run_abinitio`, one class, ``refine.symmetry``)
               from the last classify round's kept particles
refine         only with ``refine:``: what ``cryoset refine`` writes
               (:func:`cryoset.workflows.refine.run_refine`) for the kept particles against
               the ab initio map, and ``poses/``: what ``cryoset poses export`` writes
               (:func:`cryoset.workflows.poses.export_poses`)
store          ``summary.json``, ``annotations.parquet``; the experiment (every extracted
               particle, rejected ones labelled) is appended to the particle store, with
               the experiment-level columns of its archive records and curation
               (:func:`experiment_columns`); after a refine stage, the refined particles'
               poses (:func:`refined_poses`), also as the store's ``poses`` view, and
               ``reconstruction_resolution_a`` (the refinement's FSC 0.143 resolution)
report         ``report.html`` and ``averages.png``
=============  =====================================================================

Every step is the command's own workflow function with the same parameters, so a build gives
the particles and annotations of running the commands by hand
(``tests/pipeline/test_build_equals_commands.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.errors import InputError

#: The stages of a build, in order (the 3D stages :data:`STAGES_3D` join them when configured).
STAGES: tuple[str, ...] = ("micrographs", "ctf", "pick", "extract", "classify", "store", "report")
#: The 3D stages, run after ``classify`` only when the configuration has ``refine:``; without
#: them a build hashes (and resumes) exactly as before they existed.
STAGES_3D: tuple[str, ...] = ("abinitio", "refine")


def build_stages(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The stages this build runs, in order."""
    if not cfg.get("reconstruct3d", False):
        return STAGES
    k = STAGES.index("classify") + 1
    return (*STAGES[:k], *STAGES_3D, *STAGES[k:])


def stage_enabled(stage: str, cfg: Mapping[str, Any]) -> bool:
    """Whether ``stage`` runs in this build."""
    return stage in build_stages(cfg)

StageFn = Callable[[Mapping[str, Any], Mapping[str, Any], Path, Path], dict[str, Any]]


def stage_parameters(stage: str, exp: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that determine a stage's output (hashed into its done-marker)."""
    if stage == "micrographs":
        params: dict[str, Any] = {"kind": exp["kind"], **exp["params"]}
        if exp["kind"] == "local":
            params["files"] = [(p.name, _file_digest(p)) for p in local_micrographs(exp, cfg)]
        return params
    if stage == "pick":  # the files it reads enter by content, not only by path
        params = dict(cfg["pick"])
        contents = {key: _tree_digest(path) for key, path in (
            ("templates", _config_path(cfg, params["templates"])), ("mask_dir", _config_path(cfg, params["mask_dir"])),
            ("import_dir", _import_dir(exp, cfg))) if path is not None}  # fmt: skip
        if contents:
            params["contents"] = contents
        return params
    if stage in ("ctf", "extract", "classify"):
        return dict(cfg[stage])
    if stage == "abinitio":  # one map, the refinement's point group
        return {**cfg["abinitio"], "symmetry": cfg["refine"]["symmetry"]}
    if stage == "refine":
        return dict(cfg["refine"])
    if stage == "store":  # the store holds the curated annotations: duplicates decide `kept`
        params = {**cfg["store"], "duplicates": dict(cfg["duplicates"]), "experiment_id": exp["id"]}
        if exp.get("archive"):  # the experiment-level columns (only when named: old hashes hold)
            params["archive"] = dict(exp["archive"])
        curation = _config_path(cfg, cfg.get("curation"))
        if curation is not None:
            params["curation"] = _tree_digest(curation)
        return params
    return {}


def _file_digest(path: Path) -> str:
    from cryoset.provenance import sha256_file

    return sha256_file(path)


def _tree_digest(path: Path) -> str | list[tuple[str, str]] | None:
    """The SHA-256 of a file, of every file under a directory (by relative path), or None
    when ``path`` does not exist (the stage itself reports that)."""
    if path.is_file():
        return _file_digest(path)
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file())
        return [(f.relative_to(path).as_posix(), _file_digest(f)) for f in files]
    return None


def _import_dir(exp: Mapping[str, Any], cfg: Mapping[str, Any]) -> Path | None:
    """The coordinates ``pick.method: import`` reads as configured: the experiment's
    ``import_dir``, else ``pick.import_dir`` (None: neither; a simulated experiment then
    imports its true coordinates, which its ``micrographs`` stage hash covers)."""
    return _config_path(cfg, exp["params"].get("import_dir") or cfg["pick"]["import_dir"])


def local_micrographs(exp: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[Path]:
    """The files a local experiment's glob matches (sorted), relative to the config."""
    pattern = str(exp["params"]["micrographs"])
    base = Path(cfg["base_dir"])
    root = Path(pattern) if Path(pattern).is_absolute() else base / pattern
    files = sorted(Path(p) for p in _glob(root))
    if not files:
        raise InputError(pattern, f"experiment {exp['id']}: no micrograph matches the pattern")
    return files


def _glob(pattern: Path) -> list[str]:
    import glob

    return [p for p in glob.glob(str(pattern)) if os.path.isfile(p)]


# ------------------------------------------------------------------------------ stages
def run_micrographs(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path
                    ) -> dict[str, Any]:
    """Simulate the micrographs of a simulated experiment, or list a local one's files."""
    p = exp["params"]
    if exp["kind"] == "local":
        files = local_micrographs(exp, cfg)
        table = pd.DataFrame({
            "micrograph": [f.name for f in files], "path": [str(f.resolve()) for f in files],
            "pixel_size_a": p["pixel_size_a"], "voltage_kv": p["voltage_kv"], "cs_mm": p["cs_mm"],
            "amplitude_contrast": p["amplitude_contrast"]})
        table.to_csv(out / "micrographs.csv", index=False)
        (out / "info.json").write_text(json.dumps({"diameter_a": None}))
        return {"micrographs": len(files)}
    from cryoset.io.coords import write_coords
    from cryoset.io.mrc import write_map
    from cryoset.simulate.micrograph import (
        MicrographSettings,
        atoms_from_protein,
        simulate_micrograph,
    )
    from cryoset.simulate.protein import build_protein

    protein = build_protein(int(p["protein_length"]), int(p["seed"]))
    atoms = atoms_from_protein(protein)
    settings = MicrographSettings(
        shape_px=(int(p["size_px"]), int(p["size_px"])), pixel_size_a=p["pixel_size_a"],
        n_particles=int(p["particles_per_micrograph"]),
        defocus_range_a=(p["defocus_min_a"], p["defocus_max_a"]), voltage_kv=p["voltage_kv"],
        cs_mm=p["cs_mm"], amplitude_contrast=p["amplitude_contrast"],
        dose_e_per_a2=p["dose_e_per_a2"], carbon_fraction=0.0, n_contaminations=0)
    rows, truths = [], []
    for k in range(int(p["micrographs"])):
        name = f"micrograph_{k:04d}.mrc"
        sim = simulate_micrograph(atoms, settings, int(p["seed"]) * 1000 + k, name=name)
        write_map(out / name, sim.image[None], p["pixel_size_a"])
        rows.append({"micrograph": name, "path": name, "pixel_size_a": p["pixel_size_a"],
                     "voltage_kv": p["voltage_kv"], "cs_mm": p["cs_mm"],
                     "amplitude_contrast": p["amplitude_contrast"]})
        truths.append(sim.picks)
        (out / "coordinates").mkdir(exist_ok=True)
        write_coords(out / "coordinates" / f"micrograph_{k:04d}.star", sim.picks,
                     micrograph_shape=sim.image.shape)
    pd.DataFrame(rows).to_csv(out / "micrographs.csv", index=False)
    pd.concat(truths, ignore_index=True).to_csv(out / "truth.csv", index=False)
    (out / "info.json").write_text(json.dumps({"diameter_a": atoms.diameter_a,
                                               "sequence": protein.sequence}))
    return {"micrographs": len(rows)}


def _micrographs(work: Path) -> pd.DataFrame:
    table = pd.read_csv(work / "micrographs" / "micrographs.csv")
    table["path"] = [str(p) if Path(str(p)).is_absolute() else str(work / "micrographs" / str(p))
                     for p in table["path"]]
    return table


def _rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in r.items()} for r in table.to_dict("records")]


def _read(row: Mapping[str, Any]) -> Any:
    from cryoset.io.images import read_image

    return read_image(row["path"], pixel_size_a=float(row["pixel_size_a"])).data


def _acquisition(exp: Mapping[str, Any]) -> dict[str, float]:
    p = exp["params"]
    return {"pixel_size_a": float(p["pixel_size_a"]), "voltage_kv": float(p["voltage_kv"]),
            "cs_mm": float(p["cs_mm"]), "amplitude_contrast": float(p["amplitude_contrast"])}


def _mic_paths(work: Path) -> list[Path]:
    return [Path(p) for p in _micrographs(work)["path"]]


def _config_path(cfg: Mapping[str, Any], value: Any) -> Path | None:
    """A path of the configuration (relative to the configuration file), or None."""
    if value is None:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else Path(cfg["base_dir"]) / path


def ctf_params(exp: Mapping[str, Any], cfg: Mapping[str, Any]) -> Any:
    """The :class:`cryoset.workflows.ctf.CtfParams` of an experiment (``ctf:`` + its optics)."""
    from cryoset.workflows.ctf import CtfParams

    optics: dict[str, Any] = _acquisition(exp)
    return CtfParams(**cfg["ctf"], **optics, workers=1)


def run_ctf(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path) -> dict[str, Any]:
    """Fit the CTF of every micrograph (:func:`cryoset.workflows.ctf.run_ctf`)."""
    from cryoset.workflows.ctf import run_ctf as ctf_step

    res = ctf_step(_mic_paths(work), out, ctf_params(exp, cfg), progress=False)
    if res.failures:
        name, reason = res.failures[0]
        raise InputError(name, f"experiment {exp['id']}: CTF estimation failed ({reason})")
    return {"defocus_mean_a": float(np.mean([(r["defocus_u_a"] + r["defocus_v_a"]) / 2 for r in res.records]))}


def particle_diameter_a(work: Path, cfg: Mapping[str, Any]) -> float:
    """Picking diameter: ``pick.diameter_a``, else the simulated protein's diameter."""
    if cfg["pick"]["diameter_a"] is not None:
        return float(cfg["pick"]["diameter_a"])
    info = json.loads((work / "micrographs" / "info.json").read_text())
    return float(info["diameter_a"])


def pick_params(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, **changes: Any) -> Any:
    """The :class:`cryoset.workflows.pick.PickParams` of an experiment.

    ``import_dir`` of ``pick.method: import`` is the experiment's ``import_dir``, else
    ``pick.import_dir``, else (simulated) the simulation's true coordinates; the CTF STAR of
    inspection is the ``ctf`` stage's.
    """
    from cryoset.workflows.pick import PickParams

    c = dict(cfg["pick"])
    import_dir = _import_dir(exp, cfg)
    if c["method"] == "import" and import_dir is None and exp["kind"] == "simulated":
        import_dir = work / "micrographs" / "coordinates"
    c.update(diameter_a=particle_diameter_a(work, cfg), pixel_size_a=float(exp["params"]["pixel_size_a"]),
             templates=_config_path(cfg, c["templates"]), import_dir=import_dir,
             mask_dir=_config_path(cfg, c["mask_dir"]),
             ctf=work / "ctf" / "micrographs_ctf.star" if c["max_ctf_resolution_a"] is not None else None)
    c.update(changes)
    return PickParams(**c)


def extract_params(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, **changes: Any) -> Any:
    """The :class:`cryoset.workflows.pick.ExtractParams` of an experiment.

    The box defaults from the particle diameter; the CTF is the ``ctf`` stage's STAR (local
    defocus from its surfaces); stacks are named relative to ``particles.star`` (the stage
    directory is renamed into place after it is written).
    """
    from cryoset.workflows.pick import ExtractParams

    return ExtractParams(**cfg["extract"], diameter_a=particle_diameter_a(work, cfg),
                         pixel_size_a=float(exp["params"]["pixel_size_a"]),
                         ctf=work / "ctf" / "micrographs_ctf.star", image_paths="star", **changes)


def classify_params(cfg: Mapping[str, Any], work: Path) -> Any:
    """The :class:`cryoset.workflows.classify2d.Classify2DParams` of the build (mask: the diameter)."""
    from cryoset.workflows.classify2d import Classify2DParams

    return Classify2DParams(**cfg["classify"], diameter_a=particle_diameter_a(work, cfg))


def run_pick(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path) -> dict[str, Any]:
    """Pick, inspect and write coordinates (:func:`cryoset.workflows.pick.run_pick`).

    ``pick.method: template`` without ``pick.templates`` picks with the good class averages of
    a first pass (blob picks → extraction → one round of 2D classification, in ``out/bootstrap``).
    """
    from cryoset.workflows.pick import run_pick as pick_step

    params = pick_params(exp, cfg, work)
    if params.method == "template" and params.templates is None:
        params = dataclasses.replace(params, templates=bootstrap_templates(exp, cfg, work, out / "bootstrap"),
                                     template_pixel_size_a=None)
    res = pick_step(_mic_paths(work), out / "coordinates", params, progress=False)
    return {"picks": res.picks, "picks_rejected": res.rejected}


def bootstrap_templates(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path) -> Path:
    """Templates from the first round's good class averages of a blob-picked pass; their path."""
    from cryoset.io.mrc import read_stack, write_stack
    from cryoset.workflows.classify2d import run_classify2d
    from cryoset.workflows.pick import run_extract as extract_step
    from cryoset.workflows.pick import run_pick as pick_step

    mics = _mic_paths(work)
    pick_step(mics, out / "coordinates", pick_params(exp, cfg, work, method="blob", templates=None,
                                                     threshold=None), progress=False)
    extract_step(mics, out / "coordinates", out / "particles", extract_params(exp, cfg, work),
                 progress=False)
    star = out / "particles" / "particles.star"
    n = _count(star)
    if n < 2:
        raise InputError(exp["id"], "too few particles for template picking from class averages")
    params = dataclasses.replace(classify_params(cfg, work), rounds=1)
    run_classify2d(star, out / "classify", dataclasses.replace(params, n_classes=min(params.n_classes, n)),
                   progress=False)
    stats = pd.read_csv(out / "classify" / "classes.csv")
    stack = read_stack(out / "classify" / "class_averages.mrcs")
    good = stats["good"].astype(bool).to_numpy()
    averages = np.asarray(stack.data[:], np.float32)[good if good.any() else slice(None)]
    # templates are protein-bright; class averages of non-inverted dark particles are dark
    sign = 1.0 if cfg["extract"]["invert"] != cfg["pick"]["light_particles"] else -1.0
    path = out / "templates.mrcs"
    write_stack(path, sign * averages, float(stack.pixel_size_a or 1.0))
    return path


def run_extract(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path
                ) -> dict[str, Any]:
    """Cut (phase-flip, down-sample, invert, normalise) the picked particles
    (:func:`cryoset.workflows.pick.run_extract`)."""
    from cryoset.workflows.pick import run_extract as extract_step

    res = extract_step(_mic_paths(work), work / "pick" / "coordinates", out, extract_params(exp, cfg, work),
                       progress=False)
    return {"particles": res.particles}


def run_classify(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path
                 ) -> dict[str, Any]:
    """Rounds of 2D classification with junk rule and recovery
    (:func:`cryoset.workflows.classify2d.run_classify2d`); classes capped at the particle count."""
    from cryoset.workflows.classify2d import round_directories, run_classify2d

    star = work / "extract" / "particles.star"
    params = classify_params(cfg, work)
    summary = run_classify2d(star, out, dataclasses.replace(params, n_classes=min(params.n_classes, _count(star))),
                             progress=False, heights=micrograph_heights(work))
    return {"classify_rounds": len(round_directories(out)),
            "classes": len(pd.read_csv(out / "classes.csv")),
            "cryovirusdb_csv": summary["cryovirusdb_csv"] is not None}


def kept_particles_star(work: Path) -> Path:
    """The last classify round's kept particles (``particles_kept.star``)."""
    return _round_dirs(work)[-1] / "particles_kept.star"


def run_abinitio(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path) -> dict[str, Any]:
    """Ab initio map of the kept particles (:func:`cryoset.workflows.abinitio.run_abinitio`, one class)."""
    from cryoset.workflows.abinitio import run_abinitio as abinitio_step
    from cryoset.workflows.params import AbinitioParams

    star = kept_particles_star(work)
    given = stage_parameters("abinitio", exp, cfg)
    params = AbinitioParams(n_classes=1, n_iterations=given.pop("n_iter"), **given)
    summary = abinitio_step(star, out, params, progress=False)
    return {"abinitio_particles": summary["particles"],
            "abinitio_resolution_a": summary["class_resolution_a"][0]}


def run_refine(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path) -> dict[str, Any]:
    """Gold-standard refinement of the kept particles against the ab initio map
    (:func:`cryoset.workflows.refine.run_refine`), then their poses exported into ``out/poses``
    (:func:`cryoset.workflows.poses.export_poses`; the store stage puts them into the store)."""
    from cryoset.workflows.params import RefineParams
    from cryoset.workflows.poses import export_poses
    from cryoset.workflows.refine import run_refine as refine_step

    summary = refine_step(kept_particles_star(work), work / "abinitio" / "class_001.mrc", out,
                          RefineParams(**cfg["refine"]), progress=False)
    export_poses(out / "run_data.star", out / "poses", micrograph_heights=micrograph_heights(work))
    return {"refined_particles": summary["particles"], "reconstruction_resolution_a": summary["resolution_a"],
            "refine_iterations": summary["iterations"],
            "median_alignment_error_deg": summary["median_angular_error_deg"]}


def refined_poses(work: Path, ann_keys: list[tuple[str, int]]) -> tuple[np.ndarray, pd.DataFrame, float]:
    """The refine stage's poses by annotation row: the rows of ``ann_keys`` (resolved image
    path, image index) that were refined, their :data:`cryoset.workflows.poses.POSE_COLUMNS`
    and the refinement's resolution (Å)."""
    from cryoset.io.particles import read_particles
    from cryoset.workflows.curate import _keys as particle_keys
    from cryoset.workflows.poses import pose_table

    star = work / "refine" / "run_data.star"
    table = read_particles(star).table
    where = {key: i for i, key in enumerate(ann_keys)}
    keys = particle_keys(table, star)
    lost = [k for k in keys if k not in where]
    if lost:
        raise InputError(star, f"particle {lost[0][1] + 1}@{lost[0][0]} is not among the extracted particles")
    rows = np.array([where[k] for k in keys], np.int64)
    resolution = float(json.loads((work / "refine" / "run_summary.json").read_text())["resolution_a"])
    return rows, pose_table(table, star), resolution


def micrograph_heights(work: Path) -> dict[str, int]:
    """Height ``ny`` (pixels) of each of the experiment's micrographs, by file name (their headers):
    the y flip of the CryoVirusDB CSV the ``classify`` stage writes (``particles_selected.csv``)."""
    from cryoset.workflows.classify2d import micrograph_file_height

    heights = {}
    for path in _mic_paths(work):
        ny = micrograph_file_height(str(path), None)
        if ny is not None:
            heights[path.name] = ny
    return heights


def _count(star: Path) -> int:
    from cryoset.io.particles import read_particles

    return len(read_particles(star).table)


def _round_dirs(work: Path) -> list[Path]:
    from cryoset.workflows.classify2d import round_directories

    return round_directories(work / "classify")


_ANNOTATION_RENAMES = {"micrograph_pixel_size_a": "original_pixel_size_a"}
#: Annotation columns of the store, in order (those the steps produced).
_STORE_COLUMNS = (
    "micrograph", "x_px", "y_px", "score", "ncc_score", "diameter_px", "pixel_size_a",
    "micrograph_pixel_size_a", "image_size_px", "voltage_kv", "cs_mm", "amplitude_contrast",
    "defocus_u_a", "defocus_v_a", "defocus_angle_deg", "phase_shift_deg", "ctf_phase_flipped",
    "ctf_fit_resolution_a", "class_number", "psi_deg", "shift_x_a", "shift_y_a", "max_prob", "ess",
    "eca", "class_resolution_a", "class_verdict", "recovered", "classify_rounds", "kept", "rejected_reason")


def duplicate_distance_a(cfg: Mapping[str, Any], work: Path) -> float:
    """``duplicates.min_distance_a``, else the particle diameter."""
    d = cfg["duplicates"]["min_distance_a"]
    return float(d) if d is not None else particle_diameter_a(work, cfg)


def build_annotations(exp: Mapping[str, Any], work: Path, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The store annotation table of an experiment: every extracted particle (rejected ones
    labelled), with picks, local CTF, classification and curation joined
    (:func:`cryoset.workflows.curate.particle_annotations`, :func:`mark_duplicates`)."""
    from cryoset.workflows.curate import mark_duplicates, particle_annotations

    table = particle_annotations(work / "extract", _round_dirs(work), pick_dir=work / "pick" / "coordinates")
    table = mark_duplicates(table, duplicate_distance_a(cfg, work))
    fits = pd.read_csv(work / "ctf" / "ctf.csv")
    res = dict(zip(fits["micrograph"].astype(str), fits["fit_resolution_a"].astype(float), strict=True))
    table["ctf_fit_resolution_a"] = table["micrograph"].astype(str).map(res).astype(float)
    ann = table[[c for c in _STORE_COLUMNS if c in table.columns]].rename(columns=_ANNOTATION_RENAMES)
    ann = ann.reset_index(drop=True)
    ann["astigmatism_a"] = (ann["defocus_u_a"] - ann["defocus_v_a"]).abs()
    ann["source_kind"] = exp["kind"]
    return ann


def _max_diameter_a(xyz: np.ndarray) -> float:
    """Largest distance between two atoms (over the convex hull's vertices), Å."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    pts = xyz
    if len(xyz) > 4:
        try:
            pts = xyz[ConvexHull(xyz).vertices]
        except QhullError:  # flat or degenerate: every pair
            pts = xyz
    return float(pdist(pts).max()) if len(pts) > 1 else 0.0


#: Curation-file columns read besides ``experiment_id`` (each optional): store column → accepted names.
CURATION_COLUMNS: dict[str, tuple[str, ...]] = {
    "split": ("split",),
    "protein_class": ("protein_class", "ProteinClass"),
    "bad_reconstruction": ("bad_reconstruction", "BadReconstruction"),
}
_TRUE = frozenset({"1", "true", "yes", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "n", "f"})


def experiment_columns(exp: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment-level store columns: from the archive records the experiment names and
    the catalogue curation file (``curation``), one value per column.

    EMDB header → ``emdb_id``, ``emd_resolution_a``, ``molecular_weight_kda`` (MDa × 1000),
    ``symmetry``, ``sample_name`` (the sample name, else the entry title) and, when no
    ``pdb_id`` is named, the first fitted PDB id; PDB model (mmCIF) → ``pdb_id``, ``subunits``
    (polymer chains), ``dna`` / ``rna`` (a polymer chain of that type), ``max_diameter_a``
    (largest distance between two polymer atoms). An experiment named by ``empiar_id`` and no
    ``emdb_id``: its EMPIAR entry → ``sample_name`` (the entry title) and ``emdb_id`` (the first
    cross-referenced EMDB entry, whose header is not fetched: the EMDB columns stay null unless
    ``emdb_id`` is named). Records are read through the cached, size-limited
    :class:`~cryoset.archives.download.HttpClient` of ``cryoset fetch`` (cache
    ``archives.cache``, ``archives.offline``; URLs from the ``CRYOSET_EMDB_FILES_URL`` /
    ``CRYOSET_PDB_FILES_URL`` / ``CRYOSET_EMPIAR_API_URL`` environment variables).

    The curation row is the one whose ``experiment_id`` is the experiment's id, its
    ``EMPIAR-…`` or its ``EMD-…`` id; an experiment the file lacks is an InputError. Its
    columns :data:`CURATION_COLUMNS` give ``split``, ``protein_class`` (text) and
    ``bad_reconstruction`` (``1``/``0``, ``true``/``false``, ``yes``/``no``; empty: null).
    """
    ids: Mapping[str, str] = exp.get("archive") or {}
    cols: dict[str, Any] = {}
    if "empiar_id" in ids:
        cols["empiar_id"] = ids["empiar_id"]
    if ids.keys() & {"emdb_id", "pdb_id", "empiar_id"}:
        from cryoset.archives import emdb, empiar, pdb
        from cryoset.archives.download import HttpClient
        from cryoset.io.structure import read_structure

        arch = cfg.get("archives") or {}
        cache = _config_path(cfg, arch.get("cache")) or Path(
            os.environ.get("CRYOSET_CACHE", Path.home() / ".cache" / "cryoset"))
        http = HttpClient(cache_dir=cache, offline=bool(arch.get("offline", False)))
        pdb_id = ids.get("pdb_id")
        if "emdb_id" in ids:
            entry = emdb.EmdbClient(http, os.environ.get("CRYOSET_EMDB_FILES_URL", emdb.DEFAULT_FILES)
                                    ).entry(ids["emdb_id"])
            mw = entry.molecular_weight_mda
            cols.update(emdb_id=f"EMD-{entry.emdb_id}", emd_resolution_a=entry.resolution_a,
                        molecular_weight_kda=None if mw is None else mw * 1000.0,
                        symmetry=entry.symmetry or None, sample_name=entry.sample_name or entry.title or None)
            if pdb_id is None and entry.pdb_ids:
                pdb_id = entry.pdb_ids[0]
        elif "empiar_id" in ids:
            record = empiar.EmpiarClient(http, os.environ.get("CRYOSET_EMPIAR_API_URL", empiar.DEFAULT_API)
                                         ).entry(ids["empiar_id"])
            cols["sample_name"] = record.title or None
            if record.emdb_ids:
                cols["emdb_id"] = f"EMD-{emdb.normalise_emdb_id(record.emdb_ids[0])}"
        if pdb_id is not None:
            client = pdb.PdbClient(http, os.environ.get("CRYOSET_PDB_FILES_URL", pdb.DEFAULT_FILES))
            atoms = read_structure(http.download(client.model_request(pdb_id))).atoms
            poly = atoms[atoms["is_polymer"].to_numpy(dtype=bool)]
            types = {t for v in poly["polymer_type"].astype(str) for t in v.split("/")}
            cols.update(pdb_id=pdb.normalise_pdb_id(pdb_id), subunits=int(poly["chain"].nunique()),
                        dna=int("dna" in types), rna=int("rna" in types),
                        max_diameter_a=_max_diameter_a(poly[["x_a", "y_a", "z_a"]].to_numpy(dtype=np.float64)))
    curation = _config_path(cfg, cfg.get("curation"))
    if curation is not None:
        cols.update(_curation_columns(curation, [exp["id"], ids.get("empiar_id"), ids.get("emdb_id")], exp["id"]))
    return cols


def _curation_columns(curation: Path, names: list[str | None], eid: str) -> dict[str, Any]:
    """The :data:`CURATION_COLUMNS` of the experiment's row of a curation file (CSV or Parquet)."""
    if not curation.is_file():
        raise InputError(curation, "no such curation file (the `cryoset catalog curate` output)")
    try:
        table = (pd.read_csv(curation, dtype=str, keep_default_na=False)
                 if curation.suffix.lower() == ".csv" else pd.read_parquet(curation))
    except (OSError, ValueError) as exc:  # unreadable, not CSV/Parquet, bad text
        raise InputError(curation, f"cannot read the curation table ({' '.join(str(exc).split())})") from None
    found = {col: next(n for n in accepted if n in table.columns)
             for col, accepted in CURATION_COLUMNS.items() if any(n in table.columns for n in accepted)}
    if "experiment_id" not in table.columns or not found:
        raise InputError(curation, "has no experiment_id column with split, protein_class or bad_reconstruction "
                         "(a `cryoset catalog curate` output)")
    rows = table[table["experiment_id"].astype(str).isin([n for n in names if n])]
    if rows.empty:
        raise InputError(curation, f"has no row for experiment {eid!r} "
                         f"(experiment_id {', '.join(n for n in names if n)})")
    row = rows.iloc[0]
    cols: dict[str, Any] = {}
    for col, name in found.items():
        value = row[name]
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        if col != "bad_reconstruction":
            cols[col] = text or None
        elif not text:
            cols[col] = None
        elif text.lower().removesuffix(".0") in _TRUE | _FALSE:
            cols[col] = int(text.lower().removesuffix(".0") in _TRUE)
        else:
            raise InputError(curation, f"experiment {eid!r}: {name} value {text!r} is not 1/0, true/false or yes/no")
    return cols


def run_store(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path,
              *, store_root: Path, build_hash: str) -> dict[str, Any]:
    """Append the experiment to the particle store (once; recovered after a crash)."""
    from cryoset.provenance import make_provenance
    from cryoset.store import ParticleStore

    store = ParticleStore.open(store_root)
    eid = exp["id"]
    exp_dir = store_root / "experiments" / eid
    if exp_dir.exists():
        prov = json.loads((exp_dir / "provenance.json").read_text())
        if prov.get("parameters", {}).get("build_hash") != build_hash:
            raise InputError(store_root, f"experiment {eid!r} is already in the store from other "
                             "inputs (stores are append-only: build into a new directory)")
        n = store.num_particles(eid)
        (out / "summary.json").write_text(json.dumps({"particles": n, "recovered": True}))
        return {"stored": n}
    # (stale hidden writes of this experiment are removed by add_experiment, under the store's lock)
    from cryoset.workflows.particle_images import load_star

    ann = build_annotations(exp, work, cfg)
    for column, value in experiment_columns(exp, cfg).items():
        ann[column] = value
    ann["data_source_type"] = "micrographs"  # a build always starts from micrographs
    ann["number_of_particles"] = int(ann["kept"].sum()) if "kept" in ann.columns else len(ann)
    ann["reconstruction_resolution_a"] = np.nan  # without a refine stage; the EMDB map's is emd_resolution_a
    poses = None
    if stage_enabled("refine", cfg):  # 3D poses replace the 2D psi/shifts/max_prob of the refined particles
        from cryoset.io.particles import read_particles
        from cryoset.workflows.curate import _keys as particle_keys
        from cryoset.workflows.poses import POSE_COLUMNS

        extract_star = work / "extract" / "particles.star"  # its rows are the annotation rows
        rows, poses, resolution = refined_poses(work, particle_keys(read_particles(extract_star).table,
                                                                    extract_star))
        for column in POSE_COLUMNS:
            values = ann[column].to_numpy(np.float64).copy() if column in ann.columns else np.full(len(ann), np.nan)
            values[rows] = poses[column].to_numpy(np.float64)
            ann[column] = values
        ann["random_subset"] = ann["random_subset"].fillna(0).astype(np.int8)
        ann["reconstruction_resolution_a"] = resolution
        poses.insert(0, "particle_index", rows)
    stack = load_star(work / "extract" / "particles.star").images
    if len(ann) == 0:
        (out / "summary.json").write_text(json.dumps({"particles": 0}))
        return {"stored": 0}
    ann.to_parquet(out / "annotations.parquet", index=False)
    record = make_provenance("build", {"experiment": dict(exp), "build_hash": build_hash},
                             inputs=[work / "extract" / "particles.star"])
    block = 1024
    n = store.add_experiment(eid, (np.asarray(stack[i:i + block]) for i in range(0, len(stack), block)),
                             ann, provenance=record)
    if poses is not None:
        store.write_poses(eid, poses["particle_index"].to_numpy(np.int64), poses, provenance=record)
    (out / "summary.json").write_text(json.dumps({"particles": n, "kept": int(ann["kept"].sum())}))
    return {"stored": n, "kept": int(ann["kept"].sum())}


def run_report(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path,
               *, summary: Mapping[str, Any],
               stage_seconds: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Per-experiment HTML report: counts, time per stage, CTF fits, class sizes and averages."""
    from PIL import Image

    from cryoset.provenance import make_provenance
    from cryoset.report.html import Report

    rep = Report(f"cryoset build — {exp['id']}")
    rep.heading("Summary")
    rep.mapping({"experiment": exp["id"], "source": exp["kind"],
                 **{k: v for k, v in summary.items() if k != "stage_seconds"}})
    if stage_seconds:
        rep.heading("Time per stage")
        names = list(stage_seconds)
        wall = [float(stage_seconds[n].get("wall_s", float("nan"))) for n in names]
        cpu = [float(stage_seconds[n].get("cpu_s", float("nan"))) for n in names]
        when = ["this run" if stage_seconds[n].get("ran") else "an earlier run (resumed)" for n in names]
        rep.table(pd.DataFrame({"stage": [*names, "total"], "wall s": [*wall, sum(wall)],
                                "CPU s": [*cpu, sum(cpu)], "when": [*when, ""]}))
        rep.paragraph("Seconds of the worker process that ran the experiment (CPU: all its threads); "
                      "the report stage itself is not included.")
    rep.heading("CTF per micrograph")
    rep.table(pd.read_csv(work / "ctf" / "ctf.csv"))
    ann = pd.read_parquet(work / "store" / "annotations.parquet") if (
        work / "store" / "annotations.parquet").is_file() else None
    if ann is not None and len(ann):
        rep.heading("Curation")
        reasons = ann["rejected_reason"].replace("", "kept").value_counts()
        rep.table(reasons.rename_axis("outcome").reset_index(name="particles"))
    from cryoset.io.mrc import read_stack

    for d in _round_dirs(work):
        stats = pd.read_csv(d / "classes.csv")
        label = "round 1" if d.name == "classify" else d.name.replace("round", "round ")
        rep.heading(f"2D classes, {label}")
        rep.table(stats)
        avgs = np.asarray(read_stack(d / "class_averages.mrcs").data[:], np.float32)
        tiles = []
        for a in avgs:
            lo, hi = np.percentile(a, [1, 99])
            tiles.append(np.clip((a - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8))
        montage = np.concatenate(tiles, axis=1)
        name = "averages.png" if d.name == "classify" else f"averages_{d.name}.png"
        Image.fromarray(montage).resize((montage.shape[1] * 4, montage.shape[0] * 4),
                                        Image.Resampling.NEAREST).save(out / name)
        rep.figure(out / name, f"class averages of {label}, class 1 on the left", relative_to=out)
    rep.provenance(make_provenance("build report", {"experiment": dict(exp)}))
    rep.write(out / "report.html")
    return {}
