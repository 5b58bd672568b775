"""Particle coordinate formats: frames agree on real data, exact round trips, bounds, detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryoset.errors import InputError
from cryoset.io.coords import FORMATS, detect_format, read_coords, write_coords
from cryoset.io.cryosparc import write_cs
from cryoset.picking.match import match_counts, match_picks
from cryoset.provenance import make_provenance, read_provenance
from cryoset.testing import require_program, require_shared_data

MIC = "Falcon_2012_06_12-14_33_35_0"
SHAPE = (4096, 4096)
TRUTH_DIAMETER_PX = 108.0
CANON = ["micrograph", "x_px", "y_px", "score", "diameter_px"]


# --------------------------------------------------------------------------------------
# EMPIAR-10017: six pickers and the CryoPPP truth land in one frame
# --------------------------------------------------------------------------------------


def _empiar_10017() -> Path:
    return require_shared_data("coordinates", "empiar_10017")


def _xy(df: pd.DataFrame) -> np.ndarray:
    return df[["x_px", "y_px"]].to_numpy()


def _recall_precision(picks: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    m, n, k = match_counts(picks, truth, 0.5 * TRUTH_DIAMETER_PX)
    return m / k, m / n


@pytest.mark.shared_data
def test_six_pickers_land_in_the_cryoppp_truth_frame() -> None:
    d = _empiar_10017()
    truth = read_coords(d / f"cryoppp_groundtruth_{MIC}.csv", micrograph_shape=SHAPE)
    assert len(truth) == 629 and truth.attrs["format"] == "cryoppp"
    assert np.all(truth["diameter_px"] == TRUTH_DIAMETER_PX)
    t = _xy(truth)
    sources = {
        "crYOLO (.box)": (f"repic_crYOLO_{MIC}.box", 0.95, 0.80),
        "Topaz (.box)": (f"repic_topaz_{MIC}.box", 0.85, 0.65),
        "CASSPER (.star)": (f"cassper_{MIC}.star", 0.75, 0.83),
        "crYOLO (.star)": (f"cassper_paper_crYOLO_{MIC}.star", 0.87, 0.85),
        "Gautomatch (.star)": (f"gautomatch_{MIC}.star", 0.38, 0.80),
        "DeepPicker (.box)": (f"repic_deepPicker_{MIC}.box", 0.28, 0.48),
    }
    # measured (recall, precision): crYOLO box 0.981/0.858, Topaz 0.889/0.708,
    # CASSPER 0.784/0.869, crYOLO star 0.903/0.892, Gautomatch 0.418/0.854, DeepPicker 0.324/0.535
    for name, (fname, min_recall, min_precision) in sources.items():
        picks = read_coords(d / fname, micrograph=MIC, micrograph_shape=SHAPE)
        assert picks["micrograph"].eq(MIC).all()
        recall, precision = _recall_precision(_xy(picks), t)
        assert recall >= min_recall, (name, recall)
        assert precision >= min_precision, (name, precision)


@pytest.mark.shared_data
def test_wrong_frames_score_much_lower() -> None:
    d = _empiar_10017()
    truth_ok = _xy(read_coords(d / f"cryoppp_groundtruth_{MIC}.csv", micrograph_shape=SHAPE))
    truth_unflipped = _xy(read_coords(d / f"cryoppp_groundtruth_{MIC}.csv", flip_y=False))
    for fname in (f"repic_crYOLO_{MIC}.box", f"repic_topaz_{MIC}.box", f"cassper_{MIC}.star",
                  f"cassper_paper_crYOLO_{MIC}.star"):
        picks = read_coords(d / fname)
        good, _ = _recall_precision(_xy(picks), truth_ok)
        flipped, _ = _recall_precision(_xy(picks), truth_unflipped)
        assert flipped < 0.45 and good > flipped + 0.3, (fname, good, flipped)
        if fname.endswith(".box"):  # the corner taken as the centre
            corner = _xy(picks) - picks[["box_size_px"]].to_numpy() / 2.0
            as_corner, _ = _recall_precision(corner, truth_ok)
            assert as_corner < 0.5 and good > as_corner + 0.4, (fname, good, as_corner)


@pytest.mark.shared_data
def test_box_and_star_pickers_agree_without_the_truth() -> None:
    # crYOLO's own .box (corner) and the crYOLO STAR (centre) of the same micrograph agree
    # one-to-one: the corner → centre conversion is right independently of CryoPPP's flip.
    d = _empiar_10017()
    box = _xy(read_coords(d / f"repic_crYOLO_{MIC}.box"))
    star = _xy(read_coords(d / f"cassper_paper_crYOLO_{MIC}.star"))
    m, n_star, _ = match_counts(star, box, 0.5 * TRUTH_DIAMETER_PX)
    assert m / n_star > 0.98


@pytest.mark.shared_data
def test_project_csv_is_read_as_is() -> None:
    coords = require_shared_data("micrographs", "empiar_10028", "coords")
    path = sorted(coords.glob("*.csv"))[0]
    raw = pd.read_csv(path)
    df = read_coords(path, micrograph_shape=(1024, 1024))
    assert df.attrs["format"] == "csv"
    np.testing.assert_array_equal(df["x_px"], raw["x_px"])
    np.testing.assert_array_equal(df["y_px"], raw["y_px"])
    assert (df["diameter_px"] == 56).all() and df["micrograph"].eq(path.stem).all()


def test_cryoppp_needs_the_height_to_unflip(tmp_path: Path) -> None:
    p = tmp_path / "truth.csv"
    p.write_text("X-Coordinate,Y-Coordinate,Diameter\n10,20,50\n")
    with pytest.raises(InputError, match="micrograph shape"):
        read_coords(p)
    df = read_coords(p, micrograph_shape=(100, 200))
    assert (df["x_px"][0], df["y_px"][0], df["diameter_px"][0]) == (10.0, 79.0, 50.0)
    assert read_coords(p, flip_y=False)["y_px"][0] == 20.0


def test_cryovirusdb_particle_csv_names_its_micrographs(tmp_path: Path) -> None:
    p = tmp_path / "particles.csv"
    p.write_text(
        "Micrographs Filename,X-Coordinate,Y-Coordinate,Diameter,Angle-Psi,Origin X (Ang),"
        "Origin Y (Ang),Defocus U,Defocus V,Defocus Angle,Phase Shift,CTF B Factor,"
        "Optics Group,Class Number\n"
        "J1/a.mrc,10,20,50,30.5,1.5,-2.5,20000,19000,45,0,0,1,1\n"
        "J1/b.mrc,11,21,50,31.5,1.5,-2.5,21000,19500,45,0,0,1,1\n"
    )
    df = read_coords(p, micrograph_shape=(100, 200))
    assert df["micrograph"].tolist() == ["a.mrc", "b.mrc"]
    assert df["y_px"].tolist() == [79.0, 78.0] and df["psi_deg"].tolist() == [30.5, 31.5]
    assert df["shift_y_a"].tolist() == [-2.5, -2.5] and df["defocus_u_a"].tolist() == [20000, 21000]
    assert read_coords(p, micrograph="b.mrc", micrograph_shape=(100, 200))["x_px"].tolist() == [11.0]


# --------------------------------------------------------------------------------------
# bounds
# --------------------------------------------------------------------------------------


def test_outside_picks_strict_error_and_permissive_drop(tmp_path: Path) -> None:
    p = tmp_path / "mic.box"
    # centres (60, 70) inside; (1000, 70) and (60, -200) outside a 500×400 (ny×nx) micrograph
    p.write_text("10 20 100 100 0.5\n950 20 100 100 0.6\n10 -250 100 100 0.7\n")
    with pytest.raises(InputError) as info:
        read_coords(p, micrograph_shape=(500, 400))
    msg = str(info.value)
    assert str(p) in msg and "2 pick(s)" in msg and "row 2" in msg and "x_px=1000" in msg
    df = read_coords(p, micrograph_shape=(500, 400), permissive=True)
    assert df.attrs["dropped_outside"] == 2
    assert df[["x_px", "y_px", "score"]].values.tolist() == [[60.0, 70.0, 0.5]]
    # the edge: pixel area [-0.5, n - 0.5] plus half a pixel of slack
    edge = pd.DataFrame({"micrograph": "m", "x_px": [-1.0, 399.5], "y_px": [0.0, 499.0]})
    q = write_coords(tmp_path / "edge.star", edge)
    assert len(read_coords(q, micrograph_shape=(500, 400))) == 2
    with pytest.raises(InputError, match="outside"):
        write_coords(tmp_path / "bad.star", edge.assign(x_px=[-1.01, 0.0]), micrograph_shape=(500, 400))


def test_cs_bounds_use_the_shape_in_the_file(tmp_path: Path) -> None:
    picks = pd.DataFrame({"micrograph": "a.mrc", "x_px": [10.0, 20.0], "y_px": [5.0, 6.0]})
    p = write_coords(tmp_path / "p.cs", picks, micrograph_shape=(64, 128))
    arr = np.load(p)
    arr["location/center_x_frac"][1] = 1.5  # x = 192 > 128
    write_cs(p, arr)
    with pytest.raises(InputError, match="1 pick"):
        read_coords(p)
    assert read_coords(p, permissive=True).attrs["dropped_outside"] == 1


# --------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------


def _table(n: int, rng: np.random.Generator, micrographs: tuple[str, ...] = ("mic_001.mrc",)) -> pd.DataFrame:
    # multiples of 1/8 px and scores representable in float32: every format is exact
    return pd.DataFrame(
        {
            "micrograph": [micrographs[i % len(micrographs)] for i in range(n)],
            "x_px": rng.integers(0, 8 * 4095, n) / 8.0,
            "y_px": rng.integers(0, 8 * 2000, n) / 8.0,
            "score": rng.integers(-512, 512, n) / 64.0,
            "diameter_px": rng.integers(8, 400, n) / 2.0,
        }
    )


SHAPE_RT = (2048, 4096)  # non-square (catches an nx/ny swap), powers of two (exact cs fractions)
# which canonical columns each format holds
HOLDS = {
    "star": ["micrograph", "x_px", "y_px", "score"],
    "box": ["x_px", "y_px", "score"],
    "csv": ["x_px", "y_px", "score", "diameter_px"],
    "cryoppp": ["x_px", "y_px", "diameter_px"],
    "topaz": ["micrograph", "x_px", "y_px", "score"],
    "cbox": ["x_px", "y_px", "score", "diameter_px"],
    "cs": ["micrograph", "x_px", "y_px", "score"],
}
SUFFIX = {"star": ".star", "box": ".box", "csv": ".csv", "cryoppp": ".csv", "topaz": ".txt",
          "cbox": ".cbox", "cs": ".cs"}


def _round_trip(tmp_path: Path, fmt: str, picks: pd.DataFrame, name: str = "rt") -> pd.DataFrame:
    path = tmp_path / f"{name}{SUFFIX[fmt]}"
    kwargs = {"box_size_px": 64.0} if fmt in ("box", "cbox") else {}
    write_coords(path, picks, fmt=fmt if fmt == "cryoppp" else None, micrograph_shape=SHAPE_RT, **kwargs)
    mic = str(picks["micrograph"].iloc[0]) if picks["micrograph"].nunique() == 1 else None
    back = read_coords(path, micrograph=mic if fmt not in ("star", "topaz", "cs") else None,
                       micrograph_shape=SHAPE_RT)
    assert back.attrs["format"] == fmt  # auto-detected from suffix / content
    return back


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format(tmp_path: Path, fmt: str, rng: np.random.Generator) -> None:
    picks = _table(50, rng)
    back = _round_trip(tmp_path, fmt, picks)
    assert list(back.columns[:5]) == CANON
    pd.testing.assert_frame_equal(back[HOLDS[fmt]], picks[HOLDS[fmt]], check_exact=True)
    assert back["micrograph"].eq("mic_001.mrc").all()
    for col in set(CANON) - set(HOLDS[fmt]) - {"micrograph"}:
        assert back[col].isna().all()


@pytest.mark.parametrize("fmt", ["star", "topaz", "cs", "csv"])
def test_round_trip_several_micrographs(tmp_path: Path, fmt: str, rng: np.random.Generator) -> None:
    picks = _table(30, rng, micrographs=("a.mrc", "b.mrc", "c.mrc"))
    back = _round_trip(tmp_path, fmt, picks)
    cols = sorted(set(HOLDS[fmt]) | {"micrograph"})
    pd.testing.assert_frame_equal(back[cols], picks[cols], check_exact=True)
    path = tmp_path / f"rt{SUFFIX[fmt]}"
    only_b = read_coords(path, micrograph="b.mrc")
    assert len(only_b) == 10 and only_b["micrograph"].eq("b.mrc").all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(FORMATS),
    xs=st.lists(st.integers(0, 8 * 4095), min_size=0, max_size=20),
    data=st.data(),
)
def test_round_trip_property(tmp_path: Path, fmt: str, xs: list[int], data: st.DataObject) -> None:
    n = len(xs)
    ys = data.draw(st.lists(st.integers(0, 8 * 2000), min_size=n, max_size=n))
    scores = data.draw(st.lists(st.integers(-2**20, 2**20), min_size=n, max_size=n))
    picks = pd.DataFrame(
        {
            "micrograph": pd.Series(["m.mrc"] * n, dtype=str),
            "x_px": np.asarray(xs, dtype=np.float64) / 8.0,
            "y_px": np.asarray(ys, dtype=np.float64) / 8.0,
            "score": np.asarray(scores, dtype=np.float64) / 1024.0,
            "diameter_px": np.full(n, 100.0),
        }
    )
    back = _round_trip(tmp_path, fmt, picks, name=f"prop_{fmt}")
    assert len(back) == n
    if n:
        pd.testing.assert_frame_equal(back[HOLDS[fmt]], picks[HOLDS[fmt]], check_exact=True)


def test_round_trip_arbitrary_floats_centre_formats(tmp_path: Path, rng: np.random.Generator) -> None:
    picks = pd.DataFrame({"micrograph": "m", "x_px": rng.uniform(0, 4000, 40),
                          "y_px": rng.uniform(0, 2000, 40), "score": rng.normal(size=40),
                          "diameter_px": rng.uniform(10, 300, 40)})
    for fmt in ("star", "csv", "topaz"):  # centres stored as text: bit-exact
        back = _round_trip(tmp_path, fmt, picks, name=f"float_{fmt}")
        pd.testing.assert_frame_equal(back[HOLDS[fmt]], picks[HOLDS[fmt]], check_exact=True)
    for fmt in ("box", "cbox"):  # corner = centre - size/2 costs at most an ulp
        back = _round_trip(tmp_path, fmt, picks, name=f"float_{fmt}")
        np.testing.assert_allclose(back[["x_px", "y_px"]], picks[["x_px", "y_px"]], rtol=0, atol=1e-9)
    back = _round_trip(tmp_path, "cs", picks, name="float_cs")  # float32 fractions
    np.testing.assert_allclose(back[["x_px", "y_px"]], picks[["x_px", "y_px"]], rtol=0, atol=5e-4)


def test_star_keeps_class_psi_and_source_columns(tmp_path: Path) -> None:
    p = tmp_path / "mics.star"
    p.write_text(
        "# version 30001\n\ndata_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"
        "_rlnClassNumber #3\n_rlnAnglePsi #4\n_rlnAutopickFigureOfMerit #5\n"
        "_rlnMicrographName #6\n_rlnGroupNumber #7\n"
        "100.5 200 2 45.0 0.75 MotionCorr/job002/Movies/a.mrc 3\n"
        "300 400 -999 -999.0 -999.0 MotionCorr/job002/Movies/b.mrc 4\n"
    )
    df = read_coords(p)
    assert df["micrograph"].tolist() == ["a.mrc", "b.mrc"]
    assert df["class_number"].tolist() == [2, -999]
    assert df["psi_deg"][0] == 45.0 and np.isnan(df["psi_deg"][1]) and np.isnan(df["score"][1])
    assert df["rlnGroupNumber"].tolist() == [3, 4]
    out = write_coords(tmp_path / "out.star", df, provenance=make_provenance("test", {"a": 1}))
    assert "cryoset provenance" in out.read_text()
    again = read_coords(out)
    pd.testing.assert_frame_equal(again, df, check_exact=True)


def test_cbox_star_format_as_cryolo_writes_it(tmp_path: Path) -> None:
    p = tmp_path / "mic.cbox"
    p.write_text(
        "\ndata_global\n\n_cbox_format_version 1.0\n\ndata_cryolo\n\nloop_\n"
        + "".join(f"_{c} #{i}\n" for i, c in enumerate(
            ["CoordinateX", "CoordinateY", "CoordinateZ", "Width", "Height", "Depth", "EstWidth",
             "EstHeight", "Confidence", "NumBoxes", "Angle"], start=1))
        + "2.0\t3695.0\t<NA>\t220.0\t220.0\t<NA>\t197.0\t199.0\t0.94\t<NA>\t<NA>\n"
        + "100.0\t50.0\t<NA>\t220.0\t220.0\t<NA>\t180.0\t181.0\t0.51\t<NA>\t<NA>\n"
        + "\ndata_cryolo_include\n\nloop_\n_slice_index #1\n"
    )
    assert detect_format(p) == "cbox"
    df = read_coords(p)
    assert df[["x_px", "y_px", "score", "diameter_px"]].values.tolist() == [
        [112.0, 3805.0, 0.94, 197.0], [210.0, 160.0, 0.51, 180.0]]
    assert df["box_size_px"].tolist() == [220.0, 220.0] and df["CoordinateZ"].isna().all()


def test_old_cbox_and_topaz_text(tmp_path: Path) -> None:
    old = tmp_path / "old.cbox"
    old.write_text("10\t20\t100\t100\t0.9\t80\t82\n")
    df = read_coords(old)
    assert df[["x_px", "y_px", "score", "diameter_px"]].values.tolist() == [[60.0, 70.0, 0.9, 80.0]]
    topaz = tmp_path / "picks.txt"
    topaz.write_text("image_name\tx_coord\ty_coord\tscore\nmic1\t10\t20\t-1.5\nmic2\t30\t40\t2.25\n")
    df = read_coords(topaz)
    assert df[["micrograph", "x_px", "y_px", "score"]].values.tolist() == [
        ["mic1", 10.0, 20.0, -1.5], ["mic2", 30.0, 40.0, 2.25]]


def test_cs_fields_and_provenance_sidecar(tmp_path: Path) -> None:
    picks = pd.DataFrame({"micrograph": "x.mrc", "x_px": [1024.0], "y_px": [512.0], "score": [0.25]})
    p = write_coords(tmp_path / "picks.cs", picks, micrograph_shape=(2048, 4096),
                     provenance=make_provenance("test"))
    arr = np.load(p)
    assert arr["location/center_x_frac"][0] == np.float32(0.25)
    assert arr["location/center_y_frac"][0] == np.float32(0.25)
    assert arr["location/micrograph_shape"][0].tolist() == [2048, 4096]
    assert read_provenance(p)["command"] == "test"


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("empty.dat", "", "empty"),
        ("empty.csv", "", "empty"),
        ("blank.star", "\n\n", "empty"),
        ("bad.box", "10 20 abc 100\n", "non-numeric"),
        ("short.box", "10 20 30\n", "3 values"),
        ("nocoords.star", "data_\nloop_\n_rlnImageName #1\na.mrcs\n", "rlnCoordinateX"),
        ("other.csv", "a,b\n1,2\n", "x_px"),
        ("mystery.dat", "hello world\n", "unknown coordinate format"),
        ("bad.txt", "image_name\tx_coord\ty_coord\tscore\nm\t1\t2\n", "fields"),
    ],
)
def test_bad_files_raise_input_error(tmp_path: Path, name: str, text: str, match: str) -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        read_coords(p)


def test_empty_box_files_hold_no_picks(tmp_path: Path) -> None:
    for name in ("none.box", "none.cbox"):
        p = tmp_path / name
        p.write_text("")
        df = read_coords(p)
        assert len(df) == 0 and list(df.columns[:5]) == CANON


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_coords(tmp_path / "missing.star")
    p = tmp_path / "m.box"
    p.write_text("1 2 3 4\n")
    with pytest.raises(InputError, match="unknown coordinate format"):
        read_coords(p, fmt="xyz")
    picks = pd.DataFrame({"micrograph": ["a", "b"], "x_px": [1.0, 2.0], "y_px": [1.0, 2.0]})
    with pytest.raises(InputError, match="2 micrographs"):
        write_coords(tmp_path / "o.box", picks, box_size_px=10)
    with pytest.raises(InputError, match="box size"):
        write_coords(tmp_path / "o.box", picks.iloc[:1])
    with pytest.raises(InputError, match="micrograph shape"):
        write_coords(tmp_path / "o.cs", picks)
    with pytest.raises(InputError, match="suffix"):
        write_coords(tmp_path / "o.xyz", picks)
    assert not (tmp_path / "o.box").exists() and not (tmp_path / "o.cs").exists()


# --------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------


def test_match_picks_is_one_to_one_and_maximal() -> None:
    # greedy nearest-first would pair pick 0 with truth 1 (distance 1) and leave pick 1
    # unmatched; the assignment pairs 0↔0 and 1↔1.
    picks = np.array([[0.0, 0.0], [2.0, 0.0]])
    truth = np.array([[-1.5, 0.0], [1.0, 0.0]])
    pairs = match_picks(picks, truth, 1.6)
    assert pairs.tolist() == [[0, 0], [1, 1]]
    assert match_picks(picks, truth, 0.1).shape == (0, 2)
    assert match_picks(np.zeros((0, 2)), truth, 1.0).shape == (0, 2)
    # duplicates: one truth particle matches one pick only
    assert len(match_picks([[0, 0], [0, 0], [0, 0]], [[0, 0]], 1.0)) == 1
    with pytest.raises(ValueError):
        match_picks(picks, truth, 0.0)


def test_match_picks_against_brute_force(rng: np.random.Generator) -> None:
    from itertools import permutations

    for _ in range(20):
        p = rng.uniform(0, 10, (4, 2))
        t = rng.uniform(0, 10, (4, 2))
        d = np.linalg.norm(p[:, None] - t[None], axis=2)
        best = max(sum(d[i, perm[i]] <= 3.0 for i in range(4)) for perm in permutations(range(4)))
        assert len(match_picks(p, t, 3.0)) == best


# --------------------------------------------------------------------------------------
# agreement with RELION
# --------------------------------------------------------------------------------------

_MICS_STAR = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
opticsGroup1 1 2.0 300 2.7 0.1

# version 30001

data_micrographs

loop_
_rlnMicrographName #1
_rlnOpticsGroup #2
mic1.mrc 1
"""


