"""``cryoset train voxel`` (train the voxel network) and ``cryoset train voxel-corpus`` (its data)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.cli._progress import count_progress
from cryoset.errors import InputError


def _loss_progress() -> Any:
    from rich.progress import TextColumn

    return count_progress(TextColumn("{task.fields[loss]}"))


train_app = typer.Typer(help="Train the reference models.", no_args_is_help=True)


def _read_config(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise InputError(path, "no such configuration file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"is not a YAML configuration ({first})") from None
    if not isinstance(data, dict):
        raise InputError(path, "a training configuration must be a YAML mapping (data:, model:, train:)")
    unknown = sorted(set(data) - {"data", "out", "model", "train"})
    if unknown:
        raise InputError(path, f"unknown section(s) {', '.join(map(str, unknown))} (known: data, out, model, train)")
    return data


@train_app.command("voxel")
def voxel_cmd(
    config: Path = typer.Argument(..., metavar="CONFIG.yaml", help="Training configuration (YAML)."),
    out: Path | None = option("out", None, help="Run folder (default: the config's out:)."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue from the last checkpoint in the run folder."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu or cuda."),
    as_json: bool = json_option(),
) -> None:
    """Train the voxel network (backbone atoms, amino acids, secondary structure) on map datasets.

    The configuration has three sections; relative paths are relative to the file:

        data: corpus/                # map build / map prepare folders or subgrids.zarr stores
        out: runs/voxel
        model: {arch: unet, base_channels: 16}
        train: {epochs: 30, batch_size: 8, lr: 0.002, seed: 0}

    Writes checkpoints/epoch_NNNN/, metrics.csv, metrics.png, model.safetensors and
    best.safetensors. Several processes: torchrun --nproc-per-node N -m cryoset train voxel CONFIG.

    Examples
    --------
    cryoset train voxel voxel.yaml -o runs/voxel
    """
    from cryoset.learn.voxel_train import TrainVoxelSettings, train_voxel
    from cryoset.learn.voxelnet import VoxelNetConfig
    from cryoset.provenance import make_provenance
    from cryoset.report.training import plot_training_curves

    data = _read_config(config)
    base = config.resolve().parent
    items = data.get("data")
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list) or not items:
        raise InputError(config, "data: must list at least one map dataset folder")
    paths = [p if p.is_absolute() else base / p for p in (Path(str(i)) for i in items)]
    for p in paths:
        if not p.exists():
            raise InputError(p, "no such map dataset folder")
    run = out or (Path(str(data["out"])) if data.get("out") else None)
    if run is None:
        raise InputError(config, "give the run folder with --out or out:")
    if not run.is_absolute() and out is None:
        run = base / run
    if run.exists() and not run.is_dir():
        raise InputError(run, "exists and is not a folder")
    model_cfg = VoxelNetConfig.from_mapping(data.get("model") or {}, config)
    settings = TrainVoxelSettings.from_mapping(data.get("train") or {}, config)
    if device not in ("auto", "cpu", "cuda"):
        raise InputError("--device", f"must be auto, cpu or cuda, got {device!r}")
    prov = make_provenance("train voxel", {"model": model_cfg.to_json(), "train": repr(settings)}, [config])
    run.mkdir(parents=True, exist_ok=True)
    with _loss_progress() as bar:
        task = bar.add_task("epoch", total=None, loss="")
        state = {"epoch": 0}

        def on_step(step: int, total: int, loss: float) -> None:
            if step == 0:
                state["epoch"] += 1
                bar.reset(task, total=total, description=f"epoch {state['epoch']}")
            bar.update(task, completed=step + 1, loss=f"loss {loss:.4f}")

        result = train_voxel(paths, run, model_config=model_cfg, settings=settings, resume=resume,
                             device=device, provenance=prov, on_step=on_step,
                             on_epoch=lambda rows: plot_training_curves(rows, run / "metrics.png"))
    summary = {"run": str(run), **{k: v for k, v in result.items() if k != "last_metrics"},
               "last_metrics": result["last_metrics"]}
    if as_json:
        echo_json(summary)
    else:
        last = result["last_metrics"]
        f1 = ", ".join(f"{k.removeprefix('validation_')} {v:.3f}" for k, v in last.items()
                       if k.startswith("validation_") and k.endswith("_f1"))
        typer.echo(f"trained {result['epochs_run']} epochs on {result['n_train']} sub-grids "
                   f"({result['subgrids_per_s']:.1f}/s) → {run / 'model.safetensors'}"
                   + (f"; validation F1: {f1}" if f1 else ""))


@train_app.command("voxel-corpus")
def voxel_corpus_cmd(
    structures: list[Path] = typer.Argument(None, metavar="STRUCTURE…",
                                            help="PDB/mmCIF files (default: --shared-data's structures)."),
    out: Path = option("out", ..., help="Corpus folder (a map build layout)."),
    shared_data: Path | None = typer.Option(None, "--shared-data", metavar="PATH",
                                            help="The shared data folder whose structures/ to use."),
    variants: int = typer.Option(2, "--variants", metavar="N", help="Simulated maps per structure."),
    seed: int = option("seed", 0),
    as_json: bool = json_option(),
) -> None:
    """Build the voxel network's training corpus: simulated maps of real structures, split by structure.

    Each map: a random resolution in 2.5–5 Å, B-factors from the model, 5 % disordered side
    chains, low-passed noise, and half of the maps masked around the model; then the map
    prepare products (1 Å, normalised, labels, sub-grids). Same seed, same corpus.

    Examples
    --------
    cryoset train voxel-corpus --shared-data ../shared/data -o corpus --variants 2
    """
    from cryoset.workflows.voxel_corpus import CorpusOptions, build_voxel_corpus, default_structures

    groups: dict[str, str] = {}
    files = list(structures or [])
    if shared_data is not None:
        found, groups = default_structures(shared_data)
        files += found
    if not files:
        raise InputError("STRUCTURE", "give structure files or --shared-data")
    from cryoset.io.structure import read_structure

    if variants < 1:
        raise InputError("--variants", f"must be at least 1, got {variants}")
    for f in files:
        if not f.is_file():
            raise InputError(f, "no such structure file")
        read_structure(f)  # a file that is not a usable model is refused before anything is written
    with _loss_progress() as bar:
        task = bar.add_task("maps", total=len(files) * variants, loss="")
        table = build_voxel_corpus(files, out, groups=groups, options=CorpusOptions(variants=variants, seed=seed),
                                   on_done=lambda row: bar.advance(task), argv=sys.argv)
    counts = table.groupby("split").size().to_dict()
    failed = table[table["status"] != "ok"]
    summary = {"out": str(out), "maps": len(table), "failed": len(failed),
               "splits": {str(k): int(v) for k, v in counts.items()}}
    if as_json:
        echo_json(summary)
    else:
        typer.echo(f"wrote {len(table)} maps to {out} ({json.dumps(summary['splits'])}); "
                   f"{len(failed)} failed")
    if len(failed):
        raise typer.Exit(1)


@train_app.command("ssl-corpus")
def ssl_corpus_cmd(
    shared_data: Path = typer.Option(..., "--shared-data", metavar="PATH",
                                     help="The shared data folder (structures/, micrographs/empiar_10028/)."),
    out: Path = option("out", ..., help="Corpus folder (train-store/, heldout-store/, experiments.csv)."),
    particles_per_experiment: int = typer.Option(300, "--particles-per-experiment", metavar="N",
                                                 help="Simulated particles per experiment."),
    crops_per_micrograph: int = typer.Option(700, "--crops-per-micrograph", metavar="N",
                                             help="Random windows per real EMPIAR-10028 micrograph (train only)."),
    box_px: int = option("box_px", 64, help="Box edge of every image, pixels."),
    seed: int = option("seed", 0),
    as_json: bool = json_option(),
) -> None:
    """Build the self-supervised training corpus and its held-out probe set (two particle stores).

    Simulated experiments (one structure under one acquisition setting: pixel size, voltage,
    defocus range, dose) of the shared structures and procedural proteins, plus random windows
    of the real EMPIAR-10028 micrographs (train only). Held-out experiments use proteins and
    acquisition combinations never in train. Same seed, same stores. Details: docs/ssl.md.

    Examples
    --------
    cryoset train ssl-corpus --shared-data ../shared/data -o build/ssl-corpus --seed 0
    """
    from cryoset.cli._paths import require_directory_location
    from cryoset.workflows.ssl_corpus import SSLCorpusOptions, build_ssl_corpus

    require_directory_location(out, "--out")
    options = SSLCorpusOptions(particles_per_experiment=particles_per_experiment, box_px=box_px,
                               crops_per_micrograph=crops_per_micrograph, seed=seed)
    with _loss_progress() as bar:
        task = bar.add_task("experiments", total=None, loss="")

        def on_done(name: str, n: int) -> None:
            bar.update(task, advance=1, loss=name)

        summary = build_ssl_corpus(shared_data, out, options, argv=sys.argv,
                                   on_start=lambda n: bar.update(task, total=n), on_done=on_done)
    if as_json:
        echo_json(summary)
    else:
        typer.echo(f"wrote {out}: {summary['train_particles']} train particles "
                   f"({summary['train_experiments']} experiments, {summary['micrograph_crops']} micrograph crops), "
                   f"{summary['heldout_particles']} held-out ({summary['heldout_experiments']} experiments) "
                   f"in {summary['build_seconds']} s")


@train_app.command("ssl")
def ssl_cmd(
    config: Path = typer.Argument(..., metavar="CONFIG.yaml", help="SSL training configuration (YAML)."),
    out: Path = option("out", ..., help="Run folder (checkpoints/, metrics.csv, metrics.png, model.safetensors)."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue from the last checkpoint in the run folder."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu or cuda."),
    as_json: bool = json_option(),
) -> None:
    """Train a ViT particle encoder self-supervised (DINO + iBOT + KoLeo) on particle stores.

    The configuration names the stores (data:, relative to the file), the ViT (model:), heads,
    crops, losses, teacher and optimiser schedules; see docs/ssl.md and examples/ssl-*.yaml.
    Writes checkpoints/epoch_NNNN/ (resumable), metrics.csv, metrics.png and model.safetensors
    (the teacher backbone, for cryoset embed / featuremap --checkpoint). Several processes:
    torchrun --nproc-per-node N -m cryoset train ssl CONFIG -o OUT.

    Examples
    --------
    cryoset train ssl examples/ssl-tiny-cpu.yaml -o build/ssl-tiny
    """
    from cryoset.cli._paths import require_directory_location
    from cryoset.learn.ssl_train import SSLConfig, train_ssl
    from cryoset.provenance import make_provenance
    from cryoset.report.ssl_training import plot_ssl_training

    if device not in ("auto", "cpu", "cuda"):
        raise InputError("--device", f"must be auto, cpu or cuda, got {device!r}")
    settings = SSLConfig.from_yaml(config)
    require_directory_location(out, "--out")
    prov = make_provenance("train ssl", {"config": settings.to_json(), "data": list(settings.data)},
                           [config], argv=sys.argv)
    with _loss_progress() as bar:
        task = bar.add_task("epoch", total=None, loss="")

        def on_step(epoch: int, step: int, total: int, loss: float) -> None:
            if step == 0:
                bar.reset(task, total=total, description=f"epoch {epoch + 1}/{settings.optim.epochs}")
            bar.update(task, completed=step + 1, loss=f"loss {loss:.4f}")

        result = train_ssl(settings, out, device=device, resume=resume, provenance=prov, on_step=on_step,
                           on_epoch=lambda rows: plot_ssl_training(rows, out / "metrics.png"))
    summary = {"run": str(out), **result}
    if os.environ.get("RANK", "0") != "0":  # torchrun: one report, from rank 0
        return
    if as_json:
        echo_json(summary)
    else:
        last = result["last_metrics"]
        typer.echo(f"trained {result['epochs_run']} epochs on {result['n_particles']} particles "
                   f"({result['images_per_s']:.1f} images/s) → {out / 'model.safetensors'}"
                   + (f"; loss {last['loss']:.3f}, effective rank {last.get('effective_rank', float('nan')):.1f}"
                      if last else ""))


def register(app: typer.Typer) -> None:
    """Add the ``train`` group."""
    app.add_typer(train_app, name="train")
