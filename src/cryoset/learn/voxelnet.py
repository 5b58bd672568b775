"""Voxel networks for density maps: backbone atoms, amino acids and secondary structure.

One interface, two architectures (:func:`build_voxel_net`):

* ``unet`` (default) — a 3D U-Net sized to train usefully on a few CPU cores: ``levels``
  resolution levels with ``base_channels · 2^l`` channels, two 3×3×3 convolutions per level
  (convolution → instance norm → LeakyReLU(0.01)), max-pool down, transposed convolution up,
  skip connections by concatenation.
* ``unetr`` — the UNETR-style transformer of Cryo2Struct (the GPU configuration): 16³ patches
  embedded by a strided convolution plus a learned absolute position table, pre-norm
  transformer blocks (multi-head self-attention, GELU MLP), skips from blocks 3/6/9/12 decoded
  by transposed convolutions (the paper's "blue", "green" and "yellow" blocks). Its module
  names and tensor layouts are those of the published Cryo2Struct checkpoints
  (``embed.patch_embeddings``, ``transformer.block_list.N.mhsa.to_qvk`` …) so that
  :func:`load_published_checkpoint` maps them explicitly.

Both take ``(batch, 1, 32, 32, 32)`` float densities (``(z, y, x)`` order, normalised to
[0, 1] as ``map prepare`` writes them) and return a dict ``head name → logits`` with shape
``(batch, n_classes, 32, 32, 32)``. Heads and their label codes are those of
:mod:`cryoset.maps.labels`: ``backbone`` (0 none, 1 Cα, 2 N, 3 C), ``amino``
(0 none, 1–20 ALA … VAL) and ``secondary`` (0 none, 1 coil, 2 helix, 3 strand).

The published key layout (Cryo2Struct ``infer/atom_inference.py``: Lightning module attribute
``model`` = ``Transformer_UNET``): multi-head attention ``to_qvk`` is one bias-free
``Linear(D, 3D)`` whose output feature ``f`` is split as ``f = d·3H + k·H + h``
(``d`` the feature within a head, ``k`` ∈ {q, k, v}, ``h`` the head); heads are merged back
as ``h·(D/H) + d``. Tokens are the patch grid flattened with the first spatial axis slowest.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from cryoset.errors import InputError

__all__ = [
    "HEADS",
    "UNETR",
    "UNet3D",
    "VoxelNetConfig",
    "build_voxel_net",
    "load_published_checkpoint",
    "published_key_map",
]

_T = TypeVar("_T")
#: Head name → number of classes (label codes of :mod:`cryoset.maps.labels`, 0 = none).
HEADS: Mapping[str, int] = {"backbone": 4, "amino": 21, "secondary": 4}
_ARCHS = ("unet", "unetr")


@dataclass(frozen=True)
class VoxelNetConfig:
    """Architecture of a voxel network (stored as JSON beside every checkpoint).

    Attributes
    ----------
    arch
        ``"unet"`` or ``"unetr"``.
    heads
        Output heads, a subset of :data:`HEADS` (order kept).
    box_px
        Sub-grid edge (voxels); must be divisible by ``2^(levels-1)`` (U-Net) or by
        ``patch_px`` (UNETR).
    base_channels
        U-Net channels at full resolution; UNETR decoder ``base_filters`` (16 published).
    levels
        U-Net resolution levels (4: 32³ → 4³).
    embed_dim, depth, num_heads, mlp_dim, patch_px, dropout, extract_layers
        UNETR transformer: 768 / 12 / 12 / 3072 / 16 / 0.0 / (3, 6, 9, 12) published.
    """

    arch: str = "unet"
    heads: tuple[str, ...] = ("backbone", "amino", "secondary")
    box_px: int = 32
    base_channels: int = 8
    levels: int = 4
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    patch_px: int = 16
    dropout: float = 0.0
    extract_layers: tuple[int, ...] = (3, 6, 9, 12)

    def __post_init__(self) -> None:
        if self.arch not in _ARCHS:
            raise ValueError(f"arch must be one of {', '.join(_ARCHS)}, got {self.arch!r}")
        unknown = [h for h in self.heads if h not in HEADS]
        if unknown or not self.heads or len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads must be distinct names among {', '.join(HEADS)}, got {self.heads}")
        if self.box_px < 1 or self.base_channels < 1:
            raise ValueError("box_px and base_channels must be positive")
        if self.arch == "unet":
            if self.levels < 1 or self.box_px % (2 ** (self.levels - 1)):
                raise ValueError(f"box_px {self.box_px} must be divisible by 2^(levels-1) = "
                                 f"{2 ** (self.levels - 1)}")
        else:
            if self.box_px % self.patch_px or (self.box_px // self.patch_px) < 1:
                raise ValueError(f"box_px {self.box_px} must be a multiple of patch_px {self.patch_px}")
            if self.patch_px != 16 or self.box_px // self.patch_px & (self.box_px // self.patch_px - 1):
                raise ValueError("the UNETR decoder needs patch_px 16 (four ×2 up-samplings)")
            if self.embed_dim % self.num_heads:
                raise ValueError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
            if len(self.extract_layers) != 4 or sorted(self.extract_layers) != list(self.extract_layers) \
                    or self.extract_layers[-1] != self.depth or self.extract_layers[0] < 1:
                raise ValueError(f"extract_layers must be 4 increasing block numbers ending at depth "
                                 f"{self.depth}, got {self.extract_layers}")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_json(self) -> str:
        """JSON text of the configuration."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str | os.PathLike[str] | None = None
                     ) -> VoxelNetConfig:
        """Build from a mapping (JSON/YAML); unknown keys and bad values → :class:`InputError`."""
        return settings_from_mapping(cls, data, source, "model", tuples=("heads", "extract_layers"))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> VoxelNetConfig:
        """Read the JSON written by :meth:`to_json`."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(p, f"cannot read the model configuration ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(p, "the model configuration must be a JSON object")
        return cls.from_mapping(data, p)


def settings_from_mapping(cls: type[_T], data: Mapping[str, Any], source: str | os.PathLike[str] | None,
                          what: str, *, tuples: tuple[str, ...] = ()) -> _T:
    """A settings dataclass from a YAML/JSON mapping; unknown keys and bad values → one InputError line.

    ``tuples`` names fields given as lists that the dataclass holds as tuples.
    """
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(map(str, data)) - names)
    if unknown:
        raise InputError(source, f"unknown {what} setting(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(sorted(names))})")
    values = dict(data)
    for key in tuples:
        if key in values:
            if not isinstance(values[key], (list, tuple)):
                raise InputError(source, f"{what} setting {key} must be a list")
            values[key] = tuple(values[key])
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise InputError(source, f"bad {what} settings: {exc}") from None


def _n_classes(heads: Sequence[str]) -> dict[str, int]:
    return {h: HEADS[h] for h in heads}


# ----------------------------------------------------------------------------------------------
# U-Net
# ----------------------------------------------------------------------------------------------
class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv3d(c_in, c_out, 3, padding=1), nn.InstanceNorm3d(c_out, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(c_out, c_out, 3, padding=1), nn.InstanceNorm3d(c_out, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


class UNet3D(nn.Module):
    """3D U-Net with one 1×1×1 classifier per head.

    Shapes: ``(B, 1, b, b, b)`` → ``{head: (B, C_head, b, b, b)}``.
    """

    def __init__(self, config: VoxelNetConfig) -> None:
        super().__init__()
        self.config = config
        ch = [config.base_channels * 2**level for level in range(config.levels)]
        self.down = nn.ModuleList([_DoubleConv(1 if i == 0 else ch[i - 1], ch[i]) for i in range(len(ch))])
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList([nn.ConvTranspose3d(ch[i], ch[i - 1], 2, stride=2)
                                 for i in range(len(ch) - 1, 0, -1)])
        self.merge = nn.ModuleList([_DoubleConv(2 * ch[i - 1], ch[i - 1]) for i in range(len(ch) - 1, 0, -1)])
        self.heads = nn.ModuleDict({h: nn.Conv3d(ch[0], c, 1) for h, c in _n_classes(config.heads).items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return {h: head(x) for h, head in self.heads.items()}


# ----------------------------------------------------------------------------------------------
# UNETR (Cryo2Struct layout)
# ----------------------------------------------------------------------------------------------
class _PositionTable(nn.Module):
    def __init__(self, n_tokens: int, dim: int) -> None:
        super().__init__()
        self.abs_pos_enc = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.abs_pos_enc


class _Embed(nn.Module):
    def __init__(self, config: VoxelNetConfig) -> None:
        super().__init__()
        n = (config.box_px // config.patch_px) ** 3
        self.patch_embeddings = nn.Conv3d(1, config.embed_dim, config.patch_px, stride=config.patch_px,
                                          bias=False)
        self.position_embeddings = _PositionTable(n, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embeddings(x).flatten(2).transpose(1, 2)  # (B, gz·gy·gx, D), z slowest
        return self.dropout(self.position_embeddings(tokens))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim // heads
        self.to_qvk = nn.Linear(dim, 3 * dim, bias=False)
        self.W_0 = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        # feature index f = d·3H + k·H + h  →  (B, T, d, k, h)
        qkv = self.to_qvk(x).view(b, t, self.dim_head, 3, self.heads).permute(3, 0, 4, 1, 2)
        out = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, T, d)
        return self.W_0(out.transpose(1, 2).reshape(b, t, self.heads * self.dim_head))


class _Block(nn.Module):
    def __init__(self, config: VoxelNetConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.mhsa = _Attention(d, config.num_heads)
        self.drop = nn.Dropout(config.dropout)
        self.norm_1 = nn.LayerNorm(d)
        self.norm_2 = nn.LayerNorm(d)
        self.linear = nn.Sequential(nn.Linear(d, config.mlp_dim), nn.GELU(), nn.Dropout(config.dropout),
                                    nn.Linear(config.mlp_dim, d), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.mhsa(self.norm_1(x))) + x
        return self.linear(self.norm_2(y)) + y


class _Encoder(nn.Module):
    def __init__(self, config: VoxelNetConfig) -> None:
        super().__init__()
        self.extract = tuple(config.extract_layers)
        self.block_list = nn.ModuleList([_Block(config) for _ in range(config.depth)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, block in enumerate(self.block_list):
            x = block(x)
            if i + 1 in self.extract:
                out.append(x)
        return out


class _ConvBlock(nn.Module):
    """Conv → norm (→ LeakyReLU → conv → norm), plus a residual (1×1 conv + norm when channels change)."""

    def __init__(self, c_in: int, c_out: int, *, double: bool, norm: type[nn.Module]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv3d(c_in, c_out, 3, padding=1), norm(c_out)]
        if double:
            layers += [nn.LeakyReLU(0.01), nn.Conv3d(c_out, c_out, 3, padding=1), norm(c_out)]
        self.conv_block = nn.Sequential(*layers)
        self.conv_down = (nn.Sequential(nn.Conv3d(c_in, c_out, 1), norm(c_out)) if c_in != c_out else None)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x if self.conv_down is None else self.conv_down(x)
        return self.act(self.conv_block(x) + res)


class _Up(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.block = nn.ConvTranspose3d(c_in, c_out, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _Blue(nn.Module):
    def __init__(self, c_in: int, c_out: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [_Up(c_in if i == 0 else c_out, c_out),
                     _ConvBlock(c_out, c_out, double=False, norm=nn.BatchNorm3d)]
        self.blocks = nn.ModuleList(mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.blocks:
            x = m(x)
        return x


def _instance(c: int) -> nn.Module:
    return nn.InstanceNorm3d(c)


class UNETR(nn.Module):
    """UNETR with Cryo2Struct's module names; one 1×1×1 classifier per head.

    Shapes: ``(B, 1, b, b, b)`` → ``{head: (B, C_head, b, b, b)}`` with ``b = 2·patch_px``.
    """

    def __init__(self, config: VoxelNetConfig) -> None:
        super().__init__()
        self.config = config
        d, f = config.embed_dim, config.base_channels
        self.grid = config.box_px // config.patch_px
        norm: type[nn.Module] = nn.InstanceNorm3d
        self.embed = _Embed(config)
        self.transformer = _Encoder(config)
        self.init_conv = _ConvBlock(1, f, double=True, norm=norm)
        self.z3_blue_conv = _Blue(d, 2 * f, 3)
        self.z6_blue_conv = _Blue(d, 4 * f, 2)
        self.z9_blue_conv = _Blue(d, 8 * f, 1)
        self.z12_deconv = _Up(d, 8 * f)
        self.z9_deconv = _Up(8 * f, 4 * f)
        self.z6_deconv = _Up(4 * f, 2 * f)
        self.z3_deconv = _Up(2 * f, f)
        self.z9_conv = _ConvBlock(16 * f, 8 * f, double=True, norm=norm)
        self.z6_conv = _ConvBlock(8 * f, 4 * f, double=True, norm=norm)
        self.z3_conv = _ConvBlock(4 * f, 2 * f, double=True, norm=norm)
        self.out_conv = nn.Sequential(_ConvBlock(2 * f, f, double=True, norm=norm))
        self.heads = nn.ModuleDict({h: nn.Conv3d(f, c, 1) for h, c in _n_classes(config.heads).items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        g = self.grid
        z3, z6, z9, z12 = (t.transpose(1, 2).reshape(t.shape[0], -1, g, g, g)
                           for t in self.transformer(self.embed(x)))
        z0 = self.init_conv(x)
        y = self.z9_conv(torch.cat([self.z12_deconv(z12), self.z9_blue_conv(z9)], 1))
        y = self.z6_conv(torch.cat([self.z9_deconv(y), self.z6_blue_conv(z6)], 1))
        y = self.z3_conv(torch.cat([self.z6_deconv(y), self.z3_blue_conv(z3)], 1))
        y = self.out_conv(torch.cat([self.z3_deconv(y), z0], 1))
        return {h: head(y) for h, head in self.heads.items()}


def build_voxel_net(config: VoxelNetConfig) -> nn.Module:
    """The network of ``config`` (weights initialised by PyTorch's defaults; seed first)."""
    return UNet3D(config) if config.arch == "unet" else UNETR(config)


# ----------------------------------------------------------------------------------------------
# Published Cryo2Struct checkpoints
# ----------------------------------------------------------------------------------------------
#: Published head → our head and class count (atom model: bg/CA/N/C; amino model: bg + 20).
PUBLISHED_TASKS: Mapping[str, tuple[str, int]] = {"atom": ("backbone", 4), "amino": ("amino", 21)}


def published_key_map(model: UNETR, task: str) -> dict[str, str]:
    """Published state-dict key (``model.…``) → our key, for every tensor of our trunk + head.

    The trunk keys are ours prefixed with ``model.``; our ``out_conv.0.*`` is the published
    ``out_conv.0.*`` and the published classifier ``out_conv.1.{weight,bias}`` becomes
    ``heads.<head>.{weight,bias}``.
    """
    head, _ = PUBLISHED_TASKS[task]
    mapping: dict[str, str] = {}
    for key in model.state_dict():
        if key.startswith("heads."):
            if key.startswith(f"heads.{head}."):
                mapping["model.out_conv.1." + key.split(".", 2)[2]] = key
            continue
        mapping["model." + key] = key
    return mapping


def load_published_checkpoint(path: str | os.PathLike[str], task: str,
                              config: VoxelNetConfig | None = None) -> UNETR:
    """Load a Cryo2Struct Lightning checkpoint (``atom`` or ``amino`` model) into :class:`UNETR`.

    The file is read with ``torch.load(weights_only=True)`` (nothing is unpickled beyond
    tensors and plain containers). Every published tensor must map to one of ours with the same
    shape, and every one of ours (but the other heads') must be present; anything else is
    refused with one :class:`InputError` line.

    Parameters
    ----------
    path
        The ``.ckpt`` file.
    task
        ``"atom"`` (→ head ``backbone``) or ``"amino"`` (→ head ``amino``).
    config
        Architecture (default: the published one, 12 heads, 768-d, 12 blocks).
    """
    p = Path(path)
    if task not in PUBLISHED_TASKS:
        raise InputError(p, f"task must be one of {', '.join(PUBLISHED_TASKS)}, got {task!r}")
    head, n_cls = PUBLISHED_TASKS[task]
    cfg = config or VoxelNetConfig(arch="unetr", heads=(head,), base_channels=16)
    if cfg.arch != "unetr" or head not in cfg.heads:
        raise InputError(p, f"a published {task} checkpoint needs a UNETR with head {head}")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():
            raise InputError(p, "refused: the checkpoint holds objects other than tensors "
                                "(read with weights_only=True)") from None
        raise InputError(p, "not a loadable weights-only checkpoint (not a PyTorch file)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(p, f"not a loadable weights-only checkpoint ({first[:160]})") from None
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(p, "has no state_dict of tensors")
    model = UNETR(cfg)
    mapping = published_key_map(model, task)
    ours = model.state_dict()
    unexpected = sorted(k for k in state if k not in mapping)
    if unexpected:
        raise InputError(p, f"{len(unexpected)} tensor(s) do not belong to a Cryo2Struct {task} model "
                            f"(first: {unexpected[0]})")
    missing = sorted(k for k in mapping if k not in state)
    if missing:
        raise InputError(p, f"{len(missing)} tensor(s) missing for a Cryo2Struct {task} model "
                            f"(first: {missing[0]})")
    new: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        target = mapping[key]
        if tuple(tensor.shape) != tuple(ours[target].shape):
            raise InputError(p, f"tensor {key} has shape {tuple(tensor.shape)}, expected "
                                f"{tuple(ours[target].shape)}")
        new[target] = tensor
    if ours[f"heads.{head}.weight"].shape[0] != n_cls:  # pragma: no cover - fixed by HEADS
        raise InputError(p, "class count mismatch")
    for key, tensor in ours.items():  # the other heads keep their initial weights
        new.setdefault(key, tensor)
    model.load_state_dict(new, strict=True)
    return model


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(int(p.numel()) for p in model.parameters() if p.requires_grad)


def heads_of(model: nn.Module) -> tuple[str, ...]:
    """The head names of a voxel network."""
    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleDict):
        raise TypeError("not a voxel network")
    return tuple(heads.keys())

