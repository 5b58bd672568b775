"""``make demo``: the main job end to end on built-in (simulated) inputs, with a report.

Every step runs through the real command line (``cryoset.cli.main.main``), so the demo
exercises exactly what a user types. Steps:

1. ``simulate micrographs`` — a procedural protein imaged in a few micrographs with exact truth.
2. ``ctf`` — per-micrograph CTF estimation, compared with the simulated defocus.
3. ``pick`` (blob picker from the particle diameter, picks on carbon or contamination rejected
   with the simulator's masks and kept as false positives) and ``evaluate-picks`` against the truth.
4. ``extract`` — particle stacks + RELION 3.1 STAR + CryoVirusDB CSV.
5. ``classify2d`` — 2D classes with per-particle class statistics.
6. ``store create/add`` + ``query`` — the particle dataset store.
7. ``convert`` / ``info`` — truth picks through EMAN .box, cryoSPARC .cs and back.
8. ``simulate map`` → ``map prepare`` → ``model-build`` — the map track: the voxel network
   shipped in the package predicts Cα/amino-acid probabilities on a map of a protein it never
   saw, the HMM traces the sequence through the Cα candidates, and the result is compared with
   the true model (the report shows the predicted Cα over the truth).
9. ``build`` — a dataset of two simulated "experiments" built end to end (CTF → pick →
   extract → classify → store, resumable) and queried.
10. ``featuremap`` — the shipped self-supervised ViT's feature map of one micrograph (PCA of the
    window features as colours over the micrograph, cryoPANDA Fig. 8). Skipped, with the reason
    logged and shown in the report, when no ViT checkpoint is installed; another one can be given
    with ``CRYOSET_DEMO_VIT_CHECKPOINT`` (or ``run_demo(vit_checkpoint=)``).

The report (``report.html``) shows micrographs with picks, CTF diagnostics, class
averages and every metric; ``demo.json`` holds the numbers; ``provenance.json`` the
provenance of the whole run.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryoset.errors import InputError


@dataclass
class StepResult:
    """One command of the demo."""

    name: str
    argv: list[str]
    seconds: float
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None


@dataclass
class DemoRun:
    """Runs CLI steps in-process and records them."""

    out: Path
    log: Callable[[str], None] = print
    steps: list[StepResult] = field(default_factory=list)

    def run(self, name: str, *args: object) -> StepResult:
        from cryoset.cli.main import main

        argv = [str(a) for a in args]
        self.log(f"[demo] {name}: cryoset {shlex.join(argv)}")
        out, err = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        result = StepResult(name, argv, time.perf_counter() - t0, code, out.getvalue(), err.getvalue())
        self.steps.append(result)
        if code != 0:
            raise InputError(f"demo step {name!r}", f"exited {code}: {err.getvalue().strip()[:500]}")
        stale = [line for line in result.stderr.splitlines() if "is deprecated; use" in line]
        if stale:  # the demo shows the current vocabulary (docs/cli.md)
            raise InputError(f"demo step {name!r}", stale[0])
        return result


def _overlay_png(image: np.ndarray, picks: Any, truth: Any, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryoset.report.figures import save_figure

    lo, hi = np.percentile(image, [1, 99])
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    ax.scatter(truth["x_px"], truth["y_px"], s=80, facecolors="none", edgecolors="lime", linewidths=1,
               label="truth")
    ax.scatter(picks["x_px"], picks["y_px"], s=20, marker="x", color="red", linewidths=1, label="picks")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_axis_off()
    fig.tight_layout()
    return save_figure(fig, path)


def _ca_overlay_png(prediction: Path, truth_model: Path, traced_model: Path, path: Path) -> Path:
    """Predicted Cα probability (maximum along z) with the true and the traced Cα over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryoset.io.mrc import read_map
    from cryoset.report.figures import save_figure
    from cryoset.trace.model import read_ca_table

    ca = read_map(prediction / "ca_prob.mrc")
    proj = ca.data.max(axis=0)
    oz, oy, ox = ca.origin_a
    vz, vy, vx = ca.voxel_size_a
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(proj, cmap="gray_r", origin="lower", vmin=0, vmax=max(float(proj.max()), 1e-6),
              extent=(ox - vx / 2, ox + (proj.shape[1] - 0.5) * vx, oy - vy / 2, oy + (proj.shape[0] - 0.5) * vy))
    for model, style, label in ((truth_model, dict(s=28, facecolors="none", edgecolors="tab:green"), "true Cα"),
                                (traced_model, dict(s=8, c="tab:red"), "traced Cα")):
        t = read_ca_table(model)
        ax.scatter(t["x_a"], t["y_a"], label=label, **style)  # type: ignore[arg-type]
    ax.set(xlabel="x (Å)", ylabel="y (Å)", title="predicted Cα probability (max over z)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _number(value: Any) -> float:
    """A JSON number, or NaN for null/missing."""
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _sequence_of(model: Path) -> str:
    """One-letter sequence of the first chain of a model."""
    from cryoset.trace.model import model_sequences

    return model_sequences(model)[0][1]


#: Environment variable naming the ViT checkpoint of the feature-map step (default: the shipped one).
VIT_CHECKPOINT_ENV = "CRYOSET_DEMO_VIT_CHECKPOINT"


def featuremap_step(run: DemoRun, micrograph: Path, out: Path, diameter_px: float,
                    checkpoint: str | Path | None = None) -> tuple[dict[str, Any] | None, str]:
    """The feature-map step: ``(summary, "")``, or ``(None, reason)`` when no ViT checkpoint exists.

    The checkpoint is ``checkpoint``, else ``$CRYOSET_DEMO_VIT_CHECKPOINT``, else the shipped one.
    Windows are two particle diameters wide, four per window in stride.
    """
    import os

    from cryoset.learn.vit_weights import DEFAULT_VIT_CHECKPOINT

    chosen = checkpoint or os.environ.get(VIT_CHECKPOINT_ENV) or None
    ckpt = Path(chosen) if chosen else DEFAULT_VIT_CHECKPOINT
    if not ckpt.exists():
        reason = (f"feature map skipped: no ViT checkpoint at {ckpt} (the shipped model is not installed; "
                  f"set {VIT_CHECKPOINT_ENV} to use another)")
        run.log(f"[demo] {reason}")
        return None, reason
    window = max(32, round(2 * diameter_px))
    stride = max(8, window // 4)
    summary = run.run("featuremap", "featuremap", micrograph, "--checkpoint", ckpt, "--window-px", window,
                      "--stride-px", stride, "--out", out, "--json").json()
    return summary, ""


def _build_config(quick: bool) -> dict[str, Any]:
    """The demo's build configuration: two small simulated experiments (see docs/build.md)."""
    n_mics = 1 if quick else 2
    return {
        "name": "cryoset demo build",
        "experiments": [
            {"id": "sim-alpha", "simulated": {"seed": 1, "protein_length": 120, "micrographs": n_mics,
                                              "size_px": 512, "pixel_size_a": 1.5, "particles_per_micrograph": 20}},
            {"id": "sim-beta", "simulated": {"seed": 2, "protein_length": 150, "micrographs": n_mics,
                                             "size_px": 512, "pixel_size_a": 1.5, "particles_per_micrograph": 20}},
        ],
        "ctf": {"tile_px": 256, "max_resolution_a": 5.0},
        "pick": {"threshold": 3.5},
        "extract": {"pixel_size_out_a": 3.0, "phase_flip": True},
        "classify": {"n_classes": 3, "n_iter": 3, "psi_step_deg": 15, "seed": 0},
        "store": {"encoding": "uint8"},
        "execution": {"workers": 2, "retries": 2},
    }


def run_demo(out_dir: str | Path, *, quick: bool = False, log: Callable[[str], None] = print,
             vit_checkpoint: str | Path | None = None) -> Path:
    """Run the demo into ``out_dir`` and return the path of ``report.html``.

    Parameters
    ----------
    out_dir
        Output directory (created; an existing demo there is replaced step by step).
    quick
        Smaller inputs (for tests): 2 micrographs of 512² instead of 3 of 1024².
    log
        Where progress lines go.
    vit_checkpoint
        ViT weights for the feature-map step (default: ``$CRYOSET_DEMO_VIT_CHECKPOINT``, else the
        shipped model; the step is skipped when there is none).
    """
    import pandas as pd

    from cryoset.io.mrc import read_map
    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.report.html import Report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = DemoRun(out, log)
    size, n_mics, n_particles = (512, 2, 12) if quick else (1024, 3, 40)
    pixel_a, length = 1.5, 250
    sim, ctf, picks, parts = out / "sim", out / "ctf", out / "picks", out / "particles"
    seed = 7

    # 1. simulate
    s = run.run("simulate micrographs", "simulate", "micrographs", "--micrographs", n_mics, "--size-px", size,
                "--pixel-size-a", pixel_a, "--particles-per-micrograph", n_particles, "--protein-length", length,
                "--defocus-min-a", 12000, "--defocus-max-a", 28000, "--dose-e-per-a2", 40, "--seed", seed,
                "--out", sim, "--json").json()
    truth = pd.read_csv(sim / "truth_picks.csv")
    diameter_px = float(truth["diameter_px"].iloc[0])
    diameter_a = diameter_px * pixel_a
    mics = sorted((sim / "micrographs").glob("*.mrc"))

    # 2. CTF
    c = run.run("ctf", "ctf", *mics, "--out", ctf, "--tile-px", 256 if quick else 512, "--json").json()
    ctf_rows = []
    for r in c["results"]:
        t = truth[truth["micrograph"] == r["micrograph"]].iloc[0]
        true_mean = (t["defocus_u_a"] + t["defocus_v_a"]) / 2
        est_mean = (r["defocus_u_a"] + r["defocus_v_a"]) / 2
        ctf_rows.append({"micrograph": r["micrograph"], "true defocus (Å)": true_mean,
                         "estimated (Å)": est_mean, "error (%)": 100 * abs(est_mean - true_mean) / true_mean,
                         "fit resolution (Å)": r["fit_resolution_a"]})
    ctf_table = pd.DataFrame(ctf_rows)

    # 3. pick + evaluate
    run.run("pick", "pick", *mics, "--diameter-a", f"{diameter_a:.1f}", "--mask-dir", sim / "masks",
            "--out", picks)
    ev = run.run("evaluate-picks", "evaluate-picks", picks, sim / "coords", "--diameter-px",
                 f"{diameter_px:.2f}", "--json").json()

    # 4. extract (phase-flipped with the estimated CTF, inverted: particles white)
    run.run("extract", "extract", *mics, "--picks", picks, "--out", parts, "--diameter-a", f"{diameter_a:.1f}",
            "--invert", "--phase-flip", "--ctf", ctf / "micrographs_ctf.star")
    # particles.star records the flip (rlnCtfDataArePhaseFlipped 1), so classify2d applies |CTF|,
    # not the CTF a second time
    from cryoset.io.particles import read_particles
    from cryoset.io.schema import phase_flipped

    extracted = read_particles(parts / "particles.star").table
    n_flipped = int(phase_flipped(extracted).sum())

    # 5. 2D classification
    cls = out / "classes"
    cl = run.run("classify2d", "classify2d", parts / "particles.star", "--n-classes", 4, "--n-iter", 5 if quick else 10,
                 "--box-px", 48, "--diameter-a", f"{diameter_a:.1f}", "--seed", seed, "--out", cls, "--json").json()

    # 6. store + query
    store = out / "store"
    if (store / "store.json").exists():
        import shutil

        shutil.rmtree(store)
    run.run("store create", "store", "create", store, "--chunk-particles", 64)
    run.run("store add", "store", "add", store, "--star", cls / "particles.star", "--experiment", "SIM-DEMO")
    q = run.run("query", "query", "SELECT class_number, count(*) AS particles, avg(defocus_u_a) AS mean_defocus_u_a "
                "FROM particles GROUP BY class_number ORDER BY class_number", "--store", store, "--json").json()["rows"]

    # 7. conversions of the truth picks
    first = sim / "coords" / f"{mics[0].stem}.star"
    run.run("convert to .box", "convert", first, "--out", out / "convert" / f"{mics[0].stem}.box", "--box-px",
            round(diameter_px * 1.5))
    run.run("convert to .cs", "convert", out / "convert" / f"{mics[0].stem}.box",
            "--out", out / "convert" / f"{mics[0].stem}.cs", "--micrograph-shape-px", size, size)
    info = run.run("info", "info", "--json", out / "convert" / f"{mics[0].stem}.cs", mics[0],
                   parts / "particles.star").json()["files"]

    # 8. map track: the shipped voxel network on a map of a protein it never saw
    mapdir = out / "map"
    run.run("simulate map", "simulate", "map", "--model", sim / "model.pdb", "--resolution-a", 4.0,
            "--voxel-size-a", 1.0, "--out", mapdir / "simulated_map.mrc")
    run.run("map prepare", "map", "prepare", mapdir / "simulated_map.mrc", "--model", sim / "model.pdb",
            "--out", mapdir / "prepared")
    labels = json.loads((mapdir / "prepared" / "labels_report.json").read_text())
    fasta = mapdir / "sequence.fasta"
    fasta.write_text(f">A\n{_sequence_of(sim / 'model.pdb')}\n")
    mb = run.run("model-build", "model-build", mapdir / "simulated_map.mrc", "--sequence", fasta,
                 "--out", mapdir / "traced.pdb", "--reference", sim / "model.pdb", "--json").json()
    cmp_ = mb.get("comparison") or {}

    # 9. a two-experiment dataset build, then a query over it
    import yaml

    config = out / "build-demo.yaml"
    config.write_text(yaml.safe_dump(_build_config(quick), sort_keys=False))
    run.run("build", "build", config, "--out", out / "build", "--quiet")
    bq = run.run("query build", "query", "SELECT experiment_id, count(*) AS particles, "
                 "round(avg(defocus_u_a)) AS mean_defocus_u_a, count(DISTINCT class_number) AS classes "
                 "FROM particles GROUP BY experiment_id ORDER BY experiment_id",
                 "--store", out / "build" / "store", "--json").json()["rows"]

    # 10. feature map of one micrograph with the self-supervised ViT
    fmap, fmap_skipped = featuremap_step(run, mics[0], out / "featuremap", diameter_px, vit_checkpoint)

    # ------------------------------------------------------------------ report
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    from cryoset.io.coords import read_coords

    ca_overlay = _ca_overlay_png(mapdir / "traced_prediction", sim / "model.pdb", mapdir / "traced.pdb",
                                 figs / "map_predicted_ca.png")
    overlays = []
    for mic in mics:
        image = read_map(mic, voxel_size_a=(pixel_a,) * 3).data[0]
        p = read_coords(picks / f"{mic.stem}.star")
        t = truth[truth["micrograph"] == mic.name]
        overlays.append(_overlay_png(image, p, t, figs / f"{mic.stem}_picks.png", f"{mic.stem}: picks vs truth"))
    pooled = ev["pooled"]
    metrics = {
        "micrographs": len(mics), "true particles": len(truth),
        "picks": pooled["n_picks"], "precision": round(pooled["precision"], 3),
        "extracted particles": len(extracted), "phase-flipped particles (|CTF| in classify2d)": n_flipped,
        "recall": round(pooled["recall"], 3), "F1": round(pooled["f1"], 3),
        "median CTF defocus error (%)": round(float(ctf_table["error (%)"].median()), 3),
        "traced residues matched (%)": round(_number(cmp_.get("pct_matched")), 1),
        "trace sequence identity (%)": round(_number(cmp_.get("pct_sequence_identity")), 1),
        "trace RMSD (Å)": round(_number(cmp_.get("rmsd_a")), 3),
    }
    report = Report("cryoset demo")
    report.paragraph(f"Simulated a {length}-residue procedural protein imaged in {len(mics)} micrographs "
                     f"({size}² at {pixel_a} Å/px, 300 kV, 40 e/Å²), then ran CTF estimation, blob picking, "
                     "extraction, 2D classification, the particle store, format conversion, and the "
                     "map-labelling / backbone-tracing track. Every step is a cryoset command.")
    report.heading("Summary")
    report.mapping(metrics)
    report.heading("Picking against the simulated truth")
    report.table(pd.DataFrame(ev["per_micrograph"]))
    for path in overlays:
        report.figure(path, path.stem.replace("_", " "), relative_to=out)
    report.heading("CTF estimation against the simulated defocus")
    report.table(ctf_table)
    for png in sorted((ctf / "plots").glob("*.png"))[:6]:
        report.figure(png, png.stem, relative_to=out)
    report.heading("2D classification")
    if isinstance(cl, dict):
        report.mapping({k: v for k, v in cl.items() if not isinstance(v, (list, dict))})
    for png in sorted(cls.glob("*.png")):
        report.figure(png, png.stem, relative_to=out)
    report.heading("Particle store query")
    report.table(pd.DataFrame(q))
    report.heading("Map to model: the voxel network, then HMM tracing")
    report.paragraph("The map of the demo protein (simulated at 4 Å) goes through the voxel network shipped "
                     "in the package (never trained on this protein), Cα candidates above the weights' "
                     f"threshold ({mb.get('threshold')}), and the HMM aligns the sequence through them.")
    report.figure(ca_overlay, "predicted Cα probability with the true (green) and traced (red) Cα",
                  relative_to=out)
    report.mapping({k: v for k, v in mb.items() if not isinstance(v, (list, dict))})
    report.mapping({k: v for k, v in (cmp_ or {}).items() if not isinstance(v, (list, dict))})
    report.heading("Density-map labels (map prepare)")
    report.mapping({k: v for k, v in labels.items() if not isinstance(v, (list, dict))})
    report.heading("Dataset build (two simulated experiments) and a query over it")
    report.table(pd.DataFrame(bq))
    for html_report in sorted((out / "build").rglob("report.html")):
        report.paragraph(f"per-experiment report: {html_report.relative_to(out)}")
    report.heading("Micrograph feature map (self-supervised ViT)")
    if fmap is None:
        report.paragraph(fmap_skipped)
    else:
        report.paragraph(f"{mics[0].name}: one ViT vector per {fmap['window_px']}-px window every "
                         f"{fmap['stride_px']} px ({fmap['grid_shape'][0]}×{fmap['grid_shape'][1]} windows); "
                         "the first three principal components of this micrograph's window features as RGB.")
        report.figure(out / "featuremap" / "pca_overlay.png", "PCA of window features over the micrograph",
                      relative_to=out)
        report.figure(out / "featuremap" / "pca_rgb.png", "PCA colours (PC1 red, PC2 green, PC3 blue)",
                      relative_to=out)
    report.heading("Format round trip")
    report.code(json.dumps(info, indent=2)[:3000])
    report.heading("Steps")
    report.table(pd.DataFrame([{"step": st.name, "command": "cryoset " + shlex.join(st.argv),
                                "seconds": st.seconds} for st in run.steps]))
    record = make_provenance("demo", {"quick": quick, "seed": seed, "size_px": size, "micrographs": n_mics})
    report.provenance(record)
    path = report.write(out / "report.html")
    (out / "demo.json").write_text(json.dumps({"metrics": metrics, "simulation": s, "picking": ev,
                                                "steps": [{"name": st.name, "seconds": st.seconds}
                                                          for st in run.steps]}, indent=2, default=str) + "\n")
    write_provenance(out, record)
    return path
