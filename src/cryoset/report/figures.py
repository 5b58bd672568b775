"""Saving matplotlib figures: atomically, as PNG, and closing them afterwards."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryoset.io.atomic import atomic_path


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG (temporary name, then rename) and close it."""
    import matplotlib.pyplot as plt

    out = Path(path)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return out
