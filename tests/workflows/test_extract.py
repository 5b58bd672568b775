"""``run_extract``'s fast path (no pandas) writes exactly the files of the table path."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.io.coords import read_coords, write_coords
from cryoset.io.images import read_image
from cryoset.io.mrc import read_stack, write_map
from cryoset.particles.extract import (
    cut_boxes,
    extract_boxes,
    extract_particles,
    normalise_background,
)
from cryoset.testing import require_shared_data
from cryoset.workflows import extract as wx
from cryoset.workflows.params import ExtractParams


def _same_outputs(a: Path, b: Path) -> None:
    """Every file equal byte for byte; provenance records equal but for their time stamp."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        x, y = (a / name).read_bytes(), (b / name).read_bytes()
        if name.endswith("provenance.json"):
            rx, ry = json.loads(x), json.loads(y)
            rx.pop("created_utc"), ry.pop("created_utc")
            assert rx == ry, name
        elif name == "particles.star":
            # line 1 is the embedded provenance record (with its time stamp)
            lx, ly = x.split(b"\n", 1), y.split(b"\n", 1)
            assert lx[1] == ly[1]
            px, py = (json.loads(line[len(b"# cryoset provenance: "):]) for line in (lx[0], ly[0]))
            px.pop("created_utc"), py.pop("created_utc")
            assert px == py
        else:
            assert x == y, name


def _both(mics: list[Path], picks: Path, tmp: Path, params: ExtractParams) -> tuple[Path, Path]:
    # the same output folder for both (its name is written in particles.star), then set aside
    out, fast, table = tmp / "out", tmp / "fast", tmp / "table"
    r1 = wx.run_extract(mics, picks, out, params, progress=False, fast=True)
    out.rename(fast)
    r2 = wx.run_extract(mics, picks, out, params, progress=False, fast=False)
    out.rename(table)
    assert (r1.particles, r1.skipped_at_edge, r1.micrographs) == (r2.particles, r2.skipped_at_edge, r2.micrographs)
    _same_outputs(fast, table)
    return fast, table


def test_fast_path_equals_table_path_on_real_micrographs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = require_shared_data("micrographs", "empiar_10028")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mrc").mkdir()
    (tmp_path / "coords").mkdir()
    mics = []
    for n in ("061_10028", "062_10028", "311_10028"):
        img = read_image(root / "images" / f"{n}.png").data
        write_map(tmp_path / "mrc" / f"{n}.mrc", img[None], 5.36)
        write_coords(tmp_path / "coords" / f"{n}.star",
                     read_coords(root / "coords" / f"{n}.csv").assign(micrograph=f"{n}.mrc"))
        mics.append(Path("mrc") / f"{n}.mrc")
    params = ExtractParams(box_px=72, invert=True, bg_radius_px=27)
    fast, _ = _both(mics, Path("coords"), tmp_path, params)
    # the particle images are the table API's (extract_particles), image for image
    for mic in mics:
        image = read_image(mic).data
        picks = read_coords(Path("coords") / f"{mic.stem}.star", micrograph_shape=image.shape)
        res = extract_particles(image, picks, 72, 5.36, invert=True, bg_radius_px=27)
        np.testing.assert_array_equal(read_stack(fast / f"{mic.stem}.mrcs").data[:], res.stack)


def _scene(tmp: Path, n_mics: int = 2, shape: tuple[int, int] = (160, 200), px: float = 2.0) -> list[Path]:
    rng = np.random.default_rng(3)
    (tmp / "mics").mkdir()
    out = []
    for k in range(n_mics):
        p = tmp / "mics" / f"mic_{k:02d}.mrc"
        write_map(p, rng.normal(size=(1, *shape)).astype(np.float32), px)
        out.append(p)
    return out


def _star(path: Path, labels: list[str], rows: Sequence[Sequence[object]]) -> None:
    text = "data_\n\nloop_\n" + "".join(f"_{lab} #{i}\n" for i, lab in enumerate(labels, 1))
    text += "".join(" ".join(str(v) for v in r) + "\n" for r in rows)
    path.write_text(text)


@pytest.mark.parametrize("variant", ["fom", "no_name", "int_coords", "diameter_downsample", "no_norm_star_paths",
                                     "one_file_for_all", "all_scores_missing", "prior_false_positives"])
