"""The stages of a dataset build, one experiment at a time.

Each stage reads the outputs of earlier stages from the experiment's work directory and
writes its own into a fresh directory ``out`` (made atomic by the runner). The stages are
deterministic: the same inputs and parameters give the same outputs, bit for bit.

=============  =====================================================================
stage          outputs (in ``work/<experiment>/<stage>/``)
=============  =====================================================================
micrographs    ``micrographs.csv`` (name, path, acquisition); simulated: the MRC files,
               ``truth.csv`` and ``info.json`` (particle diameter)
ctf            ``ctf.csv``: one CTF fit per micrograph (:func:`cryoset.ctf.estimate_ctf`)
pick           ``picks.csv``: canonical picks (:func:`cryoset.picking.blob.pick_blobs`)
extract        ``particles.npy`` (n, b, b) and ``particles.parquet`` (one row per image)
classify       ``classes.parquet`` (class, pose, posterior statistics), ``averages.npy``
store          ``summary.json``; the experiment is appended to the particle store
report         ``report.html`` and ``averages.png``
=============  =====================================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.errors import InputError

STAGES: tuple[str, ...] = ("micrographs", "ctf", "pick", "extract", "classify", "store", "report")

StageFn = Callable[[Mapping[str, Any], Mapping[str, Any], Path, Path], dict[str, Any]]


def stage_parameters(stage: str, exp: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that determine a stage's output (hashed into its done-marker)."""
    if stage == "micrographs":
        params: dict[str, Any] = {"kind": exp["kind"], **exp["params"]}
        if exp["kind"] == "local":
            params["files"] = [(p.name, _file_digest(p)) for p in local_micrographs(exp, cfg)]
        return params
    if stage in ("ctf", "pick", "extract", "classify"):
        return dict(cfg[stage])
    if stage == "store":
        return {**cfg["store"], "experiment_id": exp["id"]}
    return {}


def _file_digest(path: Path) -> str:
    from cryoset.provenance import sha256_file

    return sha256_file(path)


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


def run_ctf(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path) -> dict[str, Any]:
    """Fit the CTF of every micrograph."""
    from cryoset.ctf.estimate import EstimateOptions, estimate_ctf

    c = cfg["ctf"]
    opts = EstimateOptions(tile_px=int(c["tile_px"]), min_resolution_a=c["min_resolution_a"],
                           max_resolution_a=c["max_resolution_a"],
                           defocus_min_a=c["defocus_min_a"], defocus_max_a=c["defocus_max_a"])
    rows = []
    for row in _rows(_micrographs(work)):
        est = estimate_ctf(_read(row), float(row["pixel_size_a"]), voltage_kv=float(row["voltage_kv"]),
                           cs_mm=float(row["cs_mm"]), amplitude_contrast=float(row["amplitude_contrast"]),
                           options=opts)
        rows.append({"micrograph": row["micrograph"], "defocus_u_a": est.params.defocus_u_a,
                     "defocus_v_a": est.params.defocus_v_a,
                     "defocus_angle_deg": est.params.defocus_angle_deg,
                     "ctf_fit_resolution_a": est.fit_resolution_a,
                     "ctf_figure_of_merit": est.figure_of_merit})
    pd.DataFrame(rows).to_csv(out / "ctf.csv", index=False)
    return {"defocus_mean_a": float(np.mean([(r["defocus_u_a"] + r["defocus_v_a"]) / 2 for r in rows]))}


def particle_diameter_a(work: Path, cfg: Mapping[str, Any]) -> float:
    """Picking diameter: ``pick.diameter_a``, else the simulated protein's diameter."""
    if cfg["pick"]["diameter_a"] is not None:
        return float(cfg["pick"]["diameter_a"])
    info = json.loads((work / "micrographs" / "info.json").read_text())
    return float(info["diameter_a"])


