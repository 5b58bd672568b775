"""``cryoset pick`` / ``evaluate-picks`` / ``extract``: the CryoVirusDB picking pipeline.

Examples::

    cryoset pick mics/*.png --diameter-a 300 --pixel-size-a 5.36 --out picks
    cryoset pick mics/*.mrc --diameter-a 300 --method template --templates classes.mrcs --out picks
    cryoset pick mics/*.mrc --diameter-a 300 --method import --import-dir topaz_picks --out picks
    cryoset evaluate-picks picks truth_coords --json
    cryoset extract mics/*.mrc --picks picks --diameter-a 300 --invert --pixel-size-out-a 4 --out particles
    cryoset extract mics/*.mrc --picks picks --box-px 256 --phase-flip --ctf micrographs_ctf.star --out particles
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError

_IMAGE_SUFFIXES = (".mrc", ".mrcs", ".map", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".gz", ".bz2")
_COORD_SUFFIXES = (".star", ".box", ".csv", ".cbox", ".cs", ".txt", ".tsv")


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)


def micrograph_key(name: str) -> str:
    """A micrograph name without directory and image suffixes (``a/b/mic_01.mrc`` → ``mic_01``)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    while True:
        stem, dot, suffix = base.rpartition(".")
        if dot and ("." + suffix.lower()) in _IMAGE_SUFFIXES + _COORD_SUFFIXES:
            base = stem
        else:
            return base


def _read_micrograph(path: Path, pixel_size: float | None) -> tuple[Any, float]:
    import numpy as np

    from cryoset.io.images import read_image

    img = read_image(path, pixel_size_a=pixel_size)
    if img.pixel_size_a is None:
        raise InputError(path, "has no pixel size: give --pixel-size-a")
    if img.data.ndim != 2 or min(img.data.shape) < 16:
        raise InputError(path, f"is not a micrograph (shape {img.data.shape})")
    bad = int(img.data.size - np.count_nonzero(np.isfinite(img.data)))
    if bad:
        raise InputError(path, f"{bad} of {img.data.size} pixels are NaN or infinite")
    if not float(img.data.std()) > 0:
        raise InputError(path, "is empty (constant image)")
    return img.data, float(img.pixel_size_a)


def _coord_files(source: Path) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.iterdir()
                       if p.is_file() and p.suffix.lower() in _COORD_SUFFIXES
                       and not p.name.endswith(".provenance.json")
                       and p.name not in ("false_positives.csv", "particles.csv", "particles.star"))
        if not files:
            raise InputError(source, "holds no coordinate files")
        return files
    if not source.exists():
        raise InputError(source, "no such file or directory")
    return [source]


