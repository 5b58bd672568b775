"""``cryoset validate``: check MRC files against the MRC2014 specification."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from cryoset.cli._options import echo_json, json_option
from cryoset.errors import InputError

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_UNREADABLE = 2


def _check_one(path: Path) -> dict[str, Any]:
    from cryoset.io.mrc import validate_mrc

    try:
        problems = validate_mrc(path)
    except InputError as exc:
        return {"path": str(path), "valid": False, "problems": [], "error": exc.message}
    return {"path": str(path), "valid": not problems, "problems": problems, "error": None}


def check_files(paths: list[Path], *, progress: bool = False) -> list[dict[str, Any]]:
    """Validate each file; one result dict per file (``path``, ``valid``, ``problems``, ``error``).

    With ``progress=True`` a rich progress bar is drawn on stderr (big stacks take seconds each).
    """
    if not progress:
        return [_check_one(p) for p in paths]
    from rich.console import Console
    from rich.progress import Progress

    results: list[dict[str, Any]] = []
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("validating", total=len(paths))
        for path in paths:
            results.append(_check_one(path))
            bar.advance(task)
    return results


def exit_code(results: list[dict[str, Any]]) -> int:
    """2 if any file was unreadable, else 1 if any failed a rule, else 0."""
    if any(r["error"] is not None for r in results):
        return EXIT_UNREADABLE
    if any(not r["valid"] for r in results):
        return EXIT_INVALID
    return EXIT_VALID


def register(app: typer.Typer) -> None:
    """Add the ``validate`` command to ``app``."""

    @app.command("validate")
    def validate(
        files: list[Path] = typer.Argument(..., help="MRC/MRCS files (.gz/.bz2 allowed).", show_default=False),
        as_json: bool = json_option("Print one JSON object: files (path, valid, problems, error of each) and valid (all valid)."),
    ) -> None:
        """Check MRC files against the MRC2014 specification; print every rule that fails.

        Exit code 0 if every file is valid, 1 if any file breaks a rule, 2 if any file cannot be read as MRC at all (missing, empty, shorter than a header).

        Examples:

            cryoset validate emd_5168.map particles.mrcs

            cryoset validate --json maps/*.mrc > report.json
        """
        results = check_files(list(files), progress=len(files) > 1 and sys.stderr.isatty())
        if as_json:
            echo_json({"files": results, "valid": all(r["valid"] for r in results)})
        else:
            for r in results:
                if r["error"] is not None:
                    print(f"error: {r['path']}: {r['error']}", file=sys.stderr)
                elif r["valid"]:
                    typer.echo(f"{r['path']}: valid MRC2014")
                else:
                    n = len(r["problems"])
                    typer.echo(f"{r['path']}: INVALID ({n} rule{'s' if n != 1 else ''} failed)")
                    for problem in r["problems"]:
                        typer.echo(f"  - {problem}")
        code = exit_code(results)
        if code:
            raise typer.Exit(code=code)