def test_fast_path_equals_table_path_on_variants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  variant: str) -> None:
    monkeypatch.chdir(tmp_path)
    mics = _scene(tmp_path)
    picks = tmp_path / "picks"
    picks.mkdir()
    xy = [[100.3, 80.5], [10.0, 12.0], [150.5, 40.7], [199.0, 159.0], [57.25, 101.75]]  # two cross the edge
    params = ExtractParams(box_px=32, invert=True)
    for k, mic in enumerate(mics):
        rows = [[x + k, y] for x, y in xy]
        if variant == "fom":
            _star(picks / f"{mic.stem}.star", ["rlnCoordinateX", "rlnCoordinateY", "rlnMicrographName",
                                                "rlnAutopickFigureOfMerit"],
                  [[*r, f"mics/{mic.name}", s] for r, s in zip(rows, [0.5, -999, 1.25, 2, -9999], strict=True)])
        elif variant == "all_scores_missing":
            _star(picks / f"{mic.stem}.star", ["rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"],
                  [[*r, -999.0] for r in rows])
        elif variant in ("no_name", "prior_false_positives"):
            _star(picks / f"{mic.stem}.star", ["rlnCoordinateX", "rlnCoordinateY"], rows)
        elif variant == "int_coords":
            _star(picks / f"{mic.stem}.star", ["rlnCoordinateY", "rlnCoordinateX"],
                  [[int(r[1]), int(r[0])] for r in rows])
        elif variant == "diameter_downsample":
            _star(picks / f"{mic.stem}.star", ["rlnCoordinateX", "rlnCoordinateY"], rows)
            params = ExtractParams(diameter_a=40.0, pixel_size_out_a=3.0, bg_radius_px=5.0, voltage_kv=200,
                                   amplitude_contrast=0.07)
        elif variant == "no_norm_star_paths":
            _star(picks / f"{mic.stem}.star", ["rlnCoordinateX", "rlnCoordinateY"], rows)
            params = ExtractParams(box_px=31, norm=False, image_paths="star")
    if variant == "prior_false_positives":  # every column, whole and fractional values, empty cells,
        # a micrograph of another run (its y is unknown here), quoting
        (picks / "false_positives.csv").write_text(
            "Micrographs Filename,X-Coordinate,Y-Coordinate,Diameter,Angle-Psi,Origin X (Ang),Origin Y (Ang),"
            "Defocus U,Defocus V,Defocus Angle,Phase Shift,CTF B Factor,Optics Group,Class Number,Reason\n"
            "mic_00.mrc,12,30,40,,,,,,,,,1,,low score\n"
            "mic_01.mrc,13.25, 140.5 ,40.5,10.0,,,15000,14000.5,33,,,1,2,\"ncc, below 0.2\"\n"
            "other.mrc,1,2,,,,,,,,,,,,power\n")
    if variant == "one_file_for_all":
        picks = tmp_path / "all.star"
        _star(picks, ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"],
              [[m.name, x + k, y] for k, m in enumerate(mics) for x, y in xy])
        picks = picks.with_name("mic_00.star")  # one file named after the first micrograph holds both
        (tmp_path / "all.star").rename(picks)
        mics = mics[:1]
    fast, _ = _both(mics, picks, tmp_path, params)
    assert (fast / "particles.star").exists()


