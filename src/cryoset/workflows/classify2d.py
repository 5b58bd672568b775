"""The 2D classification step: particles in, classes, junk verdicts and kept particles out.

:func:`run_classify2d` is ``cryoset classify2d`` and each round of the build's ``classify``
stage. It classifies the images (EM over class, in-plane angle and shift:
:func:`cryoset.classify.em2d.classify_2d`), scores the classes (population, half-set FRC
resolution, mean power: :func:`cryoset.classify.select.class_statistics`), flags junk classes
(:func:`cryoset.classify.select.class_verdicts`), recovers good particles from them
(:func:`cryoset.classify.select.recover_particles`) and writes in ``out``:
``particles.star`` (every particle with class, pose, ESS, ECA, ``rlnCryosetKept``,
``rlnCryosetRecovered``), ``particles_kept.star``, ``class_averages.mrcs``, ``classes.csv``
(class statistics and verdicts), ``class_averages.png``, ``summary.json``,
``provenance.json`` and ``particles_selected.csv``: the kept particles as CryoVirusDB's
collective particles CSV (:data:`cryoset.io.cryovirusdb.COLLECTIVE_CSV_COLUMNS`, its y axis
flipped per micrograph with the heights of :func:`micrograph_heights`); with ``rounds`` > 1
the later rounds (each on the particles the previous kept) go to ``out/round2``… Every
parameter, with its one default, is a field of :class:`Classify2DParams`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.errors import InputError
from cryoset.io import relion_labels as L
from cryoset.workflows.params import Classify2DParams

__all__ = ["SELECTED_CSV", "Classify2DParams", "micrograph_file_height", "micrograph_heights",
           "round_directories", "run_classify2d", "summary_kept", "write_selected_csv"]

#: The kept particles as CryoVirusDB's collective particles CSV, in each round's directory.
SELECTED_CSV = "particles_selected.csv"


def _gallery(path: Path, averages: np.ndarray, stats: Any, good: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryoset.report.figures import save_figure

    k = averages.shape[0]
    cols = min(k, 8)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for j in range(k):
        ax = axes.ravel()[j]
        ax.imshow(averages[j], cmap="gray")
        row = stats.iloc[j]
        res = "inf" if not np.isfinite(row.resolution_a) else f"{row.resolution_a:.1f}Å"
        ax.set_title(f"{j + 1}: n={row.population} {res}", fontsize=7,
                     color="black" if good[j] else "red")
    fig.tight_layout()
    save_figure(fig, path)


def run_classify2d(particles: Path | None, out: Path, p: Classify2DParams, *, store: Path | None = None,
                   query: str | None = None, progress: bool = True,
                   heights: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Classify the particles of a STAR file (or a store selection) and write the step's products.

    Round 1 writes into ``out``; with ``rounds`` > 1, round ``k`` classifies the particles round
    ``k − 1`` kept (its ``particles_kept.star``) into ``out/round<k>`` (the number of classes
    capped at the round's particles); the rounds stop early when fewer than two particles are
    kept. :func:`round_directories` lists them.

    ``heights`` (micrograph name → height ``ny``, pixels) are the micrograph heights the
    CryoVirusDB CSV's y flip needs, for micrographs :func:`micrograph_heights` cannot find
    otherwise (the build passes those of its micrographs).

    Returns
    -------
    dict
        The summary of round 1 (written to ``summary.json``), with ``rounds``: the summaries of
        the later rounds.

    Raises
    ------
    InputError
        Bad parameters or inputs.
    """
    from cryoset.io.particles import read_particles

    if p.rounds < 1:
        raise InputError("--rounds", f"must be at least 1, got {p.rounds}")
    summary, found = _one_round(particles, out, p, store=store, query=query, progress=progress, heights=heights)
    later: list[dict[str, Any]] = []
    previous = out
    for k in range(2, p.rounds + 1):
        kept = previous / "particles_kept.star"
        n = len(read_particles(kept).table) if kept.is_file() and summary_kept(previous) > 0 else 0
        if n < 2:
            break
        d = out / f"round{k}"
        # the heights round 1 found (a kept STAR's micrograph names are those of the input, as written)
        later.append(_one_round(kept, d, replace(p, n_classes=min(p.n_classes, n)), progress=progress,
                                heights=found)[0])
        previous = d
    summary["rounds"] = later
    return summary


