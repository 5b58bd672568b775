"""cryoset: raw cryo-EM data to curated, annotated, AI-ready datasets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cryoset")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
