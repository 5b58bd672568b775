"""``cryoset probe`` and ``cryoset probe-corpus`` end to end on tiny CPU data (issue #19)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.learn.vit import VisionTransformer, ViTConfig
from cryoset.learn.vit_weights import save_vit
from cryoset.store.dataset import ParticleStore
from cryoset.workflows.probe import load_probe_config, run_probe
from cryoset.workflows.probe_corpus import (
    ProbeCorpusOptions,
    build_probe_corpus,
    symmetry_operators,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pc") / "corpus"
    build_probe_corpus(out, ProbeCorpusOptions(procedural_chains=2, real_chains=0, particles_per_experiment=12,
                                               chain_length_range=(40, 60), seed=1))
    return out


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(embed_dim=16, depth=1, num_heads=2, patch_size=8, img_size=32))
    path = tmp_path_factory.mktemp("vit") / "vit.safetensors"
    return save_vit(path, model, metadata={"normalization": {"kind": "store"}, "input_size": 32})


def test_symmetry_operators_form_groups() -> None:
    for g, n in (("C1", 1), ("C2", 2), ("C3", 3), ("D2", 4)):
        ops = symmetry_operators(g)
        assert len(ops) == n
        for a in ops:
            np.testing.assert_allclose(a @ a.T, np.eye(3), atol=1e-12)
            assert abs(np.linalg.det(a) - 1) < 1e-12
            for b in ops:  # closed under composition
                assert any(np.allclose(a @ b, c, atol=1e-9) for c in ops)


def test_corpus_has_every_target(corpus: Path) -> None:
    store = ParticleStore.open(corpus / "store")
    frame = store.query("SELECT * FROM particles")
    assert len(store.experiments()) == 8 and len(frame) == 96
    assert set(frame["symmetry"]) == {"C1", "C2", "C3", "D2"}
    for col in ("molecular_weight_kda", "max_diameter_a", "emd_resolution_a", "pixel_size_a", "defocus_a",
                "voltage_kv", "dose_e_per_a2", "cs_mm", "image_size_px"):
        assert frame[col].notna().all(), col
    per = frame.groupby("experiment_id").first()
    # an assembly of n copies weighs n times its chain
    for chain in per["structure"].unique():
        mw = per[per["structure"] == chain].set_index("symmetry")["molecular_weight_kda"]
        assert mw["C2"] == pytest.approx(2 * mw["C1"], rel=1e-5)
        assert mw["D2"] == pytest.approx(4 * mw["C1"], rel=1e-5)
    assert (per["image_size_px"] * per["pixel_size_a"] >= 1.4 * per["max_diameter_a"]).all()


def _config(tmp: Path, corpus: Path, body: str) -> Path:
    p = tmp / "probe.yaml"
    p.write_text(f"store: {corpus / 'store'}\n{body}"
                 "split: {heldout_fraction: 0.25, id_eval_fraction: 0.25, seed: 2}\n"
                 "probe: {lrs: [0.01, 0.1], epochs: 40}\n")
    return p


def test_probe_on_the_fly_writes_report(tmp_path: Path, corpus: Path, vit: Path) -> None:
    cfg = _config(tmp_path, corpus, f"checkpoint: {vit}\nkind: cls\nbatch_size: 16\n"
                  "tasks: [symmetry, pixel_size, molecular_weight, max_diameter, emd_resolution, defocus, "
                  "{column: structure, kind: categorical}]\n")
    summary = run_probe(cfg, tmp_path / "out")
    out = tmp_path / "out"
    for f in ("probes.csv", "probes.md", "confusion.json", "probes.png", "confusion.png", "split.json",
              "provenance.json"):
        assert (out / f).is_file(), f
    table = pd.read_csv(out / "probes.csv")
    assert set(table["variant"]) == {"raw", "regressed_out"}
    assert {"symmetry", "pixel_size", "molecular_weight", "defocus", "structure"} <= set(table["task"])
    assert table["id_balanced_accuracy"].between(0, 1).all()
    split = json.loads((out / "split.json").read_text())
    assert set(split["train_experiments"]).isdisjoint(split["heldout_experiments"])
    assert len(split["heldout_experiments"]) == 2 and split["input_size"] == 32
    assert "voltage_kv" in split["regress_out"]["columns"] or "pixel_size_a" in split["regress_out"]["columns"]
    conf = json.loads((out / "confusion.json").read_text())
    sym = next(c for c in conf if c["task"] == "symmetry" and c["variant"] == "raw")
    assert sum(map(sum, sym["id"])) == next(r for r in summary["table"]
                                            if r["task"] == "symmetry" and r["variant"] == "raw")["n_id"]
    pix = next(c for c in conf if c["task"] == "pixel_size")
    assert "/ 32" in pix["info"]["label"] and len(pix["info"]["edges"]) >= 2


def test_probe_stored_embedding_matches_on_the_fly(tmp_path: Path, corpus: Path, vit: Path) -> None:
    import shutil

    from cryoset.workflows.embed import embed_store

    local = tmp_path / "corpus"
    shutil.copytree(corpus, local)
    embed_store(local / "store", checkpoint=vit, kind="cls", batch_size=16)
    a = run_probe(_config(tmp_path, local, "embedding: cls\ntasks: [symmetry, defocus]\nregress_out: false\n"),
                  tmp_path / "a")
    b = run_probe(_config(tmp_path, local, f"checkpoint: {vit}\nkind: cls\nbatch_size: 16\n"
                                           "tasks: [symmetry, defocus]\nregress_out: false\n"), tmp_path / "b")
    assert a["table"] == b["table"]  # same float16 vectors, same split, same seeded probes


def test_bad_configs_are_one_line_errors(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(InputError, match="exactly one"):
        load_probe_config(_config(tmp_path, corpus, ""))
    with pytest.raises(InputError, match="unknown key"):
        load_probe_config(_config(tmp_path, corpus, "embedding: cls\ncolour: red\n"))
    with pytest.raises(InputError, match=r"regress_out\.columns"):
        load_probe_config(_config(tmp_path, corpus, "embedding: cls\nregress_out: {columns: [mood]}\n"))
    with pytest.raises(InputError, match="no embedding"):
        run_probe(_config(tmp_path, corpus, "embedding: nothere\n"), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_probe_command_line(tmp_path: Path, corpus: Path, vit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryoset.cli.main import main

    cfg = _config(tmp_path, corpus, f"checkpoint: {vit}\nkind: patch_mean\ntasks: [symmetry]\nregress_out: false\n")
    assert main(["probe", str(cfg), "-o", str(tmp_path / "cli"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in summary["table"]] == ["symmetry"]
    assert (tmp_path / "cli" / "probes.md").read_text().startswith("| task |")
