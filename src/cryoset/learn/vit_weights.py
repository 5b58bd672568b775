"""Save and load :class:`~cryoset.learn.vit.VisionTransformer` weights without pickle.

Our format is one safetensors *weights file* (:func:`cryoset.learn.checkpoint.write_weights`,
``kind = "vit"``) whose JSON ``config`` is ``{"vit": ViTConfig.to_dict(), "metadata": {...}}``.
The metadata says how images must be prepared for the model:

* ``normalization`` — ``{"kind": "store"}`` (the particle store's decoded images as they are,
  already normalised per particle by extraction) or ``{"kind": "uint8", "mean": m, "std": s}``
  (cryoPANDA: 8-bit image → ``[0, 1]`` → ``(p − m) / s``);
* ``input_size`` — the side (px) images are resized to before the backbone;
* ``provenance`` — how the weights were made (training command, data, seed …).

:func:`load_vit` also reads the published DINOv3/cryoPANDA teacher checkpoints (``.pth``),
strictly: ``torch.load(weights_only=True)`` (a file holding any object other than tensors and
plain containers is refused), ``{"teacher": {"backbone.<key>": …, "dino_head.…", "ibot_head.…"}}``
mapped by :func:`published_key_map`, head tensors ignored and listed in the returned metadata;
every backbone tensor must be present with the shape of the architecture inferred from the
file, and nothing else may be there.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cryoset.errors import InputError
from cryoset.learn.checkpoint import read_weights, write_weights
from cryoset.learn.vit import VIT_SIZES, VisionTransformer, ViTConfig

__all__ = [
    "CRYOPANDA_NORMALIZATION",
    "DEFAULT_VIT_CHECKPOINT",
    "HEAD_PREFIXES",
    "STORE_NORMALIZATION",
    "infer_published_config",
    "load_vit",
    "model_input",
    "normalization_of",
    "published_key_map",
    "resize_images",
    "resolve_vit_checkpoint",
    "save_vit",
]

#: The checkpoint shipped inside the package (produced by ``cryoset train ssl``; see docs/ssl.md).
DEFAULT_VIT_CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "models" / "vit_tiny_ssl.safetensors"
#: Store images are fed as decoded (extraction already normalised each particle).
STORE_NORMALIZATION: Mapping[str, Any] = {"kind": "store"}
#: cryoPANDA's uint8 constants (ToTensor → Normalize(mean, std)); ml-anchors (b).
CRYOPANDA_NORMALIZATION: Mapping[str, Any] = {"kind": "uint8", "mean": 0.5475857690770103,
                                              "std": 0.12047245612891117}
#: Tensors of a teacher checkpoint that are not backbone (SSL heads): ignored when loading.
HEAD_PREFIXES = ("dino_head.", "ibot_head.")
_KIND = "vit"


def resolve_vit_checkpoint(checkpoint: str | os.PathLike[str] | None) -> Path:
    """The checkpoint given, else the shipped one; one-line :class:`InputError` if that is absent."""
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.exists():
            raise InputError(p, "no such checkpoint")
        return p
    if not DEFAULT_VIT_CHECKPOINT.is_file():
        raise InputError(DEFAULT_VIT_CHECKPOINT, "the shipped ViT checkpoint is not in this installation "
                                                 "(train one with `cryoset train ssl`); pass --checkpoint")
    return DEFAULT_VIT_CHECKPOINT


def normalization_of(metadata: Mapping[str, Any], where: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Validated ``normalization`` entry of checkpoint metadata (default: store images as they are)."""
    norm = metadata.get("normalization", dict(STORE_NORMALIZATION))
    if not isinstance(norm, Mapping) or norm.get("kind") not in ("store", "uint8"):
        raise InputError(where, f"unknown image normalisation {norm!r} (expected kind store or uint8)")
    if norm["kind"] == "uint8":
        try:
            mean, std = float(norm["mean"]), float(norm["std"])
        except (KeyError, TypeError, ValueError):
            raise InputError(where, "uint8 normalisation needs numeric mean and std") from None
        if not std > 0:
            raise InputError(where, f"uint8 normalisation std must be positive, got {std}")
        return {"kind": "uint8", "mean": mean, "std": std}
    return {"kind": "store"}


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, y, x)`` → ``(B, C, size, size)``: bilinear, antialiased when shrinking; unchanged
    when already that size (the one resize of particles for the encoder and its training)."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)