def test_inputs_the_fast_path_leaves_to_the_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    mics = _scene(tmp_path, n_mics=1)
    picks = tmp_path / "picks"
    picks.mkdir()
    params = ExtractParams(box_px=32)
    star = picks / "mic_00.star"
    # an extra column (class number): the table path keeps it, so it is the table path's job
    _star(star, ["rlnCoordinateX", "rlnCoordinateY", "rlnClassNumber"], [[100, 80, 1], [50, 60, 2]])
    assert wx._fast_plan(mics, picks, params) is None
    with pytest.raises(ValueError, match="table path"):
        wx.run_extract(mics, picks, tmp_path / "o1", params, progress=False, fast=True)
    assert wx.run_extract(mics, picks, tmp_path / "o2", params, progress=False).particles == 2
    # an earlier step's false positives with a column the fast path does not know: the table path
    _star(star, ["rlnCoordinateX", "rlnCoordinateY"], [[100, 80], [50, 60]])
    assert wx._fast_plan(mics, picks, params) is not None
    pd.DataFrame({"Micrographs Filename": ["mic_00.mrc"], "X-Coordinate": [5.0], "Y-Coordinate": [6.0],
                  "Score": [0.5], "Reason": ["low score"]}).to_csv(picks / "false_positives.csv", index=False)
    assert wx._fast_plan(mics, picks, params) is None
    fp = (wx.run_extract(mics, picks, tmp_path / "o3", params, progress=False) .out / "false_positives.csv").read_text()
    assert "low score" in fp
    (picks / "false_positives.csv").write_text("Micrographs Filename,X-Coordinate,Y-Coordinate,Reason\n"
                                               "mic_00.mrc,nan,3,low score\n")  # not a plain number
    assert wx._fast_plan(mics, picks, params) is None
    (picks / "false_positives.csv").unlink()
    # a pick off the micrograph: the automatic route reports it as the table path does, writing nothing
    _star(star, ["rlnCoordinateX", "rlnCoordinateY"], [[100, 80], [500, 60]])
    with pytest.raises(InputError) as auto:
        wx.run_extract(mics, picks, tmp_path / "o4", params, progress=False)
    with pytest.raises(InputError) as table:
        wx.run_extract(mics, picks, tmp_path / "o5", params, progress=False, fast=False)
    assert str(auto.value) == str(table.value) and "outside" in str(auto.value)
    assert not (tmp_path / "o4").exists()


def test_extract_boxes_is_the_documented_recipe_on_real_pixels() -> None:
    """Before/after: the array route equals cut → invert → normalise written out by hand, and
    the table API, bit for bit, on a real micrograph."""
    root = require_shared_data("micrographs", "empiar_10028")
    image = read_image(root / "images" / "063_10028.png").data.astype(np.float32)
    picks = read_coords(root / "coords" / "063_10028.csv")
    xy = picks[["x_px", "y_px"]].to_numpy()
    stack, kept, out_px = extract_boxes(image, xy, 72, 5.36, invert=True, bg_radius_px=27)
    boxes, kept_ref = cut_boxes(image, xy, 72)
    reference = normalise_background(-boxes, 27)
    np.testing.assert_array_equal(kept, kept_ref)
    np.testing.assert_array_equal(stack, reference)
    res = extract_particles(image, picks, 72, 5.36, invert=True, bg_radius_px=27)
    np.testing.assert_array_equal(stack, res.stack)
    assert out_px == res.pixel_size_a == 5.36


def test_the_fast_path_imports_no_pandas(tmp_path: Path) -> None:
    """A module check, not a timing: ``cryoset extract`` on plain inputs never imports pandas
    (its import alone costs more than RELION's whole extraction of a small data set)."""
    import subprocess
    import sys

    mics = _scene(tmp_path, n_mics=1)
    (tmp_path / "picks").mkdir()
    _star(tmp_path / "picks" / "mic_00.star", ["rlnCoordinateX", "rlnCoordinateY"], [[100, 80], [50, 60]])
    code = (
        "import sys; from cryoset.cli.main import main; sys.argv = ['cryoset', 'extract', "
        f"{str(mics[0])!r}, '--picks', 'picks', '--box-px', '32', '--out', 'out']\n"
        "rc = main()\nassert rc == 0, rc\n"
        "heavy = sorted(m for m in ('pandas', 'pyarrow', 'scipy', 'torch') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr
    assert (tmp_path / "out" / "particles.star").exists()


def test_pick_then_extract_takes_the_fast_path_with_the_same_files(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``cryoset pick`` output (coordinate STAR files, its false_positives.csv) on real micrographs."""
    from cryoset.workflows.pick import PickParams, run_pick

    root = require_shared_data("micrographs", "empiar_10028")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mrc").mkdir()
    mics = []
    for n in ("064_10028", "065_10028"):
        write_map(tmp_path / "mrc" / f"{n}.mrc", read_image(root / "images" / f"{n}.png").data[None], 5.36)
        mics.append(Path("mrc") / f"{n}.mrc")
    run_pick(mics, Path("picks"), PickParams(diameter_a=300.0), progress=False)
    assert (tmp_path / "picks" / "false_positives.csv").exists()
    params = ExtractParams(diameter_a=300.0, invert=True, pixel_size_out_a=8.0)
    assert wx._fast_plan(mics, Path("picks"), params) is not None
    _both(mics, Path("picks"), tmp_path, params)
