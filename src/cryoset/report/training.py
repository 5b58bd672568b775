"""Training curves: loss and macro F1 per head, training and validation, per epoch."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryoset.report.figures import save_figure

__all__ = ["plot_training_curves"]


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Plot ``{split}_{head}_loss`` and ``{split}_{head}_f1`` columns of metric rows (one per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in rows for k in r})
    heads = sorted({k.split("_")[1] for k in keys if k.startswith(("train_", "validation_"))
                    and k.endswith(("_loss", "_f1")) and k.count("_") >= 2})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [r["epoch"] for r in rows]
    for head in heads:
        for split, style in (("train", "-"), ("validation", "--")):
            for ax, metric in zip(axes, ("loss", "f1"), strict=True):
                key = f"{split}_{head}_{metric}"
                if any(key in r for r in rows):
                    ax.plot(epochs, [r.get(key, float("nan")) for r in rows], style, marker=".",
                            label=f"{head} ({split})")
    axes[0].set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    axes[1].set(xlabel="epoch", ylabel="macro F1 (foreground classes)", ylim=(0, 1), title="F1")
    for ax in axes:
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
