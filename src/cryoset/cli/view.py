"""``cryoset view``: the local web app for curation (docs/view.md).

Examples::

    cryoset view demo_out
    cryoset view demo_out --port 8800
    cryoset view demo_out --host 0.0.0.0 --port 8800
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryoset.errors import InputError


def register(app: typer.Typer) -> None:
    """Add the ``view`` command."""

    @app.command("view")
    def view(
        project: Path = typer.Argument(..., metavar="PROJECT_DIR",
                                       help="Project folder (what cryoset demo or build wrote)."),
        port: int = typer.Option(8765, "--port", metavar="N", help="TCP port."),
        host: str = typer.Option("127.0.0.1", "--host", metavar="H",
                                 help="Address to bind; loopback unless given (0.0.0.0: every interface)."),
    ) -> None:
        """Browse and curate a project in the browser: micrographs with picks, inspection
        thresholds, 2D class selection and CTF fits, written back into the project's files.

        Examples:

            cryoset view demo_out --port 8800
        """
        if not 0 < port < 65536:
            raise InputError("--port", f"must be between 1 and 65535, got {port}")
        if not host.strip():
            raise InputError("--host", "must not be empty")
        from cryoset.view.project import open_project

        project_ = open_project(project)  # a bad folder: one line, exit 2, before the server starts
        from cryoset.view.app import serve

        serve(project_.root, host=host, port=port,
              announce=lambda url: typer.echo(f"cryoset view: {project_.root} on {url} (Ctrl-C stops)", err=True))