def model_input(images: torch.Tensor, normalization: Mapping[str, Any], input_size: int, *,
                uint8_values: bool = False) -> torch.Tensor:
    """Images as the model expects them: ``(B, y, x)`` or ``(B, 1, y, x)`` → ``(B, 1, S, S)`` float32.

    * ``store`` — ``images`` are the store's decoded particles (already normalised per particle
      at extraction); they are only resized to ``S = input_size`` (bilinear, antialiased, as
      :func:`resize_images`).
    * ``uint8`` — cryoPANDA: ``p = images / 255`` when ``uint8_values`` (the stored 8-bit
      values), else the per-image min–max scaling to [0, 1]; resized; then ``(p − mean) / std``.
    """
    x = images.to(torch.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (B, y, x) or (B, 1, y, x), got {tuple(images.shape)}")
    kind = normalization.get("kind")
    if kind == "uint8":
        if uint8_values:
            x = x / 255.0
        else:
            lo = x.amin(dim=(-2, -1), keepdim=True)
            hi = x.amax(dim=(-2, -1), keepdim=True)
            x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    elif kind != "store":
        raise ValueError(f"unknown normalisation kind {kind!r}")
    x = resize_images(x, input_size)
    if kind == "uint8":
        x = (x - float(normalization["mean"])) / float(normalization["std"])
    return x.contiguous()


def save_vit(path: str | os.PathLike[str], model: VisionTransformer, *, metadata: Mapping[str, Any]) -> Path:
    """Write ``model`` as a safetensors weights file (atomic) with its config and ``metadata``.

    ``metadata`` must be JSON-able; ``normalization`` (default store) and ``input_size``
    (default ``config.img_size``) are validated and filled in.
    """
    meta = dict(metadata)
    meta["normalization"] = normalization_of(meta, path)
    meta.setdefault("input_size", int(model.config.img_size))
    if int(meta["input_size"]) % model.patch_size:
        raise ValueError(f"input_size {meta['input_size']} is not a multiple of the patch size {model.patch_size}")
    config = {"vit": model.config.to_dict(), "metadata": meta}
    prov = meta.get("provenance")
    return write_weights(path, model.state_dict(), kind=_KIND, config=config,
                         provenance=prov if isinstance(prov, Mapping) else None)


def _check_state(p: Path, model: VisionTransformer, state: Mapping[str, torch.Tensor], what: str) -> None:
    ours = model.state_dict()
    unexpected = sorted(k for k in state if k not in ours)
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        raise InputError(p, f"unexpected tensor {unexpected[0]!r}{more} for a {what}")
    missing = sorted(k for k in ours if k not in state)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(p, f"missing tensor {missing[0]!r}{more} for a {what}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(ours[key].shape):
            raise InputError(p, f"tensor {key!r} has shape {tuple(tensor.shape)}, the {what} expects "
                                f"{tuple(ours[key].shape)}")


def _load_ours(p: Path) -> tuple[VisionTransformer, dict[str, Any]]:
    state, config, provenance = read_weights(p, _KIND)
    if not isinstance(config.get("vit"), Mapping):
        raise InputError(p, "ViT weights file lacks its architecture ('vit' in the config)")
    try:
        cfg = ViTConfig.from_dict(config["vit"])
    except (TypeError, ValueError) as exc:
        raise InputError(p, f"bad ViT configuration ({exc})") from None
    meta_raw = config.get("metadata", {})
    meta = dict(meta_raw) if isinstance(meta_raw, Mapping) else {}
    meta["normalization"] = normalization_of(meta, p)
    meta.setdefault("input_size", cfg.img_size)
    meta.setdefault("provenance", provenance)
    model = VisionTransformer(cfg)
    _check_state(p, model, state, f"ViT ({cfg.embed_dim}-d, {cfg.depth} blocks)")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    model.eval()
    meta.update({"source": str(p), "format": "safetensors", "ignored_keys": []})
    return model, meta


def _torch_load(p: Path) -> Any:
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():
            raise InputError(p, "refused: the checkpoint holds pickled objects other than tensors "
                                "(only weights_only=True loads are allowed)") from None
        raise InputError(p, "not a loadable weights-only PyTorch checkpoint") from None
    except Exception as exc:  # a corrupt pickle stream can fail in many ways; all mean "not a checkpoint"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(p, f"not a loadable weights-only PyTorch checkpoint ({first[:160]})") from None


def published_key_map(keys: list[str]) -> tuple[dict[str, str], list[str]]:
    """Map the tensor names of a published checkpoint (already un-nested from ``teacher``) to ours.

    ``backbone.<key>`` → ``<key>`` when any key carries the ``backbone.`` prefix (else keys are
    taken as bare backbone names); ``dino_head.*`` / ``ibot_head.*`` are returned as ignored.
    Returns ``(mapping published → ours, ignored keys)``; anything else is left unmapped (refused
    by the caller). The published names equal ours once the prefix is stripped.
    """
    prefixed = any(k.startswith("backbone.") for k in keys)
    mapping: dict[str, str] = {}
    ignored: list[str] = []
    for key in keys:
        if key.startswith(HEAD_PREFIXES):
            ignored.append(key)
        elif prefixed:
            if key.startswith("backbone."):
                mapping[key] = key[len("backbone."):]
        else:
            mapping[key] = key
    return mapping, sorted(ignored)


def infer_published_config(p: Path, state: Mapping[str, torch.Tensor]) -> ViTConfig:
    """The :class:`ViTConfig` a published backbone state dict (our names) was built with."""
    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise InputError(p, f"missing tensor {key!r} for a DINOv3 ViT backbone")
        return state[key]

    w = need("patch_embed.proj.weight")
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise InputError(p, f"tensor 'patch_embed.proj.weight' has shape {tuple(w.shape)}, expected (D, C, p, p)")
    dim, in_chans, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()),
                    default=-1)
    if depth < 1:
        raise InputError(p, "no transformer blocks ('blocks.N.*') in the checkpoint")
    if "rope_embed.periods" in state:
        head_dim = 4 * int(state["rope_embed.periods"].numel())
        if head_dim == 0 or dim % head_dim:
            raise InputError(p, f"tensor 'rope_embed.periods' has {head_dim // 4} values, which does not fit "
                                f"a {dim}-d model")
        heads = dim // head_dim
    else:
        by_dim = {d: h for d, _, h in VIT_SIZES.values()}
        if dim not in by_dim:
            raise InputError(p, f"cannot tell the head count of a {dim}-d backbone without 'rope_embed.periods'")
        heads = by_dim[dim]
    storage = state.get("storage_tokens")
    fc1 = need("blocks.0.mlp.fc1.weight")
    try:
        return ViTConfig(
            embed_dim=dim, depth=depth, num_heads=heads, patch_size=patch, in_chans=in_chans,
            n_storage_tokens=0 if storage is None else int(storage.shape[1]),
            ffn_ratio=float(fc1.shape[0]) / dim,
            qkv_bias="blocks.0.attn.qkv.bias" in state, proj_bias="blocks.0.attn.proj.bias" in state,
            ffn_bias="blocks.0.mlp.fc1.bias" in state, img_size=224)
    except ValueError as exc:
        raise InputError(p, f"inconsistent backbone shapes ({exc})") from None