def run_pick(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path) -> dict[str, Any]:
    """Pick particles with the multi-scale blob picker."""
    from cryoset.picking.blob import BlobSettings, pick_blobs

    settings = BlobSettings(diameter_a=particle_diameter_a(work, cfg),
                            threshold=cfg["pick"]["threshold"],
                            min_distance_fraction=cfg["pick"]["min_distance_fraction"])
    frames = [pick_blobs(_read(row), float(row["pixel_size_a"]), settings, micrograph=row["micrograph"])
              for row in _rows(_micrographs(work))]
    picks = pd.concat(frames, ignore_index=True)
    picks.to_csv(out / "picks.csv", index=False)
    return {"picks": len(picks)}


def run_extract(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path
                ) -> dict[str, Any]:
    """Cut, phase-flip, down-sample, invert and normalise the picked particles."""
    from cryoset.ctf.model import CTFParams
    from cryoset.particles.extract import box_size_for_diameter, extract_particles

    e = cfg["extract"]
    mics = _micrographs(work)
    ctf = pd.read_csv(work / "ctf" / "ctf.csv").set_index("micrograph")
    picks = pd.read_csv(work / "pick" / "picks.csv")
    diameter_a = particle_diameter_a(work, cfg)
    stacks, tables = [], []
    for row in _rows(mics):
        px = float(row["pixel_size_a"])
        box = int(e["box_px"]) if e["box_px"] is not None else box_size_for_diameter(diameter_a / px)
        fit = ctf.loc[row["micrograph"]]
        params = CTFParams(float(fit["defocus_u_a"]), float(fit["defocus_v_a"]),
                           float(fit["defocus_angle_deg"]), float(row["voltage_kv"]), float(row["cs_mm"]),
                           float(row["amplitude_contrast"]))
        mine = picks[picks["micrograph"] == row["micrograph"]].reset_index(drop=True)
        res = extract_particles(_read(row), mine[["micrograph", "x_px", "y_px", "score", "diameter_px"]],
                                box, px, pixel_size_out_a=e["pixel_size_out_a"], invert=bool(e["invert"]),
                                ctf=params, phase_flip_ctf=bool(e["phase_flip"]))
        t = res.table
        for col in ("defocus_u_a", "defocus_v_a", "defocus_angle_deg", "ctf_fit_resolution_a"):
            t[col] = float(fit[col])
        t["voltage_kv"] = float(row["voltage_kv"])
        t["cs_mm"] = float(row["cs_mm"])
        t["amplitude_contrast"] = float(row["amplitude_contrast"])
        stacks.append(res.stack)
        tables.append(t)
    sizes = {s.shape[1:] for s in stacks if len(s)}
    if len(sizes) > 1:
        raise InputError(exp["id"], f"micrographs give different particle box sizes {sorted(sizes)}")
    stack = np.concatenate(stacks) if stacks else np.zeros((0, 1, 1), np.float32)
    table = pd.concat(tables, ignore_index=True)
    table["image_index"] = np.arange(len(table), dtype=np.int64)
    np.save(out / "particles.npy", stack.astype(np.float32))
    table.to_parquet(out / "particles.parquet", index=False)
    return {"particles": len(table)}


def run_classify(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path
                 ) -> dict[str, Any]:
    """2D classification of the extracted particles."""
    from cryoset.classify.em2d import ClassifySettings, classify_2d

    c = cfg["classify"]
    stack = np.load(work / "extract" / "particles.npy")
    table = pd.read_parquet(work / "extract" / "particles.parquet")
    n = len(table)
    if n == 0:
        pd.DataFrame(columns=["class_number", "psi_deg", "shift_x_a", "shift_y_a", "max_prob",
                              "ess", "eca"]).to_parquet(out / "classes.parquet", index=False)
        np.save(out / "averages.npy", np.zeros((0, 1, 1), np.float32))
        return {"classes": 0}
    px_out = float(table["pixel_size_a"].iloc[0])
    settings = ClassifySettings(
        n_classes=min(int(c["n_classes"]), n), n_iter=int(c["n_iter"]),
        psi_step_deg=float(c["psi_step_deg"]), offset_range_px=int(c["offset_range_px"]),
        particle_diameter_px=min(particle_diameter_a(work, cfg) / px_out, 0.95 * stack.shape[1]),
        seed=int(c["seed"]))
    res = classify_2d(stack, settings)
    classes = pd.DataFrame({
        "class_number": (res.class_index + 1).astype(np.int32), "psi_deg": res.psi_deg,
        "shift_x_a": res.shift_px[:, 0] * px_out, "shift_y_a": res.shift_px[:, 1] * px_out,
        "max_prob": res.max_prob, "ess": res.ess, "eca": res.eca})
    classes.to_parquet(out / "classes.parquet", index=False)
    np.save(out / "averages.npy", res.averages.astype(np.float32))
    return {"classes": int(settings.n_classes)}


