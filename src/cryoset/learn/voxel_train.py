"""Training of the voxel network on map datasets (``cryoset train voxel CONFIG.yaml``).

Data: the ``subgrids.zarr`` of folders written by ``cryoset map prepare`` / ``map build``. A
``map build`` folder contributes its maps by the ``split`` column of ``metadata.parquet``
(``train`` to training, ``validation`` to validation; ``test`` maps are never read here). Sub-grids
whose 20³ core holds no labelled voxel are mostly solvent; ``empty_fraction`` of them are kept.

Loss: the sum over heads of ``head_weight · cross-entropy``, each with class weights fixed once
from the training labels (``sqrt-inverse``: ``w_c ∝ (N / (K n_c))^½``, normalised to mean 1;
``paper``: Cryo2Struct's ``1 − n_c/N``; ``none``). Optimiser: AdamW, learning rate with a linear
warm-up then a cosine decay to zero, per step. Augmentation: the 24 proper rotations of the
cube (never mirrors: a mirrored map has left-handed helices), the same for density and labels.

Reproducibility: every random choice derives from ``seed`` and the epoch (shuffling, rotations,
dropout), so a run resumed from its last checkpoint (one per epoch, :mod:`cryoset.learn.checkpoint`)
gives the same weights as an uninterrupted run. Several processes: under ``torchrun`` each rank
takes an equal slice of every global batch and :class:`~torch.nn.parallel.DistributedDataParallel`
averages gradients, which equals one process on the same global batch (gloo on CPU, NCCL on GPUs).

Metrics per epoch (``metrics.csv``; the command line also plots ``metrics.png``): loss and macro F1 (foreground classes, voxels
of the 20³ cores) per head, training and validation.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray
from torch import nn

from cryoset.errors import InputError
from cryoset.learn.checkpoint import (
    latest_checkpoint,
    load_optimizer_state,
    read_weights,
    save_training_checkpoint,
    write_metrics_csv,
    write_weights,
)
from cryoset.learn.ddp import training_process
from cryoset.learn.voxelnet import HEADS, VoxelNetConfig, build_voxel_net, settings_from_mapping

__all__ = [
    "KIND",
    "SubgridCorpus",
    "TrainVoxelSettings",
    "class_weights",
    "load_corpus",
    "macro_f1",
    "rotate_batch",
    "train_voxel",
]

KIND = "voxelnet"
#: Cα probability threshold of ``model-build`` when the weights carry none (Cryo2Struct's 0.4).
DEFAULT_CA_THRESHOLD = 0.4
_WEIGHTINGS = ("sqrt-inverse", "paper", "none")


@dataclass(frozen=True)
class TrainVoxelSettings:
    """Training settings (the ``train:`` section of the YAML config).

    Attributes
    ----------
    epochs, batch_size
        Passes over the training sub-grids; global batch (split over ranks).
    lr, weight_decay, warmup_fraction
        AdamW peak learning rate, decoupled weight decay, warm-up share of all steps.
    seed
        Seeds the weights, shuffling, rotations and dropout.
    class_weighting
        ``sqrt-inverse``, ``paper`` or ``none`` (see the module docstring).
    head_weights
        Loss weight per head (missing heads weigh 1).
    empty_fraction
        Share of label-free sub-grids kept (chosen with ``seed``).
    augment
        Random proper cube rotations.
    max_subgrids
        Cap on training sub-grids (chosen with ``seed``); None for all.
    amp
        bf16 autocast on a GPU (ignored on the CPU).
    grad_clip
        Gradient-norm clip; 0 disables.
    """

    epochs: int = 20
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    seed: int = 0
    class_weighting: str = "sqrt-inverse"
    head_weights: Mapping[str, float] = field(default_factory=dict)
    empty_fraction: float = 0.1
    augment: bool = True
    max_subgrids: int | None = None
    amp: bool = True
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.warmup_fraction < 1):
            raise ValueError("lr must be positive, weight_decay non-negative, warmup_fraction in [0, 1)")
        if self.class_weighting not in _WEIGHTINGS:
            raise ValueError(f"class_weighting must be one of {', '.join(_WEIGHTINGS)}")
        if not 0 <= self.empty_fraction <= 1:
            raise ValueError("empty_fraction must be in [0, 1]")
        if self.max_subgrids is not None and self.max_subgrids < 1:
            raise ValueError("max_subgrids must be positive")
        unknown = [h for h in self.head_weights if h not in HEADS]
        if unknown:
            raise ValueError(f"head_weights names unknown head(s) {', '.join(unknown)}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str | os.PathLike[str] | None = None
                     ) -> TrainVoxelSettings:
        """Build from the ``train:`` mapping; unknown keys and bad values → :class:`InputError`."""
        return settings_from_mapping(cls, data, source, "training")


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
@dataclass
class SubgridCorpus:
    """Sub-grids in memory: ``density`` (N, b, b, b) float32 and one uint8 array per head."""

    density: NDArray[np.float32]
    labels: dict[str, NDArray[np.uint8]]
    sources: list[str]
    overlap: int = 6

    def __len__(self) -> int:
        return int(self.density.shape[0])


def _zarr_stores(path: Path, split: str) -> list[Path]:
    """The sub-grid stores of ``path`` in ``split`` (a store, a prepare folder or a build folder)."""
    if (path / "zarr.json").is_file() and (path / "density").exists():
        return [path]
    if (path / "subgrids.zarr").is_dir():
        return [path / "subgrids.zarr"]
    meta = path / "metadata.parquet"
    if meta.is_file():
        import pandas as pd

        table = pd.read_parquet(meta)
        if "split" not in table.columns:
            raise InputError(meta, "has no split column")
        ok = table["status"].eq("ok") if "status" in table.columns else True
        rows = table[ok & table["split"].eq(split)]
        return [path / str(e) / "subgrids.zarr" for e in rows["emdb_id"]]
    raise InputError(path, "is not a sub-grid store, a map prepare folder or a map build folder")


def load_corpus(paths: Sequence[str | os.PathLike[str]], split: str, heads: Sequence[str], *,
                empty_fraction: float = 1.0, max_subgrids: int | None = None, seed: int = 0
                ) -> SubgridCorpus:
    """Read the sub-grids of ``split`` from map folders into memory.

    Plain stores and ``map prepare`` folders count as ``train`` data (they have no split).
    """
    import zarr

    dens: list[NDArray[np.float32]] = []
    labs: dict[str, list[NDArray[np.uint8]]] = {h: [] for h in heads}
    sources: list[str] = []
    overlaps: set[int] = set()
    rng = np.random.default_rng([seed, 7])
    for raw in paths:
        p = Path(raw)
        is_build = (p / "metadata.parquet").is_file()
        if not is_build and split != "train":
            continue
        for store in _zarr_stores(p, split):
            try:
                group = zarr.open_group(store=str(store), mode="r")
            except (FileNotFoundError, ValueError, KeyError) as exc:
                raise InputError(store, f"is not a Zarr group ({exc})") from None
            missing = [h for h in ("density", *heads) if h not in group]
            if missing:
                raise InputError(store, f"has no {', '.join(missing)} sub-grids (map prepare needs a model)")
            overlap = int(str(group.attrs.get("overlap", 6)))
            overlaps.add(overlap)
            arrays: dict[str, Any] = {k: group[k] for k in ("density", *heads)}
            d = np.asarray(arrays["density"][...], dtype=np.float32)
            lab = {h: np.asarray(arrays[h][...], dtype=np.uint8) for h in heads}
            if not np.isfinite(d).all():
                raise InputError(store, "holds non-finite densities")
            for h in heads:
                if lab[h].max(initial=0) >= HEADS[h]:
                    raise InputError(store, f"{h} labels exceed the {HEADS[h]} classes")
            core = (slice(None),) + (slice(overlap, d.shape[1] - overlap),) * 3
            filled = np.zeros(d.shape[0], dtype=bool)
            for h in heads:
                filled |= lab[h][core].reshape(d.shape[0], -1).any(axis=1)
            keep = filled | (rng.random(d.shape[0]) < empty_fraction)
            dens.append(d[keep])
            for h in heads:
                labs[h].append(lab[h][keep])
            sources += [str(store)] * int(keep.sum())
    if not dens:
        return SubgridCorpus(np.zeros((0, 32, 32, 32), np.float32),
                             {h: np.zeros((0, 32, 32, 32), np.uint8) for h in heads}, [])
    if len({d.shape[1:] for d in dens}) > 1 or len(overlaps) > 1:
        raise InputError(str(paths[0]), "the sub-grid stores differ in box size or overlap")
    corpus = SubgridCorpus(np.concatenate(dens), {h: np.concatenate(v) for h, v in labs.items()}, sources,
                           overlaps.pop())
    if max_subgrids is not None and len(corpus) > max_subgrids:
        pick = np.sort(np.random.default_rng([seed, 8]).choice(len(corpus), max_subgrids, replace=False))
        corpus = SubgridCorpus(corpus.density[pick], {h: v[pick] for h, v in corpus.labels.items()},
                               [corpus.sources[i] for i in pick], corpus.overlap)
    return corpus


def class_weights(labels: NDArray[np.uint8], n_classes: int, rule: str) -> NDArray[np.float32]:
    """Class weights of one head from its training labels (see the module docstring)."""
    counts = np.bincount(labels.ravel(), minlength=n_classes).astype(np.float64)[:n_classes]
    total = counts.sum()
    if rule == "none" or total == 0:
        return np.ones(n_classes, np.float32)
    if rule == "paper":
        return (1.0 - counts / total + 1e-5).astype(np.float32)
    w = np.sqrt(total / (n_classes * np.maximum(counts, 1.0)))
    w = np.where(counts > 0, w, 0.0)
    return (w / w[counts > 0].mean()).astype(np.float32)


def _cube_rotations() -> list[tuple[tuple[int, ...], tuple[bool, ...]]]:
    """The 24 proper rotations of a cube as (axis permutation, flips) of (z, y, x)."""
    import itertools

    out = []
    for perm in itertools.permutations(range(3)):
        parity = sum(1 for i in range(3) for j in range(i + 1, 3) if perm[i] > perm[j]) % 2
        for flips in itertools.product((False, True), repeat=3):
            # determinant = sign(perm) · (−1)^(number of flips) must be +1
            if (parity + sum(flips)) % 2 == 0:
                out.append((perm, flips))
    return out


_ROTATIONS = _cube_rotations()


def rotate_batch(x: torch.Tensor, index: int) -> torch.Tensor:
    """Apply proper rotation ``index`` (0–23; 0 is the identity) to the last three axes."""
    perm, flips = _ROTATIONS[index]
    lead = x.dim() - 3
    y = x.permute(*range(lead), *(lead + p for p in perm))
    dims = [lead + i for i in range(3) if flips[i]]
    return y.flip(dims) if dims else y


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def confusion(pred: torch.Tensor, target: torch.Tensor, n: int) -> NDArray[np.int64]:
    """``n × n`` confusion counts (rows: truth, columns: prediction)."""
    idx = (target.reshape(-1).to(torch.int64) * n + pred.reshape(-1).to(torch.int64))
    return torch.bincount(idx, minlength=n * n).reshape(n, n).cpu().numpy().astype(np.int64)


def macro_f1(conf: NDArray[np.int64]) -> float:
    """Mean F1 over the foreground classes (1…) present in the truth or the predictions."""
    tp = np.diag(conf).astype(np.float64)
    fp = conf.sum(axis=0) - tp
    fn = conf.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    present[0] = False
    if not present.any():
        return math.nan
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(f1[present].mean())


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def _lr_at(step: int, total: int, settings: TrainVoxelSettings) -> float:
    warm = max(1, round(settings.warmup_fraction * total)) if settings.warmup_fraction > 0 else 0
    if step < warm:
        return settings.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return settings.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _core(t: torch.Tensor, overlap: int) -> torch.Tensor:
    b = t.shape[-1]
    return t[..., overlap:b - overlap, overlap:b - overlap, overlap:b - overlap]


@torch.no_grad()
def evaluate(model: nn.Module, corpus: SubgridCorpus, heads: Sequence[str],
             weights: Mapping[str, torch.Tensor], *, batch_size: int = 8,
             device: torch.device | None = None) -> dict[str, float]:
    """Loss and macro F1 per head on the cores of ``corpus``.

    With a ``backbone`` head also ``ca_threshold`` and ``ca_f1_tol1``: the Cα probability
    threshold with the best voxel-wise F1 within one voxel (:data:`CA_THRESHOLDS`), the default
    of ``model-build`` for the weights (chosen on validation data, never on test data).
    """
    dev = device or torch.device("cpu")
    model.eval()
    conf = {h: np.zeros((HEADS[h], HEADS[h]), np.int64) for h in heads}
    loss = {h: 0.0 for h in heads}
    ca_counts = np.zeros((len(CA_THRESHOLDS), 4), np.int64)  # tp_pred, n_pred, tp_true, n_true
    n = 0
    for lo in range(0, len(corpus), batch_size):
        x = torch.from_numpy(corpus.density[lo:lo + batch_size])[:, None].to(dev)
        out = model(x)
        for h in heads:
            y = torch.from_numpy(corpus.labels[h][lo:lo + batch_size]).to(dev, torch.int64)
            logits = out[h].float()
            loss[h] += float(nn.functional.cross_entropy(logits, y, weight=weights[h].to(dev),
                                                         reduction="mean")) * x.shape[0]
            conf[h] += confusion(_core(logits.argmax(1), corpus.overlap), _core(y, corpus.overlap), HEADS[h])
            if h == "backbone":
                ca_counts += _ca_counts(torch.softmax(logits, 1)[:, 1], y == 1, corpus.overlap)
        n += x.shape[0]
    res: dict[str, float] = {}
    for h in heads:
        res[f"{h}_loss"] = loss[h] / max(n, 1)
        res[f"{h}_f1"] = macro_f1(conf[h])
    if "backbone" in heads:
        tp_p, n_p, tp_t, n_t = (ca_counts[:, i].astype(np.float64) for i in range(4))
        precision = np.divide(tp_p, n_p, out=np.zeros_like(tp_p), where=n_p > 0)
        recall = np.divide(tp_t, n_t, out=np.zeros_like(tp_t), where=n_t > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                       where=(precision + recall) > 0)
        k = int(np.argmax(f1))
        res["ca_threshold"] = float(CA_THRESHOLDS[k])
        res["ca_f1_tol1"] = float(f1[k])
    return res


#: Cα probability thresholds scanned by :func:`evaluate`.
CA_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))


def _ca_counts(prob: torch.Tensor, truth: torch.Tensor, overlap: int) -> NDArray[np.int64]:
    """Per threshold: predicted voxels near a Cα, predicted voxels, Cα near a prediction, Cα (cores)."""
    near_truth = _core(nn.functional.max_pool3d(truth[:, None].float(), 3, 1, 1)[:, 0] > 0, overlap)
    t_core = _core(truth, overlap)
    out = np.zeros((len(CA_THRESHOLDS), 4), np.int64)
    for i, t in enumerate(CA_THRESHOLDS):
        pred = prob > t
        near_pred = _core(nn.functional.max_pool3d(pred[:, None].float(), 3, 1, 1)[:, 0] > 0, overlap)
        p_core = _core(pred, overlap)
        out[i] = (int((p_core & near_truth).sum()), int(p_core.sum()), int((t_core & near_pred).sum()),
                  int(t_core.sum()))
    return out


def train_voxel(
    data: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    model_config: VoxelNetConfig,
    settings: TrainVoxelSettings,
    resume: bool = True,
    stop_after_epoch: int | None = None,
    device: str = "auto",
    provenance: Mapping[str, Any] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[list[dict[str, Any]]], object] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train a voxel network; write checkpoints, metrics and ``model.safetensors`` into ``out_dir``.

    Parameters
    ----------
    data
        Map folders (``map build`` output, ``map prepare`` output or ``subgrids.zarr``).
    out_dir
        Output folder: ``checkpoints/epoch_NNNN/``, ``metrics.csv``, ``metrics.png``,
        ``model.safetensors`` (last epoch) and ``best.safetensors`` (lowest validation loss).
    resume
        Continue from the last complete checkpoint in ``out_dir`` (same settings required).
    stop_after_epoch
        Return after this epoch (0-based) even if ``settings.epochs`` is larger (tests, and a
        run interrupted on purpose).
    device
        ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    on_step
        Called as ``on_step(step_in_epoch, steps_per_epoch, loss)`` after each step.
    on_epoch
        Called (rank 0) with the metric rows so far after each epoch (e.g. to plot them).

    Returns
    -------
    dict
        ``epochs_run``, ``last_metrics``, ``n_train``, ``n_validation``, ``seconds``,
        ``subgrids_per_s``.
    """
    out = Path(out_dir)
    rank, world, dev = training_process(device)
    heads = list(model_config.heads)
    if settings.batch_size % world:
        raise InputError("batch_size", f"{settings.batch_size} is not divisible by {world} processes")
    train = load_corpus(data, "train", heads, empty_fraction=settings.empty_fraction,
                        max_subgrids=settings.max_subgrids, seed=settings.seed)
    val = load_corpus(data, "validation", heads, empty_fraction=settings.empty_fraction, seed=settings.seed)
    if len(train) == 0:
        raise InputError(str(data[0]) if data else "data", "holds no training sub-grids")
    weights = {h: torch.from_numpy(class_weights(train.labels[h], HEADS[h], settings.class_weighting))
               for h in heads}
    head_w = {h: float(settings.head_weights.get(h, 1.0)) for h in heads}

    torch.manual_seed(settings.seed)
    model = build_voxel_net(model_config).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    config_json = json.loads(json.dumps(
        {"model": asdict(model_config),
         "train": {**asdict(settings), "head_weights": dict(settings.head_weights)}}))
    start_epoch, history = 0, []
    ckpt = latest_checkpoint(out / "checkpoints") if resume else None
    if ckpt is not None:
        state, saved_cfg, _ = read_weights(ckpt / "model.safetensors", KIND)
        if saved_cfg.get("model") != config_json["model"] or saved_cfg.get("train") != config_json["train"]:
            raise InputError(ckpt, "was written with other settings; use a new output folder or --no-resume")
        model.load_state_dict(state)
        body = load_optimizer_state(ckpt, opt)
        start_epoch = int(body["epoch"]) + 1
        history = list(body.get("history", []))
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    per_rank = settings.batch_size // world
    use_amp = settings.amp and dev.type == "cuda"
    t0, seen = time.perf_counter(), 0
    last_epoch = min(settings.epochs - 1, stop_after_epoch if stop_after_epoch is not None else 10**9)
    best = min((r.get("validation_loss", math.inf) for r in history), default=math.inf)
    for epoch in range(start_epoch, last_epoch + 1):
        net.train()
        torch.manual_seed(settings.seed * 100_003 + epoch)
        rng = np.random.default_rng([settings.seed, epoch])
        order = rng.permutation(len(train))
        rots = rng.integers(0, 24, size=steps_per_epoch) if settings.augment else np.zeros(steps_per_epoch, int)
        conf = {h: np.zeros((HEADS[h], HEADS[h]), np.int64) for h in heads}
        loss_sum = {h: 0.0 for h in heads}
        n_seen = 0
        for s in range(steps_per_epoch):
            idx = order[s * settings.batch_size:(s + 1) * settings.batch_size]
            mine = np.sort(idx[rank * per_rank:(rank + 1) * per_rank]) if len(idx) == settings.batch_size \
                else np.sort(idx[rank::world])
            if mine.size == 0:
                mine = np.sort(idx[:1])
            x = rotate_batch(torch.from_numpy(train.density[mine])[:, None], int(rots[s])).contiguous().to(dev)
            ys = {h: rotate_batch(torch.from_numpy(train.labels[h][mine]), int(rots[s])).to(dev, torch.int64)
                  for h in heads}
            for g in opt.param_groups:
                g["lr"] = _lr_at(epoch * steps_per_epoch + s, total_steps, settings)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                out_t = net(x)
            total = torch.zeros((), device=dev)
            for h in heads:
                lh = nn.functional.cross_entropy(out_t[h].float(), ys[h], weight=weights[h].to(dev))
                total = total + head_w[h] * lh
                loss_sum[h] += float(lh.detach()) * len(mine)
                conf[h] += confusion(_core(out_t[h].detach().argmax(1), train.overlap),
                                     _core(ys[h], train.overlap), HEADS[h])
            opt.zero_grad(set_to_none=True)
            total.backward()
            if settings.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            n_seen += len(mine)
            seen += len(mine) * world
            if on_step is not None and rank == 0:
                on_step(s, steps_per_epoch, float(total.detach()))
        row: dict[str, Any] = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
        for h in heads:
            row[f"train_{h}_loss"] = loss_sum[h] / max(n_seen, 1)
            row[f"train_{h}_f1"] = macro_f1(conf[h])
        if len(val) and rank == 0:
            ev = evaluate(model, val, heads, weights, batch_size=max(per_rank, 1), device=dev)
            for k, v in ev.items():
                row[f"validation_{k}"] = v
            row["validation_loss"] = sum(head_w[h] * ev[f"{h}_loss"] for h in heads)
        history.append(row)
        if rank == 0:
            state = {k: v for k, v in model.state_dict().items()}
            save_training_checkpoint(out / "checkpoints", epoch, model_state=state, kind=KIND,
                                     config=config_json, optimizer=opt,
                                     state={"history": history, "n_train": len(train)},
                                     provenance=provenance)
            inference = {"ca_threshold": row.get("validation_ca_threshold", DEFAULT_CA_THRESHOLD),
                         "ca_threshold_source": "validation" if "validation_ca_threshold" in row else "default",
                         "epoch": epoch}
            final_cfg = {**config_json, "inference": inference}
            write_weights(out / "model.safetensors", state, kind=KIND, config=final_cfg, provenance=provenance)
            vloss = row.get("validation_loss", math.inf)
            if vloss < best or not math.isfinite(best):
                best = vloss
                write_weights(out / "best.safetensors", state, kind=KIND, config=final_cfg,
                              provenance=provenance)
            write_metrics_csv(out, history)
            if on_epoch is not None:
                on_epoch(history)
            if log is not None:
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if world > 1:
            dist.barrier()
    seconds = time.perf_counter() - t0
    return {"epochs_run": len(history), "last_metrics": history[-1] if history else {},
            "n_train": len(train), "n_validation": len(val), "seconds": seconds,
            "subgrids_per_s": seen / seconds if seconds > 0 else math.nan}


def voxel_net_threshold(path: str | os.PathLike[str]) -> float:
    """The Cα threshold stored with the weights (chosen on validation data), else the default."""
    _, cfg, _ = read_weights(path, KIND)
    value = (cfg.get("inference") or {}).get("ca_threshold")
    return float(value) if isinstance(value, (int, float)) and 0 < value < 1 else DEFAULT_CA_THRESHOLD


def load_voxel_net(path: str | os.PathLike[str]) -> tuple[nn.Module, VoxelNetConfig]:
    """A trained voxel network from a weights file (or training checkpoint folder)."""
    state, cfg, _ = read_weights(path, KIND)
    model_cfg = VoxelNetConfig.from_mapping(cfg.get("model", {}), path)
    model = build_voxel_net(model_cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(path, f"weights do not fit the stored architecture ({first[:160]})") from None
    model.eval()
    return model, model_cfg
