"""The DINOv3-layout ViT: published key layout and shapes, RoPE relative-position property,
variable input size, masking, drop-path, layer ids."""

from __future__ import annotations

import math

import pytest
import torch

from cryoset.learn.vit import (
    VIT_SIZES,
    Block,
    RopePositionEmbedding,
    VisionTransformer,
    ViTConfig,
    layer_id_for_param,
    rope_apply,
    vit_config,
)


def _small(**kw: object) -> ViTConfig:
    base: dict[str, object] = {"embed_dim": 64, "depth": 2, "num_heads": 4, "n_storage_tokens": 4}
    base.update(kw)
    return ViTConfig(**base)  # type: ignore[arg-type]


def published_large_shapes() -> dict[str, tuple[int, ...]]:
    """The backbone layout of the released cryoPANDA ViT-L/16 teacher (ml-anchors (b)), written out."""
    d, hidden, p = 1024, 4096, 16
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d), "storage_tokens": (1, 4, d), "mask_token": (1, d),
        "patch_embed.proj.weight": (d, 1, p, p), "patch_embed.proj.bias": (d,),
        "rope_embed.periods": (d // 16 // 4,), "norm.weight": (d,), "norm.bias": (d,),
    }
    for i in range(24):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (d,), b + "norm1.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "ls1.gamma": (d,), b + "norm2.weight": (d,), b + "norm2.bias": (d,),
            b + "mlp.fc1.weight": (hidden, d), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (d, hidden), b + "mlp.fc2.bias": (d,), b + "ls2.gamma": (d,),
        })
    return shapes


def test_large_has_exactly_the_published_layout() -> None:
    with torch.device("meta"):
        model = VisionTransformer(vit_config("large"))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == published_large_shapes()
    n_params = sum(int(p.numel()) for p in model.parameters())
    assert 300e6 < n_params < 305e6  # 302.6 M: ViT-L/16 with one input channel and no position table


def test_sizes_and_config_round_trip() -> None:
    assert VIT_SIZES["large"] == (1024, 24, 16) and VIT_SIZES["tiny"] == (192, 12, 3)
    cfg = vit_config("small", patch_size=8, drop_path_rate=0.1)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size) == (384, 12, 6, 8)
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ViTConfig.from_dict({**cfg.to_dict(), "pos_embed": 1})
    with pytest.raises(ValueError, match="4·num_heads"):
        ViTConfig(embed_dim=60, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="unknown ViT size"):
        vit_config("huge")


def test_rope_periods_follow_the_base_definition() -> None:
    rope = RopePositionEmbedding(64, num_heads=4, base=100.0)  # head_dim 16 → 4 periods
    assert rope.periods.shape == (4,)
    expected = torch.tensor([100.0 ** (2 * j / 8) for j in range(4)])
    torch.testing.assert_close(rope.periods, expected)
    sin, cos = rope(H=3, W=5)
    assert sin.shape == cos.shape == (15, 16)
    # coordinates: separate normalisation of cell centres to [-1, 1]
    c = rope.coords(3, 5)
    torch.testing.assert_close(c[0], torch.tensor([2 * 0.5 / 3 - 1, 2 * 0.5 / 5 - 1]))
    torch.testing.assert_close(c[-1], torch.tensor([2 * 2.5 / 3 - 1, 2 * 4.5 / 5 - 1]))
    # angle layout: [y angles (4), x angles (4)] tiled twice
    ang0 = 2 * math.pi * c[7, 0] / rope.periods[1]
    torch.testing.assert_close(sin[7, 1], torch.sin(ang0))
    torch.testing.assert_close(sin[7, 9], torch.sin(ang0))
    angx = 2 * math.pi * c[7, 1] / rope.periods[2]
    torch.testing.assert_close(cos[7, 6], torch.cos(angx))


def test_rope_logits_depend_only_on_relative_offset() -> None:
    g = torch.Generator().manual_seed(0)
    rope = RopePositionEmbedding(64, num_heads=4)
    sin, cos = rope(H=14, W=14)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)

    def logit(pos_q: tuple[int, int], pos_k: tuple[int, int]) -> float:
        iq, ik = pos_q[0] * 14 + pos_q[1], pos_k[0] * 14 + pos_k[1]
        return float(rope_apply(q, sin[iq], cos[iq]) @ rope_apply(k, sin[ik], cos[ik]))

    base = logit((2, 3), (5, 1))
    for dy, dx in [(1, 0), (0, 4), (6, 7), (-2, 2)]:
        assert logit((2 + dy, 3 + dx), (5 + dy, 1 + dx)) == pytest.approx(base, abs=1e-4)
    # …but it does depend on the offset itself, and equals the unrotated product at offset 0
    assert abs(logit((2, 3), (5, 2)) - base) > 1e-3
    assert logit((4, 4), (4, 4)) == pytest.approx(float(q @ k), abs=1e-4)


