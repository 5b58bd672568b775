"""Issue #17: ``cryoset build`` gives, per experiment, the particles and annotations of running
``ctf → pick → extract → classify2d`` by hand with the same parameters, and its junk removal is
at least as good as ``classify2d`` alone (one round, no duplicate removal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cryoset.io.mrc import read_stack
from cryoset.io.relion_labels import CRYOSET_KEPT
from cryoset.pipeline.build import BuildResult, run_build
from cryoset.store import ParticleStore
from cryoset.workflows.classify2d import round_directories
from cryoset.workflows.curate import mark_duplicates, particle_annotations

CONFIG: dict[str, Any] = {
    "name": "build equals commands",
    "experiments": [
        {"id": "sim-a", "simulated": {"seed": 3, "protein_length": 100, "micrographs": 2, "size_px": 384,
                                      "particles_per_micrograph": 12}},
        {"id": "sim-b", "simulated": {"seed": 4, "protein_length": 80, "micrographs": 1, "size_px": 384,
                                      "particles_per_micrograph": 14}},
    ],
    "ctf": {"tile_px": 128, "max_resolution_a": 6.0, "plots": False, "patches": "2x2"},  # local defocus
    "pick": {"threshold": 2.5},  # low: some false picks for the junk rule to find
    "extract": {"pixel_size_out_a": 3.0},
    "classify": {"n_classes": 3, "n_iter": 3, "psi_step_deg": 20, "offset_range_px": 2, "rounds": 2},
    "store": {"encoding": "float16"},
    "execution": {"workers": 1, "retries": 0},
}
#: Columns the steps produce, compared between the build's store and the commands' outputs.
COMPARED = ["micrograph", "x_px", "y_px", "score", "ncc_score", "pixel_size_a", "defocus_u_a",
            "defocus_v_a", "defocus_angle_deg", "voltage_kv", "cs_mm", "amplitude_contrast",
            "class_number", "psi_deg", "shift_x_a", "shift_y_a", "max_prob", "ess", "eca",
            "class_resolution_a", "class_verdict", "recovered", "classify_rounds", "kept",
            "rejected_reason"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    return run_build(CONFIG, tmp_path_factory.mktemp("build"), progress=False)


def _by_hand(run_cli: Any, work: Path, out: Path) -> tuple[Path, Path, list[Path], float]:
    """The commands, with the build configuration's parameters, on the build's micrographs."""
    mics = sorted((work / "micrographs").glob("*.mrc"))
    diameter = json.loads((work / "micrographs" / "info.json").read_text())["diameter_a"]
    sim = next(e for e in CONFIG["experiments"] if e["id"] == work.name)["simulated"]
    assert sim.get("pixel_size_a", 1.5) == 1.5
    optics = ["--pixel-size-a", 1.5, "--voltage-kv", 300, "--cs-mm", 2.7, "--amplitude-contrast", 0.07]
    code, _, err = run_cli("ctf", *mics, "--out", out / "ctf", *optics, "--tile-px", 128,
                           "--max-resolution-a", 6, "--no-plots", "--patches", "2x2")
    assert code == 0, err
    code, _, err = run_cli("pick", *mics, "--out", out / "pick", "--diameter-a", diameter,
                           "--pixel-size-a", 1.5, "--threshold", 2.5)
    assert code == 0, err
    code, _, err = run_cli("extract", *mics, "--picks", out / "pick", "--out", out / "extract",
                           "--diameter-a", diameter, "--pixel-size-a", 1.5, "--pixel-size-out-a", 3,
                           "--ctf", out / "ctf" / "micrographs_ctf.star")
    assert code == 0, err
    code, _, err = run_cli("classify2d", out / "extract" / "particles.star", "--out", out / "classify",
                           "--n-classes", 3, "--n-iter", 3, "--psi-step-deg", 20, "--offset-range-px", 2,
                           "--diameter-a", diameter, "--rounds", 2)
    assert code == 0, err
    rounds = round_directories(out / "classify")
    assert len(rounds) == 2
    return out / "extract", out / "pick", rounds, diameter


def _true_particles(table: pd.DataFrame, truth: pd.DataFrame, radius_px: float) -> np.ndarray:
    """Whether each particle is a true one: picks matched greedily by score, one-to-one."""
    true = np.zeros(len(table), bool)
    for mic, rows in table.groupby("micrograph"):
        t = truth.loc[truth["micrograph"] == mic, ["x_px", "y_px"]].to_numpy(np.float64)
        free = np.ones(len(t), bool)
        for i in rows.sort_values("score", ascending=False, kind="stable").index:
            if not free.any():
                break
            d = np.hypot(t[:, 0] - table.at[i, "x_px"], t[:, 1] - table.at[i, "y_px"])
            d[~free] = np.inf
            j = int(np.argmin(d))
            if d[j] <= radius_px:
                free[j] = False
                true[table.index.get_loc(i)] = True
    return true


def _purity_recall(kept: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """Purity of the kept particles and recall of the junk (share of false particles rejected)."""
    purity = float(true[kept].mean()) if kept.any() else 1.0
    junk = ~true
    recall = float((~kept[junk]).mean()) if junk.any() else 1.0
    return purity, recall


@pytest.mark.slow
def test_build_equals_the_commands_and_removes_junk_at_least_as_well(built: BuildResult, run_cli: Any,
                                                                   tmp_path: Path) -> None:
    store = ParticleStore.open(built.store_path)
    assert sorted(store.experiments()) == ["sim-a", "sim-b"]
    lines = []
    for eid in ("sim-a", "sim-b"):
        work = built.out_dir / "work" / eid
        extract, pick, rounds, diameter = _by_hand(run_cli, work, tmp_path / eid)
        expected = mark_duplicates(particle_annotations(extract, rounds, pick_dir=pick), diameter)
        ann = store.annotations(eid).reset_index(drop=True)
        # the same particles, in the same order, with the same annotations
        assert len(ann) == len(expected) > 10
        for col in COMPARED:
            a, e = ann[col], expected[col]
            if pd.api.types.is_numeric_dtype(e) and not pd.api.types.is_bool_dtype(e):
                np.testing.assert_allclose(pd.to_numeric(a).to_numpy(np.float64),
                                           pd.to_numeric(e).to_numpy(np.float64),
                                           rtol=1e-6, atol=1e-3, err_msg=col)  # float32 in the store
            else:
                assert a.astype(str).tolist() == e.astype(str).tolist(), col
        # the same images (float16 in the store) and the same class averages, bit for bit
        from cryoset.workflows.particle_images import load_star

        images = load_star(extract / "particles.star").images
        np.testing.assert_allclose(store.read_images(eid, np.arange(len(ann))), images, atol=2e-2 * np.abs(images).max())
        for built_round, d in zip(round_directories(work / "classify"), rounds, strict=True):
            built_avg = read_stack(built_round / "class_averages.mrcs").data[:]
            np.testing.assert_array_equal(built_avg, read_stack(d / "class_averages.mrcs").data[:])
        # every annotation the steps produce is filled in
        assert ann["defocus_u_a"].notna().all() and ann["class_resolution_a"].notna().any()
        per_mic = ann.groupby("micrograph")["defocus_u_a"].nunique()
        assert (per_mic > 1).any()  # local defocus (a micrograph whose patch fit fails gets a constant)
        assert ann["ncc_score"].notna().mean() > 0.8 and set(ann["kept"]) <= {0, 1}  # NaN: edge picks
        assert (ann.loc[ann["kept"] == 0, "rejected_reason"] != "").all()
        assert (ann.loc[ann["kept"] == 1, "rejected_reason"] == "").all()
        # junk removal: the build (rounds + duplicates) at least as good as classify2d alone
        truth = pd.read_csv(work / "micrographs" / "truth.csv")
        true = _true_particles(ann, truth, 0.5 * float(ann["diameter_px"].iloc[0]))
        from cryoset.io.star import read_star

        raw = next(df for df in read_star(rounds[0] / "particles.star").values() if CRYOSET_KEPT in df)
        alone = raw[CRYOSET_KEPT].to_numpy(np.int64) == 1
        built_kept = ann["kept"].to_numpy(np.int64) == 1
        p_alone, r_alone = _purity_recall(alone, true)
        p_built, r_built = _purity_recall(built_kept, true)
        lines.append(f"{eid}: {len(ann)} particles, {int((~true).sum())} false; classify2d alone purity "
              f"{p_alone:.3f} junk recall {r_alone:.3f}; build purity {p_built:.3f} junk recall {r_built:.3f}")
        assert p_built >= p_alone and r_built >= r_alone
    print("\n".join(lines))  # after the commands (run_cli captures their output)