def summary_kept(directory: Path) -> int:
    """The number of particles a round kept (its ``summary.json``)."""
    return int(json.loads((directory / "summary.json").read_text())["kept"])


def round_directories(out: Path) -> list[Path]:
    """The directories of the rounds :func:`run_classify2d` wrote in ``out``, in order."""
    later = sorted((d for d in out.glob("round*") if d.is_dir() and d.name[5:].isdigit()),
                   key=lambda d: int(d.name[5:]))
    return [out, *later]


def micrograph_heights(table: pd.DataFrame, star: Path | None,
                       given: Mapping[str, int] | None = None) -> tuple[dict[str, int], list[str]]:
    """The height ``ny`` (pixels) of each micrograph a particle table names, and those not found.

    Looked up, in order: ``given`` (by micrograph name), the table's ``micrograph_ny_px`` (a
    store, e.g. an imported cryoPANDA file), then the header of the micrograph file that
    ``rlnMicrographName`` names, resolved as RELION does (the current directory, then the STAR
    file's folder). Keys are :func:`cryoset.workflows.pick.micrograph_key` (no directory or
    image suffix).

    Returns
    -------
    heights, missing
        Height by micrograph key; the keys of the table's micrographs without one (sorted).
    """
    from cryoset.workflows.pick import micrograph_key

    heights = {micrograph_key(str(k)): int(v) for k, v in (given or {}).items()}
    if "micrograph" not in table.columns:
        return heights, []
    names = table["micrograph"].astype(str)
    if "micrograph_ny_px" in table.columns:
        for m, ny in zip(names, pd.to_numeric(table["micrograph_ny_px"], errors="coerce"), strict=True):
            if np.isfinite(ny):
                heights.setdefault(micrograph_key(m), int(ny))
    raw = table["rlnMicrographName"].astype(str) if "rlnMicrographName" in table.columns else names
    for m, r in dict.fromkeys(zip(names, raw, strict=True)):
        key = micrograph_key(m)
        if key not in heights:
            ny = micrograph_file_height(r, star)
            if ny is not None:
                heights[key] = ny
    missing = sorted({micrograph_key(m) for m in names} - set(heights))
    return heights, missing


def micrograph_file_height(name: str, star: Path | None) -> int | None:
    """The height of the micrograph file ``name`` points to (MRC header, else the image), or None."""
    from cryoset.io.images import read_image
    from cryoset.io.mrc import read_header
    from cryoset.io.particles import image_path_candidates

    for candidate in image_path_candidates(name, star):
        if not candidate.is_file():
            continue
        try:
            if candidate.suffix.lower() in (".mrc", ".mrcs", ".map", ".st"):
                return int(read_header(candidate, permissive=True)["shape_zyx"][1])
            return int(read_image(candidate, permissive=True).data.shape[-2])
        except (InputError, OSError, ValueError):
            return None
    return None


