"""``cryoset postprocess`` (map validation and sharpening) and ``cryoset mask-create``.

Examples
--------
cryoset postprocess run_half1.mrc run_half2.mrc --out post --auto-mask

cryoset postprocess h1.mrc h2.mrc --out post --mask mask.mrc --reference emd_1234.map --bfactor -80

cryoset mask-create map.mrc --out mask.mrc --mask-threshold 0.02 --extend-px 3 --soft-edge-px 6
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryoset.cli._defaults import POSTPROCESS as _D  # PostprocessParams' defaults
from cryoset.cli._options import echo_json, json_option, option


def _bfactor(text: str) -> float | None:
    from cryoset.errors import InputError

    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError("--bfactor", f"must be 'auto' or a number in Å², got {text!r}") from None


def register(app: typer.Typer) -> None:
    """Add the ``postprocess`` and ``mask-create`` commands."""

    @app.command("postprocess")
    def postprocess_cmd(
        half1: Path = typer.Argument(..., help="First half map (.mrc)."),
        half2: Path = typer.Argument(..., help="Second half map (same box and voxel size)."),
        out: Path = option("out", ..., help="Output folder (postprocess.mrc, postprocess.json, plots, index.html)."),
        mask: Path | None = typer.Option(None, "--mask", help="Soft mask (values 0 to 1) on the half maps' grid."),
        auto_mask: bool = typer.Option(_D.auto_mask, "--auto-mask", help="Make tight and loose soft masks from the map."),
        mask_threshold: float | None = typer.Option(
            None, "--mask-threshold", help="Auto-mask threshold in map units (default: from the low-passed "
                                           "map's median, spread and maximum)."),
        mask_lowpass_a: float = typer.Option(_D.mask_lowpass_a, "--mask-lowpass-a", metavar="Å",
                                             help="Low-pass before thresholding, Å."),
        extend_px: float = typer.Option(_D.extend_px, "--extend-px", metavar="PX",
                                        help="Extend the tight auto-mask by this many voxels."),
        loose_extend_px: float = typer.Option(_D.loose_extend_px, "--loose-extend-px", metavar="PX",
                                              help="Extend the loose auto-mask by this many voxels."),
        soft_edge_px: float = typer.Option(_D.soft_edge_px, "--soft-edge-px", metavar="PX",
                                           help="Raised-cosine edge of the auto-masks, voxels."),
        reference: Path | None = typer.Option(None, "--reference",
                                              help="Map to compare with (resampled to the half maps' grid)."),
        bfactor: str = typer.Option("auto", "--bfactor", metavar="auto|Å²",
                                    help="Sharpening B-factor in Å² (negative sharpens), or auto (Guinier fit)."),
        bfactor_low_a: float = typer.Option(_D.bfactor_low_a, "--bfactor-low-a", metavar="Å",
                                            help="Low-resolution end of the B-factor fit, Å."),
        bfactor_high_a: float | None = typer.Option(
            _D.bfactor_high_a, "--bfactor-high-a", metavar="Å",
            help="High-resolution end of the B-factor fit, Å (default: the FSC resolution)."),
        randomise_below_fsc: float = typer.Option(
            _D.randomise_below_fsc, "--randomise-below-fsc", metavar="FRACTION",
            help="Randomise phases from where the unmasked FSC falls below this."),
        local: bool = typer.Option(_D.local_resolution, "--local-resolution",
                                   help="Also write local_resolution.mrc (sliding-window FSC inside the mask)."),
        local_window_px: int = typer.Option(_D.local_window_px, "--local-window-px", metavar="PX",
                                            help="Edge of the local-resolution window, voxels."),
        particles: Path | None = typer.Option(None, "--particles-file",
                                              help="Particle STAR/.cs with angles, for the angular distribution."),
        seed: int = option("seed", _D.seed, help="Seed of the random phases."),
        permissive: bool = typer.Option(False, "--permissive", help="Open non-conforming MRC maps."),
        as_json: bool = json_option(),
    ) -> None:
        """Validate and sharpen a map from its two half maps: FSC unmasked, masked (tight and
        loose auto-masks, or --mask) and phase-randomisation corrected, FSC against a reference,
        Guinier B-factor, sharpened and masked maps, angular distribution; resolutions in Å at
        0.143 and 0.5 in postprocess.json and index.html.

        Examples:

            cryoset postprocess run_half1.mrc run_half2.mrc --out post --auto-mask

            cryoset postprocess h1.mrc h2.mrc --out post --mask mask.mrc --reference emd.map --bfactor -80
        """
        from cryoset.cli._paths import require_directory_location
        from cryoset.workflows.postprocess import PostprocessParams, run_postprocess

        params = PostprocessParams(auto_mask=auto_mask, mask_threshold=mask_threshold, mask_lowpass_a=mask_lowpass_a,
                                   extend_px=extend_px, loose_extend_px=loose_extend_px, soft_edge_px=soft_edge_px,
                                   bfactor_a2=_bfactor(bfactor), bfactor_low_a=bfactor_low_a,
                                   bfactor_high_a=bfactor_high_a,
                                   randomise_below_fsc=randomise_below_fsc, local_resolution=local,
                                   local_window_px=local_window_px, seed=seed, permissive=permissive)
        require_directory_location(out, "--out")
        summary = run_postprocess(half1, half2, out, params, mask=mask, reference=reference, particles=particles)
        if as_json:
            echo_json(summary)
        else:
            line = (f"{out}: resolution {summary['resolution_a']:.2f} Å (FSC 0.143, {summary['final_curve']}), "
                    f"B-factor {summary['bfactor_a2']:.1f} Å²")
            ref = summary["fsc"].get("reference")
            if ref is not None and ref["0.5"] is not None:
                line += f"; vs reference 0.5 at {ref['0.5']:.2f} Å"
            typer.echo(line)

    @app.command("mask-create")
    def mask_create_cmd(
        map_path: Path = typer.Argument(..., help="Map to make the mask from (.mrc)."),
        out: Path = option("out", ..., help="Output mask (.mrc)."),
        mask_threshold: float | None = typer.Option(
            None, "--mask-threshold", help="Threshold in map units (default: from the low-passed map's "
                                           "median, spread and maximum)."),
        mask_lowpass_a: float = typer.Option(_D.mask_lowpass_a, "--mask-lowpass-a", metavar="Å",
                                             help="Low-pass before thresholding, Å."),
        extend_px: float = typer.Option(_D.extend_px, "--extend-px", metavar="PX",
                                        help="Extend the thresholded region by this many voxels."),
        soft_edge_px: float = typer.Option(_D.soft_edge_px, "--soft-edge-px", metavar="PX",
                                           help="Raised-cosine edge, voxels."),
        permissive: bool = typer.Option(False, "--permissive", help="Open a non-conforming MRC map."),
        as_json: bool = json_option(),
    ) -> None:
        """Make a soft mask from a map: low-pass, threshold, extend, raised-cosine edge (values 0 to 1).

        Examples:

            cryoset mask-create map.mrc --out mask.mrc

            cryoset mask-create map.mrc --out mask.mrc --mask-threshold 0.02 --extend-px 3 --soft-edge-px 6
        """
        from cryoset.cli._paths import require_file_location
        from cryoset.workflows.postprocess import PostprocessParams, run_mask_create

        params = PostprocessParams(auto_mask=True, mask_threshold=mask_threshold, mask_lowpass_a=mask_lowpass_a,
                                   extend_px=extend_px, soft_edge_px=soft_edge_px, permissive=permissive)
        if out.suffix.lower() in (".mrc", ".map"):
            require_file_location(out, "--out")
        summary = run_mask_create(map_path, out, params)
        if as_json:
            echo_json(summary)
        else:
            typer.echo(f"{out}: threshold {summary['threshold']:.4g}, "
                       f"{100 * summary['volume_fraction']:.1f} % of the box")
