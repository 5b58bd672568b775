"""Self-supervised training curves: loss parts, schedules and collapse monitors per epoch."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryoset.report.figures import save_figure

__all__ = ["plot_ssl_training"]

_LOSSES = ("loss", "dino_global_loss", "dino_local_loss", "ibot_loss", "koleo_loss")


def plot_ssl_training(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Plot the rows of ``metrics.csv`` (one per epoch): losses; learning rate, momentum and
    teacher temperature; per-dimension feature std and effective rank of the teacher's CLS features."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> list[float]:
        return [float(r.get(key, math.nan)) for r in rows]

    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key in _LOSSES:
        if any(key in r for r in rows):
            axes[0].plot(epochs, series(key), marker=".", label=key.removesuffix("_loss") if key != "loss" else "total")
    axes[0].set(xlabel="epoch", ylabel="loss", title="losses")
    ax = axes[1]
    ax.plot(epochs, series("lr"), marker=".", color="C0", label="learning rate")
    ax.set(xlabel="epoch", ylabel="learning rate", title="schedules")
    twin = ax.twinx()
    twin.plot(epochs, series("momentum"), marker=".", color="C1", label="teacher momentum")
    twin.plot(epochs, [10 * t for t in series("teacher_temp")], marker=".", color="C2",
              label="10 × teacher temp")
    twin.set_ylabel("momentum, 10 × temperature")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7)
    ax = axes[2]
    ax.plot(epochs, series("effective_rank"), marker=".", color="C3", label="effective rank")
    ax.set(xlabel="epoch", ylabel="effective rank (teacher CLS)", title="collapse monitors")
    twin = ax.twinx()
    twin.plot(epochs, series("feature_std"), marker=".", color="C4", label="per-dim std (L2-normalised)")
    twin.set_ylabel("feature std")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7)
    if axes[0].has_data():
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