def _read_picks(source: Path) -> Any:
    import pandas as pd

    from cryoset.io.coords import read_coords

    frames = [read_coords(p) for p in _coord_files(source)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    df["micrograph"] = df["micrograph"].astype(str).map(micrograph_key)
    return df


def _picks_for(picks_dir: Path, key: str, shape: tuple[int, int]) -> Any:
    from cryoset.io.coords import read_coords

    for p in _coord_files(picks_dir):
        if micrograph_key(p.name) == key:
            df = read_coords(p, micrograph=None, micrograph_shape=shape)
            df["micrograph"] = df["micrograph"].astype(str).map(micrograph_key)
            return df[df["micrograph"] == key].reset_index(drop=True)
    return None


def _mask_for(mask_dir: Path, key: str, shape: tuple[int, ...]) -> Any:
    """The boolean mask (True = reject) of a micrograph, or None when the directory has none."""
    from cryoset.io.images import read_image

    if not mask_dir.is_dir():
        raise InputError(mask_dir, "is not a directory")
    for p in sorted(mask_dir.iterdir()):
        if p.is_file() and micrograph_key(p.name) == key:
            data = read_image(p, permissive=True).data
            if data.shape != tuple(shape):
                raise InputError(p, f"mask shape {data.shape} differs from the micrograph {tuple(shape)}")
            return data != 0
    return None


def _ctf_resolutions(path: Path) -> dict[str, float]:
    from cryoset.io.star import read_star

    out: dict[str, float] = {}
    for df in read_star(path).values():
        if "rlnMicrographName" in df.columns and "rlnCtfMaxResolution" in df.columns:
            for name, res in zip(df["rlnMicrographName"], df["rlnCtfMaxResolution"], strict=True):
                out[micrograph_key(str(name))] = float(res)
    if not out:
        raise InputError(path, "has no table with rlnMicrographName and rlnCtfMaxResolution")
    return out


def _ctf_table(path: Path) -> dict[str, Any]:
    from cryoset.ctf.model import CTFParams
    from cryoset.io.star import read_star

    blocks = read_star(path)
    out: dict[str, Any] = {}
    optics = blocks.get("optics")
    for df in blocks.values():
        if "rlnMicrographName" in df.columns and "rlnDefocusU" in df.columns:
            for _, row in df.iterrows():
                def get(label: str, default: float, row: Any = row) -> float:
                    if label in row.index:
                        return float(row[label])
                    if optics is not None and label in optics.columns:
                        return float(optics[label].iloc[0])
                    return default
                try:
                    params = CTFParams(
                        float(row["rlnDefocusU"]), get("rlnDefocusV", float(row["rlnDefocusU"])),
                        get("rlnDefocusAngle", 0.0), get("rlnVoltage", 300.0),
                        get("rlnSphericalAberration", 2.7), get("rlnAmplitudeContrast", 0.1),
                        get("rlnPhaseShift", 0.0),
                    )
                except ValueError as exc:
                    raise InputError(path, str(exc)) from exc
                out[micrograph_key(str(row["rlnMicrographName"]))] = params
    if not out:
        raise InputError(path, "has no table with rlnMicrographName and rlnDefocusU")
    return out


def _write_cvdb(path: Path, table: Any, heights: dict[str, int], variant: str) -> None:
    """Write a CryoVirusDB CSV in its own (y-flipped) frame, each row with its micrograph's height."""
    import numpy as np

    from cryoset.io.cryovirusdb import write_cryovirusdb

    t = table.reset_index(drop=True).copy()
    if len(t):
        ny = t["micrograph"].astype(str).map(lambda m: heights.get(micrograph_key(m), np.nan))
        t["y_px"] = (ny.to_numpy(np.float64) - 1) - t["y_px"].to_numpy(np.float64)
    write_cryovirusdb(path, t, flip_y=False, variant=variant)  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    """Add the ``pick``, ``evaluate-picks`` and ``extract`` commands."""

    @app.command("pick")
    def pick(
        micrographs: list[Path] = typer.Argument(..., metavar="MICROGRAPHS...", help="Micrographs (MRC/PNG/TIFF)."),
        diameter_a: float = option("diameter_a", ..., help="Particle diameter, Å."),
        out: Path = option("out", ..., help="Output directory."),
        pixel_size: float | None = option("pixel_size_a", None, help="Micrograph pixel size, Å; needed for PNG."),
        method: str = typer.Option("blob", "--method", help="blob, template or import."),
        templates: Path | None = typer.Option(None, "--templates", help="Template stack (.mrcs), protein bright."),
        template_pixel_size: float | None = option("template_pixel_size_a", None),
        import_dir: Path | None = typer.Option(None, "--import-dir", help="Directory (or file) of picks to import (--method import)."),
        threshold: float | None = typer.Option(None, "--threshold", help="Score threshold (blob: noise units, default 3.5; template: NCC, default 0.2)."),
        min_distance: float = option("min_distance_fraction", 0.5),
        min_ncc: float | None = typer.Option(None, "--min-ncc", help="Inspection: reject picks with NCC below this."),
        min_power: float | None = typer.Option(None, "--min-power", help="Inspection: reject picks with power below this."),
        max_power: float | None = typer.Option(None, "--max-power", help="Inspection: reject picks with power above this."),
        mask_dir: Path | None = typer.Option(None, "--mask-dir", help="Inspection: carbon/ice masks <micrograph>.png/.mrc (non-zero = reject)."),
        ctf: Path | None = typer.Option(None, "--ctf", help="Inspection: micrograph CTF STAR with rlnCtfMaxResolution."),
        max_ctf_resolution: float | None = option("max_ctf_resolution_a", None, help="Inspection: reject micrographs whose CTF fit is worse than this, Å."),
        light_particles: bool = typer.Option(False, "--light-particles", help="Particles are brighter than the background."),
        fmt: str = option("format", "star", help="Output coordinate format: star, box, csv, cbox, topaz, cs."),
        as_json: bool = json_option(),
    ) -> None:
        """Pick particles (blob / template / imported) and write one coordinate file per micrograph.

        Writes OUT/<micrograph>.star (RELION coordinates with rlnAutopickFigureOfMerit) or
        another format, OUT/false_positives.csv (rejected picks with Reason, CryoVirusDB
        layout) and OUT/provenance.json.

        Examples:

            cryoset pick mics/*.png --diameter-a 300 --pixel-size-a 5.36 --out picks

            cryoset pick mics/*.mrc --diameter-a 300 --mask-dir masks --json --out picks
        """
        import pandas as pd

        from cryoset.io.atomic import staged_directory
        from cryoset.io.coords import FORMATS, write_coords
        from cryoset.picking.blob import BlobSettings, pick_blobs
        from cryoset.picking.imported import score_imported
        from cryoset.picking.inspection import InspectionSettings, inspect_picks
        from cryoset.picking.template import TemplateSettings, check_templates, pick_templates
        from cryoset.provenance import make_provenance, write_provenance

        if not (math.isfinite(diameter_a) and diameter_a > 0):
            raise InputError("--diameter-a", f"must be a positive number of Å, got {diameter_a}")
        if method not in ("blob", "template", "import"):
            raise InputError("--method", f"must be blob, template or import, not {method!r}")
        if fmt not in FORMATS or fmt == "cryoppp":
            raise InputError("--format", f"unknown coordinate format {fmt!r}")
        tmpl: Any = None
        tmpl_px = 0.0
        if method == "template":
            from cryoset.io.mrc import read_stack

            if templates is None:
                raise InputError("--templates", "--method template needs --templates")
            st = read_stack(templates)
            tmpl = check_templates(st.data[:], templates)
            tmpl_px = float(template_pixel_size or st.pixel_size_a or 0.0)
        if method == "import" and import_dir is None:
            raise InputError("--import-dir", "--method import needs --import-dir")
        inspection = InspectionSettings(min_ncc=min_ncc, min_power=min_power, max_power=max_power,
                                        max_ctf_resolution_a=max_ctf_resolution)
        ctf_res = _ctf_resolutions(ctf) if ctf is not None else None
        if max_ctf_resolution is not None and ctf_res is None:
            raise InputError("--max-ctf-resolution-a", "needs --ctf with rlnCtfMaxResolution")
        suffix = {"star": ".star", "box": ".box", "csv": ".csv", "cbox": ".cbox", "topaz": ".txt",
                  "cs": ".cs"}[fmt]
        params = {"diameter_a": diameter_a, "method": method, "threshold": threshold,
                  "min_distance_fraction": min_distance, "min_ncc": min_ncc, "min_power": min_power,
                  "max_power": max_power, "dark_particles": not light_particles, "format": fmt}
        params.update({"max_ctf_resolution_a": max_ctf_resolution, "mask_dir": mask_dir})
        prov = make_provenance("pick", params, [*micrographs, *([templates] if templates else []),
                                                *([ctf] if ctf else [])])
        rejected_all: list[pd.DataFrame] = []
        heights: dict[str, int] = {}
        summary: list[dict[str, Any]] = []
        # everything goes to a temporary folder first: a rejected input leaves no output behind
        with staged_directory(out) as staged:
            with _progress() as progress:
                task = progress.add_task("picking", total=len(micrographs))
                for path in micrographs:
                    image, px = _read_micrograph(path, pixel_size)
                    name = path.name
                    heights[micrograph_key(name)] = int(image.shape[0])
                    if method == "blob":
                        s = BlobSettings(diameter_a, threshold=3.5 if threshold is None else threshold,
                                         min_distance_fraction=min_distance, dark_particles=not light_particles)
                        df = pick_blobs(image, px, s, micrograph=name)
                    elif method == "template":
                        ts = TemplateSettings(diameter_a, threshold=0.2 if threshold is None else threshold,
                                              min_distance_fraction=min_distance,
                                              dark_particles=not light_particles)
                        df = pick_templates(image, px, tmpl, tmpl_px or px, ts, micrograph=name,
                                            source=templates or "templates")
                    else:
                        if import_dir is None:  # checked above; keeps the type checker informed
                            raise InputError("--import-dir", "--method import needs --import-dir")
                        imp = _picks_for(import_dir, micrograph_key(name), image.shape)
                        if imp is None:
                            raise InputError(import_dir, f"has no picks for {name}")
                        imp["micrograph"] = name
                        df = score_imported(image, imp, diameter_a / px, min_distance_fraction=min_distance,
                                            dark_particles=not light_particles)
                        if threshold is not None:
                            df = df[df["score"] >= threshold].reset_index(drop=True)
                    df["micrograph_pixel_size_a"] = px
                    masks = None
                    if mask_dir is not None:
                        mask = _mask_for(mask_dir, micrograph_key(name), image.shape)
                        masks = {name: mask} if mask is not None else None
                    res_map = ({name: ctf_res[micrograph_key(name)]}
                               if ctf_res and micrograph_key(name) in ctf_res else None)
                    accepted, rejected = inspect_picks(df, inspection, ctf_resolution_a=res_map, masks=masks)
                    write_coords(staged / (micrograph_key(name) + suffix), accepted,
                                 micrograph_shape=image.shape, provenance=prov)
                    rejected_all.append(rejected)
                    summary.append({"micrograph": name, "picks": len(accepted), "rejected": len(rejected)})
                    progress.update(task, advance=1, description=f"{name}: {len(accepted)} picks")
            rej = pd.concat(rejected_all, ignore_index=True)
            _write_cvdb(staged / "false_positives.csv", rej, heights, "false_positives")
            write_provenance(staged / "false_positives.csv", prov)
            write_provenance(staged, prov)
        total = sum(s["picks"] for s in summary)
        if as_json:
            echo_json({"out": str(out), "picks": total, "rejected": int(sum(s["rejected"] for s in summary)),
                       "micrographs": summary})
            return
        typer.echo(f"{total} picks in {len(micrographs)} micrograph(s) → {out}")

    @app.command("evaluate-picks")
    def evaluate_picks_cmd(
        picks: Path = typer.Argument(..., metavar="PICKS", help="Coordinate file or directory of them."),
        truth: Path = typer.Argument(..., metavar="TRUTH", help="Reference coordinate file or directory."),
        diameter_px: float | None = option("diameter_px", None, help="Particle diameter, pixels; default: from the files."),
        match_fraction: float = typer.Option(0.5, "--match-fraction", metavar="FRACTION", help="Match distance as a fraction of the diameter."),
        as_json: bool = json_option(),
    ) -> None:
        """Precision, recall, F1 and average precision (one-to-one Hungarian match within 0.5 × diameter).

        Micrographs are matched by name without directory and suffix.

        Examples:

            cryoset evaluate-picks picks/ truth_coords/ --json
        """
        from cryoset.picking.evaluate import evaluate_picks

        if diameter_px is not None and not (math.isfinite(diameter_px) and diameter_px > 0):
            raise InputError("--diameter-px", f"must be a positive number of pixels, got {diameter_px}")
        if not (math.isfinite(match_fraction) and match_fraction > 0):
            raise InputError("--match-fraction", f"must be a positive fraction, got {match_fraction}")
        p = _read_picks(picks)
        t = _read_picks(truth)
        per, pooled = evaluate_picks(p, t, diameter_px=diameter_px, match_fraction=match_fraction)

        def clean(d: dict[str, Any]) -> dict[str, Any]:
            return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

        if as_json:
            rows = [clean({str(k): (v.item() if hasattr(v, "item") else v) for k, v in r.items()})
                    for r in per.to_dict(orient="records")]
            echo_json({"per_micrograph": rows, "pooled": clean(pooled.as_dict())})
            return
        typer.echo(f"{'micrograph':30s} {'picks':>6s} {'truth':>6s} {'match':>6s} "
                   f"{'P':>6s} {'R':>6s} {'F1':>6s} {'AP':>6s}")
        for r in per.to_dict(orient="records"):
            typer.echo(f"{r['micrograph']!s:30s} {r['n_picks']:6d} {r['n_truth']:6d} "
                       f"{r['n_matched']:6d} {r['precision']:6.3f} {r['recall']:6.3f} "
                       f"{r['f1']:6.3f} {r['average_precision']:6.3f}")
        d = pooled.as_dict()
        typer.echo(f"{'pooled':30s} {d['n_picks']:6d} {d['n_truth']:6d} {d['n_matched']:6d} "
                   f"{d['precision']:6.3f} {d['recall']:6.3f} {d['f1']:6.3f} "
                   f"{d['average_precision']:6.3f}")

    @app.command("extract")
    def extract_cmd(
        micrographs: list[Path] = typer.Argument(..., metavar="MICROGRAPHS...", help="Micrographs."),
        picks: Path = typer.Option(..., "--picks", help="Directory of coordinate files (one per micrograph)."),
        out: Path = option("out", ..., help="Output directory."),
        box: int | None = option("box_px", None, help="Box edge, micrograph pixels; default from --diameter-a."),
        diameter_a: float | None = option("diameter_a", None, help="Particle diameter, Å, for the default box."),
        pixel_size: float | None = option("pixel_size_a", None, help="Micrograph pixel size, Å."),
        pixel_size_out: float | None = option("pixel_size_out_a", None),
        invert: bool = typer.Option(False, "--invert", help="Invert contrast (dark particles → bright)."),
        normalise: bool = typer.Option(True, "--norm/--no-norm", help="Background outside bg radius to mean 0, sd 1."),
        bg_radius: float | None = option("bg_radius_px", None, help="Background radius, output pixels; default 0.375 × box."),
        phase_flip: bool = typer.Option(False, "--phase-flip", help="Phase-flip with the (local) defocus."),
        ctf: Path | None = typer.Option(None, "--ctf", help="RELION micrograph CTF STAR (rlnMicrographName, rlnDefocusU…)."),
        voltage_kv: float = option("voltage_kv", 300.0, help="Accelerating voltage, kV, for the STAR optics when no CTF is given."),
        cs_mm: float = option("cs_mm", 2.7, help="Spherical aberration, mm, for the STAR optics when no CTF is given."),
        amplitude_contrast: float = option("amplitude_contrast", 0.1, help="Amplitude contrast, fraction, for the STAR optics."),
        image_paths: str = typer.Option(
            "project", "--image-paths", help="How particles.star names stacks and micrographs: "
            "'project' (relative to the current directory, as RELION writes and resolves them; "
            "absolute when outside it) or 'star' (relative to particles.star's folder)."),
        as_json: bool = json_option(),
    ) -> None:
        """Extract particle boxes: OUT/<micrograph>.mrcs stacks, particles.star (RELION 3.1),
        particles.csv (CryoVirusDB, 14 columns) and false_positives.csv.

        With --phase-flip, particles.star says so (rlnCtfDataArePhaseFlipped 1 in data_optics):
        classify2d and reconstruct then apply |CTF|; give RELION --ctf_phase_flipped.

        Examples:

            cryoset extract mics/*.png --pixel-size-a 5.36 --picks picks --diameter-a 300 --invert --out particles

            cryoset extract mics/*.mrc --picks picks --box-px 256 --phase-flip --ctf micrographs_ctf.star --out particles
        """
        import pandas as pd

        from cryoset.io.atomic import staged_directory
        from cryoset.io.mrc import write_stack
        from cryoset.io.particles import PathStyle, relion_path, write_particles
        from cryoset.particles.extract import box_size_for_diameter, extract_particles
        from cryoset.provenance import make_provenance, write_provenance

        if box is None and diameter_a is None:
            raise InputError("--box-px", "give --box-px or --diameter-a")
        if phase_flip and ctf is None:
            raise InputError("--ctf", "--phase-flip needs --ctf")
        if image_paths not in ("project", "star"):
            raise InputError("--image-paths", f"must be 'project' or 'star', got {image_paths!r}")
        for name, value in (("--pixel-size-out-a", pixel_size_out), ("--box-px", box),
                            ("--diameter-a", diameter_a), ("--pixel-size-a", pixel_size)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(name, f"must be a positive number, got {value}")
        star_out = out / "particles.star"
        style: PathStyle = "star" if image_paths == "star" else "project"
        ctfs = _ctf_table(ctf) if ctf is not None else {}
        params = {"box": box, "diameter_a": diameter_a, "pixel_size_out_a": pixel_size_out,
                  "invert": invert, "normalise": normalise, "bg_radius_px": bg_radius,
                  "phase_flip": phase_flip, "image_paths": image_paths}
        prov = make_provenance("extract", params, [*micrographs, picks, *([ctf] if ctf else [])])
        tables: list[pd.DataFrame] = []
        skipped: list[pd.DataFrame] = []
        n_skipped = 0
        heights: dict[str, int] = {}
        # everything goes to a temporary folder first: a rejected input leaves no output behind
        with staged_directory(out) as staged:
            with _progress() as progress:
                task = progress.add_task("extracting", total=len(micrographs))
                for path in micrographs:
                    image, px = _read_micrograph(path, pixel_size)
                    key = micrograph_key(path.name)
                    heights[key] = int(image.shape[0])
                    df = _picks_for(picks, key, image.shape)
                    if df is None:
                        raise InputError(picks, f"has no picks for {path.name}")
                    b = box if box is not None else box_size_for_diameter(float(diameter_a or 0) / px)
                    if b > min(image.shape):
                        raise InputError("--box-px" if box is not None else "--diameter-a",
                                         f"a {b} px box does not fit in {path} ({image.shape[0]}×"
                                         f"{image.shape[1]} px)")
                    mic_ctf = ctfs.get(key)
                    if phase_flip and mic_ctf is None and "defocus_u_a" not in df.columns:
                        raise InputError(ctf, f"has no CTF for {path.name}")
                    res = extract_particles(image, df, b, px, pixel_size_out_a=pixel_size_out,
                                            invert=invert, normalise=normalise, bg_radius_px=bg_radius,
                                            ctf=mic_ctf, phase_flip_ctf=phase_flip)
                    stack_name = key + ".mrcs"
                    if len(res.stack):  # every box of this micrograph may cross its edge
                        write_stack(staged / stack_name, res.stack, res.pixel_size_a)
                    t = res.table
                    t["micrograph"] = path.name
                    t["rlnMicrographName"] = relion_path(path, star_out, style)
                    t["image_path"] = relion_path(out / stack_name, star_out, style)
                    if mic_ctf is not None and "defocus_u_a" not in t.columns:
                        t["defocus_u_a"] = mic_ctf.defocus_u_a
                        t["defocus_v_a"] = mic_ctf.defocus_v_a
                        t["defocus_angle_deg"] = mic_ctf.defocus_angle_deg
                    for col, val in (("voltage_kv", mic_ctf.voltage_kv if mic_ctf else voltage_kv),
                                     ("cs_mm", mic_ctf.cs_mm if mic_ctf else cs_mm),
                                     ("amplitude_contrast",
                                      mic_ctf.amplitude_contrast if mic_ctf else amplitude_contrast)):
                        if col not in t.columns:
                            t[col] = val
                    tables.append(t)
                    if len(res.skipped_edge):
                        skipped.append(res.skipped_edge.assign(
                            micrograph=path.name, Reason="box crosses the micrograph edge"))
                    n_skipped += len(res.skipped_edge)
                    progress.update(task, advance=1, description=f"{path.name}: {len(t)} particles")
            table = pd.concat(tables, ignore_index=True)
            if table.empty:
                raise InputError(picks, f"no particle box fits: all {n_skipped} picks lie within half a "
                                 "box of the micrograph edge")
            table["optics_group"] = 1
            table["optics_group_name"] = "opticsGroup1"
            keep = [c for c in table.columns if c not in ("ncc", "power", "template")]
            table = table[keep]
            write_particles(staged / star_out.name, table, provenance=prov)
            _write_cvdb(staged / "particles.csv", table, heights, "particles")
            write_provenance(staged / "particles.csv", prov)
            fp = [pd.DataFrame(s) for s in skipped]
            prior = picks / "false_positives.csv" if picks.is_dir() else None
            if prior is not None and prior.exists():
                from cryoset.io.cryovirusdb import read_cryovirusdb

                old = read_cryovirusdb(prior, flip_y=False)
                ny = old["micrograph"].astype(str).map(lambda m: heights.get(micrograph_key(m), float("nan")))
                old["y_px"] = (ny.astype(float) - 1) - old["y_px"].astype(float)
                fp.insert(0, old)
            fps = pd.concat(fp, ignore_index=True) if fp else pd.DataFrame(
                {"micrograph": pd.Series(dtype=str), "x_px": pd.Series(dtype=float),
                 "y_px": pd.Series(dtype=float), "Reason": pd.Series(dtype=str)})
            _write_cvdb(staged / "false_positives.csv", fps, heights, "false_positives")
            write_provenance(staged / "false_positives.csv", prov)
            write_provenance(staged, prov)
        if as_json:
            echo_json({"out": str(out), "particles": len(table), "micrographs": len(micrographs),
                       "skipped_at_edge": n_skipped, "star": str(star_out)})
            return
        typer.echo(f"{len(table)} particles from {len(micrographs)} micrograph(s), "
                   f"{n_skipped} skipped at the edge → {out}")
