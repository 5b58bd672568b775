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

from cryoset.cli._defaults import EXTRACT as _E  # ExtractParams' defaults (the build's too)
from cryoset.cli._defaults import PICK as _P  # PickParams' defaults (the build's too)
from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError


def register(app: typer.Typer) -> None:
    """Add the ``pick``, ``evaluate-picks`` and ``extract`` commands."""

    @app.command("pick")
    def pick(
        micrographs: list[Path] = typer.Argument(..., metavar="MICROGRAPHS...", help="Micrographs (MRC/PNG/TIFF)."),
        diameter_a: float = option("diameter_a", ..., help="Particle diameter, Å."),
        out: Path = option("out", ..., help="Output directory."),
        pixel_size: float | None = option("pixel_size_a", _P.pixel_size_a, help="Micrograph pixel size, Å; needed for PNG."),
        method: str = typer.Option(_P.method, "--method", help="blob, template, import or features."),
        checkpoint: Path | None = typer.Option(
            None, "--checkpoint", metavar="PATH",
            help="ViT encoder for --method features (unsupervised; default: the shipped model)."),
        templates: Path | None = typer.Option(_P.templates, "--templates", help="Template stack (.mrcs), protein bright."),
        template_pixel_size: float | None = option("template_pixel_size_a", _P.template_pixel_size_a),
        import_dir: Path | None = typer.Option(_P.import_dir, "--import-dir", help="Directory (or file) of picks to import (--method import)."),
        threshold: float | None = typer.Option(_P.threshold, "--threshold", help="Score threshold (blob: noise units, default 3.5; template: NCC, default 0.2)."),
        min_distance: float = option("min_distance_fraction", _P.min_distance_fraction),
        min_ncc: float | None = typer.Option(_P.min_ncc, "--min-ncc", help="Inspection: reject picks with NCC below this."),
        min_power: float | None = typer.Option(_P.min_power, "--min-power", help="Inspection: reject picks with power below this."),
        max_power: float | None = typer.Option(_P.max_power, "--max-power", help="Inspection: reject picks with power above this."),
        mask_dir: Path | None = typer.Option(_P.mask_dir, "--mask-dir", help="Inspection: carbon/ice masks <micrograph>.png/.mrc (non-zero = reject)."),
        ctf: Path | None = typer.Option(_P.ctf, "--ctf", help="Inspection: micrograph CTF STAR with rlnCtfMaxResolution."),
        max_ctf_resolution: float | None = option("max_ctf_resolution_a", _P.max_ctf_resolution_a, help="Inspection: reject micrographs whose CTF fit is worse than this, Å."),
        light_particles: bool = typer.Option(_P.light_particles, "--light-particles", help="Particles are brighter than the background."),
        fmt: str = option("format", _P.format, help="Output coordinate format: star, box, csv, cbox, topaz, cs."),
        as_json: bool = json_option(),
    ) -> None:
        """Pick particles (blob / template / imported / features) and write one coordinate file per micrograph.

        Writes OUT/<micrograph>.star (RELION coordinates with rlnAutopickFigureOfMerit) or
        another format, OUT/false_positives.csv (rejected picks with Reason, CryoVirusDB
        layout) and OUT/provenance.json.

        Examples:

            cryoset pick mics/*.png --diameter-a 300 --pixel-size-a 5.36 --out picks

            cryoset pick mics/*.mrc --diameter-a 300 --mask-dir masks --json --out picks

            cryoset pick mics/*.png --diameter-a 300 --pixel-size-a 5.36 --method features --checkpoint vit.safetensors --out picks
        """
        from cryoset.workflows.pick import PickParams, run_pick

        params = PickParams(
            diameter_a=diameter_a, pixel_size_a=pixel_size, method=method, templates=templates,
            template_pixel_size_a=template_pixel_size, import_dir=import_dir, threshold=threshold,
            min_distance_fraction=min_distance, min_ncc=min_ncc, min_power=min_power, max_power=max_power,
            mask_dir=mask_dir, ctf=ctf, max_ctf_resolution_a=max_ctf_resolution,
            light_particles=light_particles, format=fmt, checkpoint=checkpoint,
        )  # fmt: skip
        result = run_pick(micrographs, out, params)
        summary = result.micrographs
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
        from cryoset.workflows.pick import read_picks

        if diameter_px is not None and not (math.isfinite(diameter_px) and diameter_px > 0):
            raise InputError("--diameter-px", f"must be a positive number of pixels, got {diameter_px}")
        if not (math.isfinite(match_fraction) and match_fraction > 0):
            raise InputError("--match-fraction", f"must be a positive fraction, got {match_fraction}")
        p = read_picks(picks)
        t = read_picks(truth)
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
        box: int | None = option("box_px", _E.box_px, help="Box edge, micrograph pixels; default from --diameter-a."),
        diameter_a: float | None = option("diameter_a", _E.diameter_a, help="Particle diameter, Å, for the default box."),
        pixel_size: float | None = option("pixel_size_a", _E.pixel_size_a, help="Micrograph pixel size, Å."),
        pixel_size_out: float | None = option("pixel_size_out_a", _E.pixel_size_out_a),
        invert: bool = typer.Option(_E.invert, "--invert", help="Invert contrast (dark particles → bright)."),
        normalise: bool = typer.Option(_E.norm, "--norm/--no-norm", help="Background outside bg radius to mean 0, sd 1."),
        bg_radius: float | None = option("bg_radius_px", _E.bg_radius_px, help="Background radius, output pixels; default 0.375 × box."),
        phase_flip: bool = typer.Option(_E.phase_flip, "--phase-flip", help="Phase-flip with the (local) defocus."),
        ctf: Path | None = typer.Option(_E.ctf, "--ctf", help="RELION micrograph CTF STAR (rlnMicrographName, rlnDefocusU…)."),
        local_defocus: bool = typer.Option(
            _E.local_defocus, "--local-defocus/--micrograph-defocus",
            help="Per-particle defocus from the defocus surfaces cryoset ctf wrote beside --ctf (when present)."),
        voltage_kv: float = option("voltage_kv", _E.voltage_kv, help="Accelerating voltage, kV, for the STAR optics when no CTF is given."),
        cs_mm: float = option("cs_mm", _E.cs_mm, help="Spherical aberration, mm, for the STAR optics when no CTF is given."),
        amplitude_contrast: float = option("amplitude_contrast", _E.amplitude_contrast, help="Amplitude contrast, fraction, for the STAR optics."),
        image_paths: str = typer.Option(
            _E.image_paths, "--image-paths", help="How particles.star names stacks and micrographs: "
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
        from cryoset.workflows.extract import ExtractParams, run_extract

        params = ExtractParams(
            box_px=box, diameter_a=diameter_a, pixel_size_a=pixel_size, pixel_size_out_a=pixel_size_out,
            invert=invert, norm=normalise, bg_radius_px=bg_radius, phase_flip=phase_flip, ctf=ctf,
            local_defocus=local_defocus, voltage_kv=voltage_kv, cs_mm=cs_mm,
            amplitude_contrast=amplitude_contrast, image_paths=image_paths,
        )  # fmt: skip
        res = run_extract(micrographs, picks, out, params)
        n_skipped = res.skipped_at_edge
        star_out = res.star
        if as_json:
            echo_json({"out": str(out), "particles": res.particles, "micrographs": len(micrographs),
                       "skipped_at_edge": n_skipped, "star": str(star_out)})
            return
        typer.echo(f"{res.particles} particles from {len(micrographs)} micrograph(s), "
                   f"{n_skipped} skipped at the edge → {out}")
