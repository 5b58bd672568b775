"""Multi-crop augmentation and iBOT block masks for self-supervised particle training.

Every random choice of one particle comes from its own generator, derived from
``(seed, pass, store, row)`` (``numpy.random.SeedSequence``): the training seed, the pass over
the data, the store's position in the configuration and the particle's row in the store's
selection. The crops of a particle therefore do not depend on which process, DataLoader worker
or batch it lands in — one process and several ``torchrun`` processes on the same global batch
draw the same crops — and a resumed run draws exactly what the uninterrupted run drew.

Per particle (published DINOv2/v3 recipe, ``ml-anchors.md`` (b); ``CropSettings`` holds the
numbers):

* 2 global crops: random-resized crop (area fraction ``global_scale``, aspect ratio
  log-uniform in ``ratio``, 10 tries then the centred whole image) to ``global_size``; ``n_local``
  local crops likewise with ``local_scale`` to ``local_size``;
* horizontal flip (p ``hflip_p``) and — particles have no orientation, unlike photographs, so
  on by default here although the paper used flips only — a random multiple of 90° rotation;
  with ``rotate_any`` also a uniform rotation by any angle (in-plane rotation is a nuisance
  for particles; the corners then repeat the border pixels);
* brightness / contrast jitter (p ``jitter_p``; factors uniform in ``1 ± brightness``,
  ``1 ± contrast``, in random order);
* Gaussian blur (9-tap, σ uniform in ``blur_sigma``) with probabilities ``blur_p`` =
  (global 1, global 2, local) — the *effective* published ones are (0.0, 0.9, 0.5) (DINOv2's
  ``GaussianBlur`` applies with 1 − p);
* solarisation of global crop 2 (p ``solarize_p``; ``uint8`` normalisation only).

Normalisation ``store`` uses the store's decoded values as they are (brightness shifts by
``(b − 1)·σ_image``, contrast scales about the image mean); ``uint8`` divides by 255, jitters and
clamps in [0, 1] as torchvision does, then applies ``(x − mean) / std`` (cryoPANDA's
0.5475857690770103 / 0.12047245612891117).

Crops are sampled with one batched bicubic ``grid_sample`` (crop box, flip and rotation folded
into one affine map), on the training device.

iBOT masks (:func:`block_mask`): each global crop is masked with probability
``mask_sample_probability``; its masked fraction is uniform in ``mask_ratio``; the mask is a union
of random rectangles (area ≥ 4 patches, aspect ratio log-uniform in [0.3, 1/0.3]) as in BEiT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

__all__ = ["CropSettings", "MultiCropBatch", "block_mask", "draw_params", "make_crops", "particle_rng"]

#: cryoPANDA's normalisation of uint8 particle images after ToTensor (ml-anchors (b)).
UINT8_MEAN = 0.5475857690770103
UINT8_STD = 0.12047245612891117


@dataclass(frozen=True)
class CropSettings:
    """Multi-crop, jitter, blur and masking settings (the ``crops:`` and ``ibot:`` masking keys)."""

    global_size: int = 224
    global_scale: tuple[float, float] = (0.32, 1.0)
    n_local: int = 8
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.32)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    rot90: bool = True
    rotate_any: bool = False
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    blur_p: tuple[float, float, float] = (0.0, 0.9, 0.5)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 9
    solarize_p: float = 0.0
    normalization: str = "store"
    mean: float = UINT8_MEAN
    std: float = UINT8_STD
    patch_size: int = 16
    mask_sample_probability: float = 0.5
    mask_ratio: tuple[float, float] = (0.1, 0.5)

    def __post_init__(self) -> None:
        def pair(name: str, lo: float, hi: float) -> None:
            a, b = getattr(self, name)
            if not (lo <= a <= b <= hi):
                raise ValueError(f"{name}: need {lo} <= min <= max <= {hi}, got [{a}, {b}]")

        for name in ("global_size", "local_size"):
            value = getattr(self, name)
            if value < 1 or value % self.patch_size:
                raise ValueError(f"{name}: must be a positive multiple of the patch size {self.patch_size}, "
                                 f"got {value}")
        if self.n_local < 0:
            raise ValueError(f"n_local: must be >= 0, got {self.n_local}")
        pair("global_scale", 1e-6, 1.0)
        pair("local_scale", 1e-6, 1.0)
        pair("ratio", 1e-3, 1e3)
        pair("blur_sigma", 1e-6, 100.0)
        pair("mask_ratio", 0.0, 1.0)
        for name in ("hflip_p", "jitter_p", "solarize_p", "mask_sample_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be a probability in [0, 1], got {getattr(self, name)}")
        if len(self.blur_p) != 3 or not all(0.0 <= p <= 1.0 for p in self.blur_p):
            raise ValueError(f"blur_p: must be three probabilities (global 1, global 2, local), got {self.blur_p}")
        if not (0 <= self.brightness < 1 and 0 <= self.contrast < 1):
            raise ValueError("brightness and contrast: must be in [0, 1)")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel: must be a positive odd number, got {self.blur_kernel}")
        if self.normalization not in ("store", "uint8"):
            raise ValueError(f"normalization: must be 'store' or 'uint8', got {self.normalization!r}")
        if self.normalization == "store" and self.solarize_p > 0:
            raise ValueError("solarize_p: solarisation needs uint8 normalisation")
        if not self.std > 0:
            raise ValueError(f"std: must be positive, got {self.std}")

    @property
    def n_crops(self) -> int:
        """Crops per particle: 2 global + ``n_local``."""
        return 2 + self.n_local

    def grid(self) -> tuple[int, int]:
        """Patch grid of a global crop."""
        g = self.global_size // self.patch_size
        return g, g


def particle_rng(seed: int, data_pass: int, store: int, row: int) -> np.random.Generator:
    """The generator of one particle's augmentation in one pass (see the module docstring)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(data_pass), int(store), int(row)]))


