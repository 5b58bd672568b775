"""``cryoset embed`` (ViT vectors per particle, into the store) and ``cryoset featuremap``
(a micrograph's sliding-window feature grid and its PCA colour image)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.cli._progress import count_progress


def register(app: typer.Typer) -> None:
    """Add ``embed`` and ``featuremap``."""

    @app.command("embed")
    def embed_cmd(
        store: Path = typer.Argument(..., metavar="STORE", help="Particle store."),
        checkpoint: Path | None = typer.Option(
            None, "--checkpoint", "--weights", metavar="PATH",
            help="ViT weights (.safetensors, or a published DINOv3 teacher .pth, read weights-only); "
                 "default: the shipped model."),
        kind: str = typer.Option("cls", "--kind", metavar="KIND",
                                 help="cls, patch_mean or both ([CLS, mean of patch tokens])."),
        name: str | None = typer.Option(None, "--name", metavar="NAME",
                                        help="Embedding name (default: KIND); SQL view embeddings_NAME."),
        batch_size: int = typer.Option(64, "--batch-size", metavar="N", help="Images per forward pass."),
        where: str | None = typer.Option(None, "--where", metavar="SQL",
                                         help="Condition on the particles view: embed only these particles."),
        device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu or cuda."),
        replace: bool = typer.Option(False, "--replace",
                                     help="Replace an embedding of this name made with other settings."),
        as_json: bool = json_option(),
    ) -> None:
        """Write one float16 feature vector per particle into the store, beside the images.

        Vectors go to experiments/<id>/embeddings/NAME/ (vectors.zarr and index.parquet) and are
        queryable with the annotations: cryoset query "SELECT p.structure, e.embedding FROM
        particles p JOIN embeddings_cls e USING (experiment_id, particle_index)" --store STORE.
        A killed run continues where it stopped when started again.

        Examples
        --------
        cryoset embed store/ --checkpoint ssl/model.safetensors --kind both
        """
        from cryoset.workflows.embed import embed_store

        with count_progress() as bar:
            task = bar.add_task("particles", total=None)
            summary = embed_store(store, checkpoint=checkpoint, kind=kind, name=name, batch_size=batch_size,
                                  where=where, device=device, replace=replace,
                                  on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                                  argv=sys.argv)
        if as_json:
            echo_json(summary)
        else:
            typer.echo(f"embedded {summary['particles']} particles of {len(summary['experiments'])} experiment(s) "
                       f"({summary['dim']}-d {summary['kind']}); query them as {summary['view']}")

    @app.command("featuremap")
    def featuremap_cmd(
        micrograph: Path = typer.Argument(..., metavar="MICROGRAPH", help="Micrograph (MRC, PNG, TIFF, JPEG)."),
        out: Path = option("out", ..., help="Output folder (features.zarr, pca_rgb.png, …)."),
        checkpoint: Path | None = typer.Option(None, "--checkpoint", "--weights", metavar="PATH",
                                               help="ViT weights (as for embed); default: the shipped model."),
        window_px: int = typer.Option(64, "--window-px", metavar="PX", help="Window side, micrograph pixels."),
        stride_px: int = typer.Option(16, "--stride-px", metavar="PX", help="Step between windows, pixels."),
        kind: str = typer.Option("cls", "--kind", metavar="KIND", help="cls, patch_mean or both."),
        invert: bool = typer.Option(True, "--invert/--no-invert",
                                    help="Invert contrast first (particles dark in the micrograph)."),
        batch_size: int = typer.Option(64, "--batch-size", metavar="N", help="Windows per forward pass."),
        device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu or cuda."),
        as_json: bool = json_option(),
    ) -> None:
        """Feature map of a micrograph: a ViT vector per sliding window, and its PCA as colours.

        Windows are normalised as the training particles were (see docs/ssl.md); the grid is
        centred on the micrograph. Writes OUT/features.zarr (grid, window centres, provenance),
        OUT/pca_rgb.png (first three principal components as RGB), OUT/pca_pc1.png and
        OUT/pca_overlay.png (colours blended over the micrograph).

        Examples
        --------
        cryoset featuremap mic.mrc --window-px 64 --stride-px 16 -o mic_features
        """
        from cryoset.cli._paths import require_directory_location
        from cryoset.workflows.featuremap import feature_map

        require_directory_location(out, "--out")
        with count_progress() as bar:
            task = bar.add_task("windows", total=None)
            summary = feature_map(micrograph, out, checkpoint=checkpoint, window_px=window_px, stride_px=stride_px,
                                  kind=kind, invert=invert, batch_size=batch_size, device=device,
                                  on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                                  argv=sys.argv)
        if as_json:
            echo_json({k: v for k, v in summary.items() if k != "provenance"})
        else:
            gy, gx = summary["grid_shape"]
            typer.echo(f"wrote a {gy}×{gx} feature grid ({summary['dim']}-d) and its PCA colours to {out}")
