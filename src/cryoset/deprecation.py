"""Deprecated spellings: one line on stderr, the same for CLI options and build-config keys.

``warning: --pixel-size is deprecated; use --pixel-size-a`` — a plain stderr line, not a
Python warning, so scripts and pipelines that still use an old spelling keep working (and
test suites that turn warnings into errors do not fail on it). Old spellings are accepted
for one release; docs/cli.md lists them.
"""

from __future__ import annotations

import sys


def deprecation_line(old: str, new: str) -> str:
    """The notice for ``old`` (``warning: OLD is deprecated; use NEW``)."""
    return f"warning: {old} is deprecated; use {new}"


def notify_deprecated(old: str, new: str) -> None:
    """Print the deprecation notice for ``old`` on stderr."""
    print(deprecation_line(old, new), file=sys.stderr)
