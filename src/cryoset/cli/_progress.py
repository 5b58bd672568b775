"""The progress bar of long commands: on stderr (stdout stays for results and --json), gone when done."""

from __future__ import annotations

from typing import Any


def count_progress(*extra_columns: Any) -> Any:
    """A rich ``Progress``: description, bar, done/total, elapsed time, then ``extra_columns``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    *extra_columns, console=Console(stderr=True), transient=True)
