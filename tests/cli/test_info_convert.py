"""`cryoset info` and `cryoset convert` on real files and on bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from cryoset.io.coords import read_coords
from cryoset.io.cryosparc import read_cs, write_cs
from cryoset.io.mrc import write_map
from cryoset.io.particles import read_particles
from cryoset.testing import require_shared_data


def _one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _all_shared(kind: str) -> list[Path]:
    root = require_shared_data(kind)
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith((".txt", ".md", ".json")))


@pytest.mark.parametrize("kind", ["maps", "star", "coordinates"])
def test_info_on_every_shared_file_loads_or_fails_clearly(kind: str, run_cli) -> None:  # type: ignore[no-untyped-def]
    files = _all_shared(kind)
    assert files
    code, out, err = run_cli("info", "--json", *files)
    summaries = json.loads(out)["files"]
    failed = [line for line in err.strip().splitlines() if line]
    assert len(summaries) + len(failed) == len(files)
    assert all(line.startswith("error: ") and ": " in line[7:] for line in failed)
    assert code == (2 if failed else 0)
    by_path = {s["path"]: s for s in summaries}
    if kind == "maps":
        s = by_path[str(require_shared_data("maps", "emd_5168", "emd_5168.map"))]
        assert s["shape_zyx"] == [100, 100, 100] and abs(s["voxel_size_a"][0] - 1.742) < 1e-3
        assert abs(s["origin_a"][0] - (-50 * 1.742)) < 1e-2
        s = by_path[str(require_shared_data("maps", "emd_5168", "3MFP.pdb"))]
        assert s["chains"] == ["A"] and s["residues_per_chain"]["A"] == 369
    if kind == "star":
        s = by_path[str(require_shared_data("star", "relion", "relion31.6opticsgroups.star"))]
        assert s["optics_groups"] == 6
        # the .mrcs without the MAP id is the one strict failure, and its line says why
        assert any("relion31.mrcs" in line for line in failed)
    if kind == "coordinates":
        # the CryoPPP CSV is y-flipped: without the micrograph height it cannot be placed, and says so
        assert len(failed) == 1 and "cryoppp_groundtruth" in failed[0] and "--micrograph-shape-px" in failed[0]
        csv_path = require_shared_data("coordinates", "empiar_10017", "cryoppp_groundtruth_Falcon_2012_06_12-14_33_35_0.csv")
        code, out, err = run_cli("info", "--json", "--micrograph-shape-px", "4096", "4096", csv_path)
        assert code == 0, err
        assert json.loads(out)["files"][0]["picks"] == 629
        s = by_path[str(require_shared_data("coordinates", "empiar_10017", "repic_topaz_Falcon_2012_06_12-14_33_35_0.box"))]
        assert s["picks"] > 100


def test_convert_particles_round_trip_through_cs_and_star30(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    src = require_shared_data("star", "relion", "relion31.6opticsgroups.star")
    a = read_particles(src).table
    code, out, err = run_cli("convert", src, tmp_path / "p.cs")
    assert code == 0, err
    code, out, err = run_cli("convert", tmp_path / "p.cs", tmp_path / "p30.star", "--star-version", "3.0")
    assert code == 0, err
    code, out, err = run_cli("convert", tmp_path / "p30.star", tmp_path / "p31.star")
    assert code == 0, err
    b = read_particles(tmp_path / "p31.star").table
    for col in ("defocus_u_a", "defocus_v_a", "defocus_angle_deg", "rot_deg", "tilt_deg", "psi_deg",
                "shift_x_a", "shift_y_a", "pixel_size_a", "voltage_kv"):
        if col in a:
            np.testing.assert_allclose(b[col].astype(float), a[col].astype(float), rtol=1e-5, atol=2e-3)
    assert (tmp_path / "p.cs.provenance.json").exists()
    assert "cryoset provenance" in (tmp_path / "p31.star").read_text()[:2000]


def test_convert_cryovirusdb_csv(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    src = require_shared_data("star", "relion", "relion31.star")
    code, out, err = run_cli("convert", src, tmp_path / "cvdb.csv", "--micrograph-shape-px", "4096", "4096")
    assert code == 0, err
    header = (tmp_path / "cvdb.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["Micrographs Filename", "X-Coordinate", "Y-Coordinate"] and len(header) == 14
    code, out, err = run_cli("convert", tmp_path / "cvdb.csv", tmp_path / "back.star", "--micrograph-shape-px", "4096", "4096")
    assert code == 0, err
    a, b = read_particles(src).table, read_particles(tmp_path / "back.star").table
    np.testing.assert_allclose(b["x_px"], a["x_px"], atol=1e-3)
    np.testing.assert_allclose(b["y_px"], a["y_px"], atol=1e-3)


def test_convert_coordinates_between_formats(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    src = require_shared_data("coordinates", "empiar_10017", "repic_crYOLO_Falcon_2012_06_12-14_33_35_0.box")
    ref = read_coords(src)
    code, out, err = run_cli("convert", src, tmp_path / "c.star")
    assert code == 0, err
    code, out, err = run_cli("convert", tmp_path / "c.star", tmp_path / "c.box", "--box-px", "180")
    assert code == 0, err
    code, out, err = run_cli("convert", tmp_path / "c.box", tmp_path / "c.cs", "--micrograph-shape-px", "4096", "4096")
    assert code == 0, err
    back = read_coords(tmp_path / "c.cs")
    np.testing.assert_allclose(back["x_px"], ref["x_px"], atol=1e-3)
    np.testing.assert_allclose(back["y_px"], ref["y_px"], atol=1e-3)


# --------------------------------------------------------------------- bad input: one line, exit 2


def test_bad_mrcs(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty.mrc"
    empty.write_bytes(b"")
    _one_line_error(*run_cli("info", empty), "empty.mrc")
    good = write_map(tmp_path / "good.mrc", np.ones((8, 8, 8), np.float32), (1.0, 1.0, 1.0))
    data = good.read_bytes()
    trunc = tmp_path / "trunc.mrc"
    trunc.write_bytes(data[:-100])
    _one_line_error(*run_cli("info", trunc), "trunc.mrc")
    code, out, _ = run_cli("validate", trunc)
    assert code == 1 and "bytes but the header implies" in out  # validate names the failed rule
    mode = tmp_path / "mode.mrc"
    mode.write_bytes(data[:12] + struct.pack("<i", 7) + data[16:])
    _one_line_error(*run_cli("info", mode), "mode.mrc", "mode")
    hdr = tmp_path / "hdr.mrc"
    hdr.write_bytes(data[:208] + b"XXXX" + data[212:])
    _one_line_error(*run_cli("info", hdr), "hdr.mrc")


def test_star_missing_columns_gives_one_line_and_writes_nothing(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    star = tmp_path / "bad.star"
    star.write_text("data_particles\n\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n1@a.mrcs 10000\n")
    out_path = tmp_path / "out.box"
    _one_line_error(*run_cli("convert", star, out_path), "bad.star")
    assert not out_path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.star"]


def test_cs_missing_fields(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    src = require_shared_data("star", "cryosparc", "cryosparc_J2_particles_exported.cs")
    arr = read_cs(src)
    keep = [n for n in arr.dtype.names or () if not n.startswith("blob/psize")]
    broken = tmp_path / "broken.cs"
    write_cs(broken, arr[keep])
    _one_line_error(*run_cli("convert", broken, tmp_path / "x.star"), "broken.cs")
    assert not (tmp_path / "x.star").exists()


def test_coordinates_outside_micrograph(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    box = tmp_path / "mic.box"
    box.write_text("10\t10\t100\t100\n5000\t20\t100\t100\n")
    _one_line_error(*run_cli("convert", box, tmp_path / "mic.star", "--micrograph-shape-px", "4096", "4096"),
                    "mic.box", "outside")
    assert not (tmp_path / "mic.star").exists()
    code, out, err = run_cli("convert", box, tmp_path / "mic.star", "--micrograph-shape-px", "4096", "4096",
                             "--permissive")
    assert code == 0, err
    assert len(read_coords(tmp_path / "mic.star")) == 1


def test_unknown_type_and_missing_file(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    odd = tmp_path / "x.weird"
    odd.write_text("?")
    _one_line_error(*run_cli("info", odd), "x.weird", "unknown file type")
    _one_line_error(*run_cli("convert", tmp_path / "nope.star", tmp_path / "o.star"), "nope.star", "no such file")


NON_PARTICLE_STAR = {
    "default_pipeline.star": "RELION pipeline file (blocks: data_pipeline_general, data_pipeline_processes",
    "postprocess.star": "RELION post-processing file (blocks: data_general, data_fsc, data_guinier)",
    "relion_tutorial/run_it025_optimiser_2D.star": "RELION optimiser file (blocks: data_optimiser_general)",
    "relion_tutorial/run_it025_optimiser_3D.star": "RELION optimiser file (blocks: data_optimiser_general)",
    "relion_tutorial/run_it025_sampling_2D.star": "RELION sampling file (blocks: data_sampling_general)",
    "relion_tutorial/run_it025_sampling_3D.star":
        "RELION sampling file (blocks: data_sampling_general, data_sampling_directions)",
}


@pytest.mark.parametrize(("name", "what"), sorted(NON_PARTICLE_STAR.items()))
def test_non_particle_star_files_are_named_in_one_line(name: str, what: str, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """RELION's pipeline, post-processing, optimiser and sampling files: `convert` says what they are
    and names their blocks (it used to say they lacked coordinate columns); `info` lists them."""
    src = require_shared_data("star", "relion", *name.split("/"))
    _one_line_error(*run_cli("convert", src, tmp_path / "out.star"), name.split("/")[-1],
                    "holds neither particles nor coordinates", what)
    assert not (tmp_path / "out.star").exists()
    code, out, err = run_cli("info", "--json", src)
    assert code == 0, err
    assert what in out


def test_subtomogram_star_converts_without_a_traceback(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """one_loop.star: RELION 3.0 subtomograms, one image per file (no ``N@``), Windows paths."""
    src = require_shared_data("star", "relion", "one_loop.star")
    code, out, err = run_cli("convert", src, tmp_path / "s31.star")
    assert code == 0, err
    assert "note: the image size is not written" in err and "Traceback" not in err  # the volumes are elsewhere
    back = read_particles(tmp_path / "s31.star").table
    assert back["image_index"].isna().all() and back["image_path"].str.startswith("F:/").all()
    np.testing.assert_array_equal(back["pixel_size_a"], 5.0)
    code, out, err = run_cli("convert", tmp_path / "s31.star", tmp_path / "s30.star", "--star-version", "3.0")
    assert code == 0, err
    _one_line_error(*run_cli("convert", src, tmp_path / "s.cs"), "s.cs", "no cryoSPARC blob/idx")
    assert not (tmp_path / "s.cs").exists()
    code, out, err = run_cli("info", "--json", src)
    assert code == 0 and "Traceback" not in err, err


def test_info_permissive(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """`info --permissive` reads what the strict readers refuse: an MRC without the MAP id, a
    STAR file with a ragged row."""
    mrcs = require_shared_data("star", "relion", "relion31.mrcs")
    _one_line_error(*run_cli("info", mrcs), "relion31.mrcs", "MAP")
    code, out, err = run_cli("info", "--permissive", "--json", mrcs)
    assert code == 0, err
    assert "shape_zyx" in out
    ragged = tmp_path / "ragged.star"
    ragged.write_text("data_\nloop_\n_rlnImageName\n_rlnDefocusU\n1@a.mrcs 10000\n2@a.mrcs\n3@a.mrcs 12000\n")
    _one_line_error(*run_cli("info", ragged), "ragged.star")
    code, out, err = run_cli("info", "--permissive", "--json", ragged)
    assert code == 0, err
    assert '"particles": 2' in out


def _project_30_star(project: Path, n: int = 6, box: int = 32, suffix: str = ".mrcs") -> tuple[Path, np.ndarray]:
    """A RELION 3.0 particle file in a project directory, its stack under Extract/job001."""
    import pandas as pd

    from cryoset.io.mrc import write_stack
    from cryoset.io.particles import write_particles

    rng = np.random.default_rng(3)
    images = rng.standard_normal((n, box, box)).astype(np.float32)
    stack = project / "Extract" / "job001" / f"stack{suffix}"
    stack.parent.mkdir(parents=True, exist_ok=True)
    write_stack(stack, images, 2.0)
    table = pd.DataFrame({"image_index": np.arange(n), "image_path": f"Extract/job001/stack{suffix}",
                          "pixel_size_a": 2.0, "voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1,
                          "defocus_u_a": 15000.0, "defocus_v_a": 14500.0, "defocus_angle_deg": 30.0,
                          "rot_deg": rng.uniform(-180, 180, n), "tilt_deg": rng.uniform(0, 180, n),
                          "psi_deg": rng.uniform(-180, 180, n), "ctf_phase_flipped": 1})
    return write_particles(project / "old.star", table, star_version="3.0"), images


def test_convert_30_to_31_fills_the_image_size_from_the_stacks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:  # type: ignore[no-untyped-def]
    from cryoset.io.star import read_star

    monkeypatch.chdir(tmp_path)
    old, _ = _project_30_star(tmp_path)
    assert "rlnImageSize" not in read_star(old)[""].columns
    code, out, err = run_cli("convert", old, "new.star")
    assert code == 0, err
    optics = read_star(tmp_path / "new.star")["optics"]
    assert optics["rlnImageSize"].tolist() == [32] and optics["rlnImageDimensionality"].tolist() == [2]
    assert optics["rlnCtfDataArePhaseFlipped"].tolist() == [1]
    # cryoSPARC's blob/shape likewise
    code, out, err = run_cli("convert", old, "new.cs")
    assert code == 0, err
    assert read_cs(tmp_path / "new.cs")["blob/shape"].tolist() == [[32, 32]] * 6


@pytest.mark.relion
def test_relion_accepts_our_30_to_31_conversion_and_mrc_stacks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:  # type: ignore[no-untyped-def]
    """From the project directory: RELION 3.1 refuses a 3.1 file without rlnImageSize ("box sizes
    not available"), reconstructs from our conversion, and reads every image of a ``.mrc`` stack
    (named ``N@stack.mrc:mrcs``, as it requires) with our values."""
    import re
    import subprocess

    from cryoset.io.particles import write_particles
    from cryoset.testing import require_program

    recon = require_program("relion_reconstruct")
    handler = require_program("relion_image_handler")
    monkeypatch.chdir(tmp_path)
    old, images = _project_30_star(tmp_path, suffix=".mrc")
    bare = write_particles(tmp_path / "bare31.star", read_particles(old).table)  # what convert wrote before
    r = subprocess.run([recon, "--i", "bare31.star", "--o", "bare.mrc", "--ctf"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "box sizes not available" in r.stdout + r.stderr
    assert bare.exists()
    code, out, err = run_cli("convert", old, "new.star")
    assert code == 0, err
    assert "@Extract/job001/stack.mrc:mrcs" in (tmp_path / "new.star").read_text()
    r = subprocess.run([recon, "--i", "new.star", "--o", "new.mrc", "--ctf", "--ctf_phase_flipped"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "new.mrc").exists()
    r = subprocess.run([handler, "--i", "new.star", "--stats"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = [(float(a), float(s)) for a, s in re.findall(r"avg= (\S+) stddev= (\S+)", r.stdout)]
    assert len(stats) == len(images)
    np.testing.assert_allclose([a for a, _ in stats], images.mean(axis=(1, 2)), atol=1e-4)
    np.testing.assert_allclose([s for _, s in stats], images.std(axis=(1, 2)), rtol=1e-3)
