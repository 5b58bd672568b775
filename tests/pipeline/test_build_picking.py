"""Issue #17: the build's picking options — template picking from the first round's class
averages, and the authors' coordinates (``pick.method: import``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cryoset.io.mrc import read_stack
from cryoset.pipeline.build import run_build
from cryoset.store import ParticleStore

CONFIG: dict[str, Any] = {
    "experiments": [{"id": "t", "simulated": {"seed": 1, "protein_length": 100, "micrographs": 1,
                                              "size_px": 384, "particles_per_micrograph": 12}}],
    "ctf": {"tile_px": 128, "max_resolution_a": 6.0, "plots": False},
    "extract": {"pixel_size_out_a": 3.0},
    "classify": {"n_classes": 2, "n_iter": 2, "psi_step_deg": 20, "offset_range_px": 2, "rounds": 1},
    "execution": {"workers": 1, "retries": 0},
}


@pytest.mark.slow
def test_template_picking_from_class_averages(tmp_path: Path) -> None:
    result = run_build({**CONFIG, "pick": {"method": "template"}}, tmp_path / "b", progress=False)
    pick = result.out_dir / "work" / "t" / "pick"
    templates = read_stack(pick / "bootstrap" / "templates.mrcs").data[:]
    classes = pd.read_csv(pick / "bootstrap" / "classify" / "classes.csv")
    good = int(classes["good"].astype(bool).sum())
    assert len(templates) == (good or len(classes))  # the good class averages (all when none is good)
    assert result.experiments["t"]["picks"] > 5
    ann = ParticleStore.open(result.store_path).annotations("t")
    assert len(ann) == result.experiments["t"]["particles"] and ann["ncc_score"].notna().any()


@pytest.mark.slow
def test_authors_coordinates_are_imported(tmp_path: Path) -> None:
    result = run_build({**CONFIG, "pick": {"method": "import"}}, tmp_path / "b", progress=False)
    work = result.out_dir / "work" / "t"
    truth = pd.read_csv(work / "micrographs" / "truth.csv")
    ann = ParticleStore.open(result.store_path).annotations("t")
    assert result.experiments["t"]["picks"] == len(truth)
    d = np.hypot(ann["x_px"].to_numpy()[:, None] - truth["x_px"].to_numpy()[None],
                 ann["y_px"].to_numpy()[:, None] - truth["y_px"].to_numpy()[None])
    assert (d.min(axis=1) < 1.0).all()  # every particle is one of the given coordinates
    assert set(ann["rejected_reason"]) <= {"", "duplicate"} | {r for r in ann["rejected_reason"] if r.startswith("2D")}


def test_pick_stage_hash_covers_the_contents_of_its_input_files(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Templates, masks and imported coordinates enter the pick stage's hash by content: new
    bytes under the same paths re-run ``pick`` and the stages after it, and nothing before."""
    from cryoset.pipeline import build, stages
    from cryoset.pipeline.config import load_config

    for stage in stages.STAGES:  # the hashing is under test, not the stages: make them instant
        monkeypatch.setattr(stages, f"run_{stage}", lambda *a, **k: {})
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "micrograph_0000.mrc").write_bytes(b"mask")
    (tmp_path / "picks").mkdir()
    (tmp_path / "picks" / "micrograph_0000.star").write_bytes(b"picks")
    (tmp_path / "templates.mrcs").write_bytes(b"template")
    monkeypatch.chdir(tmp_path)  # the configuration's paths are relative to it
    cfg = load_config({**CONFIG, "pick": {"method": "template", "templates": "templates.mrcs",
                                          "mask_dir": "masks", "import_dir": "picks"}})
    exp = cfg["experiments"][0]

    def run() -> list[str]:
        return list(build.run_experiment(exp, cfg, str(tmp_path / "b"))["executed"])

    assert run() == list(stages.STAGES)
    assert run() == []
    after_pick = list(stages.STAGES[stages.STAGES.index("pick"):])
    for changed in ("templates.mrcs", "masks/micrograph_0000.mrc", "picks/micrograph_0000.star"):
        (tmp_path / changed).write_bytes(b"new bytes")
        assert run() == after_pick, changed
        assert run() == []
    (tmp_path / "masks" / "micrograph_0001.mrc").write_bytes(b"another mask")  # a new file counts too
    assert run() == after_pick
