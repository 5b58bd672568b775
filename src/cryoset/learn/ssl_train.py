"""Self-supervised ViT training on particle stores: DINO + iBOT + KoLeo (``cryoset train ssl``).

The recipe is the public DINOv3 one that cryoPANDA trained its particle encoder with
(``/work/shared/notes/ml-anchors.md`` section (b); docs/ssl.md):

* a student (:class:`~cryoset.learn.vit.VisionTransformer` + DINO head + separate iBOT head,
  :class:`~cryoset.learn.ssl_heads.DINOHead`) and a teacher of the same shape, the exponential
  moving average of the student (momentum cosine 0.992 → 1.0 per iteration);
* per particle 2 global + N local crops (:mod:`cryoset.learn.ssl_augment`); the teacher sees the
  global crops, the student all crops, with iBOT block masks on its global crops;
* loss = ``w_dino · (s_local · DINO(student local CLS, teacher global) + s_global · DINO(student
  global CLS, teacher global, other crop only)) + w_koleo · 2 · KoLeo(student global CLS before
  the head) + w_ibot · iBOT(masked patches)``, with ``s_global = 2 / (2 + 2N)``, ``s_local = 2N /
  (2 + 2N)`` (DINOv3's term-count weighting) and teacher targets centred by Sinkhorn-Knopp
  (:mod:`cryoset.learn.ssl_losses`);
* AdamW (β 0.9, 0.999); per iteration: learning rate linear warm-up then cosine to ``min_lr``
  (peak ``base_lr`` scaled by ``scaling_rule``: ``sqrt_wrt_1024`` = ``4 √(B / 1024)``), weight decay
  cosine ``weight_decay`` → ``weight_decay_end``, teacher temperature linear warm-up then constant;
  layer-wise learning-rate decay ``layerwise_decay ** (depth + 1 − layer)``
  (:func:`~cryoset.learn.vit.layer_id_for_param`), patch-embedding multiplier, no weight decay
  on biases / norms / LayerScale; the heads' last layers do not move during the first
  ``freeze_last_layer_epochs``; gradient-norm clipping; bf16 autocast on CUDA.

Data: the particles of one or more :class:`~cryoset.store.ParticleStore` (optionally an SQL
``where``), streamed chunk-aware by :class:`~cryoset.learn.particles.StoreParticleStream`. The
global batch is made of ``data_shards`` (default: the number of processes) equal per-shard
batches, shard ``d`` reading span ``d`` of each pass's order; each process handles
``data_shards / world_size`` shards. A pass over the data has a fixed number of steps
(incomplete batches dropped); with several stores the pass interleaves their batches in a
seeded order. An epoch is ``epoch_length`` steps (default: one pass).

Reproducibility: weights from ``seed``; data order from ``(seed, pass)``; crops and masks from
``(seed, pass, store, particle row)``; drop-path from ``(seed, step)``. Hence a run resumed from
its last checkpoint (one per epoch, :mod:`cryoset.learn.checkpoint`: student, teacher and
optimiser in safetensors, the rest in JSON) ends with the same bits as an uninterrupted one, and
``torchrun`` with W processes equals one process with ``data_shards = W`` up to float rounding
(gradients averaged by DistributedDataParallel, Sinkhorn sums all-reduced, KoLeo within each
shard's batch).

Outputs (``out_dir``): ``checkpoints/epoch_NNNN/``, ``metrics.csv`` (per epoch: loss parts, learning
rate, weight decay, momentum, teacher temperature, throughput, and on a fixed probe batch of the
teacher's CLS features: mean per-dimension standard deviation of the L2-normalised features and
the effective rank ``exp(H(σ / Σσ))`` of their singular values), ``model.safetensors`` — the
teacher backbone (:func:`cryoset.learn.vit_weights.save_vit`, readable by ``load_vit``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from cryoset.errors import InputError
from cryoset.learn.checkpoint import (
    latest_checkpoint,
    load_optimizer_state,
    read_weights,
    save_training_checkpoint,
    write_metrics_csv,
)
from cryoset.learn.ddp import training_process
from cryoset.learn.ssl_augment import (
    CropSettings,
    draw_params,
    make_crops,
    particle_rng,
)
from cryoset.learn.ssl_heads import DINOHead
from cryoset.learn.ssl_losses import (
    centred_softmax,
    dino_loss,
    ibot_loss,
    koleo_loss_grouped,
    sinkhorn_knopp,
    updated_centre,
)
from cryoset.learn.vit import VIT_SIZES, VisionTransformer, ViTConfig, layer_id_for_param
from cryoset.learn.vit_weights import resize_images

__all__ = [
    "KIND",
    "DinoSettings",
    "HeadSettings",
    "OptimSettings",
    "RunSettings",
    "SSLConfig",
    "SSLStudent",
    "TeacherSettings",
    "effective_rank",
    "param_groups",
    "schedule_value",
    "train_ssl",
]

KIND = "ssl-student-teacher"
_SECTIONS = ("data", "where", "model", "heads", "crops", "ibot", "dino", "teacher", "optim", "train")


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadSettings:
    """DINO and iBOT heads (separate, same shape): prototypes, MLP hidden / bottleneck width, layers."""

    dino_prototypes: int = 65536
    ibot_prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name}: must be at least 1, got {getattr(self, f.name)}")


@dataclass(frozen=True)
class DinoSettings:
    """Loss weights and options (``dino:`` and the ``ibot:`` loss weight)."""

    loss_weight: float = 1.0
    koleo_loss_weight: float = 0.1
    koleo_group: int | None = None
    global_ignore_diagonal: bool = True
    ibot_loss_weight: float = 1.0
    student_temp: float = 0.1
    sinkhorn_iterations: int = 3
    #: teacher targets: ``sinkhorn_knopp`` (DINOv2/v3, the paper) or ``centering`` (DINOv1: softmax
    #: of the logits minus an EMA centre), which leaves the uniform fixed point on small runs
    centering: str = "sinkhorn_knopp"
    center_momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.centering not in ("sinkhorn_knopp", "centering"):
            raise ValueError(f"centering: must be sinkhorn_knopp or centering, got {self.centering!r}")
        if not 0.0 <= self.center_momentum < 1.0:
            raise ValueError(f"center_momentum: must be in [0, 1), got {self.center_momentum}")
        for name in ("loss_weight", "koleo_loss_weight", "ibot_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.koleo_group is not None and self.koleo_group < 2:
            raise ValueError(f"koleo_group: must be at least 2, got {self.koleo_group}")
        if not self.student_temp > 0:
            raise ValueError(f"student_temp: must be positive, got {self.student_temp}")
        if self.sinkhorn_iterations < 1:
            raise ValueError(f"sinkhorn_iterations: must be at least 1, got {self.sinkhorn_iterations}")


@dataclass(frozen=True)
class TeacherSettings:
    """EMA momentum schedule and teacher temperature warm-up (epochs)."""

    momentum: float = 0.992
    final_momentum: float = 1.0
    temp: float = 0.07
    warmup_temp: float = 0.04
    warmup_temp_epochs: float = 30

    def __post_init__(self) -> None:
        if not (0 <= self.momentum <= 1 and 0 <= self.final_momentum <= 1):
            raise ValueError("momentum and final_momentum: must be in [0, 1]")
        if not (self.temp > 0 and self.warmup_temp > 0):
            raise ValueError("temp and warmup_temp: must be positive")
        if self.warmup_temp_epochs < 0:
            raise ValueError(f"warmup_temp_epochs: must be >= 0, got {self.warmup_temp_epochs}")


_SCALING_RULES = ("sqrt_wrt_1024", "linear_wrt_256", "none")


@dataclass(frozen=True)
class OptimSettings:
    """Optimiser and schedule (``optim:``). ``batch_size`` is the global batch (particles per step)."""

    epochs: int = 100
    epoch_length: int | None = None
    batch_size: int = 64
    base_lr: float = 5e-4
    scaling_rule: str = "sqrt_wrt_1024"
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 3.0
    freeze_last_layer_epochs: float = 1
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    dino_head_wd_multiplier: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size: must be at least 1")
        if self.epoch_length is not None and self.epoch_length < 1:
            raise ValueError(f"epoch_length: must be at least 1, got {self.epoch_length}")
        if not self.base_lr > 0 or self.min_lr < 0:
            raise ValueError("base_lr: must be positive (and min_lr >= 0)")
        if self.scaling_rule not in _SCALING_RULES:
            raise ValueError(f"scaling_rule: must be one of {', '.join(_SCALING_RULES)}, got {self.scaling_rule!r}")
        if not (0 <= self.warmup_epochs <= self.epochs):
            raise ValueError(f"warmup_epochs: must be in [0, epochs], got {self.warmup_epochs}")
        if self.weight_decay < 0 or self.weight_decay_end < 0:
            raise ValueError("weight_decay and weight_decay_end: must be >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: must be two numbers in [0, 1), got {list(self.betas)}")
        if self.clip_grad < 0:
            raise ValueError(f"clip_grad: must be >= 0 (0 disables), got {self.clip_grad}")
        if self.freeze_last_layer_epochs < 0:
            raise ValueError(f"freeze_last_layer_epochs: must be >= 0, got {self.freeze_last_layer_epochs}")
        if not 0 < self.layerwise_decay <= 1:
            raise ValueError(f"layerwise_decay: must be in (0, 1], got {self.layerwise_decay}")
        if not self.patch_embed_lr_mult > 0 or self.dino_head_wd_multiplier < 0:
            raise ValueError("patch_embed_lr_mult: must be positive (dino_head_wd_multiplier >= 0)")

    def peak_lr(self) -> float:
        """``base_lr`` scaled by ``scaling_rule`` for the global batch."""
        if self.scaling_rule == "sqrt_wrt_1024":
            return self.base_lr * 4 * math.sqrt(self.batch_size / 1024.0)
        if self.scaling_rule == "linear_wrt_256":
            return self.base_lr * self.batch_size / 256.0
        return self.base_lr


@dataclass(frozen=True)
class RunSettings:
    """Run options (``train:``)."""

    seed: int = 0
    data_shards: int | None = None
    input_size: int | None = None
    amp: bool = True
    probe_size: int = 256
    num_workers: int = 0
    buffer_chunks: int = 4
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed: must be >= 0, got {self.seed}")
        if self.data_shards is not None and self.data_shards < 1:
            raise ValueError(f"data_shards: must be at least 1, got {self.data_shards}")
        if self.input_size is not None and self.input_size < 1:
            raise ValueError(f"input_size: must be at least 1, got {self.input_size}")
        if self.probe_size < 2:
            raise ValueError(f"probe_size: must be at least 2, got {self.probe_size}")
        if self.num_workers < 0 or self.buffer_chunks < 1 or self.keep_checkpoints < 1:
            raise ValueError("num_workers must be >= 0, buffer_chunks and keep_checkpoints >= 1")


@dataclass(frozen=True)
class SSLConfig:
    """A whole training configuration (see :meth:`from_yaml` for the YAML layout)."""

    data: tuple[str, ...]
    model: ViTConfig
    crops: CropSettings
    heads: HeadSettings = field(default_factory=HeadSettings)
    dino: DinoSettings = field(default_factory=DinoSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    train: RunSettings = field(default_factory=RunSettings)
    where: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict of everything but the data paths and ``keep_checkpoints`` (checked on resume;
        ``num_workers`` is included: DataLoader workers interleave a pass's batches in their own order)."""
        out = {"model": self.model.to_dict(), "crops": asdict(self.crops), "heads": asdict(self.heads),
               "dino": asdict(self.dino), "teacher": asdict(self.teacher), "optim": asdict(self.optim),
               "train": {k: v for k, v in asdict(self.train).items() if k != "keep_checkpoints"},
               "where": self.where}
        result: dict[str, Any] = json.loads(json.dumps(out))
        return result

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str | os.PathLike[str]) -> SSLConfig:
        """Build from a parsed YAML mapping; every problem → one :class:`InputError` naming the key.

        Layout (relative data paths are relative to ``source``'s folder)::

            data: [store, …]           # particle stores
            where: "defocus_a > 1e4"  # optional SQL condition on the particles
            model: {size: tiny, depth: 6, patch_size: 8, img_size: 64, drop_path_rate: 0.0}
            heads: {dino_prototypes, ibot_prototypes, hidden_dim, bottleneck_dim, nlayers}
            crops: {global_size, global_scale, n_local, local_size, local_scale, ratio, hflip_p,
                    rot90, rotate_any, jitter_p, brightness, contrast, blur_p, blur_sigma, blur_kernel,
                    solarize_p, normalization: store|uint8, mean, std}
            ibot: {mask_sample_probability, mask_ratio, loss_weight}
            dino: {loss_weight, koleo_loss_weight, koleo_group, global_ignore_diagonal,
                   student_temp, sinkhorn_iterations, centering, center_momentum}
            teacher: {momentum, final_momentum, temp, warmup_temp, warmup_temp_epochs}
            optim: {epochs, epoch_length, batch_size, base_lr, scaling_rule, min_lr,
                    warmup_epochs, weight_decay, weight_decay_end, betas, clip_grad,
                    freeze_last_layer_epochs, layerwise_decay, patch_embed_lr_mult,
                    dino_head_wd_multiplier}
            train: {seed, data_shards, input_size, amp, probe_size, num_workers,
                    buffer_chunks, keep_checkpoints}
        """
        src = Path(source)
        if not isinstance(data, Mapping):
            raise InputError(src, "an SSL configuration must be a YAML mapping (data:, model:, optim: …)")
        unknown = sorted(str(k) for k in data if k not in _SECTIONS)
        if unknown:
            raise InputError(src, f"unknown key {unknown[0]} (known: {', '.join(_SECTIONS)})")
        items = data.get("data")
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            raise InputError(src, "key data: must list at least one particle store path")
        base = src.resolve().parent
        paths = tuple(str(p if p.is_absolute() else base / p) for p in (Path(i) for i in items))
        where = data.get("where")
        if where is not None and (not isinstance(where, str) or not where.strip()):
            raise InputError(src, "key where: must be an SQL condition (text) or absent")

        def section(name: str) -> dict[str, Any]:
            value = data.get(name) or {}
            if not isinstance(value, Mapping):
                raise InputError(src, f"key {name}: must be a mapping")
            return {str(k): v for k, v in value.items()}

        model_map = section("model")
        size = model_map.pop("size", "tiny")
        if size not in VIT_SIZES:
            raise InputError(src, f"key model.size: must be one of {', '.join(VIT_SIZES)}, got {size!r}")
        dim, depth, heads = VIT_SIZES[size]
        vit_fields = {f.name: f for f in fields(ViTConfig)}
        vit_values: dict[str, Any] = {"embed_dim": dim, "depth": depth, "num_heads": heads}
        for key, value in model_map.items():
            if key not in vit_fields or key == "in_chans":
                raise InputError(src, f"unknown key model.{key} (known: size, "
                                      f"{', '.join(k for k in vit_fields if k != 'in_chans')})")
            default = vit_fields[key].default
            if value is None:
                raise InputError(src, f"key model.{key}: must have a value")
            vit_values[key] = _coerce(src, f"model.{key}", value, 1 if default is dataclass_missing() else default)
        try:
            model = ViTConfig(**vit_values)
        except (TypeError, ValueError) as exc:
            raise InputError(src, f"key model: {exc}") from None

        ibot_map = section("ibot")
        crops_map = section("crops")
        for key in ("mask_sample_probability", "mask_ratio"):
            if key in ibot_map:
                crops_map[key] = ibot_map.pop(key)
        dino_map = section("dino")
        if "loss_weight" in ibot_map:
            dino_map["ibot_loss_weight"] = ibot_map.pop("loss_weight")
        if ibot_map:
            raise InputError(src, f"unknown key ibot.{sorted(ibot_map)[0]} "
                                  "(known: mask_sample_probability, mask_ratio, loss_weight)")
        if "patch_size" in crops_map:
            raise InputError(src, "unknown key crops.patch_size (the patch size is model.patch_size)")
        crops_map["patch_size"] = model.patch_size
        crops = _build(CropSettings, crops_map, src, "crops")
        return cls(data=paths, model=model, crops=crops,
                   heads=_build(HeadSettings, section("heads"), src, "heads"),
                   dino=_build(DinoSettings, dino_map, src, "dino"),
                   teacher=_build(TeacherSettings, section("teacher"), src, "teacher"),
                   optim=_build(OptimSettings, section("optim"), src, "optim"),
                   train=_build(RunSettings, section("train"), src, "train"),
                   where=where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> SSLConfig:
        """Read and validate a YAML configuration (``yaml.safe_load``)."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise InputError(p, "no such configuration file")
        try:
            data = yaml.safe_load(p.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(p, f"is not a YAML configuration ({first})") from None
        return cls.from_mapping(data, p)


def _coerce(src: Path, key: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of ``default`` (bool, int, float, str, tuple of numbers)."""
    def bad(kind: str) -> InputError:
        return InputError(src, f"key {key}: must be {kind}, got {value!r}")

    if value is None:
        return None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("text")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            raise bad(f"a list of {len(default)} numbers")
        return tuple(float(v) for v in value)
    return value


def _build(cls: type[Any], values: Mapping[str, Any], src: Path, section: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    hidden = {"patch_size"} if cls is CropSettings else set()
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        names = ", ".join(k for k in known if k not in hidden)
        raise InputError(src, f"unknown key {section}.{unknown[0]} (known: {names})")
    checked: dict[str, Any] = {}
    for key, value in values.items():
        default = known[key].default
        if value is None and default is not None:
            raise InputError(src, f"key {section}.{key}: must have a value")
        if default is None or default is dataclass_missing():  # optional integer settings
            default = 1
        checked[key] = _coerce(src, f"{section}.{key}", value, default)
    try:
        return cls(**checked)
    except (TypeError, ValueError) as exc:
        text = str(exc)
        name = text.split(":", 1)[0] if ":" in text else ""
        if name in known:
            raise InputError(src, f"key {section}.{text}") from None
        raise InputError(src, f"key {section}: {text}") from None


def dataclass_missing() -> Any:
    """The dataclasses ``MISSING`` sentinel."""
    import dataclasses

    return dataclasses.MISSING


# ----------------------------------------------------------------------------------------------
# Model, parameter groups, schedules
# ----------------------------------------------------------------------------------------------
class SSLStudent(nn.Module):
    """Backbone + DINO head + iBOT head; :meth:`forward` runs a whole student pass (one DDP call)."""

    def __init__(self, vit: ViTConfig, heads: HeadSettings) -> None:
        super().__init__()
        self.backbone = VisionTransformer(vit)
        self.dino_head = DINOHead(vit.embed_dim, heads.dino_prototypes, hidden_dim=heads.hidden_dim,
                                  bottleneck_dim=heads.bottleneck_dim, nlayers=heads.nlayers)
        self.ibot_head = DINOHead(vit.embed_dim, heads.ibot_prototypes, hidden_dim=heads.hidden_dim,
                                  bottleneck_dim=heads.bottleneck_dim, nlayers=heads.nlayers)

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor, masks: torch.Tensor,
                mask_index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Global crops with masks and local crops → CLS tokens, DINO logits, iBOT logits of masked patches."""
        g = self.backbone.forward_features(global_crops, masks=masks)
        g_cls = g["x_norm_clstoken"]
        cls_all = [g_cls]
        if local_crops.shape[0]:
            cls_all.append(self.backbone.forward_features(local_crops)["x_norm_clstoken"])
        logits = self.dino_head(torch.cat(cls_all))
        n_g = g_cls.shape[0]
        patches = g["x_norm_patchtokens"].flatten(0, 1).index_select(0, mask_index)
        return {"cls_pre_head": g_cls, "global_logits": logits[:n_g], "local_logits": logits[n_g:],
                "ibot_logits": self.ibot_head(patches)}


def param_groups(student: SSLStudent, optim: OptimSettings) -> list[dict[str, Any]]:
    """AdamW parameter groups with ``lr_multiplier``, ``wd_multiplier`` and ``is_last_layer`` (DINOv3 rules)."""
    depth = len(student.backbone.blocks)
    groups: dict[tuple[float, float, bool], dict[str, Any]] = {}
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("backbone."):
            lr_mult = optim.layerwise_decay ** (depth + 1 - layer_id_for_param(name, depth))
        else:
            lr_mult = 1.0
        if "patch_embed" in name:
            lr_mult *= optim.patch_embed_lr_mult
        wd_mult = optim.dino_head_wd_multiplier if "dino_head" in name else 1.0
        if name.endswith("bias") or "norm" in name or "gamma" in name:
            wd_mult = 0.0
        last = "last_layer" in name
        key = (lr_mult, wd_mult, last)
        g = groups.setdefault(key, {"params": [], "names": [], "lr_multiplier": lr_mult, "wd_multiplier": wd_mult,
                                    "is_last_layer": last})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def schedule_value(it: int, total: int, base: float, final: float, warmup: int = 0,
                   warmup_start: float = 0.0) -> float:
    """DINO's ``CosineScheduler`` at iteration ``it``: linear ``warmup_start → base`` over ``warmup``
    iterations (end points included), then cosine ``base → final`` over the remaining ones."""
    if it < warmup:
        return warmup_start + (base - warmup_start) * (it / (warmup - 1) if warmup > 1 else 1.0)
    rest = max(total - warmup, 1)
    j = min(it - warmup, rest)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * j / rest))


@dataclass(frozen=True)
class Schedules:
    """Per-iteration values of every schedule."""

    config: SSLConfig
    steps_per_epoch: int

    @property
    def total(self) -> int:
        """Iterations of the whole run."""
        return self.steps_per_epoch * self.config.optim.epochs

    def at(self, it: int) -> dict[str, float]:
        """``lr``, ``last_layer_lr``, ``weight_decay``, ``momentum``, ``teacher_temp`` at iteration ``it``."""
        o, t, n = self.config.optim, self.config.teacher, self.steps_per_epoch
        warm = round(o.warmup_epochs * n)
        lr = schedule_value(it, self.total, o.peak_lr(), o.min_lr, warm)
        frozen = it < round(o.freeze_last_layer_epochs * n)
        temp_warm = round(t.warmup_temp_epochs * n)
        temp = (schedule_value(it, temp_warm, t.temp, t.temp, temp_warm, t.warmup_temp) if it < temp_warm
                else t.temp)
        return {"lr": lr, "last_layer_lr": 0.0 if frozen else lr,
                "weight_decay": schedule_value(it, self.total, o.weight_decay, o.weight_decay_end),
                "momentum": schedule_value(it, self.total, t.momentum, t.final_momentum),
                "teacher_temp": temp}


def effective_rank(features: torch.Tensor) -> float:
    """``exp`` of the entropy of the normalised singular values of ``features`` (n, d) (RankMe)."""
    s = torch.linalg.svdvals(features.double())
    p = s / s.sum().clamp(min=1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * torch.log(p)).sum()))


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
class _Data:
    """Per-process batches: stores × this process's shards, passes of a fixed number of steps."""

    def __init__(self, config: SSLConfig, shards: Sequence[int], n_shards: int) -> None:
        from cryoset.learn.particles import Resize, StoreParticleStream
        from cryoset.store.dataset import ParticleStore, Selection

        self.config = config
        self.shards = list(shards)
        opt, run = config.optim, config.train
        per_shard = opt.batch_size // n_shards
        self.stores: list[Any] = []
        self.selections: list[Any] = []
        self.streams: list[list[Any]] = []
        for path in config.data:
            p = Path(path)
            if not p.exists():
                raise InputError(p, "no such particle store")
            store = ParticleStore.open(p)
            sql = None
            if config.where:
                sql = f"SELECT * FROM particles WHERE {config.where} ORDER BY experiment_id, particle_index"
            table = store.select(sql).table
            if "ssl_row" in table.columns:
                raise InputError(p, "has an annotation column named ssl_row, which training uses itself")
            table = table.assign(ssl_row=np.arange(len(table), dtype=np.int64))
            selection = Selection(table)
            shapes = {tuple(store.images_array(e).shape[1:]) for e in table["experiment_id"].astype(str).unique()}
            transform = Resize(run.input_size or config.crops.global_size) if len(shapes) > 1 else None
            streams = [StoreParticleStream(store, selection, transform, columns=["ssl_row"], shuffle=True,
                                           seed=run.seed, buffer_chunks=run.buffer_chunks, rank=d,
                                           world_size=n_shards, batch_size=per_shard, drop_last=True)
                       for d in self.shards]
            self.stores.append(store)
            self.selections.append(selection)
            self.streams.append(streams)
        self.batches = [len(s[0]) for s in self.streams]  # per pass, equal for every shard
        self.steps_per_pass = sum(self.batches)
        if self.steps_per_pass == 0:
            total = sum(len(s) for s in self.selections)
            raise InputError(config.data[0], f"holds {total} particles: fewer than one batch per shard "
                                             f"({per_shard} × {n_shards} shards)")
        self._pass = -1
        self._iters: list[list[Iterator[Any]]] = []
        self._order: np.ndarray = np.zeros(0, np.int64)
        self._pos = 0

    def _start_pass(self, data_pass: int) -> None:
        from torch.utils.data import DataLoader

        self._pass = data_pass
        self._iters = []
        for streams in self.streams:
            row = []
            for s in streams:
                s.set_epoch(data_pass)
                nw = self.config.train.num_workers
                row.append(iter(DataLoader(s, batch_size=None, num_workers=nw)) if nw else iter(s))
            self._iters.append(row)
        order = np.concatenate([np.full(n, i, np.int64) for i, n in enumerate(self.batches)])
        np.random.default_rng([self.config.train.seed, data_pass, 7]).shuffle(order)
        self._order = order
        self._pos = 0

    def batch(self, it: int) -> tuple[int, int, torch.Tensor, np.ndarray]:
        """``(pass, store, images (b, 1, y, x), rows)`` of global iteration ``it`` for this process."""
        data_pass, offset = divmod(it, self.steps_per_pass)
        if data_pass != self._pass or offset < self._pos:
            self._start_pass(data_pass)
        while True:
            store = int(self._order[self._pos])
            parts = [next(i) for i in self._iters[store]]
            self._pos += 1
            if self._pos - 1 == offset:
                break
        images = torch.cat([p[0] for p in parts])
        rows = np.concatenate([np.asarray(p[1]["ssl_row"], dtype=np.int64) for p in parts])
        return data_pass, store, images, rows

    def probe_images(self, n: int, seed: int) -> torch.Tensor:
        """A fixed batch of up to ``n`` particles of the first store (seeded choice), as stored."""
        sel = self.selections[0].table
        pick = np.sort(np.random.default_rng([seed, 11]).choice(len(sel), size=min(n, len(sel)), replace=False))
        sub = sel.iloc[pick]
        size = self.config.train.input_size or self.config.crops.global_size
        out = []
        for exp, part in sub.groupby("experiment_id", sort=True):
            imgs = torch.from_numpy(self.stores[0].read_images(str(exp), part["particle_index"].to_numpy(np.int64)))
            out.append(resize_images(imgs[:, None], size))
        return torch.cat(out)


def _prepare_probe(images: torch.Tensor, crops: CropSettings) -> torch.Tensor:
    """Probe images → network input: resized to the global crop size, normalised like the crops."""
    x = resize_images(images.float(), crops.global_size)
    if crops.normalization == "uint8":
        x = (x / 255.0 - crops.mean) / crops.std
    return x


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def _step_seed(seed: int, it: int, rank: int) -> int:
    words = np.random.SeedSequence([seed, it, rank, 13]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


@torch.no_grad()
def probe_metrics(backbone: VisionTransformer, images: torch.Tensor, batch: int = 128) -> dict[str, float]:
    """Collapse monitors of CLS features of ``images``: ``feature_std`` (mean per-dimension std of
    the L2-normalised features; ``1/√d`` for isotropic features, 0 when collapsed) and ``effective_rank``."""
    was = backbone.training
    backbone.eval()
    feats = torch.cat([backbone.forward_features(images[i:i + batch])["x_norm_clstoken"].float()
                       for i in range(0, images.shape[0], batch)])
    backbone.train(was)
    unit = F.normalize(feats, dim=-1)
    return {"feature_std": float(unit.std(dim=0).mean()), "effective_rank": effective_rank(feats),
            "feature_dim": float(feats.shape[1])}


def _save_model(out: Path, teacher: SSLStudent, config: SSLConfig, epoch: int,
                provenance: Mapping[str, Any] | None) -> None:
    from cryoset.learn.vit_weights import CRYOPANDA_NORMALIZATION, STORE_NORMALIZATION, save_vit

    crops = config.crops
    norm = (dict(STORE_NORMALIZATION) if crops.normalization == "store"
            else {**CRYOPANDA_NORMALIZATION, "mean": crops.mean, "std": crops.std})
    meta = {"normalization": norm, "input_size": crops.global_size,
            "training": {"method": "DINO + iBOT + KoLeo (teacher backbone)", "epoch": epoch,
                         "config": config.to_json(), "data": list(config.data)},
            "provenance": dict(provenance or {})}
    backbone = copy.deepcopy(teacher.backbone).float().cpu()
    save_vit(out / "model.safetensors", backbone, metadata=json.loads(json.dumps(meta, default=str)))


def train_ssl(
    config: SSLConfig,
    out_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    resume: bool = True,
    stop_after_epoch: int | None = None,
    provenance: Mapping[str, Any] | None = None,
    on_step: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[list[dict[str, Any]]], object] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train student and teacher; write checkpoints, ``metrics.csv`` and ``model.safetensors`` in ``out_dir``.

    Parameters
    ----------
    config
        The configuration (:meth:`SSLConfig.from_yaml`).
    out_dir
        Run folder (see the module docstring).
    device
        ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    resume
        Continue from the last complete checkpoint of ``out_dir`` (the same settings required).
    stop_after_epoch
        Return after this epoch (0-based) even if more are configured (tests; interrupted runs).
    on_step
        ``on_step(epoch, step_in_epoch, steps_per_epoch, loss)`` after each step (rank 0).
    on_epoch
        Called (rank 0) with the metric rows so far after each epoch (e.g. to plot them).

    Returns
    -------
    dict
        ``epochs_run``, ``last_metrics``, ``steps_per_epoch``, ``n_particles``, ``seconds``,
        ``images_per_s`` (particles per second over this call's steps).
    """
    out = Path(out_dir)
    rank, world, dev = training_process(device)
    opt_cfg, run, crops = config.optim, config.train, config.crops
    n_shards = run.data_shards or world
    if n_shards % world:
        raise InputError("train.data_shards", f"{n_shards} shards cannot be split over {world} processes")
    if opt_cfg.batch_size % n_shards:
        raise InputError("optim.batch_size", f"{opt_cfg.batch_size} is not divisible by {n_shards} data shards")
    per_shard = opt_cfg.batch_size // n_shards
    group = config.dino.koleo_group or per_shard
    if per_shard % group or per_shard < 2:
        raise InputError("dino.koleo_group", f"{group} must divide the per-shard batch of {per_shard} (≥ 2)")
    per_rank_shards = n_shards // world
    data = _Data(config, range(rank * per_rank_shards, (rank + 1) * per_rank_shards), n_shards)
    steps_per_epoch = opt_cfg.epoch_length or data.steps_per_pass
    sched = Schedules(config, steps_per_epoch)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(run.seed)
    student = SSLStudent(config.model, config.heads).to(dev)
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    teacher.eval()
    groups = param_groups(student, opt_cfg)
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups],
                                  lr=0.0, betas=opt_cfg.betas, weight_decay=0.0)
    config_json = config.to_json()
    centres = {"dino": torch.zeros(config.heads.dino_prototypes, device=dev),
               "ibot": torch.zeros(config.heads.ibot_prototypes, device=dev)}  # the centering option's EMAs
    start_epoch, history = 0, []
    ckpt = latest_checkpoint(out / "checkpoints") if resume else None
    if ckpt is not None:
        state, saved_cfg, _ = read_weights(ckpt / "model.safetensors", KIND)
        if saved_cfg != config_json:
            raise InputError(ckpt, "was written with other settings; use a new output folder or --no-resume")
        try:
            student.load_state_dict({k[len("student."):]: v for k, v in state.items() if k.startswith("student.")})
            teacher.load_state_dict({k[len("teacher."):]: v for k, v in state.items() if k.startswith("teacher.")})
        except RuntimeError as exc:
            raise InputError(ckpt, f"does not fit this model ({str(exc).splitlines()[0][:160]})") from None
        for name in centres:
            if f"centre.{name}" in state:
                centres[name] = state[f"centre.{name}"].to(dev, torch.float32)
        body = load_optimizer_state(ckpt, optimizer)
        start_epoch = int(body["epoch"]) + 1
        history = list(body.get("history", []))
    net: nn.Module = student
    if world > 1:
        net = nn.parallel.DistributedDataParallel(student, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                  find_unused_parameters=True)
    probe = _prepare_probe(data.probe_images(run.probe_size, run.seed), crops).to(dev) if rank == 0 else None
    use_amp = run.amp and dev.type == "cuda"
    d_cfg = config.dino
    n_local = crops.n_local
    g_terms = 2 if d_cfg.global_ignore_diagonal else 4
    l_terms = 2 * n_local
    g_scale, l_scale = g_terms / (g_terms + l_terms), l_terms / (g_terms + l_terms)
    s_params: list[torch.Tensor] = list(student.parameters())
    t_params: list[torch.Tensor] = list(teacher.parameters())
    last_epoch = min(opt_cfg.epochs - 1, stop_after_epoch if stop_after_epoch is not None else 10**9)
    t0, seen = time.perf_counter(), 0
    for epoch in range(start_epoch, last_epoch + 1):
        student.train()
        sums: dict[str, float] = {}
        t_epoch, n_epoch = time.perf_counter(), 0
        values: dict[str, float] = {}
        for s in range(steps_per_epoch):
            it = epoch * steps_per_epoch + s
            values = sched.at(it)
            data_pass, store_i, images, rows = data.batch(it)
            b = images.shape[0]
            if run.input_size and images.shape[-1] != run.input_size:
                images = resize_images(images, run.input_size)
            # crop boxes in the pixels of the images they cut (after the resize)
            params = [draw_params(crops, particle_rng(run.seed, data_pass, store_i, int(r)), *images.shape[-2:])
                      for r in rows]
            batch = make_crops(images.to(dev), params, crops)
            masks = batch.masks.reshape(2 * b, -1)
            mask_index = masks.flatten().nonzero().squeeze(1)
            n_masked = masks.sum(dim=1).clamp(min=1).float()
            weights = (1.0 / n_masked)[:, None].expand_as(masks).flatten()[mask_index]
            torch.manual_seed(_step_seed(run.seed, it, rank))
            with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                t_out = teacher.backbone.forward_features(batch.global_crops)
                t_cls = teacher.dino_head(t_out["x_norm_clstoken"])
                t_patch = teacher.ibot_head(t_out["x_norm_patchtokens"].flatten(0, 1).index_select(0, mask_index))
            temp = values["teacher_temp"]
            if d_cfg.centering == "centering":
                t_dino = centred_softmax(t_cls, centres["dino"], temp).unflatten(0, (2, b))
                t_ibot = centred_softmax(t_patch, centres["ibot"], temp)
                centres["dino"] = updated_centre(centres["dino"], t_cls, d_cfg.center_momentum)
                centres["ibot"] = updated_centre(centres["ibot"], t_patch, d_cfg.center_momentum)
            else:
                t_dino = sinkhorn_knopp(t_cls, temp, d_cfg.sinkhorn_iterations).unflatten(0, (2, b))
                t_ibot = sinkhorn_knopp(t_patch, temp, d_cfg.sinkhorn_iterations)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                s_out = net(batch.global_crops, batch.local_crops, masks, mask_index)
            st = d_cfg.student_temp
            loss_global = dino_loss(s_out["global_logits"].unflatten(0, (2, b)), t_dino, st,
                                    ignore_diagonal=d_cfg.global_ignore_diagonal)
            loss_local = (dino_loss(s_out["local_logits"].unflatten(0, (n_local, b)), t_dino, st) if n_local
                          else loss_global.new_zeros(()))
            cls_pre = s_out["cls_pre_head"].float().unflatten(0, (2, b))
            koleo = (koleo_loss_grouped(cls_pre[0], group) + koleo_loss_grouped(cls_pre[1], group)) / 2
            loss_ibot = ibot_loss(s_out["ibot_logits"], t_ibot, weights, 2 * b, st)
            total = (d_cfg.loss_weight * (g_scale * loss_global + l_scale * loss_local)
                     + d_cfg.koleo_loss_weight * 2 * koleo + d_cfg.ibot_loss_weight * loss_ibot)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if opt_cfg.clip_grad > 0:
                nn.utils.clip_grad_norm_(s_params, opt_cfg.clip_grad)
            for g in optimizer.param_groups:
                g["lr"] = (values["last_layer_lr"] if g["is_last_layer"] else values["lr"]) * g["lr_multiplier"]
                g["weight_decay"] = values["weight_decay"] * g["wd_multiplier"]
            optimizer.step()
            with torch.no_grad():
                m = values["momentum"]
                torch._foreach_mul_(t_params, m)
                torch._foreach_add_(t_params, s_params, alpha=1 - m)
            parts = torch.stack([total.detach(), loss_global.detach(), loss_local.detach(), koleo.detach(),
                                 loss_ibot.detach()]).float()
            if world > 1:
                dist.all_reduce(parts)
                parts /= world
            for name, v in zip(("loss", "dino_global_loss", "dino_local_loss", "koleo_loss", "ibot_loss"),
                               parts.tolist(), strict=True):
                sums[name] = sums.get(name, 0.0) + v
            n_epoch += b * world
            if on_step is not None and rank == 0:
                on_step(epoch, s, steps_per_epoch, float(parts[0]))
        seconds = time.perf_counter() - t_epoch
        seen += n_epoch
        row: dict[str, Any] = {"epoch": epoch, **{k: v / steps_per_epoch for k, v in sums.items()},
                               "lr": values["lr"], "weight_decay": values["weight_decay"],
                               "momentum": values["momentum"], "teacher_temp": values["teacher_temp"],
                               "images_per_s": n_epoch / seconds if seconds > 0 else math.nan}
        if rank == 0 and probe is not None:
            row.update({k: v for k, v in probe_metrics(teacher.backbone, probe).items() if k != "feature_dim"})
        history.append(row)
        if rank == 0:
            state = {**{f"student.{k}": v for k, v in student.state_dict().items()},
                     **{f"teacher.{k}": v for k, v in teacher.state_dict().items()},
                     **{f"centre.{k}": v for k, v in centres.items()}}
            save_training_checkpoint(out / "checkpoints", epoch, model_state=state, kind=KIND, config=config_json,
                                     optimizer=optimizer, state={"history": history, "iteration": (epoch + 1) *
                                                                 steps_per_epoch}, provenance=provenance)
            _prune_checkpoints(out / "checkpoints", run.keep_checkpoints)
            _save_model(out, teacher, config, epoch, provenance)
            write_metrics_csv(out, history)
            if on_epoch is not None:
                on_epoch(history)
            if log is not None:
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if world > 1:
            dist.barrier()
    seconds = time.perf_counter() - t0
    n_particles = sum(len(s) for s in data.selections)
    return {"epochs_run": len(history), "last_metrics": history[-1] if history else {},
            "steps_per_epoch": steps_per_epoch, "n_particles": n_particles, "seconds": seconds,
            "images_per_s": seen / seconds if seconds > 0 else math.nan}


def _prune_checkpoints(root: Path, keep: int) -> None:
    import re

    found = sorted((int(m.group(1)), d) for d in root.iterdir()
                   if d.is_dir() and (m := re.match(r"^epoch_(\d{4,})$", d.name)))
    for _, d in found[:-keep]:
        shutil.rmtree(d, ignore_errors=True)