def write_selected_csv(out: Path, heights: dict[str, int], missing: list[str], has_micrographs: bool,
                       prov: Mapping[str, Any]) -> dict[str, Any]:
    """``out/particles_selected.csv`` from ``out/particles_kept.star`` (its values as written), or why not."""
    from cryoset.io.cryovirusdb import write_cryovirusdb
    from cryoset.io.particles import read_particles
    from cryoset.provenance import write_provenance
    from cryoset.workflows.pick import micrograph_key

    if not has_micrographs:
        return {"cryovirusdb_csv": None,
                "cryovirusdb_csv_note": "not written: the particles name no micrograph (rlnMicrographName)"}
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return {"cryovirusdb_csv": None,
                "cryovirusdb_csv_note": f"not written: no height for micrograph(s) {', '.join(missing[:3])}{more} "
                                        "(their files were not found; the CSV's y axis is flipped per micrograph)"}
    kept = read_particles(out / "particles_kept.star").table
    path = write_cryovirusdb(out / SELECTED_CSV, kept, variant="collective",
                             micrograph_heights=lambda m: float(heights.get(micrograph_key(m), np.nan)))
    write_provenance(path, dict(prov))
    return {"cryovirusdb_csv": str(path), "cryovirusdb_csv_note": None}


def _one_round(particles: Path | None, out: Path, p: Classify2DParams, *, store: Path | None = None,
               query: str | None = None, progress: bool = True,
               heights: Mapping[str, int] | None = None) -> tuple[dict[str, Any], dict[str, int]]:
    """One round of classification, junk rule and recovery (see :func:`run_classify2d`); its
    summary and the micrograph heights it found."""
    from rich.console import Console
    from rich.progress import Progress

    from cryoset.classify.data import ctf_images, require_ctf
    from cryoset.classify.em2d import ClassifySettings, classify_2d
    from cryoset.classify.select import (
        class_statistics,
        class_verdicts,
        recover_particles,
        recoverable_classes,
    )
    from cryoset.io.atomic import atomic_path, write_text_atomic
    from cryoset.io.cryovirusdb import weighted_class_resolution
    from cryoset.io.jsontext import json_safe
    from cryoset.io.mrc import write_stack
    from cryoset.io.particles import write_particles
    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.workflows.particle_images import load_star, load_store

    if (particles is None) == (store is None):
        raise InputError("particles", "give a STAR file or --store DIR (not both)")
    if query is not None and store is None:
        raise InputError("--query", "needs --store")
    if p.n_classes < 1 or p.n_iter < 1 or not 0 < p.psi_step_deg <= 180 or p.offset_range_px < 0:
        raise InputError("options", "need --n-classes >= 1, --n-iter >= 1, 0 < --psi-step-deg <= 180, "
                                    "--offset-range-px >= 0")
    if p.max_offset_px is not None and not p.max_offset_px >= 0:
        raise InputError("--max-offset-px", "must be >= 0")
    if not (p.resolution_factor > 0 and 0 <= p.power_fraction < p.max_power_ratio):
        raise InputError("options", "need --resolution-factor > 0 and 0 <= --power-fraction < --max-power-ratio")
    source: Path = particles if particles is not None else Path(str(store))
    if particles is not None:
        data = load_star(particles, box=p.box_px, permissive=p.permissive)
    else:
        data = load_store(source, query, box=p.box_px)
    b = data.images.shape[-1]
    ctf = None
    if p.ctf:
        require_ctf(data.table, source)
        ctf = ctf_images(data.table, b, data.pixel_size_a)
    diameter_px = None if p.diameter_a is None else p.diameter_a / data.pixel_size_a
    settings = ClassifySettings(n_classes=p.n_classes, n_iter=p.n_iter, psi_step_deg=p.psi_step_deg,
                                offset_range_px=p.offset_range_px,
                                offset_sigma_px=max(p.offset_range_px, 1) / 1.5,
                                offset_recentre=p.offset_recentre, max_offset_px=p.max_offset_px,
                                particle_diameter_px=diameter_px, tau2_fudge=p.tau2_fudge,
                                hard=p.hard, seed=p.seed)
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("classify2d", total=p.n_iter)
        result = classify_2d(data.images, settings, ctf=ctf,
                             progress=lambda i: bar.update(task, completed=i))
    stats = class_statistics(data.images, result, settings, data.pixel_size_a, ctf=ctf, seed=p.seed)
    verdict = class_verdicts(stats, min_population=p.min_population, resolution_factor=p.resolution_factor,
                             power_fraction=p.power_fraction, max_power_ratio=p.max_power_ratio)
    good = verdict == "good"
    stats["good"] = good
    stats["verdict"] = verdict
    kept = good[result.class_index]
    recovered = np.zeros_like(kept)
    if p.recover and good.any():
        rec = recover_particles(data.images, result, good, settings, ctf=ctf, percentile=p.recover_percentile,
                                recover_from=recoverable_classes(verdict))
        kept, recovered = rec.kept, rec.recovered

    table = data.table.copy()
    if particles is not None:  # stacks stay where they are, named as RELION resolves them
        from cryoset.io.particles import relion_path

        table["image_path"] = [relion_path(q, out / "particles.star")
                               for q in table["image_path"].astype(str)]
    else:
        table["image_path"] = "particles.mrcs"
        table["image_index"] = np.arange(len(table))
    table["class_number"] = result.class_index + 1
    table["psi_deg"] = result.psi_deg
    table["shift_x_a"] = result.shift_px[:, 0] * data.pixel_size_a
    table["shift_y_a"] = result.shift_px[:, 1] * data.pixel_size_a
    table["max_prob"] = result.max_prob
    table["ess"] = result.ess
    table["eca"] = result.eca
    table[L.CRYOSET_POSE_ESS] = result.ess
    table[L.CRYOSET_CLASS_ECA] = result.eca
    table[L.CRYOSET_KEPT] = kept.astype(np.int64)
    table[L.CRYOSET_RECOVERED] = recovered.astype(np.int64)
    record = {"classes": p.n_classes, "iter": p.n_iter, "psi_step_deg": p.psi_step_deg,
              "offset_range_px": p.offset_range_px, "offset_recentre": p.offset_recentre,
              "max_offset_px": p.max_offset_px, "box": b, "pixel_size_a": data.pixel_size_a,
              "tau2_fudge": p.tau2_fudge, "hard": p.hard, "ctf": p.ctf, "recover": p.recover,
              "min_population": p.min_population, "resolution_factor": p.resolution_factor,
              "power_fraction": p.power_fraction, "max_power_ratio": p.max_power_ratio,
              "recover_percentile": p.recover_percentile, "seed": p.seed,
              "query": query}
    prov = make_provenance("classify2d", record, [source])
    out.mkdir(parents=True, exist_ok=True)
    if store is not None:
        write_stack(out / "particles.mrcs", data.images, data.pixel_size_a)
        if b != data.original_box:
            table["pixel_size_a"] = data.pixel_size_a
    write_particles(out / "particles.star", table, provenance=prov)
    write_particles(out / "particles_kept.star", table[kept].reset_index(drop=True), provenance=prov)
    found, missing = micrograph_heights(data.table, particles, heights)
    selected = write_selected_csv(out, found, missing, "micrograph" in data.table.columns, prov)
    write_stack(out / "class_averages.mrcs", result.averages, data.pixel_size_a)
    with atomic_path(out / "classes.csv") as tmp:
        stats.to_csv(tmp, index=False)
    _gallery(out / "class_averages.png", result.averages, stats, good)
    summary = {
        "particles": len(table), "classes": p.n_classes, "good_classes": [int(j + 1) for j in np.flatnonzero(good)],
        "kept": int(kept.sum()), "recovered": int(recovered.sum()), "box": b,
        "pixel_size_a": data.pixel_size_a, "sigma2": result.sigma2,
        # CryoVirusDB's Table 3 statistic: population-weighted mean class resolution (all / 10 largest)
        "weighted_class_resolution_a": {"all": weighted_class_resolution(stats),
                                        "top10": weighted_class_resolution(stats, n=10)},
        "class_table": json.loads(stats.to_json(orient="records")),
        **selected,
    }
    write_text_atomic(out / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    write_provenance(out, prov)
    return summary, found
