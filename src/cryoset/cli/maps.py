"""``cryoset map …``: Cryo2StructData-style training data from density maps and models.

Examples::

    cryoset map prepare emd_5168.map --model 3MFP.pdb --out data/EMD-5168
    cryoset map prepare emd_1832.map --out data/EMD-1832 --method fourier --voxel-size-a 1.0
    cryoset map subgrids data/EMD-5168/emd_normalized_map.mrc --out density.zarr
    cryoset map stitch data/EMD-5168/subgrids.zarr --array ca --out ca.mrc
    cryoset map build maps.csv --out data --workers 2 --test-list test_ids.txt
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError

_METHODS = ("trilinear", "fourier")


def _options(voxel_size: float, method: str, percentile: float, box: int, overlap: int,
             subgrids: bool = True, label_rule: str = "nearest") -> Any:
    from cryoset.maps.dataset import LABEL_RULES, PrepareOptions

    if method not in _METHODS:
        raise InputError("--method", f"must be one of {', '.join(_METHODS)}, not {method!r}")
    if label_rule not in LABEL_RULES:
        raise InputError("--label-rule", f"must be one of {', '.join(LABEL_RULES)}, not {label_rule!r}")
    if voxel_size <= 0:
        raise InputError("--voxel-size-a", f"must be positive, got {voxel_size}")
    if not 0 < percentile <= 100:
        raise InputError("--percentile", f"must be in (0, 100], got {percentile}")
    if box < 1 or overlap < 0 or box - 2 * overlap < 1:
        raise InputError("--box-px/--overlap-px", f"box {box} with overlap {overlap} leaves no core")
    return PrepareOptions(voxel_size_a=voxel_size, method=method,  # type: ignore[arg-type]
                          percentile=percentile, box=box, overlap=overlap, subgrids=subgrids,
                          label_rule=label_rule)  # type: ignore[arg-type]


def _label_rule_option() -> Any:
    return typer.Option("nearest", "--label-rule", metavar="RULE",
                        help="Label voxel assignment: nearest (nearest voxel centre) or cryo2struct "
                             "(the paper's Formula 1, as the published label files).")


def register(app: typer.Typer) -> None:
    """Add the ``map`` sub-command group."""
    group = typer.Typer(
        name="map",
        help="Density-map datasets (Cryo2StructData): resample, normalise, label, sub-grid.",
        no_args_is_help=True,
    )

    @group.command("prepare")
    def prepare(
        map_path: Path = typer.Argument(..., metavar="MAP", help="EMDB map (MRC/CCP4, may be .gz)."),
        out: Path = option("out", ..., help="Output directory."),
        model: Path | None = typer.Option(None, "--model", metavar="PATH", help="Deposited model (PDB/mmCIF) in the map frame."),
        voxel_size: float = option("voxel_size_a", 1.0, help="Target voxel size, Å."),
        method: str = typer.Option("trilinear", "--method", help="Resampling: trilinear or fourier."),
        percentile: float = typer.Option(95.0, "--percentile", metavar="PERCENT", help="Percentile of positive values → 1."),
        box: int = option("box_px", 32, help="Sub-grid edge, voxels."),
        overlap: int = option("overlap_px", 6),
        subgrids: bool = typer.Option(True, "--subgrids/--no-subgrids", help="Also write subgrids.zarr."),
        label_rule: str = _label_rule_option(),
        as_json: bool = json_option(),
    ) -> None:
        """Resample to --voxel-size-a, normalise and (with --model) write the four label maps.

        Examples:

            cryoset map prepare emd_5168.map --model 3MFP.pdb --out EMD-5168

            cryoset map prepare emd_5168.map --model 3MFP.pdb --label-rule cryo2struct --out EMD-5168

            cryoset map prepare emd_5168.map --voxel-size-a 1.0 --out EMD-5168 --json
        """
        from cryoset.workflows.maps import prepare_map

        if not map_path.is_file():
            raise InputError(map_path, "no such map file")
        if model is not None and not model.is_file():
            raise InputError(model, "no such model file")
        row = prepare_map(map_path, out, model,
                          options=_options(voxel_size, method, percentile, box, overlap, subgrids, label_rule))
        if row.get("warnings"):
            typer.echo(f"warning: {row['warnings']}", err=True)
        keys = ("shape_z", "shape_y", "shape_x", "n_ca", "n_ca_labelled", "n_atoms_outside",
                "n_collisions", "ca_exact_fraction", "secondary_source", "mrc_valid", "n_subgrids")
        result = {k: row[k] for k in keys if k in row}
        if as_json:
            echo_json(result)
        else:
            for key, value in result.items():
                typer.echo(f"{key}: {value}")

    @group.command("subgrids")
    def subgrids_cmd(
        maps: list[Path] = typer.Argument(..., metavar="MRC...", help="Same-shape maps; the first is 'density'."),
        out: Path = option("out", ..., help="Zarr store to write."),
        names: str | None = typer.Option(None, "--names", metavar="NAMES", help="Comma-separated array names (default: file stems)."),
        box: int = option("box_px", 32, help="Sub-grid edge, voxels."),
        overlap: int = option("overlap_px", 6),
    ) -> None:
        """Cut maps into overlapping sub-grids stored as one Zarr v3 group.

        Examples:

            cryoset map subgrids emd_normalized_map.mrc atom_ca_emd_normalized_map.mrc --names density,ca --out sub.zarr
        """
        from cryoset.workflows.maps import subgrid_maps

        _options(1.0, "trilinear", 95.0, box, overlap)
        subgrid_maps(maps, out, names=names.split(",") if names else None, box=box, overlap=overlap)
        typer.echo(f"wrote {out}")

    @group.command("stitch")
    def stitch_cmd(
        store: Path = typer.Argument(..., metavar="ZARR", help="Sub-grid store (from prepare or subgrids)."),
        out: Path = option("out", ..., help="MRC file to write."),
        array: str = typer.Option("density", "--array", metavar="NAME", help="Which array to stitch."),
        as_json: bool = json_option(),
    ) -> None:
        """Rebuild a full map from the cores of its sub-grids.

        Examples:

            cryoset map stitch EMD-5168/subgrids.zarr --array ca --out ca.mrc
        """
        from cryoset.workflows.maps import stitch_map

        result = stitch_map(store, out, array)
        if as_json:
            echo_json(result)
        else:
            typer.echo(f"wrote {out} {tuple(result['shape_zyx'])}")

    @group.command("build")
    def build(
        map_list: Path = typer.Argument(..., metavar="LIST", help="CSV: emdb_id,map[,model,resolution_a,pdb_id]."),
        out: Path = option("out", ..., help="Output root directory."),
        workers: int = option("workers", 2, help="Worker processes."),
        test_list: Path | None = typer.Option(None, "--test-list", help="File of EMDB ids (one a line) for the test set."),
        validation_fraction: float = typer.Option(0.1, "--validation-fraction", metavar="FRACTION",
                                                  help="Validation share per resolution stratum."),
        seed: int = option("seed", 0, help="Seed of the train/validation split."),
        voxel_size: float = option("voxel_size_a", 1.0, help="Target voxel size, Å."),
        method: str = typer.Option("trilinear", "--method", help="Resampling: trilinear or fourier."),
        percentile: float = typer.Option(95.0, "--percentile", metavar="PERCENT", help="Percentile of positive values → 1."),
        box: int = option("box_px", 32, help="Sub-grid edge, voxels."),
        overlap: int = option("overlap_px", 6),
        label_rule: str = _label_rule_option(),
        as_json: bool = json_option(),
    ) -> None:
        """Prepare every map of LIST in parallel; write metadata.parquet/.csv with splits.

        Examples:

            cryoset map build maps.csv --out dataset --workers 2 --test-list test.txt
        """
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from cryoset.workflows.maps import build_dataset, read_map_list, read_test_ids

        options = _options(voxel_size, method, percentile, box, overlap, label_rule=label_rule)
        if workers < 1:
            raise InputError("--workers", f"must be >= 1, got {workers}")
        if not 0 <= validation_fraction < 1:
            raise InputError("--validation-fraction", f"must be in [0, 1), got {validation_fraction}")
        test_ids = read_test_ids(test_list) if test_list is not None else []
        n = len(read_map_list(map_list))
        out.mkdir(parents=True, exist_ok=True)  # an unusable --out fails here, before any work
        from rich.console import Console

        with Progress(TextColumn("maps"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=Console(stderr=True)) as progress:
            task = progress.add_task("", total=n)

            def done(row: dict[str, Any]) -> None:
                progress.update(task, advance=1, description=f"{row['emdb_id']} {row.get('status')}")

            table = build_dataset(map_list, out, options=options, workers=workers,
                                  validation_fraction=validation_fraction, seed=seed,
                                  test_ids=test_ids, on_done=done)
        failed = table[table["status"] != "ok"]
        for _, r in failed.iterrows():
            typer.echo(f"failed: {r['emdb_id']}: {r['error']}", err=True)
        counts = table["split"].value_counts().to_dict()
        if as_json:
            echo_json({"out": str(out), "maps": len(table), "prepared": len(table) - len(failed),
                       "failed": [str(e) for e in failed["emdb_id"]], "splits": counts,
                       "metadata": str(out / "metadata.parquet")})
        else:
            typer.echo(f"{len(table) - len(failed)}/{len(table)} maps prepared; splits {counts}; "
                       f"metadata in {out / 'metadata.parquet'}")
        if len(failed):
            raise typer.Exit(1)

    app.add_typer(group)
