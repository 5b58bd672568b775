"""ViT weights: our safetensors round trip, the published teacher ``.pth`` layout (loaded
weights-only), and one-line refusals of wrong keys, shapes and pickled objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cryoset.errors import InputError
from cryoset.learn.vit import VisionTransformer, ViTConfig
from cryoset.learn.vit_weights import (
    CRYOPANDA_NORMALIZATION,
    DEFAULT_VIT_CHECKPOINT,
    load_vit,
    resolve_vit_checkpoint,
    save_vit,
)


class NotATensor:
    """A custom class: pickling it into a checkpoint must make the file refused."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def _published_state(dim: int, depth: int, heads: int, *, hidden: int | None = None,
                     storage: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A backbone state dict with the published names and shapes, built independently of our model."""
    g = torch.Generator().manual_seed(seed)
    hidden = hidden or 4 * dim

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    hd = dim // heads
    state = {
        "cls_token": r(1, 1, dim), "storage_tokens": r(1, storage, dim), "mask_token": r(1, dim),
        "patch_embed.proj.weight": r(dim, 1, 16, 16), "patch_embed.proj.bias": r(dim),
        "rope_embed.periods": torch.tensor([100.0 ** (2 * j / (hd // 2)) for j in range(hd // 4)]),
        "norm.weight": 1 + r(dim), "norm.bias": r(dim),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        state.update({
            b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
            b + "attn.qkv.weight": r(3 * dim, dim), b + "attn.qkv.bias": r(3 * dim),
            b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
            b + "ls1.gamma": r(dim), b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
            b + "mlp.fc1.weight": r(hidden, dim), b + "mlp.fc1.bias": r(hidden),
            b + "mlp.fc2.weight": r(dim, hidden), b + "mlp.fc2.bias": r(dim), b + "ls2.gamma": r(dim),
        })
    return state


def _teacher_file(path: Path, backbone: dict[str, torch.Tensor]) -> Path:
    heads = {
        "dino_head.mlp.0.weight": torch.zeros(8, 4), "dino_head.mlp.0.bias": torch.zeros(8),
        "dino_head.last_layer.weight": torch.zeros(16, 4),
        "ibot_head.mlp.0.weight": torch.zeros(8, 4), "ibot_head.last_layer.weight": torch.zeros(16, 4),
    }
    torch.save({"teacher": {**{"backbone." + k: v for k, v in backbone.items()}, **heads}}, path)
    return path


def test_published_large_width_teacher_loads(tmp_path: Path) -> None:
    # ViT-L width and heads (1024-d, 16 heads, 4 registers, patch 16), one block to stay small on CPU.
    state = _published_state(1024, 1, 16)
    model, meta = load_vit(_teacher_file(tmp_path / "teacher_checkpoint.pth", state))
    cfg = model.config
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size, cfg.in_chans, cfg.n_storage_tokens) == (
        1024, 1, 16, 16, 1, 4)
    assert cfg.ffn_ratio == 4.0
    ours = model.state_dict()
    assert set(ours) == set(state)
    for key, tensor in state.items():
        assert torch.equal(ours[key], tensor), key
    assert meta["ignored_keys"] == sorted(["dino_head.mlp.0.weight", "dino_head.mlp.0.bias",
                                           "dino_head.last_layer.weight", "ibot_head.mlp.0.weight",
                                           "ibot_head.last_layer.weight"])
    assert meta["normalization"] == dict(CRYOPANDA_NORMALIZATION)
    assert meta["input_size"] == 224
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1024)


def test_bare_backbone_state_dict_also_loads(tmp_path: Path) -> None:
    state = _published_state(64, 2, 4)
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    model, meta = load_vit(path)
    assert model.config.depth == 2 and model.config.num_heads == 4 and meta["ignored_keys"] == []


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.__setitem__("blocks.0.attn.qkvx.weight", s.pop("blocks.0.attn.qkv.weight")),
     "unexpected tensor 'blocks.0.attn.qkvx.weight'"),
    (lambda s: s.pop("blocks.1.ls2.gamma"), "missing tensor 'blocks.1.ls2.gamma'"),
    (lambda s: s.__setitem__("blocks.1.mlp.fc1.weight", torch.zeros(128, 64)),
     "tensor 'blocks.1.mlp.fc1.weight' has shape (128, 64)"),
    (lambda s: s.__setitem__("norm.weight", torch.zeros(63)), "tensor 'norm.weight' has shape (63,)"),
])
def test_wrong_key_or_shape_is_refused_in_one_line(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    state = _published_state(64, 2, 4)
    edit(state)
    path = _teacher_file(tmp_path / "bad.pth", state)
    with pytest.raises(InputError) as info:
        load_vit(path)
    text = str(info.value)
    assert message in text and "\n" not in text and str(path) in text


def test_pickled_custom_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"teacher": {"backbone.cls_token": torch.zeros(1, 1, 64)}, "extra": NotATensor()}, path)
    with pytest.raises(InputError, match="pickled objects") as info:
        load_vit(path)
    assert "\n" not in str(info.value)


def test_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(InputError, match="not a loadable"):
        load_vit(path)
    fake = tmp_path / "junk.safetensors"
    fake.write_bytes(b"\x00" * 40)
    with pytest.raises(InputError, match="safetensors"):
        load_vit(fake)


def test_safetensors_round_trip_is_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(embed_dim=64, depth=2, num_heads=4, img_size=64)).eval()
    meta = {"normalization": {"kind": "store"}, "provenance": {"command": "test", "seed": 0}}
    path = save_vit(tmp_path / "model.safetensors", model, metadata=meta)
    loaded, got = load_vit(path)
    assert loaded.config == model.config
    assert got["normalization"] == {"kind": "store"} and got["input_size"] == 64
    assert got["provenance"] == {"command": "test", "seed": 0}
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor)


def test_bad_normalisation_metadata_is_refused(tmp_path: Path) -> None:
    model = VisionTransformer(ViTConfig(embed_dim=32, depth=1, num_heads=2, img_size=32))
    with pytest.raises(InputError, match="normalisation"):
        save_vit(tmp_path / "m.safetensors", model, metadata={"normalization": {"kind": "minmax"}})


def test_missing_shipped_checkpoint_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cryoset.learn.vit_weights as vw

    monkeypatch.setattr(vw, "DEFAULT_VIT_CHECKPOINT", tmp_path / "absent.safetensors")
    with pytest.raises(InputError, match="pass --checkpoint"):
        vw.resolve_vit_checkpoint(None)
    with pytest.raises(InputError, match="no such checkpoint"):
        resolve_vit_checkpoint(tmp_path / "nope.safetensors")
    assert DEFAULT_VIT_CHECKPOINT.name == "vit_tiny_ssl.safetensors"


def test_masked_k_bias_of_upstream_is_folded_in(tmp_path: Path) -> None:
    state = _published_state(64, 1, 4)
    mask = torch.ones(192)
    mask[64:128] = 0.0  # upstream mask_k_bias: the key part of the qkv bias is switched off
    state["blocks.0.attn.qkv.bias_mask"] = mask
    model, meta = load_vit(_teacher_file(tmp_path / "masked.pth", state))
    bias = model.state_dict()["blocks.0.attn.qkv.bias"]
    assert torch.equal(bias[64:128], torch.zeros(64))
    assert torch.equal(bias[:64], state["blocks.0.attn.qkv.bias"][:64])
    assert meta["folded_keys"] == ["blocks.0.attn.qkv.bias_mask"]
