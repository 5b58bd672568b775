"""Voxel network: architectures, the published key layout, checkpoints, training, inference."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cryoset.errors import InputError
from cryoset.learn.checkpoint import read_weights, write_weights
from cryoset.learn.voxel_infer import predict_volume
from cryoset.learn.voxel_train import (
    TrainVoxelSettings,
    class_weights,
    load_corpus,
    macro_f1,
    rotate_batch,
    train_voxel,
)
from cryoset.learn.voxelnet import (
    HEADS,
    UNETR,
    VoxelNetConfig,
    build_voxel_net,
    load_published_checkpoint,
    published_key_map,
)

TINY_UNET = VoxelNetConfig(arch="unet", base_channels=4, levels=3)
TINY_UNETR = VoxelNetConfig(arch="unetr", base_channels=4, embed_dim=32, depth=4, num_heads=4, mlp_dim=64,
                            extract_layers=(1, 2, 3, 4), heads=("backbone",))


# --------------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared map (map prepare products) of a 60-residue procedural protein at 3 Å."""
    from cryoset.simulate.density import simulate_map
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.protein import build_protein
    from cryoset.workflows.maps import prepare_map
    from cryoset.workflows.simulate import write_simulated_map, write_structure

    root = tmp_path_factory.mktemp("voxel")
    protein = build_protein(60, seed=3)
    write_structure(protein, root / "model.pdb")
    atoms = atoms_from_protein(protein)
    box = int(2 * math.ceil(atoms.radius_a + 8))
    origin = tuple(float(c - box // 2) for c in atoms.xyz_a.mean(axis=0)[::-1])
    vol = simulate_map(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, shape=(box,) * 3, voxel_size_a=1.0,
                       origin_a=origin, resolution_a=3.0, permissive=True)
    write_simulated_map(root / "map.mrc", vol, 1.0, origin)
    prepare_map(root / "map.mrc", root / "prep", root / "model.pdb")
    return root


# ------------------------------------------------------------------------------ architectures
@pytest.mark.parametrize("config", [TINY_UNET, TINY_UNETR], ids=["unet", "unetr"])
def test_shapes_per_head(config: VoxelNetConfig) -> None:
    torch.manual_seed(0)
    model = build_voxel_net(config)
    out = model(torch.rand(2, 1, 32, 32, 32))
    assert list(out) == list(config.heads)
    for head, logits in out.items():
        assert logits.shape == (2, HEADS[head], 32, 32, 32)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="arch"):
        VoxelNetConfig(arch="resnet")
    with pytest.raises(ValueError, match="heads"):
        VoxelNetConfig(heads=("backbone", "ligand"))
    with pytest.raises(ValueError, match="divisible"):
        VoxelNetConfig(box_px=30)
    with pytest.raises(InputError, match="unknown model setting"):
        VoxelNetConfig.from_mapping({"arch": "unet", "width": 3})


def test_published_layout_keys_and_shapes() -> None:
    """The Cryo2Struct key names and shapes (ml-anchors: Transformer_UNET, C = 4 for the atom model)."""
    with torch.device("meta"):
        model = UNETR(VoxelNetConfig(arch="unetr", base_channels=16, heads=("backbone",)))
    mapping = published_key_map(model, "atom")
    ours = model.state_dict()
    shape = {k: tuple(ours[v].shape) for k, v in mapping.items()}
    assert shape["model.embed.patch_embeddings.weight"] == (768, 1, 16, 16, 16)
    assert shape["model.embed.position_embeddings.abs_pos_enc"] == (1, 8, 768)
    assert shape["model.transformer.block_list.11.mhsa.to_qvk.weight"] == (2304, 768)
    assert shape["model.transformer.block_list.0.mhsa.W_0.weight"] == (768, 768)
    assert shape["model.transformer.block_list.3.linear.0.weight"] == (3072, 768)
    assert shape["model.transformer.block_list.3.linear.3.weight"] == (768, 3072)
    assert shape["model.init_conv.conv_block.3.weight"] == (16, 16, 3, 3, 3)
    assert shape["model.init_conv.conv_down.0.weight"] == (16, 1, 1, 1, 1)
    assert shape["model.z3_blue_conv.blocks.0.block.weight"] == (768, 32, 2, 2, 2)
    assert shape["model.z3_blue_conv.blocks.5.conv_block.0.weight"] == (32, 32, 3, 3, 3)
    assert shape["model.z9_conv.conv_down.0.weight"] == (128, 256, 1, 1, 1)
    assert shape["model.z12_deconv.block.weight"] == (768, 128, 2, 2, 2)
    assert shape["model.out_conv.0.conv_block.0.weight"] == (16, 32, 3, 3, 3)
    assert shape["model.out_conv.1.weight"] == (4, 16, 1, 1, 1)
    assert "model.transformer.block_list.12.norm_1.weight" not in mapping
    assert not any(k.startswith("model.heads") for k in mapping)


def test_attention_uses_the_published_qkv_order() -> None:
    """to_qvk feature f = d·3H + k·H + h (einops 'b t (d k h) -> k b h t d'); heads merged h·D + d."""
    torch.manual_seed(1)
    model = UNETR(TINY_UNETR)
    attn = model.transformer.block_list[0].mhsa
    x = torch.randn(2, 8, 32)
    heads, dh = 4, 8
    qkv = attn.to_qvk(x)
    q = torch.empty(2, heads, 8, dh)
    k = torch.empty_like(q)
    v = torch.empty_like(q)
    for d in range(dh):
        for h in range(heads):
            q[:, h, :, d] = qkv[..., d * 3 * heads + 0 * heads + h]
            k[:, h, :, d] = qkv[..., d * 3 * heads + 1 * heads + h]
            v[:, h, :, d] = qkv[..., d * 3 * heads + 2 * heads + h]
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1) @ v  # (B, H, T, d)
    merged = att.permute(0, 2, 1, 3).reshape(2, 8, heads * dh)
    expected = attn.W_0(merged)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def _lightning_checkpoint(model: UNETR, path: Path, **extra: object) -> None:
    head = model.state_dict()
    state = {}
    for pub, ours in published_key_map(model, "atom").items():
        state[pub] = head[ours].clone()
    torch.save({"epoch": 99, "global_step": 1000, "state_dict": state, **extra}, path)