def block_mask(rng: np.random.Generator, grid: tuple[int, int], n_target: int, *, min_patches: int = 4,
               aspect: tuple[float, float] = (0.3, 1 / 0.3), attempts: int = 10) -> NDArray[np.bool_]:
    """A union of random rectangles covering up to ``n_target`` cells of ``grid`` (BEiT-style).

    Rectangles are added while they cover new cells without exceeding ``n_target``; it stops at
    ``n_target`` or after ``attempts`` rectangles in a row that add nothing.
    """
    gh, gw = grid
    mask = np.zeros((gh, gw), dtype=bool)
    count = 0
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    while count < n_target:
        remaining = n_target - count
        added = 0
        for _ in range(attempts):
            area = rng.uniform(min(min_patches, remaining), remaining)
            ar = math.exp(rng.uniform(log_lo, log_hi))
            h = round(math.sqrt(area * ar))
            w = round(math.sqrt(area / ar))
            if not (0 < h <= gh and 0 < w <= gw):
                continue
            top = int(rng.integers(0, gh - h + 1))
            left = int(rng.integers(0, gw - w + 1))
            new = h * w - int(mask[top:top + h, left:left + w].sum())
            if 0 < new <= remaining:
                mask[top:top + h, left:left + w] = True
                added = new
                break
        if added == 0:
            break
        count += added
    return mask


