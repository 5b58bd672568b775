"""Vision transformer backbone for single-channel particle images (DINOv3 layout).

The architecture and every parameter name follow the public DINOv3 code that cryoPANDA trained
its particle encoder with (``DinoVisionTransformer``; see ``/work/shared/notes/ml-anchors.md``
section (b)), so a published backbone state dict loads into :class:`VisionTransformer` by name:

* ``patch_embed.proj`` — ``Conv2d(in_chans, D, kernel=stride=patch_size)``;
* ``cls_token`` ``(1, 1, D)``, ``storage_tokens`` ``(1, S, D)`` (registers), ``mask_token`` ``(1, D)``;
* ``rope_embed.periods`` ``(D_head // 4,)`` — buffer of the 2D rotary position encoding;
* ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``
  (pre-norm block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``, GELU MLP);
* ``norm`` — one final LayerNorm applied to every token.

Token order is ``[CLS, S storage tokens, N patch tokens]`` with the patch grid flattened
row-major (``y`` slowest). There is no learned absolute position table: positions enter only
through RoPE, applied to the queries and keys of the *patch* tokens (CLS and storage tokens are
left unrotated), so any input whose sides are multiples of ``patch_size`` works (224-px global
and 96-px local crops alike).

RoPE (axial, no learnable weights): with ``D_head = D / num_heads`` and
``periods[j] = base ** (2 j / (D_head / 2))`` for ``j < D_head / 4``, a patch at grid cell
``(i, k)`` of an ``H × W`` grid has coordinates ``c = (2 (i + ½) / H − 1, 2 (k + ½) / W − 1)``
(``normalize_coords = "separate"``), angles ``θ = 2π c / periods`` → ``[c_y angles, c_x angles]``
(``D_head / 2`` values) tiled twice to ``D_head``, and a head vector ``v`` becomes
``v · cos θ + rotate_half(v) · sin θ`` with ``rotate_half([a, b]) = [−b, a]``. The dot product of
a rotated query and key therefore depends on the positions only through their difference.

Drop-path follows upstream's batch-subset form: in training each residual branch is computed
for a random subset of ``max(⌊B (1 − p)⌋, 1)`` samples and added back scaled by ``B / subset``;
in eval mode the model is deterministic.

Upstream computes the RoPE sines/cosines in bfloat16; here they are float32 (the rotation is the
same up to rounding).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VIT_SIZES",
    "Attention",
    "Block",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "RopePositionEmbedding",
    "ViTConfig",
    "VisionTransformer",
    "layer_id_for_param",
    "rope_apply",
    "rope_rotate_half",
    "vit_config",
]

#: Named sizes: ``size → (embed_dim, depth, num_heads)`` (upstream vit_small/base/large factories;
#: ``tiny`` is the classic 192/12/3).
VIT_SIZES: Mapping[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}

_NORMALIZE_COORDS = "separate"


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a :class:`VisionTransformer` (everything needed to rebuild it).

    ``embed_dim`` must be a multiple of ``4 · num_heads`` (RoPE splits each head in quarters);
    ``img_size`` is the nominal input side (the model accepts any multiple of ``patch_size``).
    """

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    in_chans: int = 1
    n_storage_tokens: int = 4
    ffn_ratio: float = 4.0
    layerscale_init: float = 1e-5
    drop_path_rate: float = 0.0
    rope_base: float = 100.0
    norm_eps: float = 1e-6
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    img_size: int = 224

    def __post_init__(self) -> None:
        for name in ("embed_dim", "depth", "num_heads", "patch_size", "in_chans", "img_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ViTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_storage_tokens < 0:
            raise ValueError(f"ViTConfig.n_storage_tokens must be ≥ 0, got {self.n_storage_tokens}")
        if self.embed_dim % (4 * self.num_heads):
            raise ValueError(f"ViTConfig.embed_dim {self.embed_dim} is not a multiple of 4·num_heads "
                             f"({4 * self.num_heads}), which RoPE needs")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"ViTConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if not self.layerscale_init > 0 or not self.ffn_ratio > 0 or not self.rope_base > 0:
            raise ValueError("ViTConfig.layerscale_init, ffn_ratio and rope_base must be positive")
        if self.img_size % self.patch_size:
            raise ValueError(f"ViTConfig.img_size {self.img_size} is not a multiple of patch_size "
                             f"{self.patch_size}")

    @property
    def head_dim(self) -> int:
        """Channels per attention head, ``embed_dim // num_heads``."""
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViTConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ``ValueError`` (strict)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ViT configuration keys {unknown}")
        missing = sorted(n for n in ("embed_dim", "depth", "num_heads") if n not in data)
        if missing:
            raise ValueError(f"ViT configuration lacks {missing}")
        return cls(**dict(data))


def vit_config(size: str, **overrides: Any) -> ViTConfig:
    """The :class:`ViTConfig` of a named size (``tiny``/``small``/``base``/``large``) with overrides."""
    if size not in VIT_SIZES:
        raise ValueError(f"unknown ViT size {size!r}; choose one of {', '.join(VIT_SIZES)}")
    dim, depth, heads = VIT_SIZES[size]
    base: dict[str, Any] = {"embed_dim": dim, "depth": depth, "num_heads": heads}
    base.update(overrides)
    return ViTConfig(**base)


def rope_rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[a, b] → [−b, a]`` on the last axis (halves ``a``, ``b``)."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def rope_apply(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate head vectors ``x`` (..., N, D_head) by the angles whose ``sin``/``cos`` are (N, D_head)."""
    return x * cos + rope_rotate_half(x) * sin


class RopePositionEmbedding(nn.Module):
    """Axial 2D rotary position encoding (base parametrisation, ``normalize_coords="separate"``).

    Holds the persistent buffer ``periods`` of shape ``(head_dim // 4,)``; ``forward(H=, W=)``
    returns ``(sin, cos)``, each ``(H·W, head_dim)`` float32, for a row-major ``H × W`` patch grid.
    """

    periods: torch.Tensor

    def __init__(self, embed_dim: int, *, num_heads: int, base: float = 100.0) -> None:
        super().__init__()
        if embed_dim % (4 * num_heads):
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of 4·num_heads")
        self.head_dim = embed_dim // num_heads
        self.base = float(base)
        self.register_buffer("periods", torch.empty(self.head_dim // 4), persistent=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``periods[j] = base ** (2 j / (head_dim / 2))``."""
        j = torch.arange(self.head_dim // 4, dtype=torch.float64)
        periods = self.base ** (2.0 * j / (self.head_dim // 2))
        with torch.no_grad():
            self.periods.copy_(periods.to(self.periods.dtype))

    def coords(self, height: int, width: int) -> torch.Tensor:
        """Normalised patch-centre coordinates in [−1, 1], shape ``(H·W, 2)`` as ``(y, x)``."""
        dev = self.periods.device
        cy = torch.arange(0.5, height, device=dev, dtype=torch.float32) / height
        cx = torch.arange(0.5, width, device=dev, dtype=torch.float32) / width
        grid = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), dim=-1).flatten(0, 1)
        return 2.0 * grid - 1.0

    def angles_for(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sin, cos)`` each ``(..., head_dim)`` for coordinates ``(..., 2)`` (any positions)."""
        periods = self.periods.to(torch.float32)
        ang = 2.0 * math.pi * coords.to(torch.float32).unsqueeze(-1) / periods  # (..., 2, Dh/4)
        ang = ang.flatten(-2, -1)  # (..., Dh/2): y angles then x angles
        ang = torch.cat([ang, ang], dim=-1)  # (..., Dh)
        return torch.sin(ang), torch.cos(ang)

    def forward(self, *, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.angles_for(self.coords(H, W))


class PatchEmbed(nn.Module):
    """``proj``: ``Conv2d(in_chans, D, k=s=patch)``; ``(B, C, H, W) → (B, H/p, W/p, D)``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def reset_parameters(self) -> None:
        """Uniform ±sqrt(1 / (in_chans · p²)) for weight and bias (upstream PatchEmbed)."""
        k = 1.0 / (self.proj.in_channels * self.patch_size ** 2)
        nn.init.uniform_(self.proj.weight, -math.sqrt(k), math.sqrt(k))
        if self.proj.bias is not None:
            nn.init.uniform_(self.proj.bias, -math.sqrt(k), math.sqrt(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class LayerScale(nn.Module):
    """Per-channel residual scale ``gamma`` ``(D,)``, initialised to ``init_values``."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.init_values = float(init_values)
        self.gamma = nn.Parameter(torch.full((dim,), self.init_values))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with hidden width ``int(D · ffn_ratio)``."""

    def __init__(self, dim: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention; RoPE rotates q/k of the last ``H·W`` (patch) tokens only.

    ``qkv`` output channel ``f`` splits as ``(3, num_heads, head_dim)`` (q, k, v slowest).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def qk(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, v)`` each ``(B, heads, N, head_dim)``, q and k rotated by ``rope``."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        if rope is not None:
            sin, cos = rope
            prefix = n - sin.shape[-2]
            if prefix < 0:
                raise ValueError("more RoPE positions than tokens")
            dtype = q.dtype
            q = torch.cat([q[:, :, :prefix], rope_apply(q[:, :, prefix:].float(), sin, cos).to(dtype)], dim=2)
            k = torch.cat([k[:, :, :prefix], rope_apply(k[:, :, prefix:].float(), sin, cos).to(dtype)], dim=2)
        return q, k, v

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qk(x, rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block ``norm1, attn, ls1, norm2, mlp, ls2`` with batch drop-path."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.attn = Attention(d, cfg.num_heads, cfg.qkv_bias, cfg.proj_bias)
        self.ls1 = LayerScale(d, cfg.layerscale_init)
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.mlp = Mlp(d, int(d * cfg.ffn_ratio), cfg.ffn_bias)
        self.ls2 = LayerScale(d, cfg.layerscale_init)
        self.drop_path = float(cfg.drop_path_rate)

    def _attn_branch(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        return self.ls1(self.attn(self.norm1(x), rope))

    def _mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls2(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if not (self.training and self.drop_path > 0.0):
            x = x + self._attn_branch(x, rope)
            return x + self._mlp_branch(x)
        b = x.shape[0]
        keep = max(int(b * (1.0 - self.drop_path)), 1)
        scale = b / keep
        idx1 = torch.randperm(b, device=x.device)[:keep]
        x = torch.index_add(x, 0, idx1, self._attn_branch(x[idx1], rope).to(x.dtype), alpha=scale)
        idx2 = torch.randperm(b, device=x.device)[:keep]
        return torch.index_add(x, 0, idx2, self._mlp_branch(x[idx2]).to(x.dtype), alpha=scale)


class VisionTransformer(nn.Module):
    """DINOv3-layout ViT for ``(B, in_chans, H, W)`` images, ``H`` and ``W`` multiples of ``patch_size``.

    Attributes: ``config``, ``embed_dim``, ``patch_size``, ``n_storage_tokens``, ``patch_embed``,
    ``cls_token`` (1, 1, D), ``storage_tokens`` (1, S, D; None when S = 0), ``mask_token`` (1, D), ``rope_embed``,
    ``blocks`` (``nn.ModuleList`` of :class:`Block`), ``norm``.
    Parameters are initialised as upstream (:meth:`init_weights`) from torch's global generator,
    so seed it (``torch.manual_seed``) before construction for reproducible weights.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.patch_size = config.patch_size
        self.n_storage_tokens = config.n_storage_tokens
        d = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, d)
        self.cls_token = nn.Parameter(torch.empty(1, 1, d))
        self.storage_tokens: nn.Parameter | None = (
            nn.Parameter(torch.empty(1, config.n_storage_tokens, d)) if config.n_storage_tokens > 0 else None)
        self.rope_embed = RopePositionEmbedding(d, num_heads=config.num_heads, base=config.rope_base)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.mask_token = nn.Parameter(torch.empty(1, d))
        self.init_weights()

    def init_weights(self) -> None:
        """Upstream initialisation: tokens N(0, 0.02²), mask token 0, Linear trunc-normal(0.02)
        with zero bias, LayerNorm (1, 0), LayerScale ``layerscale_init``, patch conv uniform."""
        self.rope_embed.reset_parameters()
        nn.init.normal_(self.cls_token, std=0.02)
        if self.storage_tokens is not None:
            nn.init.normal_(self.storage_tokens, std=0.02)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, LayerScale, PatchEmbed)):
                module.reset_parameters()

    @property
    def n_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: ``1 + n_storage_tokens``."""
        return 1 + self.n_storage_tokens

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch-embed ``x`` (B, C, H, W) → tokens (B, 1+S+N, D) and the grid ``(H/p, W/p)``.

        ``masks`` (B, N) bool replaces the masked patch embeddings by ``mask_token``.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"expected images (B, {self.config.in_chans}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size or h == 0 or w == 0:
            raise ValueError(f"image sides {h}×{w} are not positive multiples of the patch size "
                             f"{self.patch_size}")
        tokens = self.patch_embed(x)
        b, gh, gw, d = tokens.shape
        tokens = tokens.flatten(1, 2)
        if masks is not None:
            if masks.shape != (b, gh * gw):
                raise ValueError(f"masks must be (B, N) = ({b}, {gh * gw}), got {tuple(masks.shape)}")
            tokens = torch.where(masks.unsqueeze(-1), self.mask_token.to(tokens.dtype).unsqueeze(0), tokens)
            cls: torch.Tensor = self.cls_token
        else:
            cls = self.cls_token + 0 * self.mask_token  # keeps mask_token in the graph (DDP)
        parts = [cls.expand(b, -1, -1).to(tokens.dtype)]
        if self.storage_tokens is not None:
            parts.append(self.storage_tokens.expand(b, -1, -1).to(tokens.dtype))
        out = torch.cat([*parts, tokens], dim=1)
        return out, (gh, gw)

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, Any]:
        """Run the backbone.

        Parameters
        ----------
        x
            ``(B, in_chans, H, W)`` float images, ``H`` and ``W`` multiples of ``patch_size``.
        masks
            Optional ``(B, N)`` bool, ``N = (H/p)·(W/p)``: patches replaced by ``mask_token`` (iBOT).

        Returns
        -------
        dict
            ``x_norm_clstoken`` (B, D), ``x_storage_tokens`` (B, S, D), ``x_norm_patchtokens``
            (B, N, D) — all after the final ``norm`` —, ``x_prenorm`` (B, 1+S+N, D) and ``masks``
            (the given masks or None).
        """
        tokens, (gh, gw) = self.prepare_tokens(x, masks)
        rope = self.rope_embed(H=gh, W=gw)
        for blk in self.blocks:
            tokens = blk(tokens, rope)
        normed = self.norm(tokens)
        s = self.n_prefix_tokens
        return {
            "x_norm_clstoken": normed[:, 0],
            "x_storage_tokens": normed[:, 1:s],
            "x_norm_patchtokens": normed[:, s:],
            "x_prenorm": tokens,
            "masks": masks,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → normalised CLS token ``(B, D)``."""
        out: torch.Tensor = self.forward_features(x)["x_norm_clstoken"]
        return out

    def features(self, x: torch.Tensor, kind: str = "cls") -> torch.Tensor:
        """Frozen features: ``cls`` (B, D), ``patch_mean`` (B, D) or ``both`` = [CLS, patch mean] (B, 2D)."""
        if kind not in ("cls", "patch_mean", "both"):
            raise ValueError(f"unknown feature kind {kind!r}; choose cls, patch_mean or both")
        out = self.forward_features(x)
        cls: torch.Tensor = out["x_norm_clstoken"]
        mean: torch.Tensor = out["x_norm_patchtokens"].mean(dim=1)
        if kind == "cls":
            return cls
        if kind == "patch_mean":
            return mean
        return torch.cat([cls, mean], dim=-1)

    def feature_dim(self, kind: str = "cls") -> int:
        """Length of :meth:`features` vectors for ``kind``."""
        return 2 * self.embed_dim if kind == "both" else self.embed_dim


def layer_id_for_param(name: str, depth: int) -> int:
    """Layer index for layer-wise LR decay: 0 for patch embedding and tokens, ``i + 1`` for
    ``blocks.i.*``, ``depth + 1`` for everything else (final ``norm``). Prefixes such as
    ``backbone.`` or ``module.`` are ignored."""
    if "blocks." in name:
        part = name[name.find("blocks."):].split(".")
        if len(part) > 1 and part[1].isdigit():
            return int(part[1]) + 1
    leaf = name.split(".")
    for token in ("patch_embed", "cls_token", "storage_tokens", "mask_token", "pos_embed", "register_tokens",
                  "rope_embed"):
        if token in leaf:
            return 0
    return depth + 1
