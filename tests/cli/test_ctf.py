"""``cryoset ctf``: outputs, failures, STAR input, JSON, RELION reading our STAR."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from cryoset.ctf.model import CTFParams
from cryoset.ctf.synthetic import synthetic_micrograph
from cryoset.io.star import read_star
from cryoset.testing import require_program

TRUTH = CTFParams(16300.0, 15700.0, 40.0)


def _write_mrc(path: Path, data: np.ndarray, pixel: float) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data, dtype=np.float32))
        m.voxel_size = pixel
    return path


@pytest.fixture
def micrographs(tmp_path: Path) -> dict[str, Path]:
    img = synthetic_micrograph(TRUTH, (768, 768), 1.5, seed=2, snr=0.5)
    good = _write_mrc(tmp_path / "good.mrc", img, 1.5)
    blank = _write_mrc(tmp_path / "blank.mrc", np.zeros((512, 512)), 1.5)
    tiny = _write_mrc(tmp_path / "tiny.mrc", img[:64, :64], 1.5)
    return {"good": good, "blank": blank, "tiny": tiny}


@pytest.mark.slow
def test_ctf_good_and_bad_micrographs(
    run_cli, micrographs: dict[str, Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    picks = tmp_path / "picks.csv"
    pd.DataFrame({"micrograph": ["good.mrc"], "x_px": [100.0], "y_px": [600.0]}).to_csv(picks, index=False)
    code, stdout, stderr = run_cli(
        "ctf", micrographs["good"], micrographs["blank"], micrographs["tiny"], "--out", out,
        "--patches", "2x2", "--picks", picks, "--json", "--workers", "2",
    )  # fmt: skip
    assert code == 2  # some failed (in the process pool), after writing the good one
    assert "blank.mrc: the micrograph is blank" in stderr
    summary = json.loads(stdout)
    assert len(summary["results"]) == 1 and len(summary["failed"]) == 2
    failed = pd.read_csv(out / "failed.csv")
    assert sorted(failed["micrograph"]) == ["blank.mrc", "tiny.mrc"]
    assert failed.set_index("micrograph").loc["tiny.mrc", "reason"].startswith("the micrograph is too small")

    blocks = read_star(out / "micrographs_ctf.star")
    assert set(blocks) == {"optics", "micrographs"}
    mics = blocks["micrographs"]
    assert list(mics["rlnMicrographName"]) == ["good.mrc"]
    for col in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnCtfAstigmatism",
                "rlnCtfMaxResolution", "rlnCtfFigureOfMerit", "rlnPhaseShift"):  # fmt: skip
        assert col in mics.columns
    mean = 0.5 * (mics["rlnDefocusU"].iloc[0] + mics["rlnDefocusV"].iloc[0])
    assert abs(mean - TRUTH.defocus_mean_a) / TRUTH.defocus_mean_a < 0.01
    assert mics["rlnDefocusU"].iloc[0] >= mics["rlnDefocusV"].iloc[0]
    optics = blocks["optics"]
    assert optics["rlnMicrographPixelSize"].iloc[0] == pytest.approx(1.5)
    assert optics["rlnVoltage"].iloc[0] == 300.0

    table = pd.read_csv(out / "ctf.csv")
    assert table["micrograph"].tolist() == ["good.mrc"]
    landscape = pd.read_csv(out / "defocus_landscape.csv")
    assert len(landscape) == 4 and set(landscape["micrograph"]) == {"good.mrc"}
    annotated = pd.read_csv(out / "picks_local_defocus.csv")
    assert abs(annotated["defocus_u_a"].iloc[0] - mics["rlnDefocusU"].iloc[0]) < 1500.0
    assert (out / "plots" / "good_ctf.png").stat().st_size > 10_000
    assert (out / "plots" / "good_landscape.png").exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["command"] == "ctf" and len(prov["inputs"]) == 3


def test_ctf_from_relion_star_with_optics(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # 200 kV in the optics block: the fit must use it (the same image at 300 kV would give
    # a different defocus).
    truth = CTFParams(15000.0, 15000.0, 0.0, voltage_kv=200.0, cs_mm=2.0, amplitude_contrast=0.07)
    img = synthetic_micrograph(truth, (768, 768), 1.3, seed=4, snr=0.5)
    (tmp_path / "Micrographs").mkdir()
    _write_mrc(tmp_path / "Micrographs" / "m1.mrc", img, 9.9)  # header pixel overridden by STAR
    star = tmp_path / "micrographs.star"
    star.write_text(
        "data_optics\n\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n"
        "_rlnMicrographPixelSize #3\n_rlnVoltage #4\n_rlnSphericalAberration #5\n"
        "_rlnAmplitudeContrast #6\nopticsGroup1 1 1.3 200 2.0 0.07\n\n"
        "data_micrographs\n\nloop_\n_rlnMicrographName #1\n_rlnOpticsGroup #2\n"
        "Micrographs/m1.mrc 1\n"
    )
    out = tmp_path / "out"
    code, stdout, _ = run_cli("ctf", star, "--out", out, "--json", "--no-plots")
    assert code == 0
    r = json.loads(stdout)["results"][0]
    assert r["voltage_kv"] == 200.0 and r["cs_mm"] == 2.0 and r["pixel_size_a"] == 1.3
    mean = 0.5 * (r["defocus_u_a"] + r["defocus_v_a"])
    assert abs(mean - 15000.0) / 15000.0 < 0.01
    assert not (out / "plots").exists()
    assert pd.read_csv(out / "failed.csv").empty


def test_png_without_pixel_size_fails_cleanly(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    Image.fromarray(np.full((300, 300), 7, dtype=np.uint8)).save(tmp_path / "a.png")
    code, _, stderr = run_cli("ctf", tmp_path / "a.png", "--out", tmp_path / "o")
    assert code == 2
    assert "no pixel size" in stderr
    code, _, stderr = run_cli("ctf", tmp_path / "a.png", "--out", tmp_path / "o", "--patches", "3")
    assert code == 2 and "--patches" in stderr


@pytest.mark.relion
def test_relion_reads_our_star(run_cli, micrographs: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exe = require_program("relion_star_printtable")
    out = tmp_path / "out"
    code, _, _ = run_cli("ctf", micrographs["good"], "--out", out, "--no-plots")
    assert code == 0
    res = subprocess.run(
        [exe, str(out / "micrographs_ctf.star"), "data_micrographs", "rlnDefocusU", "rlnDefocusAngle"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    values = [float(v) for v in res.stdout.split()]
    ours = read_star(out / "micrographs_ctf.star")["micrographs"]
    assert values == pytest.approx([ours["rlnDefocusU"].iloc[0], ours["rlnDefocusAngle"].iloc[0]], rel=1e-6)