@pytest.mark.relion
def test_relion_extracts_boxes_centred_on_our_star_coordinates(tmp_path: Path) -> None:
    import subprocess

    import mrcfile

    exe = require_program("relion_preprocess")
    ny, nx, box = 200, 256, 32
    centres = [(60.0, 50.0), (181.0, 143.0), (17.0, 170.0)]  # (x_px, y_px), asymmetric
    image = np.zeros((ny, nx), dtype=np.float32)
    for k, (x, y) in enumerate(centres, start=1):
        image[int(y), int(x)] = 10.0 * k  # canonical: image[y_px, x_px]
    with mrcfile.new(tmp_path / "mic1.mrc") as mrc:
        mrc.set_data(image)
        mrc.voxel_size = 2.0
    picks = pd.DataFrame({"micrograph": "mic1.mrc", "x_px": [c[0] for c in centres],
                          "y_px": [c[1] for c in centres]})
    write_coords(tmp_path / "mic1_pick.star", picks, micrograph_shape=(ny, nx))
    (tmp_path / "mics.star").write_text(_MICS_STAR)
    subprocess.run(
        [exe, "--i", "mics.star", "--coord_dir", "./", "--coord_suffix", "_pick.star",
         "--part_dir", "Ex/", "--part_star", "parts.star", "--extract", "--extract_size", str(box)],
        cwd=tmp_path, check=True, capture_output=True, timeout=120,
    )
    stack = mrcfile.read(tmp_path / "Ex" / "mic1.mrcs")
    assert stack.shape == (3, box, box)
    for k, particle in enumerate(stack, start=1):
        # RELION puts our centre on its box centre (box/2, box/2): 0-based, no flip
        assert np.unravel_index(np.argmax(particle), particle.shape) == (box // 2, box // 2)
        assert particle.max() == 10.0 * k
    back = read_coords(tmp_path / "parts.star", micrograph_shape=(ny, nx))
    assert back["micrograph"].eq("mic1.mrc").all()
    np.testing.assert_array_equal(back[["x_px", "y_px"]].to_numpy(), np.asarray(centres))


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name",
    ["relion31.star", "relion31.6opticsgroups.star", "sample_particles_relion30.star",
     "rln3.1_data_style.star", "one_loop.star"],
)
def test_real_relion_star_files_round_trip(tmp_path: Path, name: str) -> None:
    path = require_shared_data("star", "relion", name)
    df = read_coords(path)
    assert len(df) > 0 and df.attrs["format"] == "star"
    assert (df["micrograph"] == df["rlnMicrographName"].map(lambda s: s.rsplit("/", 1)[-1])).all()
    again = read_coords(write_coords(tmp_path / name, df))
    pd.testing.assert_frame_equal(again, df, check_exact=True, check_like=True)