def test_load_published_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(2)
    source = UNETR(TINY_UNETR).eval()
    _lightning_checkpoint(source, tmp_path / "atom.ckpt")
    loaded = load_published_checkpoint(tmp_path / "atom.ckpt", "atom", TINY_UNETR).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["backbone"], source(x)["backbone"], rtol=0, atol=0)


def test_load_published_checkpoint_refusals(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = UNETR(TINY_UNETR)
    # a pickled object other than tensors
    _lightning_checkpoint(source, tmp_path / "pickled.ckpt", hyper_parameters=Path("x"))
    with pytest.raises(InputError, match="refused"):
        load_published_checkpoint(tmp_path / "pickled.ckpt", "atom", TINY_UNETR)
    # a tensor of the wrong shape
    state = {k: v for k, v in torch.load(tmp_path / "pickled.ckpt", weights_only=False)["state_dict"].items()}
    state["model.out_conv.1.weight"] = torch.zeros(21, 4, 1, 1, 1)
    torch.save({"state_dict": state}, tmp_path / "shape.ckpt")
    with pytest.raises(InputError, match="shape"):
        load_published_checkpoint(tmp_path / "shape.ckpt", "atom", TINY_UNETR)
    # a foreign tensor
    state["model.out_conv.1.weight"] = torch.zeros(4, 4, 1, 1, 1)
    state["model.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "extra.ckpt")
    with pytest.raises(InputError, match="do not belong"):
        load_published_checkpoint(tmp_path / "extra.ckpt", "atom", TINY_UNETR)
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="not a loadable"):
        load_published_checkpoint(tmp_path / "garbage.ckpt", "atom", TINY_UNETR)


# --------------------------------------------------------------------------------- checkpoints
def test_weights_round_trip_is_bit_exact(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = build_voxel_net(TINY_UNET)
    write_weights(tmp_path / "w.safetensors", model.state_dict(), kind="voxelnet",
                  config={"model": {"arch": "unet"}})
    state, config, _ = read_weights(tmp_path / "w.safetensors", "voxelnet")
    assert config == {"model": {"arch": "unet"}}
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v)
    with pytest.raises(InputError, match=r"holds .* not vit"):
        read_weights(tmp_path / "w.safetensors", "vit")
    torch.save(model.state_dict(), tmp_path / "pickle.pt")
    with pytest.raises(InputError, match="pickled checkpoints are never loaded"):
        read_weights(tmp_path / "pickle.pt", "voxelnet")


# ------------------------------------------------------------------------------------ training
def test_rotations_are_the_24_proper_ones() -> None:
    cube = torch.arange(27.0).reshape(3, 3, 3)
    seen = {tuple(rotate_batch(cube, i).reshape(-1).tolist()) for i in range(24)}
    assert len(seen) == 24
    mirror = tuple(cube.flip(0).reshape(-1).tolist())
    assert mirror not in seen
    assert torch.equal(rotate_batch(cube, 0), cube)


def test_class_weights_and_f1() -> None:
    labels = np.array([0] * 90 + [1] * 10, dtype=np.uint8)
    w = class_weights(labels, 4, "sqrt-inverse")
    assert w[1] > w[0] and w[2] == 0 and w[3] == 0
    paper = class_weights(labels, 4, "paper")
    assert paper[0] == pytest.approx(0.1, abs=1e-4) and paper[1] == pytest.approx(0.9, abs=1e-4)
    conf = np.array([[5, 1], [1, 3]])
    assert macro_f1(conf) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


def _settings(**kw: object) -> TrainVoxelSettings:
    base: dict[str, object] = {"epochs": 2, "batch_size": 2, "lr": 3e-3, "seed": 0, "empty_fraction": 0.0,
                               "max_subgrids": 6}
    base.update(kw)
    return TrainVoxelSettings(**base)  # type: ignore[arg-type]


def test_a_few_steps_lower_the_loss(prepared: Path) -> None:
    corpus = load_corpus([prepared / "prep"], "train", ["backbone"], empty_fraction=0.0, max_subgrids=2)
    assert len(corpus) == 2
    torch.manual_seed(0)
    model = build_voxel_net(VoxelNetConfig(base_channels=4, levels=3, heads=("backbone",)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.from_numpy(corpus.density)[:, None]
    y = torch.from_numpy(corpus.labels["backbone"]).long()
    w = torch.from_numpy(class_weights(corpus.labels["backbone"], 4, "sqrt-inverse"))
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(model(x)["backbone"], y, weight=w)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]


def test_resume_equals_an_uninterrupted_run(prepared: Path, tmp_path: Path) -> None:
    cfg = VoxelNetConfig(base_channels=4, levels=3)
    train_voxel([prepared / "prep"], tmp_path / "a", model_config=cfg, settings=_settings(epochs=3))
    train_voxel([prepared / "prep"], tmp_path / "b", model_config=cfg, settings=_settings(epochs=3),
                stop_after_epoch=0)
    assert not (tmp_path / "b" / "checkpoints" / "epoch_0001").exists()
    train_voxel([prepared / "prep"], tmp_path / "b", model_config=cfg, settings=_settings(epochs=3))
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="other settings"):
        train_voxel([prepared / "prep"], tmp_path / "b", model_config=cfg, settings=_settings(epochs=3, lr=1e-3))


@pytest.mark.slow
def test_overfits_one_subgrid(prepared: Path) -> None:
    """A small U-Net learns one sub-grid's Cα voxels: argmax F1 on the 20³ core > 0.95."""
    corpus = load_corpus([prepared / "prep"], "train", ["backbone"], empty_fraction=0.0)
    core = (slice(None), slice(6, 26), slice(6, 26), slice(6, 26))
    counts = (corpus.labels["backbone"][core] == 1).reshape(len(corpus), -1).sum(1)
    best = int(np.argmax(counts))
    assert counts[best] >= 10
    x = torch.from_numpy(corpus.density[best:best + 1])[:, None]
    y = torch.from_numpy(corpus.labels["backbone"][best:best + 1]).long()
    torch.manual_seed(0)
    model = build_voxel_net(VoxelNetConfig(base_channels=8, levels=3, heads=("backbone",)))
    weights = torch.from_numpy(class_weights(corpus.labels["backbone"][best:best + 1], 4, "sqrt-inverse"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    truth = y[core][0]
    f1 = 0.0
    for step in range(300):
        logits = model(x)["backbone"]
        if step % 25 == 0:  # the logits of this step, before its update
            pred = logits.detach().argmax(1)[core][0]
            tp = int(((pred == 1) & (truth == 1)).sum())
            f1 = 2 * tp / (int((pred == 1).sum()) + int((truth == 1).sum()))
            if f1 > 0.95:
                break
        loss = torch.nn.functional.cross_entropy(logits, y, weight=weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert f1 > 0.95


@pytest.mark.slow
def test_two_gloo_processes_equal_one(prepared: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo) gives the weights of 1 process on the same global batch."""
    import yaml

    config = {"data": [str(prepared / "prep")],
              "model": {"arch": "unet", "base_channels": 4, "levels": 3, "heads": ["backbone"]},
              "train": {"epochs": 1, "batch_size": 4, "max_subgrids": 8, "seed": 5, "empty_fraction": 0.0}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    one = subprocess.run([sys.executable, "-m", "cryoset", "train", "voxel", str(tmp_path / "cfg.yaml"),
                          "-o", str(tmp_path / "one"), "--device", "cpu"], env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29517", "-m", "cryoset",
                          "train", "voxel", str(tmp_path / "cfg.yaml"), "-o", str(tmp_path / "two"),
                          "--device", "cpu"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert two.returncode == 0, two.stderr[-2000:]
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------- inference
class _Threshold(torch.nn.Module):
    """A fake network: class 1 of 'backbone' wherever the density exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        on = (x[:, 0] > 0.5).float() * 20.0
        logits = torch.zeros(x.shape[0], 4, *x.shape[2:])
        logits[:, 1] = on
        return {"backbone": logits}


@pytest.mark.parametrize("shape", [(45, 33, 71), (20, 20, 20), (7, 50, 21)])
def test_stitched_predictions_sit_at_the_right_voxels(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(5)
    vol = (rng.random(shape) > 0.7).astype(np.float32)
    probs = predict_volume(_Threshold(), vol, heads=["backbone"], batch_size=3)
    assert probs["backbone"].shape == (4, *shape)
    np.testing.assert_array_equal(probs["backbone"][1] > 0.5, vol > 0.5)
    np.testing.assert_allclose(probs["backbone"].sum(0), 1.0, rtol=1e-6)


def test_predict_map_keeps_the_input_frame(tmp_path: Path) -> None:
    from cryoset.io.mrc import read_map, write_map
    from cryoset.learn.voxel_train import KIND
    from cryoset.workflows.voxel import predict_map

    torch.manual_seed(6)
    cfg = VoxelNetConfig(base_channels=4, levels=3)
    model = build_voxel_net(cfg)
    write_weights(tmp_path / "w.safetensors", model.state_dict(), kind=KIND,
                  config={"model": asdict(cfg)})
    vol = np.random.default_rng(7).random((30, 41, 25)).astype(np.float32)
    write_map(tmp_path / "map.mrc", vol, 1.0, (-12.0, 30.5, 7.0))
    summary = predict_map(tmp_path / "map.mrc", tmp_path / "pred", checkpoint=tmp_path / "w.safetensors")
    ca = read_map(tmp_path / "pred" / "ca_prob.mrc")
    assert ca.data.shape == (30, 41, 25)
    assert ca.origin_a == pytest.approx((-12.0, 30.5, 7.0))
    aa = np.load(tmp_path / "pred" / "aa_prob.npy")
    assert aa.shape == (20, 30, 41, 25)
    np.testing.assert_allclose(aa.sum(0), 1.0, rtol=1e-4)
    assert "secondary_label.mrc" in summary["files"]


def test_predict_cli_refuses_a_pickled_checkpoint(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    from cryoset.io.mrc import write_map

    write_map(tmp_path / "map.mrc", np.ones((8, 8, 8), np.float32), 1.0)
    torch.save({"a": torch.zeros(2)}, tmp_path / "evil.safetensors")
    code, _, err = run_cli("predict", tmp_path / "map.mrc", "-o", tmp_path / "out",
                           "--checkpoint", tmp_path / "evil.safetensors")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "evil.safetensors" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- the shipped network
def test_shipped_network_builds_a_model_it_never_saw(prepared: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """``model-build`` with no --checkpoint: the packaged weights on a procedural protein (not in training)."""
    from cryoset.workflows.voxel import DEFAULT_CHECKPOINT

    assert DEFAULT_CHECKPOINT.is_file()
    assert DEFAULT_CHECKPOINT.stat().st_size < 25 * 2**20
    from cryoset.trace.model import read_ca_table
    from cryoset.trace.residues import ONE_LETTER, three_to_index

    table = read_ca_table(prepared / "model.pdb")
    seq = "".join(ONE_LETTER[three_to_index(n)] for n in table["residue_name"])
    (tmp_path / "seq.fasta").write_text(f">A\n{seq}\n")
    code, out, err = run_cli("model-build", prepared / "map.mrc", "--sequence", tmp_path / "seq.fasta",
                             "-o", tmp_path / "model.cif", "--reference", prepared / "model.pdb", "--json")
    assert code == 0, err
    import json

    result = json.loads(out)
    assert result["residues"] == len(seq)
    assert result["comparison"]["pct_matched"] >= 80.0
    assert result["comparison"]["rmsd_a"] < 1.5
    assert (tmp_path / "model_prediction" / "ca_prob.mrc").is_file()


def test_voxel_corpus_is_reproducible(shared_data: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """``train voxel-corpus``: same seed, same maps (voxel for voxel) and splits; labels and sub-grids present."""
    import pandas as pd

    from cryoset.io.mrc import read_map

    structure = shared_data / "structures" / "5a7u.pdb"
    for name in ("a", "b"):
        code, out, err = run_cli("train", "voxel-corpus", structure, "-o", tmp_path / name, "--variants", "2",
                                 "--seed", "3", "--json")
        assert code == 0, err
    table = pd.read_parquet(tmp_path / "a" / "metadata.parquet")
    assert list(table["status"]) == ["ok", "ok"] and table["split"].nunique() == 1
    assert ((table["resolution_a"] >= 2.5) & (table["resolution_a"] <= 5.0)).all()
    for entry in table["emdb_id"]:
        a, b = tmp_path / "a" / entry, tmp_path / "b" / entry
        ma, mb = read_map(a / "map.mrc"), read_map(b / "map.mrc")  # headers differ only in provenance labels
        assert np.array_equal(ma.data, mb.data) and ma.origin_a == mb.origin_a
        assert (a / "subgrids.zarr").is_dir() and (a / "atom_ca_emd_normalized_map.mrc").is_file()
