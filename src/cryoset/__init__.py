"""cryoset: raw cryo-EM data to curated, annotated, AI-ready datasets."""

from __future__ import annotations

import os
import sys

__all__ = ["__version__", "numba_cache_dir"]


def numba_cache_dir(package_dir: str = os.path.dirname(os.path.abspath(__file__)),
                    environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """Where numba caches cryoset's compiled kernels, set in ``NUMBA_CACHE_DIR`` when needed.

    numba writes its cache beside the sources (``__pycache__``) when it can. When the
    installed package is read-only (a system or container site-packages), that fails and
    every process would compile again; then ``NUMBA_CACHE_DIR`` is set to
    ``$XDG_CACHE_HOME/cryoset/numba`` (default ``~/.cache/cryoset/numba``). A value the user
    set is kept. Runs when :mod:`cryoset` is imported, before any module imports numba (numba
    reads the variable when it is imported). Returns the directory set, or None.
    """
    if environ.get("NUMBA_CACHE_DIR") or os.access(package_dir, os.W_OK):
        return None
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "cryoset", "numba")
    environ["NUMBA_CACHE_DIR"] = path
    config = sys.modules.get("numba.core.config")  # numba imported first: too late for the variable
    if config is not None and environ is os.environ:
        config.CACHE_DIR = path  # type: ignore[attr-defined]
    return path


numba_cache_dir()


def __getattr__(name: str) -> str:
    """``cryoset.__version__``, read from the installed metadata on first use (keeps
    ``import cryoset`` free of ``importlib.metadata``, which costs tens of milliseconds)."""
    if name != "__version__":
        raise AttributeError(f"module 'cryoset' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("cryoset")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        value = "0.0.0+unknown"
    globals()["__version__"] = value
    return value
