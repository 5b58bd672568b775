"""The ``cryoset`` entry point.

Every command group lives in its own module under ``cryoset.cli`` and exposes
``register(app: typer.Typer) -> None``. This file is the one place where they are
registered. Bad input (:class:`cryoset.errors.InputError`, usage errors) is printed
as one line on stderr with exit code 2 and no traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from cryoset import __version__
from cryoset.errors import InputError

#: Modules under ``cryoset.cli`` whose ``register`` adds commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "info",
    "validate",
    "convert",
    "simulate",
    "ctf",
    "pick",
    "classify",
    "reconstruct",
    "maps",
    "trace",
    "store",
    "build",
    "fetch",
    "datasets",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cryoset {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """Create the Typer application with every command group registered."""
    app = typer.Typer(
        name="cryoset",
        help="Turn raw cryo-EM data into curated, annotated, AI-ready datasets.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode="rich",
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ) -> None:
        """cryoset: cryo-EM datasets for machine learning."""

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"cryoset.cli.{name}")
        module.register(app)
    return app


def error_line(exc: BaseException) -> str:
    """The one line printed for a user-facing error."""
    if isinstance(exc, InputError):
        return f"error: {exc}"
    if isinstance(exc, typer.TyperException) and hasattr(exc, "format_message"):
        return f"error: {exc.format_message()}"
    if isinstance(exc, FileNotFoundError):
        return f"error: {exc.filename}: no such file"
    if isinstance(exc, IsADirectoryError):
        return f"error: {exc.filename}: is a directory"
    if isinstance(exc, PermissionError):
        return f"error: {exc.filename}: permission denied"
    return f"error: {exc}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code (the console script exits with it)."""
    app = build_app()
    try:
        result = app(args=argv, prog_name="cryoset", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except (InputError, typer.TyperException, FileNotFoundError, IsADirectoryError,
            PermissionError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