def test_shifted_pattern_gives_the_same_patch_logits_in_the_model() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(_small(depth=1)).eval()
    g = torch.Generator().manual_seed(1)
    img = torch.zeros(1, 1, 128, 128)
    img[..., 16:64, 16:64] = torch.randn(1, 1, 48, 48, generator=g)  # a pattern on patches (1..3, 1..3)
    shifted = torch.roll(img, shifts=(32, 48), dims=(-2, -1))  # by (2, 3) patches, no wrap of the pattern
    blk = model.blocks[0]
    assert isinstance(blk, Block)
    with torch.no_grad():
        logits = []
        for x in (img, shifted):
            tokens, (gh, gw) = model.prepare_tokens(x)
            q, k, _ = blk.attn.qk(blk.norm1(tokens), model.rope_embed(H=gh, W=gw))
            logits.append(q[0] @ k[0].transpose(-1, -2))  # (heads, T, T)
    s, w = model.n_prefix_tokens, 8

    def tok(y: int, x: int) -> int:
        return s + y * w + x

    for (ya, xa), (yb, xb) in [((1, 1), (3, 2)), ((2, 3), (1, 1)), ((3, 3), (3, 3))]:
        a = logits[0][:, tok(ya, xa), tok(yb, xb)]
        b = logits[1][:, tok(ya + 2, xa + 3), tok(yb + 2, xb + 3)]
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # CLS/storage tokens are not rotated: their logits with each other do not move at all
    torch.testing.assert_close(logits[0][:, :s, :s], logits[1][:, :s, :s])


@pytest.mark.parametrize("side", [96, 224])
def test_variable_input_size(side: int) -> None:
    torch.manual_seed(0)
    model = VisionTransformer(_small(depth=1)).eval()
    with torch.no_grad():
        out = model.forward_features(torch.randn(2, 1, side, side))
    n = (side // 16) ** 2
    assert out["x_norm_clstoken"].shape == (2, 64)
    assert out["x_storage_tokens"].shape == (2, 4, 64)
    assert out["x_norm_patchtokens"].shape == (2, n, 64)
    assert out["x_prenorm"].shape == (2, 1 + 4 + n, 64)
    assert out["masks"] is None
    assert model.features(torch.zeros(1, 1, side, side), "both").shape == (1, 128)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        model(torch.zeros(1, 1, side + 8, side))


def test_masks_replace_patches_by_the_mask_token() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(_small(depth=1))
    with torch.no_grad():
        model.mask_token.copy_(torch.arange(64.0))
        x = torch.randn(2, 1, 64, 64)
        masks = torch.zeros(2, 16, dtype=torch.bool)
        masks[0, [0, 5]] = True
        tokens, _ = model.prepare_tokens(x, masks)
        plain, _ = model.prepare_tokens(x)
    torch.testing.assert_close(tokens[0, 5 + 0], torch.arange(64.0))
    torch.testing.assert_close(tokens[0, 5 + 5], torch.arange(64.0))
    torch.testing.assert_close(tokens[1], plain[1])
    assert model.forward_features(x, masks)["masks"] is masks


def test_drop_path_only_in_training_and_eval_is_deterministic() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(_small(drop_path_rate=0.5))
    x = torch.randn(8, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        t1 = model(x)
        torch.manual_seed(2)
        t2 = model(x)
        torch.manual_seed(1)
        t1_again = model(x)
    assert not torch.equal(t1, t2)
    assert torch.equal(t1, t1_again)


def test_layer_ids_for_layerwise_decay() -> None:
    depth = 12
    assert layer_id_for_param("patch_embed.proj.weight", depth) == 0
    assert layer_id_for_param("cls_token", depth) == 0
    assert layer_id_for_param("storage_tokens", depth) == 0
    assert layer_id_for_param("mask_token", depth) == 0
    assert layer_id_for_param("blocks.0.attn.qkv.weight", depth) == 1
    assert layer_id_for_param("backbone.blocks.11.mlp.fc2.bias", depth) == 12
    assert layer_id_for_param("norm.weight", depth) == 13
