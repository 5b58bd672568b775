"""``cryoset demo``: the main job end to end on built-in simulated inputs, with an HTML report.

Simulates micrographs of a procedural protein, estimates their CTF, picks, evaluates the
picks against the truth, extracts, classifies, stores and queries the particles, converts
formats, and runs the density-map labelling and backbone-tracing track. No download.

Examples::

    cryoset demo --out demo-output          # about a minute on 2 cores
    cryoset demo --out /tmp/d --quick       # smaller inputs
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryoset.cli._options import option


def demo(
    out: Path = option("out", Path("demo-output"), help="Output directory."),
    quick: bool = typer.Option(False, "--quick", help="Smaller inputs (for tests)."),
) -> None:
    """Run the end-to-end demo and write OUT/report.html (the numbers in OUT/demo.json).

    Examples:

        cryoset demo --out demo-output

        cryoset demo --out /tmp/d --quick
    """
    from rich.console import Console

    from cryoset.pipeline.demo import run_demo

    console = Console(stderr=True)
    path = run_demo(out, quick=quick, log=lambda line: console.print(line, markup=False, highlight=False))
    typer.echo(f"demo report: {path}")


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command."""
    app.command("demo")(demo)
