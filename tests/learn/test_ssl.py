"""Self-supervised ViT training: losses, heads, crops, schedules, EMA teacher, resume, DDP, configs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from cryoset.errors import InputError
from cryoset.learn.ssl_augment import (
    CropSettings,
    block_mask,
    draw_params,
    make_crops,
    particle_rng,
)
from cryoset.learn.ssl_heads import DINOHead
from cryoset.learn.ssl_losses import (
    dino_loss,
    ibot_loss,
    koleo_loss,
    koleo_loss_grouped,
    sinkhorn_knopp,
)
from cryoset.learn.ssl_train import (
    KIND,
    Schedules,
    SSLConfig,
    SSLStudent,
    effective_rank,
    param_groups,
    schedule_value,
    train_ssl,
)
from cryoset.store.dataset import ParticleStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two kinds of 16-px particles (a blob, a bar) in noise, float16, small chunks."""
    root = tmp_path_factory.mktemp("ssl")
    s = ParticleStore.create(root / "store", encoding="float16", chunk_particles=16)
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:16, :16] - 7.5
    shapes = {"blob": np.exp(-(yy**2 + xx**2) / 12.0), "bar": (np.abs(yy) < 2).astype(float)}
    for name, n in (("blob", 40), ("bar", 30)):
        images = (2.0 * shapes[name][None] + 0.3 * rng.standard_normal((n, 16, 16))).astype(np.float32)
        s.add_experiment(name, images, pd.DataFrame({"defocus_a": rng.uniform(1e4, 3e4, n)}))
    return root / "store"