def _load_published(p: Path) -> tuple[VisionTransformer, dict[str, Any]]:
    raw = _torch_load(p)
    if isinstance(raw, Mapping) and isinstance(raw.get("teacher"), Mapping):
        raw = raw["teacher"]
    elif isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping):
        raw = raw["model"]
    if not isinstance(raw, Mapping) or not raw or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                          for k, v in raw.items()):
        raise InputError(p, "holds no state dict of tensors (expected {'teacher': {'backbone.<key>': tensor}})")
    mapping, ignored = published_key_map(list(raw))
    unmapped = sorted(set(raw) - set(mapping) - set(ignored))
    if unmapped:
        more = f" and {len(unmapped) - 1} more" if len(unmapped) > 1 else ""
        raise InputError(p, f"unexpected tensor {unmapped[0]!r}{more} (neither backbone nor SSL head)")
    state: dict[str, torch.Tensor] = {}
    folded: list[str] = []
    for key, ours in mapping.items():
        state[ours] = raw[key].detach().to(torch.float32)
    # Upstream's optional ``mask_k_bias`` keeps a constant mask over the qkv bias; fold it in.
    for key in [k for k in state if k.endswith(".attn.qkv.bias_mask")]:
        mask = state.pop(key)
        bias_key = key[: -len("_mask")]
        if bias_key in state and mask.shape == state[bias_key].shape:
            state[bias_key] = state[bias_key] * torch.nan_to_num(mask, nan=1.0)
            folded.append(key)
    cfg = infer_published_config(p, state)
    model = VisionTransformer(cfg)
    filled: list[str] = []
    if "rope_embed.periods" not in state:  # non-persistent in some upstream versions: base-100 default
        state["rope_embed.periods"] = model.rope_embed.periods.detach().clone()
        filled.append("rope_embed.periods")
    _check_state(p, model, state, f"DINOv3 ViT ({cfg.embed_dim}-d, {cfg.depth} blocks, {cfg.num_heads} heads)")
    model.load_state_dict(state, strict=True)
    model.eval()
    meta: dict[str, Any] = {
        "normalization": dict(CRYOPANDA_NORMALIZATION),
        "input_size": 224,
        "provenance": {"source": "published DINOv3/cryoPANDA checkpoint", "file": str(p)},
        "source": str(p), "format": "pth", "ignored_keys": ignored, "folded_keys": folded,
        "filled_keys": filled,
    }
    return model, meta


def load_vit(path: str | os.PathLike[str]) -> tuple[VisionTransformer, dict[str, Any]]:
    """Load a ViT (eval mode, float32) and its metadata from our safetensors or a published ``.pth``.

    Returns ``(model, metadata)``; metadata holds ``normalization``, ``input_size``,
    ``provenance``, ``source``, ``format`` and ``ignored_keys`` (head tensors skipped).
    Anything unreadable, pickled, or not fitting the architecture raises one :class:`InputError`.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such checkpoint")
    if p.is_dir() or p.suffix == ".safetensors":
        return _load_ours(p)
    with p.open("rb") as handle:
        head = handle.read(16)
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length then JSON
        return _load_ours(p)
    return _load_published(p)
