"""``cryoset predict`` (voxel-network probabilities for a map) and ``cryoset model-build``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.cli._progress import count_progress
from cryoset.errors import InputError


def _check_map(path: Path) -> None:
    if not path.is_file():
        raise InputError(path, "no such map")


def register(app: typer.Typer) -> None:
    """Add ``predict`` and ``model-build``."""

    @app.command("predict")
    def predict_cmd(
        map_path: Path = typer.Argument(..., metavar="MAP", help="Density map (MRC/CCP4, any voxel size)."),
        out: Path = option("out", ..., help="Output folder for the probability maps."),
        checkpoint: Path | None = typer.Option(None, "--checkpoint", metavar="PATH",
                                               help="Weights (.safetensors); default: the shipped model."),
        batch_size: int = typer.Option(8, "--batch-size", metavar="N", help="Sub-grids per forward pass."),
        device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu or cuda."),
        as_json: bool = json_option(),
    ) -> None:
        """Predict Cα/N/C, amino-acid and secondary-structure probabilities for every voxel of a map.

        The map is resampled to 1 Å and normalised as map prepare does; predictions are written on
        that grid with the input map's origin: ca_prob.mrc, n_prob.mrc, c_prob.mrc,
        backbone_label.mrc, aa_prob.npy (20, z, y, x), amino_label.mrc, secondary_label.mrc.

        Examples
        --------
        cryoset predict emd_5168.map -o emd_5168_pred
        """
        from cryoset.cli._paths import require_directory_location
        from cryoset.workflows.voxel import predict_map

        _check_map(map_path)
        require_directory_location(out, "--out")  # before minutes of inference, not after
        with count_progress() as bar:
            task = bar.add_task("sub-grids", total=None)
            summary = predict_map(map_path, out, checkpoint=checkpoint, batch_size=batch_size, device=device,
                                  on_batch=lambda done, total: bar.update(task, completed=done, total=total),
                                  argv=sys.argv)
        if as_json:
            echo_json({k: v for k, v in summary.items() if k != "provenance"})
        else:
            typer.echo(f"wrote {len(summary['files'])} prediction files to {out} "
                       f"({'×'.join(map(str, summary['shape']))} voxels of 1 Å)")

    @app.command("model-build")
    def model_build_cmd(
        map_path: Path = typer.Argument(..., metavar="MAP", help="Density map (MRC/CCP4)."),
        sequence: Path = typer.Option(..., "--sequence", metavar="FASTA", help="One record per chain."),
        out: Path = option("out", ..., help="Cα model to write (.pdb or .cif)."),
        checkpoint: Path | None = typer.Option(None, "--checkpoint", metavar="PATH",
                                               help="Weights (.safetensors); default: the shipped model."),
        reference: Path | None = typer.Option(None, "--reference", metavar="MODEL",
                                              help="Deposited model to compare with (RMSD, % matched)."),
        threshold: float | None = typer.Option(
            None, "--threshold", metavar="P",
            help="Minimum Cα probability of a candidate (default: the weights' own, chosen on validation maps)."),
        min_distance_a: float = option("min_distance_a", 2.0, help="Minimum distance between candidates, Å."),
        batch_size: int = typer.Option(8, "--batch-size", metavar="N", help="Sub-grids per forward pass."),
        device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu or cuda."),
        as_json: bool = json_option(),
    ) -> None:
        """Build a Cα model from a map and its sequence: predict → Cα candidates → HMM trace.

        Writes the model, its predictions (MODEL_prediction/) and MODEL_model_build.json; with
        --reference, also the comparison (RMSD, % of residues within 3 Å, sequence identity).

        Examples
        --------
        cryoset model-build emd_5168_monomer.mrc --sequence 3mfp.fasta -o traced.pdb --reference 3MFP.pdb
        """
        from cryoset.cli._paths import require_file_location
        from cryoset.workflows.voxel import model_build

        _check_map(map_path)
        require_file_location(out, "--out")  # before minutes of inference, not after
        if not sequence.is_file():
            raise InputError(sequence, "no such FASTA file")
        if reference is not None and not reference.is_file():
            raise InputError(reference, "no such model file")
        with count_progress() as bar:
            task = bar.add_task("sub-grids", total=None)
            result = model_build(map_path, sequence, out, checkpoint=checkpoint, reference=reference,
                                 threshold=threshold, min_distance_a=min_distance_a, batch_size=batch_size,
                                 device=device,
                                 on_batch=lambda done, total: bar.update(task, completed=done, total=total),
                                 argv=sys.argv)
        if as_json:
            echo_json(result)
        else:
            line = (f"wrote {out}: {result['residues']} residues in {result['chains']} chain(s) from "
                    f"{result['candidates']} Cα candidates")
            cmp_ = result.get("comparison")
            if cmp_:
                line += (f"; vs reference: {cmp_['pct_matched']:.1f} % within 3 Å, RMSD "
                         f"{cmp_['rmsd_a'] if cmp_['rmsd_a'] is None else round(cmp_['rmsd_a'], 2)} Å, "
                         f"identity {cmp_['pct_sequence_identity']:.1f} %")
            typer.echo(line)