def _mapping(store: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data": [str(store)],
        "model": {"size": "tiny", "embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 4, "img_size": 16,
                  "n_storage_tokens": 1, "layerscale_init": 0.1},
        "heads": {"dino_prototypes": 64, "ibot_prototypes": 64, "hidden_dim": 32, "bottleneck_dim": 16},
        "crops": {"global_size": 16, "local_size": 8, "n_local": 2},
        "optim": {"epochs": 3, "epoch_length": 2, "batch_size": 16, "warmup_epochs": 1, "base_lr": 2e-3},
        "teacher": {"warmup_temp_epochs": 1, "momentum": 0.9},
        "train": {"probe_size": 32, "seed": 3},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return base


def _config(store: Path, tmp: Path, **sections: dict[str, Any]) -> SSLConfig:
    return SSLConfig.from_mapping(_mapping(store, **sections), tmp / "cfg.yaml")


# ---------------------------------------------------------------------------------------- losses
def test_sinkhorn_rows_and_columns_normalise() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(48, 12, generator=g)
    q = sinkhorn_knopp(logits, 0.1, n_iterations=3)
    assert q.shape == (48, 12) and bool((q >= 0).all())
    torch.testing.assert_close(q.sum(dim=1), torch.ones(48), rtol=0, atol=1e-5)  # each sample: a distribution
    # prototypes: used equally (n / K each) once converged; three rounds already undo a collapse
    collapsed = 0.1 * logits
    collapsed[:, 0] += 1.0  # every sample prefers prototype 0
    plain = torch.softmax(collapsed / 0.1, dim=1).sum(dim=0)
    three = sinkhorn_knopp(collapsed, 0.1, n_iterations=3).sum(dim=0)
    assert plain[0] > 40 and three[0] < 8
    converged = sinkhorn_knopp(logits, 0.1, n_iterations=300)
    torch.testing.assert_close(converged.sum(dim=0), torch.full((12,), 4.0), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(converged.sum(dim=1), torch.ones(48), rtol=0, atol=1e-5)
    # the shift for numerical safety changes nothing: logits whose exp(z / 0.1) overflows give the same
    torch.testing.assert_close(sinkhorn_knopp(logits + 50.0, 0.1), q, rtol=1e-4, atol=1e-5)


def test_dino_loss_is_the_crop_pair_cross_entropy() -> None:
    k = 8
    assert float(dino_loss(torch.zeros(2, 3, k), torch.full((2, 3, k), 1 / k))) == pytest.approx(math.log(k))
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 4, k, generator=g)
    t = torch.softmax(torch.randn(2, 4, k, generator=g), dim=-1)
    logp = torch.log_softmax(s / 0.1, dim=-1)

    def ce(i: int, j: int) -> torch.Tensor:
        return -(t[j] * logp[i]).sum(dim=-1).mean()

    full = (ce(0, 0) + ce(0, 1) + ce(1, 0) + ce(1, 1)) / 4
    off = (ce(0, 1) + ce(1, 0)) / 2
    torch.testing.assert_close(dino_loss(s, t, 0.1), full)
    torch.testing.assert_close(dino_loss(s, t, 0.1, ignore_diagonal=True), off)


def test_ibot_loss_weights_each_image_equally() -> None:
    k = 5
    s = torch.zeros(3, k)  # three masked patches: two of image A, one of image B
    t = torch.full((3, k), 1 / k)
    weights = torch.tensor([0.5, 0.5, 1.0])
    # per image mean CE = log k for A and for B; divided over 4 global-crop images (2 unmasked)
    assert float(ibot_loss(s, t, weights, n_images=4)) == pytest.approx(2 * math.log(k) / 4)


def test_koleo_on_a_known_configuration() -> None:
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    # every nearest neighbour is sqrt(2) away: -log(sqrt 2)
    assert float(koleo_loss(square)) == pytest.approx(-0.5 * math.log(2.0), abs=1e-6)
    assert float(koleo_loss(5.0 * square)) == pytest.approx(-0.5 * math.log(2.0), abs=1e-6)  # L2-normalised
    pairs = torch.tensor([[1.0, 0.0], [math.cos(0.1), math.sin(0.1)], [-1.0, 0.0], [-math.cos(0.1), -math.sin(0.1)]])
    d = 2 * math.sin(0.05)  # chord of 0.1 rad
    assert float(koleo_loss(pairs)) == pytest.approx(-math.log(d), rel=1e-5)
    both = koleo_loss_grouped(torch.cat([square, pairs]), 4)
    assert float(both) == pytest.approx((-0.5 * math.log(2.0) - math.log(d)) / 2, rel=1e-5)


def test_effective_rank() -> None:
    assert effective_rank(torch.eye(6)) == pytest.approx(6.0)
    assert effective_rank(torch.ones(10, 4)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------- heads
def test_head_has_the_published_layout() -> None:
    torch.manual_seed(0)
    head = DINOHead(32, 100, hidden_dim=64, bottleneck_dim=16, nlayers=3)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {"mlp.0.weight": (64, 32), "mlp.0.bias": (64,), "mlp.2.weight": (64, 64), "mlp.2.bias": (64,),
                      "mlp.4.weight": (16, 64), "mlp.4.bias": (16,), "last_layer.weight": (100, 16)}
    x = torch.randn(7, 32)
    torch.testing.assert_close(head.bottleneck(x).norm(dim=-1), torch.ones(7))
    assert head(x).shape == (7, 100)


# ------------------------------------------------------------------------------------------ crops
def test_block_masks_cover_about_the_target() -> None:
    for seed in range(20):
        target = 5 + seed
        m = block_mask(np.random.default_rng(seed), (8, 8), target)
        assert m.shape == (8, 8) and 0 < m.sum() <= target
        assert np.array_equal(m, block_mask(np.random.default_rng(seed), (8, 8), target))


def test_crops_are_seeded_per_particle_not_per_batch() -> None:
    settings = CropSettings(global_size=16, local_size=8, n_local=3, patch_size=4, mask_ratio=(0.2, 0.5),
                            mask_sample_probability=1.0)
    g = torch.Generator().manual_seed(2)
    images = torch.randn(5, 1, 20, 20, generator=g)
    params = [draw_params(settings, particle_rng(0, 1, 0, row), 20, 20) for row in range(5)]
    batch = make_crops(images, params, settings)
    assert batch.global_crops.shape == (10, 1, 16, 16) and batch.local_crops.shape == (15, 1, 8, 8)
    assert batch.masks.shape == (10, 16) and bool(batch.masks.any(dim=1).all())
    alone = make_crops(images[3:4], [draw_params(settings, particle_rng(0, 1, 0, 3), 20, 20)], settings)
    torch.testing.assert_close(alone.global_crops[0], batch.global_crops[3], rtol=0, atol=1e-6)
    torch.testing.assert_close(alone.global_crops[1], batch.global_crops[5 + 3], rtol=0, atol=1e-6)
    torch.testing.assert_close(alone.local_crops[2], batch.local_crops[2 * 5 + 3], rtol=0, atol=1e-6)
    assert not torch.allclose(batch.global_crops[0], batch.global_crops[5])  # two different global views
    other = draw_params(settings, particle_rng(0, 2, 0, 3), 20, 20)  # next pass: new crops
    assert other["crops"][0]["box"] != params[3]["crops"][0]["box"] or other["crops"][0]["rot"] != params[3][
        "crops"][0]["rot"]


def test_whole_image_crop_is_exact_and_rotations_are_90_degrees() -> None:
    settings = CropSettings(global_size=16, local_size=8, n_local=0, patch_size=4, jitter_p=0.0,
                            blur_p=(0.0, 0.0, 0.0), mask_sample_probability=0.0)
    g = torch.Generator().manual_seed(3)
    images = torch.randn(1, 1, 16, 16, generator=g)
    for rot in range(4):
        for flip in (False, True):
            crop = {"box": (0.0, 0.0, 16.0, 16.0), "flip": flip, "rot": rot, "jitter": False, "brightness": 1.0,
                    "contrast": 1.0, "brightness_first": True, "blur": False, "sigma": 1.0, "solarize": False}
            p = {"crops": [crop, crop], "masks": [np.zeros(16, bool), np.zeros(16, bool)]}
            out = make_crops(images, [p], settings).global_crops[0, 0]
            ref = images[0, 0].flip(-1) if flip else images[0, 0]
            matches = [float((out - torch.rot90(ref, k, (0, 1))).abs().max()) for k in range(4)]
            assert min(matches) < 1e-4


def test_any_angle_rotation_turns_a_centred_pattern_and_keeps_the_default_draws() -> None:
    settings = CropSettings(global_size=32, local_size=8, n_local=0, patch_size=4, jitter_p=0.0,
                            blur_p=(0.0, 0.0, 0.0), mask_sample_probability=0.0)
    yy, xx = torch.meshgrid(torch.arange(32.0) - 15.5, torch.arange(32.0) - 15.5, indexing="ij")
    image = torch.exp(-((xx - 6.0) ** 2 + yy**2) / 8.0)[None, None]  # a blob 6 px right of the centre
    base = {"box": (0.0, 0.0, 32.0, 32.0), "flip": False, "rot": 0, "jitter": False, "brightness": 1.0,
            "contrast": 1.0, "brightness_first": True, "blur": False, "sigma": 1.0, "solarize": False}
    for angle in (math.pi / 3, 1.234):
        crop = {**base, "angle": angle}
        p = {"crops": [crop, crop], "masks": [np.zeros(64, bool), np.zeros(64, bool)]}
        out = make_crops(image, [p], settings).global_crops[0, 0]
        w = out.clamp(min=0)
        cy, cx = float((w * yy).sum() / w.sum()), float((w * xx).sum() / w.sum())
        assert math.hypot(cx, cy) == pytest.approx(6.0, abs=0.3)  # same radius ...
        turned = math.atan2(cy, cx) % (2 * math.pi)  # ... turned by the angle (either sense is a rotation)
        assert min(abs(turned - angle), abs(turned - (2 * math.pi - angle))) < 0.05
    off = draw_params(settings, np.random.default_rng(5), 32, 32)
    on = draw_params(CropSettings(**{**settings.__dict__, "rotate_any": True}), np.random.default_rng(5), 32, 32)
    assert off["crops"][0]["angle"] == 0.0 and on["crops"][0]["angle"] != 0.0
    assert off["crops"][0]["box"] == on["crops"][0]["box"]  # the new draw comes last: old streams unchanged


# ------------------------------------------------------------------------------- schedules/groups
def test_schedules_follow_the_published_shapes(store_path: Path, tmp_path: Path) -> None:
    assert schedule_value(0, 100, 1.0, 0.0, warmup=10, warmup_start=0.0) == 0.0
    assert schedule_value(9, 100, 1.0, 0.0, warmup=10) == pytest.approx(1.0)
    assert schedule_value(10, 100, 1.0, 0.1, warmup=10) == pytest.approx(1.0)
    assert schedule_value(100, 100, 1.0, 0.1, warmup=10) == pytest.approx(0.1)
    cfg = _config(store_path, tmp_path, optim={"epochs": 4, "freeze_last_layer_epochs": 1, "warmup_epochs": 1},
                  teacher={"momentum": 0.992, "warmup_temp_epochs": 2})
    sched = Schedules(cfg, steps_per_epoch=10)
    first, last = sched.at(0), sched.at(39)
    assert first["momentum"] == pytest.approx(0.992) and last["momentum"] == pytest.approx(1.0, abs=1e-4)
    assert first["teacher_temp"] == pytest.approx(0.04) and sched.at(19)["teacher_temp"] == pytest.approx(0.07)
    assert sched.at(30)["teacher_temp"] == 0.07
    assert first["weight_decay"] == pytest.approx(0.04) and last["weight_decay"] == pytest.approx(0.4, rel=1e-2)
    assert sched.at(9)["last_layer_lr"] == 0.0 and sched.at(10)["last_layer_lr"] == sched.at(10)["lr"] > 0
    assert sched.at(9)["lr"] == pytest.approx(cfg.optim.peak_lr())
    assert cfg.optim.peak_lr() == pytest.approx(2e-3 * 4 * math.sqrt(16 / 1024))


def test_param_groups_decay_by_layer(store_path: Path, tmp_path: Path) -> None:
    cfg = _config(store_path, tmp_path, optim={"layerwise_decay": 0.5, "patch_embed_lr_mult": 0.2})
    torch.manual_seed(0)
    groups = param_groups(SSLStudent(cfg.model, cfg.heads), cfg.optim)
    by_name = {n: g for g in groups for n in g["names"]}
    depth = cfg.model.depth  # 2: blocks get 0.5**2 (block 0), 0.5 (block 1); norm and heads 1
    assert by_name["backbone.blocks.0.attn.qkv.weight"]["lr_multiplier"] == pytest.approx(0.25)
    assert by_name["backbone.blocks.1.mlp.fc1.weight"]["lr_multiplier"] == pytest.approx(0.5)
    assert by_name["backbone.cls_token"]["lr_multiplier"] == pytest.approx(0.5 ** (depth + 1))
    assert by_name["backbone.patch_embed.proj.weight"]["lr_multiplier"] == pytest.approx(0.2 * 0.5 ** (depth + 1))
    assert by_name["backbone.norm.weight"]["lr_multiplier"] == 1.0 and by_name["dino_head.mlp.0.weight"][
        "lr_multiplier"] == 1.0
    for name in ("backbone.blocks.0.ls1.gamma", "backbone.blocks.0.norm1.weight", "dino_head.mlp.0.bias"):
        assert by_name[name]["wd_multiplier"] == 0.0
    assert by_name["backbone.blocks.0.attn.qkv.weight"]["wd_multiplier"] == 1.0
    assert by_name["ibot_head.last_layer.weight"]["is_last_layer"] and not by_name["dino_head.mlp.4.weight"][
        "is_last_layer"]


# ------------------------------------------------------------------------------------- training
def test_loss_falls_over_a_few_steps(store_path: Path, tmp_path: Path) -> None:
    cfg = _config(store_path, tmp_path, optim={"epochs": 4, "epoch_length": 4, "warmup_epochs": 1,
                                               "freeze_last_layer_epochs": 0})
    losses: list[float] = []
    result = train_ssl(cfg, tmp_path / "run", device="cpu", on_step=lambda e, s, n, loss: losses.append(loss))
    assert len(losses) == 16 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.1
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(rows["epoch"]) == [0, 1, 2, 3] and (rows["effective_rank"] >= 1).all()
    assert result["last_metrics"]["loss"] == pytest.approx(rows["loss"].iloc[-1])
    from cryoset.learn.vit_weights import load_vit

    model, meta = load_vit(tmp_path / "run" / "model.safetensors")  # the teacher backbone
    state = load_file(str(tmp_path / "run" / "checkpoints" / "epoch_0003" / "model.safetensors"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[f"teacher.backbone.{key}"])
    assert meta["normalization"] == {"kind": "store"} and meta["input_size"] == 16


def test_teacher_is_the_ema_of_the_student(store_path: Path, tmp_path: Path) -> None:
    cfg = _config(store_path, tmp_path, optim={"epochs": 2, "epoch_length": 1, "freeze_last_layer_epochs": 0,
                                               "warmup_epochs": 0}, teacher={"momentum": 0.9})
    train_ssl(cfg, tmp_path / "run", device="cpu", stop_after_epoch=0)
    state = load_file(str(tmp_path / "run" / "checkpoints" / "epoch_0000" / "model.safetensors"))
    torch.manual_seed(cfg.train.seed)
    initial = SSLStudent(cfg.model, cfg.heads).state_dict()
    m = Schedules(cfg, 1).at(0)["momentum"]
    assert m == pytest.approx(0.9)
    moved = 0
    for name, p0 in initial.items():
        if name.endswith("rope_embed.periods"):
            continue
        s1 = state[f"student.{name}"]
        expected = p0.clone()
        torch._foreach_mul_([expected], m)
        torch._foreach_add_([expected], [s1], alpha=1 - m)
        assert torch.equal(state[f"teacher.{name}"], expected), name
        moved += int(not torch.equal(s1, p0))
    assert moved > 10  # the student did take a step


def test_resume_equals_an_uninterrupted_run(store_path: Path, tmp_path: Path) -> None:
    cfg = _config(store_path, tmp_path, optim={"epochs": 3, "epoch_length": 3})  # 3 steps/epoch, pass = 4 steps
    train_ssl(cfg, tmp_path / "a", device="cpu")
    train_ssl(cfg, tmp_path / "b", device="cpu", stop_after_epoch=0)
    assert not (tmp_path / "b" / "checkpoints" / "epoch_0001").exists()
    train_ssl(cfg, tmp_path / "b", device="cpu")
    a = load_file(str(tmp_path / "a" / "checkpoints" / "epoch_0002" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "epoch_0002" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    opt_a = load_file(str(tmp_path / "a" / "checkpoints" / "epoch_0002" / "optimizer.safetensors"))
    opt_b = load_file(str(tmp_path / "b" / "checkpoints" / "epoch_0002" / "optimizer.safetensors"))
    assert all(torch.equal(opt_a[k], opt_b[k]) for k in opt_a)
    other = _config(store_path, tmp_path, optim={"epochs": 3, "epoch_length": 3, "base_lr": 1e-3})
    with pytest.raises(InputError, match="other settings"):
        train_ssl(other, tmp_path / "b", device="cpu")
    assert KIND == "ssl-student-teacher"


@pytest.mark.slow
@pytest.mark.parametrize(("centering", "port"), [("sinkhorn_knopp", 29531), ("centering", 29533)])
def test_two_gloo_processes_equal_one(store_path: Path, tmp_path: Path, centering: str, port: int) -> None:
    """torchrun with 2 CPU processes (gloo) = 1 process on the same global batch (data_shards 2),
    with either kind of teacher targets (both all-reduce over the global batch)."""
    mapping = _mapping(store_path, optim={"epochs": 2, "epoch_length": 2, "warmup_epochs": 0,
                                          "freeze_last_layer_epochs": 0}, train={"data_shards": 2},
                       dino={"centering": centering})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(mapping))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    one = subprocess.run([sys.executable, "-m", "cryoset", "train", "ssl", str(tmp_path / "cfg.yaml"), "-o",
                          str(tmp_path / "one"), "--device", "cpu"], env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", str(port), "-m", "cryoset", "train",
                          "ssl", str(tmp_path / "cfg.yaml"), "-o", str(tmp_path / "two"), "--device", "cpu"],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    assert two.returncode == 0, two.stderr[-2000:]
    a = load_file(str(tmp_path / "one" / "checkpoints" / "epoch_0001" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "epoch_0001" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ra, rb = pd.read_csv(tmp_path / "one" / "metrics.csv"), pd.read_csv(tmp_path / "two" / "metrics.csv")
    np.testing.assert_allclose(ra["loss"], rb["loss"], rtol=1e-4)


# --------------------------------------------------------------------------------------- configs
def test_example_configs_parse() -> None:
    tiny = SSLConfig.from_yaml(EXAMPLES / "ssl-tiny-cpu.yaml")
    assert tiny.data[0].endswith("build/ssl-corpus/train-store")
    assert tiny.crops.normalization == "store" and tiny.model.patch_size == tiny.crops.patch_size
    paper = SSLConfig.from_yaml(EXAMPLES / "ssl-vitl16-paper.yaml")
    m, c, h, o = paper.model, paper.crops, paper.heads, paper.optim
    assert (m.embed_dim, m.depth, m.num_heads, m.patch_size, m.n_storage_tokens) == (1024, 24, 16, 16, 4)
    assert m.drop_path_rate == 0.3 and m.layerscale_init == 1e-5
    assert (c.global_size, c.local_size, c.n_local, c.global_scale, c.local_scale) == (224, 96, 8, (0.32, 1.0),
                                                                                       (0.05, 0.32))
    assert c.normalization == "uint8" and c.mean == 0.5475857690770103 and c.std == 0.12047245612891117
    assert (h.dino_prototypes, h.ibot_prototypes, h.hidden_dim, h.bottleneck_dim, h.nlayers) == (65536, 65536, 2048,
                                                                                                 256, 3)
    assert (o.batch_size, o.epochs, o.epoch_length, o.base_lr, o.scaling_rule) == (2048, 130, 1000, 5e-4,
                                                                                   "sqrt_wrt_1024")
    assert o.peak_lr() == pytest.approx(5e-4 * 4 * math.sqrt(2))
    assert (o.warmup_epochs, o.min_lr, o.clip_grad, o.layerwise_decay, o.patch_embed_lr_mult) == (13, 1e-6, 3.0,
                                                                                                   0.9, 0.2)
    assert (paper.teacher.momentum, paper.teacher.warmup_temp_epochs, paper.dino.koleo_loss_weight) == (0.992, 30,
                                                                                                        0.1)
    assert paper.dino.koleo_group == 256 and paper.train.data_shards == 8


@pytest.mark.parametrize(("section", "value", "key"), [
    ("optim", {"base_lr": -1.0}, "optim.base_lr"),
    ("optim", {"bogus": 1}, "optim.bogus"),
    ("crops", {"global_size": 15}, "crops.global_size"),
    ("crops", {"blur_p": [0.1]}, "crops.blur_p"),
    ("teacher", {"momentum": "high"}, "teacher.momentum"),
    ("model", {"depth": 0}, "model"),
    ("model", {"colour": 3}, "model.colour"),
    ("ibot", {"mask_ratio": [0.6, 0.2]}, "crops.mask_ratio"),
    ("train", {"seed": 1.5}, "train.seed"),
])
def test_config_errors_name_the_key(store_path: Path, tmp_path: Path, run_cli: Any, section: str,
                                    value: dict[str, Any], key: str) -> None:
    mapping = _mapping(store_path, **{section: value})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(mapping))
    code, out, err = run_cli("train", "ssl", tmp_path / "bad.yaml", "-o", tmp_path / "out")
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0] and "bad.yaml" in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_unknown_section_and_missing_store(store_path: Path, tmp_path: Path, run_cli: Any) -> None:
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({**_mapping(store_path), "optimizer": {}}))
    code, _, err = run_cli("train", "ssl", tmp_path / "x.yaml", "-o", tmp_path / "out")
    assert code == 2 and "unknown key optimizer" in err
    (tmp_path / "y.yaml").write_text(yaml.safe_dump({**_mapping(store_path), "data": [str(tmp_path / "none")]}))
    code, _, err = run_cli("train", "ssl", tmp_path / "y.yaml", "-o", tmp_path / "out2")
    assert code == 2 and "no such particle store" in err


def test_crops_of_resized_images_stay_inside_them() -> None:
    """Boxes are drawn in the pixels of the images they cut: parameters drawn for 64 px particles
    applied to the same particles resized to 48 px would sample outside them (border streaks)."""
    settings = CropSettings(global_size=32, local_size=16, n_local=2)
    rng = particle_rng(0, 0, 0, 0)
    params = [draw_params(settings, rng, 64, 64) for _ in range(4)]
    with pytest.raises(ValueError, match="outside the 48 × 48 images"):
        make_crops(torch.zeros(4, 1, 48, 48), params, settings)
    # a uniform image gives uniform crops when the boxes are inside it (no padding streaks)
    params = [draw_params(settings, particle_rng(0, 0, 0, i), 48, 48) for i in range(4)]
    batch = make_crops(torch.ones(4, 1, 48, 48), [dict(p, crops=[dict(c, jitter=False, blur=False)
                                                                   for c in p["crops"]]) for p in params],
                       settings)
    assert torch.allclose(batch.global_crops, torch.ones_like(batch.global_crops), atol=1e-5)


def test_centering_targets_are_the_softmax_of_centred_logits_and_the_centre_is_an_ema() -> None:
    from cryoset.learn.ssl_losses import centred_softmax, updated_centre

    z = torch.tensor([[2.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
    centre = torch.tensor([2.0, 0.0, 0.0])
    q = centred_softmax(z, centre, 0.5)
    torch.testing.assert_close(q, torch.softmax((z - centre) / 0.5, dim=-1))
    torch.testing.assert_close(q.sum(dim=1), torch.ones(2))
    new = updated_centre(centre, z, 0.9)
    torch.testing.assert_close(new, 0.9 * centre + 0.1 * torch.tensor([2.0, 0.5, 0.0]))
    # no rows (no masked patch in the batch): the centre stays
    torch.testing.assert_close(updated_centre(centre, z[:0], 0.9), centre)


def test_centering_option_trains_resumes_exactly_and_is_validated(store_path: Path, tmp_path: Path) -> None:
    cfg = _config(store_path, tmp_path, optim={"epochs": 2, "epoch_length": 2},
                  dino={"centering": "centering", "center_momentum": 0.8})
    train_ssl(cfg, tmp_path / "a", device="cpu")
    train_ssl(cfg, tmp_path / "b", device="cpu", stop_after_epoch=0)
    train_ssl(cfg, tmp_path / "b", device="cpu")
    a = load_file(str(tmp_path / "a" / "checkpoints" / "epoch_0001" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "epoch_0001" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "centre.dino" in a and float(a["centre.dino"].abs().sum()) > 0  # the EMA moved off zero
    with pytest.raises(InputError, match="centering"):
        _config(store_path, tmp_path, dino={"centering": "mean"})
