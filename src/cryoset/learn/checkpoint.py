"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A *weights file* is one ``.safetensors`` file whose metadata carries ``kind`` (e.g.
``voxelnet``), ``config`` (the architecture as JSON) and ``provenance``; it is all inference
needs. A *training checkpoint* is a folder ``epoch_NNNN/`` (written atomically) holding:

* ``model.safetensors`` — the weights file above;
* ``optimizer.safetensors`` — every tensor of the optimizer state, keyed ``"<param>.<name>"``;
* ``state.json`` — epoch, global step, optimizer ``param_groups``, the training settings,
  metrics so far and the random-number state that is not derived from the seed.

Beside the checkpoints a training run keeps ``metrics.csv``, one row per epoch
(:func:`write_metrics_csv`).

Nothing is ever read with ``pickle``; a file that is not safetensors is refused with one
:class:`~cryoset.errors.InputError` line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_directory, atomic_path, write_text_atomic

__all__ = [
    "latest_checkpoint",
    "load_optimizer_state",
    "read_weights",
    "save_training_checkpoint",
    "write_metrics_csv",
    "write_weights",
]

_EPOCH_DIR = re.compile(r"^epoch_(\d{4,})$")


def write_weights(path: str | os.PathLike[str], state: Mapping[str, torch.Tensor], *, kind: str,
                  config: Mapping[str, Any], provenance: Mapping[str, Any] | None = None) -> Path:
    """Write a weights file (atomic): tensors + ``kind``/``config``/``provenance`` metadata."""
    out = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {"kind": kind, "config": json.dumps(dict(config), sort_keys=True),
            "provenance": json.dumps(dict(provenance or {}), default=str, sort_keys=True)}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return out


def read_weights(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any],
                                                                  dict[str, Any]]:
    """Read a weights file: ``(state, config, provenance)``; refuse other files in one line.

    Parameters
    ----------
    path
        A ``.safetensors`` file written by :func:`write_weights`, or a training checkpoint
        folder (its ``model.safetensors``).
    kind
        The expected ``kind`` (e.g. ``"voxelnet"``).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise InputError(p, "no such weights file")
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(p, f"not a safetensors weights file ({text[:160]}); "
                            "pickled checkpoints are never loaded") from None
    if meta.get("kind") != kind:
        raise InputError(p, f"holds {meta.get('kind') or 'unlabelled'} weights, not {kind}")
    try:
        config = json.loads(meta.get("config", "{}"))
        provenance = json.loads(meta.get("provenance", "{}"))
    except json.JSONDecodeError as exc:
        raise InputError(p, f"has a corrupt configuration in its metadata ({exc})") from None
    if not isinstance(config, dict):
        raise InputError(p, "has a configuration that is not an object")
    return state, config, provenance if isinstance(provenance, dict) else {}


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_training_checkpoint(
    root: str | os.PathLike[str],
    epoch: int,
    *,
    model_state: Mapping[str, torch.Tensor],
    kind: str,
    config: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``root/epoch_NNNN/`` atomically (see the module docstring) and return it."""
    out = Path(root) / f"epoch_{epoch:04d}"
    tensors, opt_json = _flatten_optimizer(optimizer)
    with atomic_directory(out) as tmp:
        write_weights(tmp / "model.safetensors", model_state, kind=kind, config=config, provenance=provenance)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        body = {"epoch": epoch, "optimizer": opt_json, **dict(state)}
        (tmp / "state.json").write_text(json.dumps(body, indent=1, default=str) + "\n")
    return out


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The complete ``epoch_NNNN`` folder with the highest epoch under ``root``, or None."""
    r = Path(root)
    if not r.is_dir():
        return None
    found = [(int(m.group(1)), d) for d in r.iterdir()
             if d.is_dir() and (m := _EPOCH_DIR.match(d.name)) and (d / "state.json").is_file()]
    return max(found)[1] if found else None


def load_optimizer_state(folder: str | os.PathLike[str], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore ``optimizer`` from a training checkpoint folder; return its ``state.json``."""
    d = Path(folder)
    try:
        body = json.loads((d / "state.json").read_text())
        tensors = load_file(str(d / "optimizer.safetensors"))
    except (OSError, json.JSONDecodeError, SafetensorError, ValueError) as exc:
        raise InputError(d, f"not a readable training checkpoint ({exc})") from None
    opt = body["optimizer"]
    st: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        st.setdefault(int(pid), {})[name] = value
    for pid, values in opt.get("scalars", {}).items():
        st.setdefault(int(pid), {}).update(values)
    try:
        optimizer.load_state_dict({"state": st, "param_groups": opt["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise InputError(d, f"the optimizer state does not fit this model ({exc})") from None
    return dict(body)


def write_metrics_csv(out_dir: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Write ``out_dir/metrics.csv`` atomically: one row per epoch, the columns in order of first appearance."""
    names: list[str] = []
    for r in rows:
        names += [k for k in r if k not in names]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=names)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(Path(out_dir) / "metrics.csv", buf.getvalue())
