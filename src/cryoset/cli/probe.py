"""``cryoset probe`` (linear probes of frozen features, ID vs held-out experiments, with and
without acquisition regress-out) and ``cryoset probe-corpus`` (a small store with every probe
target filled)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.cli._progress import count_progress


def register(app: typer.Typer) -> None:
    """Add ``probe`` and ``probe-corpus``."""

    @app.command("probe")
    def probe_cmd(
        config: Path = typer.Argument(..., metavar="CONFIG.yaml", help="Probe configuration (see examples/probe.yaml)."),
        out: Path = option("out", ..., help="Output folder (probes.csv, probes.md, probes.png, …)."),
        as_json: bool = json_option(),
    ) -> None:
        """Linear probes of frozen particle features: balanced accuracy per task, in-distribution
        (held-out particles of the training experiments) and out-of-distribution (experiments
        held out entirely), with and without acquisition regress-out.

        Features are a stored embedding (cryoset embed) or computed from a checkpoint. Tasks:
        symmetry, pixel_size, molecular_weight, max_diameter, emd_resolution, defocus and any
        store column by name. See docs/probes.md.

        Examples
        --------
        cryoset probe examples/probe.yaml -o probes
        """
        from cryoset.workflows.probe import run_probe, summary_lines

        with count_progress() as bar:
            task = bar.add_task("features", total=None)
            summary = run_probe(config, out, argv=sys.argv,
                                on_progress=lambda done, total: bar.update(task, completed=done, total=total))
        if as_json:
            echo_json(summary)
            return
        for line in summary_lines(summary):
            typer.echo(line)

    @app.command("probe-corpus")
    def probe_corpus_cmd(
        out: Path = option("out", ..., help="Output folder (store/, experiments.csv, summary.json)."),
        shared_data: Path | None = typer.Option(
            None, "--shared-data", metavar="DIR",
            help="Shared data folder: adds real single chains from structures/dssp."),
        procedural_chains: int = typer.Option(6, "--procedural-chains", metavar="N", help="Procedural chains."),
        real_chains: int = typer.Option(3, "--real-chains", metavar="N",
                                        help="Real chains (with --shared-data)."),
        particles: int = typer.Option(120, "--particles-per-experiment", metavar="N",
                                      help="Particles per (chain, point group) experiment."),
        seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of everything."),
        as_json: bool = json_option(),
    ) -> None:
        """Build the probe corpus: C1/C2/C3/D2 assemblies of procedural and real chains, simulated
        under varied pixel size, voltage, dose, defocus, Cs and detector label, with symmetry,
        molecular weight, max diameter and resolution annotated.

        Examples
        --------
        cryoset probe-corpus --shared-data ../shared/data -o probe-corpus
        """
        from cryoset.workflows.probe_corpus import ProbeCorpusOptions, build_probe_corpus

        options = ProbeCorpusOptions(procedural_chains=procedural_chains,
                                     real_chains=real_chains if shared_data is not None else 0,
                                     particles_per_experiment=particles, seed=seed)
        with count_progress() as bar:
            task = bar.add_task("experiments", total=None)
            summary = build_probe_corpus(
                out, options, shared_data=shared_data, argv=sys.argv,
                on_start=lambda n: bar.update(task, total=n),
                on_done=lambda name, n: bar.update(task, advance=1, description=name))
        if as_json:
            echo_json(summary)
            return
        typer.echo(f"{summary['particles']} particles in {summary['experiments']} experiments → {summary['store']}")