_ANNOTATION_RENAMES = {"micrograph_pixel_size_a": "original_pixel_size_a"}


def build_annotations(exp: Mapping[str, Any], work: Path) -> pd.DataFrame:
    """The store annotation table of an experiment: picks, CTF and classification joined."""
    table = pd.read_parquet(work / "extract" / "particles.parquet")
    classes = pd.read_parquet(work / "classify" / "classes.parquet")
    keep = ["micrograph", "x_px", "y_px", "score", "diameter_px", "pixel_size_a",
            "micrograph_pixel_size_a", "voltage_kv", "cs_mm", "amplitude_contrast", "defocus_u_a",
            "defocus_v_a", "defocus_angle_deg", "ctf_fit_resolution_a"]
    keep += [c for c in ("ctf_phase_flipped",) if c in table.columns]  # |CTF| for flipped images
    ann = table[keep].rename(columns=_ANNOTATION_RENAMES).reset_index(drop=True)
    ann["astigmatism_a"] = (ann["defocus_u_a"] - ann["defocus_v_a"]).abs()
    ann = pd.concat([ann, classes.reset_index(drop=True)], axis=1)
    ann["source_kind"] = exp["kind"]
    return ann


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
    stack = np.load(work / "extract" / "particles.npy", mmap_mode="r")
    ann = build_annotations(exp, work)
    if len(ann) == 0:
        (out / "summary.json").write_text(json.dumps({"particles": 0}))
        return {"stored": 0}
    record = make_provenance("build", {"experiment": dict(exp), "build_hash": build_hash},
                             inputs=[work / "extract" / "particles.npy"])
    block = 1024
    n = store.add_experiment(eid, (np.asarray(stack[i:i + block]) for i in range(0, len(stack), block)),
                             ann, provenance=record)
    (out / "summary.json").write_text(json.dumps({"particles": n}))
    return {"stored": n}


def run_report(exp: Mapping[str, Any], cfg: Mapping[str, Any], work: Path, out: Path,
               *, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Per-experiment HTML report: counts, CTF fits, class sizes and averages."""
    from PIL import Image

    from cryoset.provenance import make_provenance
    from cryoset.report.html import Report

    rep = Report(f"cryoset build — {exp['id']}")
    rep.heading("Summary")
    rep.mapping({"experiment": exp["id"], "source": exp["kind"], **dict(summary)})
    rep.heading("CTF per micrograph")
    rep.table(pd.read_csv(work / "ctf" / "ctf.csv"))
    classes = pd.read_parquet(work / "classify" / "classes.parquet")
    if len(classes):
        rep.heading("2D classes")
        counts = classes.groupby("class_number").agg(particles=("max_prob", "size"),
                                                     mean_max_prob=("max_prob", "mean"))
        rep.table(counts.reset_index())
        avgs = np.load(work / "classify" / "averages.npy")
        tiles = []
        for a in avgs:
            lo, hi = np.percentile(a, [1, 99])
            tiles.append(np.clip((a - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8))
        montage = np.concatenate(tiles, axis=1)
        Image.fromarray(montage).resize((montage.shape[1] * 4, montage.shape[0] * 4),
                                        Image.Resampling.NEAREST).save(out / "averages.png")
        rep.figure(out / "averages.png", "class averages, class 1 on the left", relative_to=out)
    rep.provenance(make_provenance("build report", {"experiment": dict(exp)}))
    rep.write(out / "report.html")
    return {}
