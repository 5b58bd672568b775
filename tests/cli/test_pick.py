"""``cryoset pick`` / ``evaluate-picks`` / ``extract`` end to end, bad input, RELION interop."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.io.coords import write_coords
from cryoset.io.mrc import read_stack, write_map
from cryoset.io.particles import read_particles
from cryoset.testing import require_program

from ..picking.scene import DIAMETER_PX, PIXEL_A, make_scene


@pytest.fixture(scope="module")
def mics(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two synthetic 384² MRC micrographs and a directory of their truth picks."""
    root = tmp_path_factory.mktemp("mics")
    truth_dir = root / "truth"
    for seed in range(2):
        name = f"sim_{seed}.mrc"
        img, truth = make_scene(seed, n=12, size=384, snr=0.05, name=name)
        write_map(root / name, img[None], PIXEL_A)
        write_coords(truth_dir / f"sim_{seed}.csv", truth)
    return root, truth_dir


@pytest.mark.slow
def test_pick_evaluate_extract(mics: tuple[Path, Path], tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    root, truth_dir = mics
    files = sorted(root.glob("*.mrc"))
    code, out, err = run_cli("pick", *files, "--diameter-a", DIAMETER_PX * PIXEL_A, "--out", tmp_path / "picks")
    assert code == 0, err
    assert (tmp_path / "picks" / "sim_0.star").exists() and (tmp_path / "picks" / "provenance.json").exists()
    code, out, err = run_cli("evaluate-picks", tmp_path / "picks", truth_dir, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["pooled"]["n_truth"] == 24 and res["pooled"]["f1"] >= 0.95
    assert len(res["per_micrograph"]) == 2
    code, out, err = run_cli("extract", *files, "--picks", tmp_path / "picks", "--diameter-a",
                             DIAMETER_PX * PIXEL_A, "--invert", "--pixel-size-out-a", 10.0,
                             "--out", tmp_path / "parts")
    assert code == 0, err
    ps = read_particles(tmp_path / "parts" / "particles.star")
    t = ps.table
    # box 50 (1.25 d, FFT-friendly 2·5²) of 5 Å pixels → 24 pixels of 5 · 50 / 24 Å
    assert t["image_size_px"].iloc[0] == 24
    assert t["pixel_size_a"].iloc[0] == pytest.approx(5.0 * 50 / 24)
    stack = read_stack(tmp_path / "parts" / "sim_0.mrcs")
    assert stack.data.shape[1:] == (24, 24)
    assert stack.pixel_size_a == pytest.approx(5.0 * 50 / 24, rel=1e-5)
    assert (t["ctf_phase_flipped"] == 0).all()  # not phase-flipped, and the STAR file says so
    csv = pd.read_csv(tmp_path / "parts" / "particles.csv")
    assert len(csv.columns) == 14 and len(csv) == len(t)
    assert "Reason" in pd.read_csv(tmp_path / "parts" / "false_positives.csv").columns


def test_bad_input_exits_2(mics: tuple[Path, Path], tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    root, _ = mics
    flat = tmp_path / "flat.mrc"
    write_map(flat, np.ones((1, 64, 64), dtype=np.float32), PIXEL_A)
    code, _, err = run_cli("pick", flat, "--diameter-a", 200, "--out", tmp_path / "p")
    assert code == 2 and "empty" in err
    code, _, err = run_cli("pick", root / "sim_0.mrc", "--diameter-a", 200, "--format", "xyz",
                           "--out", tmp_path / "p")
    assert code == 2 and "format" in err
    bad = tmp_path / "badpicks"
    write_coords(bad / "sim_0.star", pd.DataFrame(
        {"micrograph": ["sim_0.mrc"], "x_px": [5000.0], "y_px": [10.0], "score": [1.0],
         "diameter_px": [40.0]}))
    code, _, err = run_cli("extract", root / "sim_0.mrc", "--picks", bad, "--box-px", 64,
                           "--out", tmp_path / "x")
    assert code == 2 and "outside" in err
    code, _, err = run_cli("pick", root / "sim_0.mrc", "--diameter-a", 200, "--method", "x",
                           "--out", tmp_path / "p")
    assert code == 2


@pytest.mark.relion
@pytest.mark.slow
def test_relion_reads_our_particles(mics: tuple[Path, Path], tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    pre = require_program("relion_preprocess")
    refine = require_program("relion_refine")
    root, truth_dir = mics
    files = sorted(root.glob("*.mrc"))
    parts = tmp_path / "parts"
    code, _, err = run_cli("extract", *files, "--picks", truth_dir, "--box-px", 64, "--invert",
                           "--out", parts)
    assert code == 0, err
    ours = read_stack(parts / "sim_0.mrcs").data[:]
    # RELION renormalises our stack with the same background radius: values barely change
    # (RELION 3.1 operates on stacks only, not on particle STAR files)
    r = subprocess.run([pre, "--operate_on", "sim_0.mrcs", "--norm", "--bg_radius", "24",
                        "--operate_out", "renorm.mrcs"], cwd=parts, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    theirs = read_stack(parts / "renorm.mrcs").data[: len(ours)]
    yy, xx = np.mgrid[0:64, 0:64] - 32
    bg = xx**2 + yy**2 > 24**2
    assert np.abs(theirs[:, bg].mean(axis=1)).max() < 0.05
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99
    (tmp_path / "r2d").mkdir()
    r = subprocess.run([refine, "--i", "particles.star", "--o", str(tmp_path / "r2d" / "run"),
                        "--iter", "1", "--K", "2", "--tau2_fudge", "2", "--particle_diameter", "200",
                        "--zero_mask", "--psi_step", "30", "--offset_range", "3", "--offset_step", "2",
                        "--j", "1", "--dont_combine_weights_via_disc", "--pool", "5"],
                       cwd=parts, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    data = read_particles(tmp_path / "r2d" / "run_it001_data.star").table
    assert len(data) == 24 and set(data["class_number"]) <= {1, 2}
    np.testing.assert_allclose(np.sort(data["x_px"].to_numpy()),
                               np.sort(read_particles(parts / "particles.star").table["x_px"].to_numpy()))


def test_template_pick_and_phase_flip_extract(mics: tuple[Path, Path], tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    from cryoset.io.mrc import write_stack

    from ..picking.scene import sphere_projection

    root, truth_dir = mics
    tmpl = tmp_path / "templates.mrcs"
    write_stack(tmpl, sphere_projection(64, DIAMETER_PX, 32, 32)[None].astype(np.float32), PIXEL_A)
    code, _, err = run_cli("pick", root / "sim_0.mrc", "--diameter-a", DIAMETER_PX * PIXEL_A,
                           "--method", "template", "--templates", tmpl, "--threshold", 0.35,
                           "--out", tmp_path / "picks")
    assert code == 0, err
    code, out, err = run_cli("evaluate-picks", tmp_path / "picks" / "sim_0.star",
                             truth_dir / "sim_0.csv", "--json")
    assert code == 0, err
    assert json.loads(out)["pooled"]["f1"] >= 0.95
    ctf = tmp_path / "ctf.star"
    ctf.write_text("data_\nloop_\n_rlnMicrographName #1\n_rlnDefocusU #2\n_rlnDefocusV #3\n"
                   "_rlnDefocusAngle #4\n_rlnVoltage #5\n_rlnSphericalAberration #6\n"
                   "_rlnAmplitudeContrast #7\nmics/sim_0.mrc 20000 19000 10 300 2.7 0.1\n")
    code, _, err = run_cli("extract", root / "sim_0.mrc", "--picks", tmp_path / "picks", "--box-px", 64,
                           "--phase-flip", "--ctf", ctf, "--out", tmp_path / "parts")
    assert code == 0, err
    t = read_particles(tmp_path / "parts" / "particles.star").table
    assert (t["defocus_u_a"] == 20000).all() and (t["defocus_v_a"] == 19000).all()
    # the flip is recorded (RELION 3.1: in data_optics), so nothing applies the CTF a second time
    from cryoset.io.star import read_star

    assert read_star(tmp_path / "parts" / "particles.star")["optics"]["rlnCtfDataArePhaseFlipped"].tolist() == [1]
    assert (t["ctf_phase_flipped"] == 1).all()
    code, _, err = run_cli("extract", root / "sim_0.mrc", "--picks", tmp_path / "picks", "--box-px", 64,
                           "--phase-flip", "--out", tmp_path / "parts2")
    assert code == 2 and "--ctf" in err


def test_pick_inspection_mask_and_ctf_fit(mics: tuple[Path, Path], tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    root, _ = mics
    masks = tmp_path / "masks"
    mask = np.zeros((1, 384, 384), dtype=np.float32)
    mask[0, :, :192] = 1.0  # left half is "carbon"
    write_map(masks / "sim_0.mrc", mask, PIXEL_A)
    ctf = tmp_path / "ctf.star"
    ctf.write_text("data_\nloop_\n_rlnMicrographName #1\n_rlnCtfMaxResolution #2\n"
                   "sim_0.mrc 4.5\nsim_1.mrc 12.0\n")
    code, _, err = run_cli("pick", *sorted(root.glob("*.mrc")), "--diameter-a", DIAMETER_PX * PIXEL_A,
                           "--mask-dir", masks, "--ctf", ctf, "--max-ctf-resolution-a", 8,
                           "--out", tmp_path / "picks")
    assert code == 0, err
    from cryoset.io.coords import read_coords
    from cryoset.io.cryovirusdb import read_cryovirusdb

    kept = read_coords(tmp_path / "picks" / "sim_0.star")
    assert len(kept) > 0 and (kept["x_px"] > 191).all()
    assert len(read_coords(tmp_path / "picks" / "sim_1.star", permissive=True)) == 0
    fp = read_cryovirusdb(tmp_path / "picks" / "false_positives.csv", flip_y=False)
    reasons = set(fp["Reason"])
    assert reasons == {"on carbon/ice mask", "CTF fit worse than 8 A"}


@pytest.mark.relion
@pytest.mark.slow
def test_relion_reconstructs_our_phase_flipped_extraction_from_the_project_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:  # type: ignore[no-untyped-def]
    """A RELION project as a user has it: simulated micrographs, ``cryoset extract --phase-flip``
    into ``Extract/job001`` run from the project directory. The names are project-relative, as
    RELION writes them; ``relion_image_handler`` run there reads every image (same mean and sd
    as ours); ``relion_reconstruct --ctf --ctf_phase_flipped`` (RELION 3.1 takes the flip from the
    command line, not from the file) gives the map ``cryoset reconstruct`` gives from the same
    file, which honours the file's ``rlnCtfDataArePhaseFlipped``; RELION without
    ``--ctf_phase_flipped`` applies the CTF a second time and disagrees beyond the first CTF zero.
    Measured (seed 1, 192 particles, 2–3 µm defocus): FSC(ours, RELION flipped) ≥ 0.84 in every
    shell to 16 Å; FSC(ours, RELION full CTF) down to −0.92 between 21 and 16 Å."""
    import re

    from cryoset.io.mrc import read_map
    from cryoset.io.particles import write_particles
    from cryoset.recon.fsc import fourier_shell_correlation

    recon = require_program("relion_reconstruct")
    handler = require_program("relion_image_handler")
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    code, _, err = run_cli("simulate", "micrographs", "--n", 3, "--size", 768, "--particles", 70,
                           "--pixel-size-a", 2.0, "--protein-length", 300, "--defocus-range", 2.0, 3.0,
                           "--carbon-fraction", 0, "--contaminations", 0, "--seed", 1, "--out", "Sim")
    assert code == 0, err
    code, _, err = run_cli("extract", *sorted(Path("Sim/micrographs").glob("*.mrc")), "--picks", "Sim/coords",
                           "--ctf", "Sim/micrographs_ctf.star", "--phase-flip", "--invert", "--box-px", 64,
                           "--out", "Extract/job001")
    assert code == 0, err
    star = Path("Extract/job001/particles.star")
    ps = read_particles(star)
    t = ps.table
    assert t["image_path"].str.fullmatch(r"Extract/job001/micrograph_000\d\.mrcs").all()
    assert t["rlnMicrographName"].str.fullmatch(r"Sim/micrographs/micrograph_000\d\.mrc").all()
    assert (t["ctf_phase_flipped"] == 1).all()
    r = subprocess.run([handler, "--i", str(star), "--stats"], cwd=project, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = re.findall(r"(\d+)@(\S+) : .*avg= (\S+) stddev= (\S+)", r.stdout)
    assert len(stats) == len(t)
    for (number, name, avg, sd), row in zip(stats, t.itertuples(), strict=True):
        assert (int(number) - 1, name) == (row.image_index, row.image_path)
        img = read_stack(project / name).images(int(row.image_index))
        assert float(avg) == pytest.approx(float(img.mean()), abs=1e-4)
        assert float(sd) == pytest.approx(float(img.std()), rel=1e-3)
    # poses: the simulation's truth (the picks carried them), the sub-pixel rest as RELION 3.1 origins
    px = float(t["pixel_size_a"].iloc[0])
    t["shift_x_a"] = -(t["x_px"] - np.floor(t["x_px"] + 0.5)) * px
    t["shift_y_a"] = -(t["y_px"] - np.floor(t["y_px"] + 0.5)) * px
    t["random_subset"] = np.arange(len(t)) % 2 + 1
    ps.table = t
    posed = write_particles("Extract/job001/posed.star", ps)
    code, _, err = run_cli("reconstruct", posed, "--out", "ours.mrc")
    assert code == 0, err
    for out, extra in (("relion_flipped.mrc", ["--ctf_phase_flipped"]), ("relion_full.mrc", [])):
        r = subprocess.run([recon, "--i", str(posed), "--o", out, "--ctf", *extra], cwd=project,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    ours = read_map("ours.mrc").data
    agree = fourier_shell_correlation(ours, read_map("relion_flipped.mrc").data, voxel_size_a=px)
    double = fourier_shell_correlation(ours, read_map("relion_full.mrc").data, voxel_size_a=px)
    low = (agree.freq_per_a > 0) & (agree.freq_per_a <= 1 / 16.0)
    print("FSC ours/RELION flipped", np.round(agree.correlation[low], 3),
          "ours/RELION full CTF", np.round(double.correlation[low], 3))
    assert np.all(agree.correlation[low] > 0.75)
    beyond_zero = (double.freq_per_a >= 1 / 22.0) & (double.freq_per_a <= 1 / 16.0)
    assert double.correlation[beyond_zero].min() < 0.0


@pytest.mark.parametrize(("argv", "option"), [
    (["--voltage-kv", "0"], "--voltage-kv"), (["--voltage-kv", "nan"], "--voltage-kv"),
    (["--cs-mm", "-1"], "--cs-mm"), (["--amplitude-contrast", "1"], "--amplitude-contrast"),
])
def test_extract_refuses_impossible_optics(mics: tuple[Path, Path], tmp_path: Path, run_cli,  # type: ignore[no-untyped-def]
                                           argv: list[str], option: str) -> None:
    """Issue #16 review: ``extract --voltage-kv 0`` wrote ``rlnVoltage 0`` into particles.star, exit 0."""
    root, truth_dir = mics
    code, out, err = run_cli("extract", root / "sim_0.mrc", "--picks", truth_dir, "--box-px", 64, *argv,
                             "--out", tmp_path / "ex")
    assert code == 2 and "Traceback" not in out + err
    assert err.strip().startswith(f"error: {option}: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ex").exists()
