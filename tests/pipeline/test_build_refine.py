"""``cryoset build`` with ``refine:``: ab initio + gold-standard refinement of each experiment's kept
particles, their poses exported (.cs, CryoVirusDB CSV) and in the store, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.io.cryosparc import read_cs
from cryoset.io.particles import read_particles
from cryoset.pipeline.build import BuildResult, marker_path, run_build
from cryoset.pipeline.config import load_config
from cryoset.pipeline.stages import STAGES, build_stages
from cryoset.store import ParticleStore
from cryoset.workflows.curate import _keys as particle_keys

CONFIG: dict[str, Any] = {
    "name": "tiny 3D build",
    "experiments": [{"id": "sim-3d", "simulated": {"seed": 5, "protein_length": 60, "micrographs": 1,
                                                   "size_px": 384, "particles_per_micrograph": 14}}],
    "ctf": {"tile_px": 128, "max_resolution_a": 6.0, "plots": False},
    "pick": {"method": "import"},  # the true picks: the 3D stages are the subject here
    "extract": {"pixel_size_out_a": 3.0},
    "classify": {"n_classes": 1, "n_iter": 1, "psi_step_deg": 30, "offset_range_px": 1, "recover": False},
    "abinitio": {"n_iter": 2, "batch_size": 8, "initial_resolution_a": 30.0, "final_resolution_a": 20.0,
                 "angular_step_deg": 30.0, "final_angular_step_deg": 15.0},
    "refine": {"iterations": 2, "angular_step_deg": 30.0, "final_angular_step_deg": 15.0,
               "shift_range_px": 1.0, "initial_lowpass_a": 25.0},
    "execution": {"workers": 1, "retries": 0},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildResult, Path]:
    out = tmp_path_factory.mktemp("build3d")
    return run_build(CONFIG, out, progress=False), out


def test_stages_only_when_configured() -> None:
    plain = {k: v for k, v in CONFIG.items() if k not in ("abinitio", "refine")}
    assert build_stages(load_config(plain)) == STAGES
    assert build_stages(load_config(CONFIG)) == (*STAGES[:5], "abinitio", "refine", *STAGES[5:])
    with pytest.raises(InputError, match="abinitio: configures"):
        load_config({**plain, "abinitio": {"n_iter": 2}})
    with pytest.raises(InputError, match=r"refine\.symmetry"):
        load_config({**CONFIG, "refine": {"symmetry": "X3"}})


def test_refined_poses_reach_every_output(built: tuple[BuildResult, Path]) -> None:
    result, out = built
    summary = result.experiments["sim-3d"]
    assert summary["executed"] == list(build_stages(load_config(CONFIG)))
    work = out / "work" / "sim-3d"
    refine_star = work / "refine" / "run_data.star"
    t = read_particles(refine_star).table
    kept = read_particles(work / "classify" / "particles_kept.star").table
    assert len(t) == len(kept) >= 2 and set(t["random_subset"]) == {1, 2}
    resolution = json.loads((work / "refine" / "run_summary.json").read_text())["resolution_a"]
    assert summary["reconstruction_resolution_a"] == resolution and np.isfinite(resolution)

    # .cs and CryoVirusDB CSV written next to the refinement
    cs = read_cs(work / "refine" / "poses" / "particles.cs")
    assert len(cs) == len(t)
    np.testing.assert_array_equal(cs["alignments3D/split"], t["random_subset"].to_numpy() - 1)
    csv = pd.read_csv(work / "refine" / "poses" / "particles_poses.csv")
    np.testing.assert_allclose(csv["Angle-Psi"], t["psi_deg"], atol=1e-9)

    # the store: annotation columns of the refined particles and the poses view, by particle
    store = ParticleStore.open(out / "store")
    ann = store.annotations("sim-3d")
    extract = work / "extract" / "particles.star"
    rows = {k: i for i, k in enumerate(particle_keys(read_particles(extract).table, extract))}
    idx = np.array([rows[k] for k in particle_keys(t, refine_star)])
    np.testing.assert_allclose(ann["rot_deg"].to_numpy()[idx], t["rot_deg"], atol=1e-4)  # float32 columns
    np.testing.assert_allclose(ann["tilt_deg"].to_numpy()[idx], t["tilt_deg"], atol=1e-4)
    assert (ann["reconstruction_resolution_a"].to_numpy() == np.float32(resolution)).all()
    others = np.setdiff1d(np.arange(len(ann)), idx)  # rejected particles: no 3D pose
    assert np.isnan(ann["rot_deg"].to_numpy()[others]).all()
    poses = store.query("SELECT * FROM poses ORDER BY particle_index")
    assert len(poses) == len(t)
    by = poses.set_index("particle_index").loc[idx]
    for c in ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a", "max_prob"):
        np.testing.assert_array_equal(by[c].to_numpy(), t[c].to_numpy(np.float64))
    np.testing.assert_array_equal(by["alignment_error_deg"], t["rlnCryosetAngularErrorDeg"].to_numpy(np.float64))
    np.testing.assert_array_equal(by["random_subset"], t["random_subset"])


def test_rerun_resumes_without_repeating(built: tuple[BuildResult, Path]) -> None:
    _, out = built
    work = out / "work" / "sim-3d"
    before = {s: marker_path(work, s).stat().st_mtime_ns for s in build_stages(load_config(CONFIG))}
    again = run_build(CONFIG, out, progress=False).experiments["sim-3d"]
    assert again["executed"] == [] and again["skipped"] == list(before)
    assert {s: marker_path(work, s).stat().st_mtime_ns for s in before} == before