def _crop_box(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float],
              ratio: tuple[float, float]) -> tuple[float, float, float, float]:
    """RandomResizedCrop's box ``(top, left, h, w)`` in pixels (10 tries, then the centred image)."""
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        ar = math.exp(rng.uniform(*log_r))
        w = round(math.sqrt(target * ar))
        h = round(math.sqrt(target / ar))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return float(top), float(left), float(h), float(w)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return float((height - h) // 2), float((width - w) // 2), float(h), float(w)


def draw_params(settings: CropSettings, rng: np.random.Generator, height: int, width: int) -> dict[str, Any]:
    """All random choices of one particle: per crop (global 1, global 2, locals) and global masks."""
    crops = []
    for c in range(settings.n_crops):
        is_global = c < 2
        box = _crop_box(rng, height, width, settings.global_scale if is_global else settings.local_scale,
                        settings.ratio)
        flip = bool(rng.random() < settings.hflip_p)
        rot = int(rng.integers(0, 4)) if settings.rot90 else 0
        jitter = bool(rng.random() < settings.jitter_p)
        b = float(rng.uniform(1 - settings.brightness, 1 + settings.brightness))
        k = float(rng.uniform(1 - settings.contrast, 1 + settings.contrast))
        brightness_first = bool(rng.random() < 0.5)
        blur_p = settings.blur_p[c] if c < 2 else settings.blur_p[2]
        blur = bool(rng.random() < blur_p)
        sigma = float(rng.uniform(*settings.blur_sigma))
        solarize = bool(c == 1 and rng.random() < settings.solarize_p)
        angle = float(rng.uniform(0.0, 2.0 * math.pi)) if settings.rotate_any else 0.0
        crops.append({"box": box, "flip": flip, "rot": rot, "jitter": jitter, "brightness": b, "contrast": k,
                      "brightness_first": brightness_first, "blur": blur, "sigma": sigma, "solarize": solarize,
                      "angle": angle})
    grid = settings.grid()
    n_patches = grid[0] * grid[1]
    masks = []
    for _ in range(2):
        if rng.random() < settings.mask_sample_probability:
            ratio = rng.uniform(*settings.mask_ratio)
            masks.append(block_mask(rng, grid, int(n_patches * ratio)).reshape(-1))
        else:
            masks.append(np.zeros(n_patches, dtype=bool))
    return {"crops": crops, "masks": masks}


@dataclass
class MultiCropBatch:
    """One batch of crops, crop-major: ``global_crops`` (2·B, 1, G, G) = [global 1 of every particle,
    global 2 of every particle]; ``local_crops`` (n_local·B, 1, L, L); ``masks`` (2·B, N) bool for the
    global crops (student only)."""

    global_crops: torch.Tensor
    local_crops: torch.Tensor
    masks: torch.Tensor

    @property
    def batch_size(self) -> int:
        """Particles in the batch."""
        return int(self.global_crops.shape[0] // 2)


def _affine(box: tuple[float, float, float, float], flip: bool, rot: int, height: int, width: int,
            angle: float = 0.0) -> list[list[float]]:
    """``grid_sample`` theta mapping output coordinates to the crop box (flip, then the 90° rotations,
    then a rotation by ``angle`` radians)."""
    top, left, h, w = box
    cx = (left + w / 2) / width * 2 - 1
    cy = (top + h / 2) / height * 2 - 1
    a = np.array([[-1.0, 0.0], [0.0, 1.0]]) if flip else np.eye(2)
    r = np.array([[0.0, -1.0], [1.0, 0.0]])
    a = np.linalg.matrix_power(r, rot) @ a
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        a = np.array([[c, -s], [s, c]]) @ a
    sx, sy = w / width, h / height
    return [[sx * a[0, 0], sx * a[0, 1], cx], [sy * a[1, 0], sy * a[1, 1], cy]]


def _resample(images: torch.Tensor, thetas: list[list[list[float]]], size: int) -> torch.Tensor:
    theta = torch.tensor(thetas, dtype=torch.float32, device=images.device)
    grid = F.affine_grid(theta, [images.shape[0], 1, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)


def _jitter(x: torch.Tensor, crops: Sequence[dict[str, Any]], settings: CropSettings) -> torch.Tensor:
    dev = x.device
    on = torch.tensor([c["jitter"] for c in crops], device=dev)[:, None, None, None]
    b = torch.tensor([c["brightness"] for c in crops], device=dev)[:, None, None, None]
    k = torch.tensor([c["contrast"] for c in crops], device=dev)[:, None, None, None]
    first = torch.tensor([c["brightness_first"] for c in crops], device=dev)[:, None, None, None]
    uint8 = settings.normalization == "uint8"

    def bright(t: torch.Tensor) -> torch.Tensor:
        if uint8:
            return (t * b).clamp(0.0, 1.0)
        return t + (b - 1) * t.std(dim=(-2, -1), keepdim=True)

    def contrast(t: torch.Tensor) -> torch.Tensor:
        m = t.mean(dim=(-2, -1), keepdim=True)
        out = k * t + (1 - k) * m
        return out.clamp(0.0, 1.0) if uint8 else out

    y = torch.where(first, contrast(bright(x)), bright(contrast(x)))
    return torch.where(on, y, x)


def _blur(x: torch.Tensor, crops: Sequence[dict[str, Any]], ksize: int) -> torch.Tensor:
    on = [c["blur"] for c in crops]
    if not any(on):
        return x
    n = x.shape[0]
    r = ksize // 2
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    sig = torch.tensor([c["sigma"] for c in crops], dtype=torch.float32, device=x.device)[:, None]
    k = torch.exp(-(t[None] ** 2) / (2 * sig**2))
    k = k / k.sum(dim=1, keepdim=True)
    delta = torch.zeros_like(k)
    delta[:, r] = 1.0
    k = torch.where(torch.tensor(on, device=x.device)[:, None], k, delta)
    y = x.reshape(1, n, *x.shape[-2:])
    pad_y = min(r, x.shape[-2] - 1)
    pad_x = min(r, x.shape[-1] - 1)
    if pad_x < r or pad_y < r:  # tiny crops: reflect padding needs pad < side
        y = F.pad(y, (pad_x, pad_x, pad_y, pad_y), mode="reflect")
        y = F.pad(y, (r - pad_x, r - pad_x, r - pad_y, r - pad_y), mode="replicate")
    else:
        y = F.pad(y, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n)
    y = F.conv2d(y, k[:, None, :, None], groups=n)
    return y.reshape(x.shape)


def _finish(x: torch.Tensor, crops: Sequence[dict[str, Any]], settings: CropSettings) -> torch.Tensor:
    x = _jitter(x, crops, settings)
    x = _blur(x, crops, settings.blur_kernel)
    if settings.normalization == "uint8":
        sol = torch.tensor([c["solarize"] for c in crops], device=x.device)[:, None, None, None]
        x = torch.where(sol & (x >= 0.5), 1.0 - x, x)
        x = (x - settings.mean) / settings.std
    return x


def make_crops(images: torch.Tensor, params: Sequence[dict[str, Any]], settings: CropSettings) -> MultiCropBatch:
    """Apply drawn ``params`` (one per particle, :func:`draw_params`) to ``images`` (B, 1, H, W).

    ``images`` are the store's decoded values (``uint8`` normalisation: 0–255). The work runs on
    ``images.device``.
    """
    b, _, height, width = images.shape
    if len(params) != b:
        raise ValueError(f"{len(params)} parameter sets for {b} images")
    for p in params:
        for top, left, h, w in (c["box"] for c in p["crops"]):
            if top < 0 or left < 0 or top + h > height or left + w > width:
                raise ValueError(f"crop box (top {top}, left {left}, {h} × {w}) is outside the {height} × {width} "
                                 "images: draw the parameters for the images' own size")
    x = images.float()
    if settings.normalization == "uint8":
        x = x / 255.0

    def crops_of(indices: range, size: int) -> torch.Tensor:
        chosen = [params[i]["crops"][c] for c in indices for i in range(b)]
        src = x.repeat(len(indices), 1, 1, 1)
        thetas = [_affine(p["box"], p["flip"], p["rot"], height, width, p.get("angle", 0.0)) for p in chosen]
        return _finish(_resample(src, thetas, size), chosen, settings)

    global_crops = crops_of(range(2), settings.global_size)
    local_crops = (crops_of(range(2, settings.n_crops), settings.local_size) if settings.n_local
                   else x.new_zeros((0, 1, settings.local_size, settings.local_size)))
    masks = torch.from_numpy(np.stack([params[i]["masks"][c] for c in range(2) for i in range(b)]))
    return MultiCropBatch(global_crops, local_crops, masks.to(images.device))
