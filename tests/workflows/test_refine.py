"""``cryoset refine`` end to end: outputs, STAR columns, resume equals an uninterrupted run,
bad inputs exit 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.fft

from cryoset.geometry import angular_distance_deg, euler_to_matrix, random_rotations
from cryoset.io.mrc import read_map, write_map, write_stack
from cryoset.io.particles import read_particles, write_particles
from cryoset.simulate.projection import project_fourier

BOX = 24
PIXEL_A = 2.0
N = 60


def blob_volume(box: int, seed: int = 1, n_blobs: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:box, :box, :box] - box // 2
    vol = np.zeros((box, box, box), np.float32)
    for _ in range(n_blobs):
        c = rng.uniform(-1, 1, 3)
        c = c / np.linalg.norm(c) * rng.uniform(0, box * 0.28)
        s, a = rng.uniform(1.0, 2.0), rng.uniform(0.5, 1.0)
        vol += a * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
    return vol


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("refine")
    rng = np.random.default_rng(0)
    vol = blob_volume(BOX)
    rots = random_rotations(N, rng)
    shifts = rng.uniform(-1.0, 1.0, (N, 2))
    f = scipy.fft.rfft2(np.fft.ifftshift(project_fourier(vol, rots), axes=(-2, -1)))
    ky, kx = np.fft.fftfreq(BOX)[:, None], np.fft.rfftfreq(BOX)[None, :]
    f *= np.exp(2j * np.pi * (kx * shifts[:, 0, None, None] + ky * shifts[:, 1, None, None]))
    imgs = np.fft.fftshift(scipy.fft.irfft2(f, s=(BOX, BOX)), axes=(-2, -1)).astype(np.float32)
    write_stack(d / "particles.mrcs", imgs, PIXEL_A)
    table = pd.DataFrame({"image_path": "particles.mrcs", "image_index": np.arange(N),
                          "pixel_size_a": PIXEL_A, "image_size_px": BOX, "voltage_kv": 300.0,
                          "cs_mm": 2.7, "amplitude_contrast": 0.1, "optics_group": 1,
                          "optics_group_name": "opticsGroup1"})
    write_particles(d / "particles.star", table)
    write_map(d / "reference.mrc", vol, (PIXEL_A,) * 3)
    write_map(d / "small.mrc", vol[2:-2, 2:-2, 2:-2], (PIXEL_A,) * 3)
    write_map(d / "slab.mrc", vol[:, :, 2:-2], (PIXEL_A,) * 3)
    return {"dir": d, "rots": rots, "shifts": shifts, "vol": vol}


ARGS = ("--no-ctf", "--initial-lowpass-a", "8", "--angular-step-deg", "15", "--iterations", "3", "--seed", "5")


def test_refine_writes_posed_particles_and_maps(run_cli, dataset: dict[str, object], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = Path(str(dataset["dir"]))
    out = tmp_path / "run"
    code, stdout, stderr = run_cli("refine", d / "particles.star", "--reference", d / "reference.mrc",
                                   "--out", out, *ARGS, "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["particles"] == N and summary["half_sizes"] == [30, 30]
    assert summary["iterations"] == 3
    for name in ("run_data.star", "run_half1_class001_unfil.mrc", "run_half2_class001_unfil.mrc",
                 "run_class001.mrc", "run_fsc.csv", "run_fsc.png", "run_summary.json",
                 "run_it001.json", "run_it003.json", "state/it003.npz", "run_class001.mrc.provenance.json"):
        assert (out / name).exists(), name
    t = read_particles(out / "run_data.star").table
    for col in ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a", "random_subset", "max_prob",
                "rlnCryosetAngularErrorDeg"):
        assert col in t.columns, col
    text = (out / "run_data.star").read_text()
    for label in ("_rlnAngleRot", "_rlnOriginXAngst", "_rlnRandomSubset", "_rlnMaxValueProbDistribution",
                  "_rlnCryosetAngularErrorDeg"):
        assert label in text, label
    rots = euler_to_matrix(t["rot_deg"], t["tilt_deg"], t["psi_deg"])
    with np.load(out / "state" / "it003.npz") as state:  # the STAR holds the final state's poses
        assert np.allclose(rots, state["rotations"], atol=1e-5)
        assert np.allclose(t[["shift_x_a", "shift_y_a"]].to_numpy(), state["shifts_px"] * PIXEL_A, atol=1e-5)
        assert np.array_equal(t["random_subset"].to_numpy(), state["subsets"])
    err = angular_distance_deg(rots, np.asarray(dataset["rots"]))
    assert np.median(err) < 20.0  # 3 iterations from a 15° search on 2 × 30 particles (accuracy: tests/recon)
    assert sorted(t["random_subset"].unique().tolist()) == [1, 2]
    vol = read_map(out / "run_class001.mrc")
    assert vol.data.shape == (BOX, BOX, BOX)
    it1 = json.loads((out / "run_it001.json").read_text())
    assert it1["local"] is False and it1["iteration"] == 1


def test_resume_equals_uninterrupted(dataset: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cryoset.recon.refine as kernel
    from cryoset.workflows.refine import RefineParams, run_refine

    d = Path(str(dataset["dir"]))
    p = RefineParams(ctf=False, initial_lowpass_a=8.0, angular_step_deg=15.0, iterations=4, seed=5)
    whole = run_refine(d / "particles.star", d / "reference.mrc", tmp_path / "whole", p, progress=False)

    real = kernel.refine_iteration
    calls = {"n": 0}

    def killed_after_two(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(kernel, "refine_iteration", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_refine(d / "particles.star", d / "reference.mrc", tmp_path / "resumed", p, progress=False)
    assert sorted(q.name for q in (tmp_path / "resumed" / "state").iterdir()) == ["it001.npz", "it002.npz"]
    monkeypatch.setattr(kernel, "refine_iteration", real)
    resumed = run_refine(d / "particles.star", d / "reference.mrc", tmp_path / "resumed", p, progress=False)
    assert {k: v for k, v in resumed.items() if k not in ("map", "particles_star")} == \
        {k: v for k, v in whole.items() if k not in ("map", "particles_star")}
    for name in ("run_class001.mrc", "run_half1_class001_unfil.mrc", "run_half2_class001_unfil.mrc"):
        assert np.array_equal(read_map(tmp_path / "whole" / name).data, read_map(tmp_path / "resumed" / name).data)
    a = read_particles(tmp_path / "whole" / "run_data.star").table
    b = read_particles(tmp_path / "resumed" / "run_data.star").table
    pd.testing.assert_frame_equal(a, b)
    for i in range(1, 5):
        assert (tmp_path / "whole" / f"run_it{i:03d}.json").read_text() == \
            (tmp_path / "resumed" / f"run_it{i:03d}.json").read_text()
    # another parameter set in the same directory is refused
    from cryoset.errors import InputError

    with pytest.raises(InputError, match="other particles, reference or parameters"):
        run_refine(d / "particles.star", d / "reference.mrc", tmp_path / "resumed",
                   RefineParams(ctf=False, initial_lowpass_a=9.0, angular_step_deg=15.0, iterations=4, seed=5),
                   progress=False)


@pytest.mark.parametrize(("extra", "ref", "message"), [
    (("--ctf",), "reference.mrc", "lack CTF parameters"),
    (("--no-ctf",), "small.mrc", "differs from the particle box 24"),
    (("--no-ctf",), "slab.mrc", "is not cubic"),
])
def test_bad_inputs_exit_2_with_one_line(run_cli, dataset: dict[str, object], tmp_path: Path,  # type: ignore[no-untyped-def]
                                         extra: tuple[str, ...], ref: str, message: str) -> None:
    d = Path(str(dataset["dir"]))
    out = tmp_path / "bad"
    code, _stdout, stderr = run_cli("refine", d / "particles.star", "--reference", d / ref, "--out", out, *extra)
    assert code == 2
    lines = [ln for ln in stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and message in lines[0], stderr
    assert not out.exists()
