"""The ``cryoset`` entry point.

Every command group lives in its own module under ``cryoset.cli`` and exposes
``register(app: typer.Typer) -> None``. This file is the one place where they are
registered. Bad input (:class:`cryoset.errors.InputError`, usage errors, and operating-system
errors about a path: a missing input, an output whose parent is a regular file) is printed
as one line on stderr, naming the file or parameter, with exit code 2 and no traceback.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from pathlib import Path

import typer

from cryoset.cli._options import VocabularyGroup, use_vocabulary
from cryoset.cli._paths import blocking_file
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
    "refine",
    "postprocess",
    "abinitio",
    "poses",
    "maps",
    "trace",
    "predict",
    "train",
    "embed",
    "probe",
    "store",
    "build",
    "fetch",
    "datasets",
    "view",
)


#: Operating-system errors about one path (a missing or unreadable input, an output whose
#: parent is a regular file): printed as one line naming the path, exit code 2.
PATH_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError,
)
_USER_ERRORS: tuple[type[Exception], ...] = (InputError, typer.TyperException, *PATH_ERRORS)
#: ``errno`` values of other operating-system errors that are about the user's paths or disk,
#: not a bug (a file name too long, a read-only or full file system, a symbolic-link loop).
_ENVIRONMENT_ERRNOS: frozenset[int] = frozenset(
    getattr(errno, name) for name in ("ENAMETOOLONG", "EROFS", "ENOSPC", "EDQUOT", "ELOOP", "EFBIG")
    if hasattr(errno, name)
)


def is_user_os_error(exc: BaseException) -> bool:
    """An operating-system error the user can act on: one about a named path, or a full/read-only disk."""
    return isinstance(exc, OSError) and (isinstance(exc, PATH_ERRORS) or exc.filename is not None
                                         or exc.errno in _ENVIRONMENT_ERRNOS)


def _version_callback(value: bool) -> None:
    if value:
        from cryoset import __version__

        typer.echo(f"cryoset {__version__}")
        raise typer.Exit()


def _names(sub: typer.Typer) -> set[str] | None:
    """The top-level names ``sub``'s registered commands and groups get (None: one is unknown)."""
    names: set[str] = set()
    for command in sub.registered_commands:
        if isinstance(command.name, str):
            names.add(command.name)
        elif command.callback is not None:
            names.add(typer.main.get_command_name(command.callback.__name__))
        else:
            return None
    for group in sub.registered_groups:
        name = group.name
        if not isinstance(name, str) and isinstance(group.typer_instance, typer.Typer):
            name = group.typer_instance.info.name
        if not isinstance(name, str):
            return None
        names.add(name)
    return names


def build_app(only: str | None = None) -> typer.Typer:
    """Create the Typer application with every command group registered.

    ``only``: register just the module that provides the top-level command or group ``only``
    (what ``cryoset only …`` runs; Typer then builds that module's commands alone, not all of
    them), or everything when no module provides it (so unknown names fail as before).
    """
    app = typer.Typer(
        name="cryoset",
        cls=VocabularyGroup,
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

    found = False
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"cryoset.cli.{name}")
        if only is None:
            module.register(app)
            continue
        sub = typer.Typer()
        module.register(sub)
        names = _names(sub)
        if names is None or only in names:
            app.registered_commands.extend(sub.registered_commands)
            app.registered_groups.extend(sub.registered_groups)
            found = found or names is not None
    if only is not None and not found:
        return build_app()
    use_vocabulary(app)  # old option spellings, no Python types in help (cli/_options.py)
    return app


def _one_line(text: str) -> str:
    """Collapse a (possibly multi-line) library message into one line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _os_error_line(exc: OSError) -> str:
    """Name the path an operating-system error is about (and the regular file in its way)."""
    name = exc.filename
    reason = (exc.strerror or str(exc)).strip().lower() or type(exc).__name__
    if name is None:
        return f"error: {reason}"
    path = Path(os.fsdecode(name))
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        blocker = blocking_file(path)
        if blocker is not None and blocker == path:
            return f"error: {path}: exists and is not a directory, so nothing can be written under it"
        if blocker is not None:
            return (f"error: {blocker}: is a regular file, not a directory, so {path} "
                    "cannot be created under it")
    if isinstance(exc, FileNotFoundError):
        return f"error: {path}: no such file or directory"
    if isinstance(exc, IsADirectoryError):
        return f"error: {path}: is a directory"
    if isinstance(exc, PermissionError):
        return f"error: {path}: permission denied"
    return f"error: {path}: {reason}"


def error_line(exc: BaseException) -> str:
    """The one line printed for a user-facing error."""
    if isinstance(exc, InputError):
        line = f"error: {exc}"
    elif isinstance(exc, typer.TyperException) and hasattr(exc, "format_message"):
        line = f"error: {exc.format_message()}"
    elif isinstance(exc, OSError):
        line = _os_error_line(exc)
    else:
        line = f"error: {exc}"
    return _one_line(line)


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code (the console script exits with it)."""
    args = sys.argv[1:] if argv is None else argv
    # ``cryoset COMMAND …`` builds only COMMAND's module; the root help builds everything
    app = build_app(args[0] if args and not args[0].startswith("-") else None)
    try:
        result = app(args=argv, prog_name="cryoset", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except _USER_ERRORS as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_user_os_error(exc):
            raise
        print(error_line(exc), file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
