"""``cryoset embed``: vectors beside the images, equal to the model's features, queryable,
deterministic, resumable after an interruption, refusing to silently mix settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cryoset.errors import InputError
from cryoset.learn.vit import VisionTransformer, ViTConfig
from cryoset.learn.vit_weights import CRYOPANDA_NORMALIZATION, load_vit, model_input, save_vit
from cryoset.store.dataset import ParticleStore
from cryoset.workflows import embed as embed_mod
from cryoset.workflows.embed import embed_store, read_embeddings

SIZES = {"EXP-A": 40, "EXP-B": 23}


@pytest.fixture
def store(tmp_path: Path, rng: np.random.Generator) -> Path:
    root = tmp_path / "store"
    s = ParticleStore.create(root, encoding="uint8", chunk_particles=16)
    for exp, n in SIZES.items():
        images = rng.normal(size=(n, 24, 24)).astype(np.float32)
        ann = pd.DataFrame({"defocus_u_a": np.linspace(8000, 20000, n), "structure": [f"p{i % 3}" for i in range(n)]})
        s.add_experiment(exp, images, ann)
    return root


def _checkpoint(path: Path, normalization: dict[str, object] | None = None) -> Path:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(embed_dim=32, depth=1, num_heads=2, patch_size=8, img_size=32))
    meta = {"normalization": normalization or {"kind": "store"}, "input_size": 32, "provenance": {"test": True}}
    return save_vit(path, model, metadata=meta)


def _files(root: Path, name: str) -> dict[str, bytes]:
    out = {}
    for exp in SIZES:
        d = root / "experiments" / exp / "embeddings" / name
        for f in sorted(d.rglob("*")):
            if f.is_file() and f.name != "embedding.json":
                out[str(f.relative_to(root))] = f.read_bytes()
    return out


def test_vectors_equal_the_model_features_and_are_queryable(store: Path, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "vit.safetensors")
    summary = embed_store(store, checkpoint=ckpt, kind="both", batch_size=7)
    assert summary["dim"] == 64 and summary["particles"] == sum(SIZES.values())
    table, vectors = read_embeddings(store, "both")
    assert vectors.dtype == np.float16 and vectors.shape == (63, 64)
    model, meta = load_vit(ckpt)
    s = ParticleStore.open(store)
    for exp in SIZES:
        decoded = torch.from_numpy(s.read_images(exp, np.arange(SIZES[exp])))
        with torch.no_grad():
            want = model.features(model_input(decoded, meta["normalization"], 32), "both").numpy().astype(np.float16)
        rows = table[table.experiment_id == exp].sort_values("particle_index")["row"].to_numpy()
        np.testing.assert_array_equal(vectors[rows], want)
    joined = s.query("SELECT p.experiment_id, p.particle_index, p.structure, e.embedding "
                     "FROM particles p JOIN embeddings_both e USING (experiment_id, particle_index) "
                     "ORDER BY p.experiment_id, p.particle_index")
    assert len(joined) == 63 and joined.structure.iloc[4] == "p1"
    first = np.asarray(joined.embedding.iloc[0], dtype=np.float16)
    np.testing.assert_array_equal(first, vectors[table[(table.experiment_id == "EXP-A")
                                                       & (table.particle_index == 0)]["row"].iloc[0]])


def test_same_store_and_checkpoint_give_identical_bytes(store: Path, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "vit.safetensors")
    twin = tmp_path / "twin"
    shutil.copytree(store, twin)
    embed_store(store, checkpoint=ckpt, batch_size=5)
    embed_store(twin, checkpoint=ckpt, batch_size=5)
    a, b = _files(store, "cls"), _files(twin, "cls")
    assert a and {k.replace("twin", "store"): v for k, v in b.items()} == a


class Killed(Exception):
    pass


def test_killed_run_resumes_where_it_stopped(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _checkpoint(tmp_path / "vit.safetensors")
    reference = tmp_path / "reference"
    shutil.copytree(store, reference)
    embed_store(reference, checkpoint=ckpt, batch_size=6)

    calls: list[int] = []
    real = embed_mod.embed_particles

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(int(args[2].size))
        return real(*args, **kwargs)

    monkeypatch.setattr(embed_mod, "embed_particles", counting)

    def kill_after_four_blocks(done: int, total: int) -> None:
        if len(calls) == 4:
            raise Killed

    # EXP-A has 3 blocks (16+16+8) and is committed; the kill hits EXP-B after its first block
    with pytest.raises(Killed):
        embed_store(store, checkpoint=ckpt, batch_size=6, on_progress=kill_after_four_blocks)
    exp_b = store / "experiments" / "EXP-B" / "embeddings"
    assert (store / "experiments" / "EXP-A" / "embeddings" / "cls" / "index.parquet").is_file()
    assert not (exp_b / "cls").exists()  # nothing half-written is visible
    assert sorted(p.name for p in (exp_b / ".cls.work").iterdir()) == ["part-000000.npy", "state.json"]
    assert ParticleStore.open(store).embedding_views() == {
        "embeddings_cls": [store / "experiments" / "EXP-A" / "embeddings" / "cls" / "index.parquet"]}

    calls.clear()
    summary = embed_store(store, checkpoint=ckpt, batch_size=6)
    assert summary["experiments"] == {"EXP-A": {"particles": 40, "status": "skipped"},
                                      "EXP-B": {"particles": 23, "status": "resumed"}}
    assert calls == [7]  # only EXP-B's second block was computed again
    assert not (exp_b / ".cls.work").exists()
    got = _files(store, "cls")
    assert got == {k.replace("reference", "store"): v for k, v in _files(reference, "cls").items()}


def test_where_selects_and_settings_are_not_mixed(store: Path, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "vit.safetensors")
    summary = embed_store(store, checkpoint=ckpt, where="structure = 'p0' AND particle_index < 20")
    assert summary["particles"] == 7 + 7
    table, vectors = read_embeddings(store, "cls")
    assert sorted(table.particle_index[table.experiment_id == "EXP-B"]) == [0, 3, 6, 9, 12, 15, 18]
    assert vectors.shape == (14, 32)
    with pytest.raises(InputError, match="other settings"):
        embed_store(store, checkpoint=ckpt)  # the whole store, same name: refused
    embed_store(store, checkpoint=ckpt, replace=True)
    assert read_embeddings(store, "cls")[1].shape == (63, 32)


def test_uint8_normalisation_uses_the_stored_bytes(store: Path, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "vit.safetensors", dict(CRYOPANDA_NORMALIZATION))
    embed_store(store, checkpoint=ckpt, name="panda")
    _, vectors = read_embeddings(store, "panda", ["EXP-A"])
    model, meta = load_vit(ckpt)
    stored, _, _ = ParticleStore.open(store).read_stored("EXP-A", np.arange(40))
    x = torch.from_numpy(stored.astype(np.float32))
    want = model(model_input(x, meta["normalization"], 32, uint8_values=True)).detach().numpy()
    np.testing.assert_array_equal(vectors, want.astype(np.float16))
    p = x[0] / 255.0
    manual = (torch.nn.functional.interpolate(p[None, None], size=(32, 32), mode="bilinear", antialias=True)
              - 0.5475857690770103) / 0.12047245612891117
    torch.testing.assert_close(model_input(x[:1], meta["normalization"], 32, uint8_values=True), manual)


def test_cli_embed_and_missing_default_checkpoint(store: Path, tmp_path: Path, run_cli,  # type: ignore[no-untyped-def]
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _checkpoint(tmp_path / "vit.safetensors")
    code, out, err = run_cli("embed", store, "--checkpoint", ckpt, "--kind", "patch_mean", "--batch-size", "9")
    assert code == 0, err
    assert "63 particles" in out and "embeddings_patch_mean" in out
    code, out, err = run_cli("query", "SELECT count(*) AS n FROM particles p JOIN embeddings_patch_mean e "
                             "USING (experiment_id, particle_index) WHERE p.structure = 'p2'", "--store", store,
                             "--json")
    assert code == 0, err
    assert '"n": 20' in out  # 13 of EXP-A's 40 and 7 of EXP-B's 23 are p2
    import cryoset.learn.vit_weights as vw

    monkeypatch.setattr(vw, "DEFAULT_VIT_CHECKPOINT", tmp_path / "absent.safetensors")
    code, out, err = run_cli("embed", store)
    assert code == 2 and "pass --checkpoint" in err and len(err.strip().splitlines()) == 1


def test_published_teacher_pth_embeds_with_weights_option(store: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    model = VisionTransformer(ViTConfig(embed_dim=32, depth=1, num_heads=2, patch_size=16))
    teacher = {"backbone." + k: v for k, v in model.state_dict().items()}
    teacher["dino_head.last_layer.weight"] = torch.zeros(8, 4)
    torch.save({"teacher": teacher}, tmp_path / "teacher_checkpoint.pth")
    code, out, err = run_cli("embed", store, "--weights", tmp_path / "teacher_checkpoint.pth", "--name", "panda",
                             "--json")
    assert code == 0, err
    _, vectors = read_embeddings(store, "panda", ["EXP-B"])
    stored, _, _ = ParticleStore.open(store).read_stored("EXP-B", np.arange(23))
    x = model_input(torch.from_numpy(stored.astype(np.float32)), dict(CRYOPANDA_NORMALIZATION), 224,
                    uint8_values=True)  # published weights: cryoPANDA's uint8 constants at 224 px
    with torch.no_grad():
        want = model.eval()(x).numpy().astype(np.float16)
    np.testing.assert_allclose(vectors.astype(np.float32), want.astype(np.float32), atol=2e-3)
