"""``cryoset postprocess`` and ``cryoset mask-create`` end to end: half maps of a simulated protein
with known spectral SNR, every output, the angular distribution, bad inputs, and agreement with
``relion_postprocess`` where RELION is installed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.io.mrc import read_map, write_map
from cryoset.testing import require_program

BOX, PX = 48, 2.0


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Half maps = protein (band-limited at shell 18, 5.3 Å) + independent white noise: the
    unmasked FSC crosses 0.143 near shell 14; a mask excludes noise volume, pushing the crossing
    to the band limit, where it is steep."""
    from cryoset.recon.validate import lowpass
    from cryoset.simulate.micrograph import atoms_from_protein
    from cryoset.simulate.potential import potential_volume
    from cryoset.simulate.protein import build_protein

    d = tmp_path_factory.mktemp("halves")
    atoms = atoms_from_protein(build_protein(200, 3)).centred()
    truth = np.asarray(potential_volume(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, (BOX,) * 3, PX,
                                        (-(BOX // 2) * PX,) * 3), dtype=np.float64)
    signal = lowpass(truth, PX, BOX * PX / 18.0, edge_shells=3.0)
    rng = np.random.default_rng(11)
    sigma = 3.0 * signal.std()
    for i in (1, 2):
        write_map(d / f"half{i}.mrc", (signal + sigma * rng.standard_normal(signal.shape)).astype(np.float32), PX)
    write_map(d / "truth.mrc", truth.astype(np.float32), PX)
    from cryoset.maps.resample import resample

    write_map(d / "truth_1.5a.mrc", resample(truth, PX, 1.5, method="fourier"), 1.5)
    angles = np.column_stack([rng.uniform(-180, 180, 3000), np.rad2deg(np.arccos(rng.uniform(-1, 1, 3000))),
                              rng.uniform(-180, 180, 3000)])
    rows = "\n".join(f"{a:.3f} {b:.3f} {c:.3f}" for a, b, c in angles)
    (d / "run_data.star").write_text("data_particles\n\nloop_\n_rlnAngleRot #1\n_rlnAngleTilt #2\n"
                                     f"_rlnAnglePsi #3\n{rows}\n")
    return {"dir": d, "h1": d / "half1.mrc", "h2": d / "half2.mrc", "truth": d / "truth.mrc",
            "ref": d / "truth_1.5a.mrc", "star": d / "run_data.star"}


def test_postprocess_auto_mask_writes_everything(run_cli, halves: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "post"
    code, stdout, stderr = run_cli("postprocess", halves["h1"], halves["h2"], "--out", out, "--auto-mask",
                                   "--reference", halves["ref"], "--particles-file", halves["star"], "--local-resolution",
                                   "--local-window-px", "16", "--json")
    assert code == 0, stderr
    s = json.loads(stdout)
    fsc = s["fsc"]
    assert set(fsc) == {"unmasked", "masked", "randomised", "corrected", "masked_loose", "corrected_loose",
                        "reference"}
    shell = {name: BOX * PX / r["0.143"] for name, r in fsc.items() if r["0.143"] is not None}
    assert 12.0 < shell["unmasked"] < 16.5  # measured 14.5
    # the mask excludes noise: the masked, corrected resolution is better (measured shell 17.6, up to the
    # band limit at 18 ± 1.5), the tight mask more than the loose (16.4)
    assert shell["corrected"] > shell["unmasked"] + 2.0 and shell["corrected"] < 19.6
    assert fsc["corrected"]["0.143"] <= fsc["corrected_loose"]["0.143"] + 0.05
    assert s["resolution_a"] == fsc["corrected"]["0.143"] and s["final_curve"] == "corrected"
    assert s["randomise_from_shell"] >= 1 and s["bfactor_source"] == "guinier" and s["bfactor_a2"] < 0
    # the reference (the truth on a 1.5 Å grid) agrees with the map to beyond the half-map 0.5 crossing
    assert fsc["reference"]["0.5"] <= fsc["unmasked"]["0.5"] + 0.5
    assert s["mask"]["source"] == "auto" and 0 < s["mask"]["volume_fraction"] < s["mask"]["loose_volume_fraction"]
    assert s["angular_distribution"]["particles"] == 3000
    # uniform views: no bin far above the mean (3000 views over 648 bins, Poisson)
    assert s["angular_distribution"]["max_over_mean"] < 3.5
    # local resolution inside the tight mask: the best windows (the molecule's core) near the
    # masked global value, none beyond Nyquist; windows at the mask's edge hold mostly noise
    loc = s["local_resolution"]
    assert loc["windows"] > 10 and 2 * PX <= loc["p5_a"] <= loc["median_a"] <= loc["p95_a"]
    assert loc["p5_a"] < 1.5 * s["resolution_a"]
    for name in ("postprocess.mrc", "postprocess_masked.mrc", "mask.mrc", "mask_loose.mrc", "postprocess.json",
                 "postprocess_fsc.csv", "postprocess_fsc.png", "postprocess_guinier.png",
                 "angular_distribution.png", "index.html", "local_resolution.mrc", "postprocess.mrc.provenance.json",
                 "postprocess.json.provenance.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "postprocess.json").read_text()) == {k: v for k, v in s.items() if k != "out_dir"}
    sharp, masked, mask = (read_map(out / n) for n in ("postprocess.mrc", "postprocess_masked.mrc", "mask.mrc"))
    assert sharp.voxel_size_a == pytest.approx((PX,) * 3)
    np.testing.assert_allclose(masked.data, sharp.data * mask.data, atol=1e-5 * float(np.abs(sharp.data).max()))
    assert mask.data.min() >= 0 and mask.data.max() == 1 and ((mask.data > 0) & (mask.data < 1)).any()
    table = pd.read_csv(out / "postprocess_fsc.csv")
    assert {"freq_per_a", "resolution_a", "fsc_unmasked", "fsc_corrected", "fsc_reference"} <= set(table.columns)
    assert len(table) == BOX // 2 + 1
    html = (out / "index.html").read_text()
    assert "postprocess_fsc.png" in html and "angular_distribution.png" in html
    # the sharpened map is low-passed at the resolution: nothing beyond resolution + edge
    ft = np.abs(np.fft.rfftn(sharp.data))
    k = np.fft.fftfreq(BOX) * BOX
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + np.arange(BOX // 2 + 1)[None, None, :] ** 2)
    assert ft[r > BOX * PX / s["resolution_a"] + 1.01].max() < 1e-4 * ft.max()


def test_given_mask_and_bfactor_are_used(run_cli, halves: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_cli("mask-create", halves["truth"], "--out", tmp_path / "m.mrc", "--extend-px", "2",
                           "--soft-edge-px", "4", "--json")
    assert code == 0, err
    code, stdout, err = run_cli("postprocess", halves["h1"], halves["h2"], "--out", tmp_path / "p",
                                "--mask", tmp_path / "m.mrc", "--bfactor", "-50", "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert s["bfactor_a2"] == -50.0 and s["bfactor_source"] == "given"
    assert s["mask"]["source"] == "given" and "masked_loose" not in s["fsc"]
    np.testing.assert_array_equal(read_map(tmp_path / "p" / "mask.mrc").data, read_map(tmp_path / "m.mrc").data)
    # without any mask only the unmasked FSC is computed
    code, stdout, err = run_cli("postprocess", halves["h1"], halves["h2"], "--out", tmp_path / "q", "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert set(s["fsc"]) == {"unmasked"} and s["final_curve"] == "unmasked"
    assert not (tmp_path / "q" / "mask.mrc").exists()


def _bad_inputs(d: Path, tmp: Path) -> dict[str, tuple[list[object], str]]:
    h1, h2 = d / "half1.mrc", d / "half2.mrc"
    small = tmp / "small.mrc"
    write_map(small, np.zeros((32, 32, 32), np.float32), PX)
    other_v = tmp / "other_voxel.mrc"
    write_map(other_v, read_map(h2).data, 1.5)
    flat = tmp / "flat.mrc"
    write_map(flat, np.zeros((48, 48, 40), np.float32), PX)
    big_mask = tmp / "mask2.mrc"
    write_map(big_mask, np.full((48, 48, 48), 2.0, np.float32), PX)
    out = tmp / "out"
    return {
        "shape": (["postprocess", h1, small, "--out", out], "small.mrc"),
        "voxel": (["postprocess", h1, other_v, "--out", out], "other_voxel.mrc"),
        "non-cubic": (["postprocess", flat, h2, "--out", out], "flat.mrc"),
        "mask-shape": (["postprocess", h1, h2, "--out", out, "--mask", small], "small.mrc"),
        "mask-values": (["postprocess", h1, h2, "--out", out, "--mask", big_mask], "mask2.mrc"),
        "mask-and-auto": (["postprocess", h1, h2, "--out", out, "--mask", big_mask, "--auto-mask"], "--mask"),
        "bfactor": (["postprocess", h1, h2, "--out", out, "--bfactor", "sharp"], "--bfactor"),
        "threshold": (["postprocess", h1, h2, "--out", out, "--auto-mask", "--mask-threshold", "1e9"],
                      "--mask-threshold"),
        "extend": (["postprocess", h1, h2, "--out", out, "--auto-mask", "--extend-px", "-1"], "--extend-px"),
        "particles": (["postprocess", h1, h2, "--out", out, "--particles-file", small], "small.mrc"),
        "mask-create-threshold": (["mask-create", h1, "--out", tmp / "m.mrc", "--mask-threshold", "1e9"],
                                  "--mask-threshold"),
        "mask-create-non-cubic": (["mask-create", flat, "--out", tmp / "m.mrc"], "flat.mrc"),
    }


@pytest.mark.parametrize("case", ["shape", "voxel", "non-cubic", "mask-shape", "mask-values", "mask-and-auto",
                                  "bfactor", "threshold", "extend", "particles", "mask-create-threshold",
                                  "mask-create-non-cubic"])
def test_bad_inputs_are_one_line_exit_2(run_cli, halves: dict[str, Path], tmp_path: Path, case: str) -> None:  # type: ignore[no-untyped-def]
    argv, named = _bad_inputs(halves["dir"], tmp_path)[case]
    code, _, err = run_cli(*argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.mrc").exists()


def test_cli_defaults_are_the_params() -> None:
    from cryoset.cli._defaults import POSTPROCESS
    from cryoset.workflows.postprocess import PostprocessParams

    assert POSTPROCESS == PostprocessParams


def test_same_resolution_as_relion_postprocess(halves: dict[str, Path], tmp_path: Path) -> None:
    """relion_postprocess on the same halves with our auto-mask: the corrected 0.143 resolution
    within one Fourier shell, the Guinier B-factor fitted over the same range (10 Å to our resolution)
    within 10 %."""
    relion = require_program("relion_postprocess")
    from cryoset.workflows.postprocess import PostprocessParams, run_postprocess

    ours = run_postprocess(halves["h1"], halves["h2"], tmp_path / "ours",
                           PostprocessParams(auto_mask=True), progress=False)
    (tmp_path / "relion").mkdir()
    proc = subprocess.run([relion, "--i", str(halves["h1"]), "--i2", str(halves["h2"]), "--mask",
                           str(tmp_path / "ours" / "mask.mrc"), "--angpix", str(PX), "--auto_bfac",
                           "--autob_highres", f"{ours['resolution_a']:.4f}",
                           "--o", str(tmp_path / "relion" / "post")],
                          capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    star = (tmp_path / "relion" / "post.star").read_text()
    relion_res = float(re.search(r"_rlnFinalResolution\s+(\S+)", star).group(1))  # type: ignore[union-attr]
    relion_b = float(re.search(r"_rlnBfactorUsedForSharpening\s+(\S+)", star).group(1))  # type: ignore[union-attr]
    shell_ours, shell_relion = BOX * PX / ours["resolution_a"], BOX * PX / relion_res
    assert abs(shell_ours - shell_relion) <= 1.0, (ours["resolution_a"], relion_res)
    assert ours["bfactor_a2"] == pytest.approx(relion_b, rel=0.1)
