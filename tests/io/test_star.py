"""Tests of the low-level STAR reader/writer, including RELION-written files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoset.errors import InputError
from cryoset.io import star as star_module
from cryoset.io.star import LOOP_ATTR, read_star, write_star
from cryoset.testing import (
    relion_particle_blocks,
    relion_style_star_text,
    require_program,
    require_shared_data,
)


def _all_star_files() -> list[str]:
    from cryoset.testing import shared_data_root

    root = shared_data_root() / "star" / "relion"
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*.star")) if root.exists() else []
    return names or ["relion31.star"]


def _assert_blocks_equal(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert list(a) == list(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
        assert a[name].attrs.get(LOOP_ATTR) == b[name].attrs.get(LOOP_ATTR)


def test_reads_loops_pairs_quotes_and_comments(tmp_path: Path) -> None:
    text = """# a comment
data_general
_rlnFinalResolution   3.5   # trailing comment
_rlnUnfilteredMapHalf1  "half 1.mrc"

data_parts
loop_
_rlnImageName #1
_rlnClassNumber #2
_rlnDefocusU #3
_rlnMicrographName #4
000001@a.mrcs 1 1.5e4 0001
000002@a.mrcs 2 -inf 'mic two.mrc'
"""
    path = tmp_path / "x.star"
    path.write_text(text)
    blocks = read_star(path)
    assert list(blocks) == ["general", "parts"]
    general = blocks["general"]
    assert general.attrs[LOOP_ATTR] is False
    assert general["rlnFinalResolution"].tolist() == [3.5]
    assert general["rlnUnfilteredMapHalf1"].tolist() == ["half 1.mrc"]
    parts = blocks["parts"]
    assert parts["rlnClassNumber"].dtype == np.int64
    assert parts["rlnDefocusU"].tolist() == [15000.0, -np.inf]
    # labels containing "Name" stay text even when they look like numbers
    assert parts["rlnMicrographName"].tolist() == ["0001", "mic two.mrc"]
    out = write_star(tmp_path / "y.star", blocks, comment="made by a test\nsecond line")
    assert out.read_text().startswith("# made by a test\n# second line\n")
    _assert_blocks_equal(blocks, read_star(out))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("loop_\n_rlnA\n1\n", "before the first data_"),
        ("data_x\nloop_\n_rlnA #1\n_rlnB #2\n1 2 3\n", "line 5: 3 values for 2 columns"),
        ("data_x\nloop_\n_rlnA\n_rlnA\n1 2\n", "repeated"),
        ("data_x\n_rlnA 1\ndata_x\n_rlnA 2\n", "more than once"),
        ("# nothing\n", "no data_ block"),
        ("data_x\n_rlnA\n", "has no value"),
    ],
)
def test_malformed_star_raises_naming_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.star"
    path.write_text(text)
    with pytest.raises(InputError, match=needle) as info:
        read_star(path)
    assert info.value.path == str(path)


def test_permissive_skips_ragged_rows_and_renames_repeated_blocks(tmp_path: Path) -> None:
    path = tmp_path / "bad.star"
    path.write_text("data_x\nloop_\n_rlnA #1\n_rlnB #2\n1 2\n1 2 3\n4 5\ndata_x\n_rlnA 1\n")
    blocks = read_star(path, permissive=True)
    assert list(blocks) == ["x", "x~2"]
    assert blocks["x"]["rlnA"].tolist() == [1, 4]
    assert blocks["x"].attrs["star_skipped_lines"] == [6]


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.star"
    path.write_bytes(b"\x93NUMPY\x00\x00data_")
    with pytest.raises(InputError, match="binary"):
        read_star(path)


def test_write_is_atomic_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "keep.star"
    path.write_text("data_old\n_rlnA 1\n")
    class Boom(pd.DataFrame):
        @property  # type: ignore[misc]
        def columns(self) -> pd.Index:  # type: ignore[override,misc]
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_star(path, {"new": Boom({"rlnA": [1]})})
    assert path.read_text() == "data_old\n_rlnA 1\n"
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", _all_star_files())
def test_every_shared_star_file_round_trips_exactly(name: str, tmp_path: Path) -> None:
    path = require_shared_data("star", "relion", name)
    blocks = read_star(path)
    assert blocks and all(len(df.columns) > 0 for df in blocks.values())
    _assert_blocks_equal(blocks, read_star(write_star(tmp_path / "rt.star", blocks)))


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
words = st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]) | st.sampled_from(
    "./-@_ "), min_size=1, max_size=12).filter(lambda s: s.strip() == s and s[0] not in "#_'\"")


@settings(max_examples=60, deadline=None)
@given(
    floats=st.lists(finite, min_size=1, max_size=8),
    ints=st.integers(min_value=-(2**62), max_value=2**62),
    text=words,
)
def test_property_write_read_is_exact(floats: list[float], ints: int, text: str) -> None:
    import tempfile

    n = len(floats)
    df = pd.DataFrame({
        "rlnDefocusU": np.array(floats, dtype=np.float64),
        "rlnClassNumber": np.full(n, ints, dtype=np.int64),
        "rlnMicrographName": pd.Series([text] * n, dtype=str),
    })
    with tempfile.TemporaryDirectory() as d:
        back = read_star(write_star(Path(d) / "p.star", {"particles": df}))["particles"]
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["rlnDefocusU"].to_numpy().tobytes() == df["rlnDefocusU"].to_numpy().tobytes()


@pytest.mark.relion
def test_relion_reads_our_star_and_we_read_relions(tmp_path: Path) -> None:
    """RELION's own star handler round-trips a file we wrote; we read what RELION writes."""
    exe = require_program("relion_star_handler")
    src = require_shared_data("star", "relion", "relion31.6opticsgroups.star")
    blocks = read_star(src)
    ours = write_star(tmp_path / "ours.star", blocks, version=30001)
    subprocess.run([exe, "--i", ours.name, "--o", "relion.star"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=60)
    theirs = read_star(tmp_path / "relion.star")
    assert list(theirs) == ["optics", "particles"]
    for name in theirs:
        assert list(theirs[name].columns) == list(blocks[name].columns)
        assert len(theirs[name]) == len(blocks[name])
        for column in blocks[name].columns:
            a, b = blocks[name][column], theirs[name][column]
            if pd.api.types.is_numeric_dtype(a):
                np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), rtol=1e-6, atol=1e-6)
            else:
                assert b.tolist() == a.tolist()


# Bulk loop parsing -----------------------------------------------------------------------
# read_star parses big loop bodies with pandas' C parser; these tests pin that the result is
# identical (values, float bits, dtypes, attrs, errors) to reading every line one by one.


def _assert_identical(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert list(a) == list(b)
    for name in a:
        x, y = a[name], b[name]
        pd.testing.assert_frame_equal(x, y, check_exact=True)
        assert x.dtypes.tolist() == y.dtypes.tolist()
        assert x.attrs == y.attrs
        for column in x.columns:
            if x[column].dtype.kind in "if":
                assert x[column].to_numpy().tobytes() == y[column].to_numpy().tobytes(), column


def _both_paths(path: Path, permissive: bool = False) -> dict[str, pd.DataFrame]:
    """Read ``path`` in bulk and line by line; assert they agree; return the bulk result."""
    bulk = star_module._read_star(path, permissive=permissive, min_bulk=0)
    _assert_identical(bulk, star_module._read_star(path, permissive=permissive, min_bulk=-1))
    return bulk


@pytest.fixture
def bulk_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, for every loop body offered to the bulk parser, whether it took it."""
    calls: list[bool] = []
    original = star_module._loop_columns

    def spy(data: bytes, labels: list[str]):  # type: ignore[no-untyped-def]
        result = original(data, labels)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(star_module, "_loop_columns", spy)
    return calls


def test_large_particle_file_is_read_in_bulk_and_round_trips_bit_exactly(
    tmp_path: Path, rng: np.random.Generator, bulk_calls: list[bool]
) -> None:
    blocks = relion_particle_blocks(rng, 3000, wide_exponents=True)
    path = write_star(tmp_path / "particles.star", blocks, version=30001)
    back = read_star(path)
    assert bulk_calls == [True]  # the 3-row optics loop is small: read line by line
    for name in blocks:
        pd.testing.assert_frame_equal(back[name], blocks[name], check_exact=True)
        for column in blocks[name].columns:
            if blocks[name][column].dtype.kind == "f":
                assert back[name][column].to_numpy().tobytes() == blocks[name][column].to_numpy().tobytes()
    _assert_identical(back, star_module._read_star(path, permissive=False, min_bulk=-1))


def test_relion_layout_is_read_in_bulk_like_line_by_line(
    tmp_path: Path, rng: np.random.Generator, bulk_calls: list[bool]
) -> None:
    blocks = relion_particle_blocks(rng, 500, wide_exponents=True)
    path = tmp_path / "relion.star"
    path.write_text(relion_style_star_text(blocks))
    back = _both_paths(path)
    assert bulk_calls == [True, True]
    got = back["particles"]
    assert got["rlnClassNumber"].dtype == np.int64
    assert got["rlnImageName"].tolist() == blocks["particles"]["rlnImageName"].tolist()
    expected = [float(f"{v:12.6f}") for v in blocks["particles"]["rlnDefocusU"]]
    assert got["rlnDefocusU"].tolist() == expected


def _halfway_cases(rng: np.random.Generator, n: int) -> list[str]:
    """Decimal strings at, just above and just below midpoints between adjacent doubles."""
    from decimal import Decimal, getcontext

    getcontext().prec = 1200
    out = []
    for bits in rng.integers(0, 0x7FEFFFFFFFFFFFFF, n, dtype=np.int64):
        x = float(np.int64(bits).view(np.float64))
        mid = (Decimal(x) + Decimal(float(np.nextafter(x, np.inf)))) / 2
        tiny = Decimal(10) ** (mid.adjusted() - 40)
        out += [f"{mid:e}", f"{mid + tiny:e}", f"{mid - tiny:e}", repr(x), f"{x:.17g}"]
    return out


def test_bulk_floats_are_exactly_pythons_float(
    tmp_path: Path, rng: np.random.Generator, bulk_calls: list[bool]
) -> None:
    """Correct rounding on hard inputs: halfway cases, long mantissas, subnormals, overflow."""
    tokens = [
        *_halfway_cases(rng, 400),
        "2.4703282292062327e-324", "2.4703282292062328e-324", "4.9406564584124654e-324",
        "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308",
        "1e400", "-1e400", "1e-400", "-1e-400", "-0", "-0.0", "+.5e-3", "1.", ".5", "007.50",
        "0.1000000000000000055511151231257827021181583404541015625", "1" * 60, "9" * 30 + ".5",
        "inf", "-Infinity", "+INF", "12345678901234567891",
    ]
    path = tmp_path / "floats.star"
    path.write_text("data_f\nloop_\n_rlnDefocusU\n" + "\n".join(tokens) + "\n")
    got = _both_paths(path)["f"]["rlnDefocusU"]
    assert bulk_calls == [True]
    assert got.dtype == np.float64
    assert got.to_numpy().tobytes() == np.array([float(t) for t in tokens]).tobytes()


def test_ints_text_and_special_values_agree_with_line_by_line(
    tmp_path: Path, bulk_calls: list[bool]
) -> None:
    rows = [
        # int    big int               nan-ish  bool   text-looking-number  underscore
        ("+5", "9223372036854775807", "nan", "True", "0001", "1_000"),
        ("-0", "9223372036854775808", "1.5", "False", "0002", "2"),
        ("007", "1", "-inf", "True", "12", "3"),
    ]
    path = tmp_path / "kinds.star"
    labels = ["rlnA", "rlnB", "rlnC", "rlnD", "rlnMicrographName", "rlnE"]
    path.write_text("data_k\nloop_\n" + "".join(f"_{lab}\n" for lab in labels)
                    + "".join(" ".join(r) + "\n" for r in rows))
    got = _both_paths(path)["k"]
    assert bulk_calls == [True]
    assert got["rlnA"].tolist() == [5, 0, 7] and got["rlnA"].dtype == np.int64
    assert got["rlnB"].dtype == np.float64  # beyond int64: floats, as float() gives
    assert np.isnan(got["rlnC"][0]) and got["rlnC"][2] == -np.inf
    assert got["rlnD"].tolist() == ["True", "False", "True"]  # text, never booleans
    assert got["rlnMicrographName"].tolist() == ["0001", "0002", "12"]
    assert got["rlnE"].tolist() == [1000, 2, 3]  # Python's int() accepts 1_000


@pytest.mark.parametrize(
    ("variant", "bulk"),
    [
        ("plain", [True]),
        ("crlf", [True]),
        ("non_ascii_header", [True]),
        ("tabs_and_padding", [True]),
        ("quoted_value", [False]),
        ("comment_in_rows", [False]),
        ("non_ascii_row", [False]),
        ("unit_separator", [False]),
        ("vertical_tab", []),
    ],
)
def test_bulk_declines_what_it_cannot_read_exactly(
    tmp_path: Path, variant: str, bulk: list[bool], bulk_calls: list[bool]
) -> None:
    rows = [f"{i}@s.mrcs {i * 0.1!r} {i} x{i}" for i in range(1, 60)]
    head = "# made by a test\ndata_p\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n_rlnClassNumber #3\n_rlnTag #4\n"
    if variant == "non_ascii_header":
        head = "# défocus en Å\n" + head
    if variant == "tabs_and_padding":
        rows = ["\t " + r.replace(" ", " \t  ") + "  " for r in rows]
    if variant == "quoted_value":
        rows[5] = "6@s.mrcs 0.6 6 'x 6'"
    if variant == "comment_in_rows":
        rows.insert(10, "   # a comment among the rows")
    if variant == "non_ascii_row":
        rows[3] = "4@s.mrcs 0.4 4 x\u00e94"
    if variant == "unit_separator":
        rows[7] = rows[7].replace(" x8", "\x1fx8")
    if variant == "vertical_tab":
        head = head.replace("loop_\n", "loop_\n\x0b\n")  # a line break to splitlines
    text = head + "\n".join(rows) + "\n\ndata_tail\n_rlnFinalResolution 3.5\n"
    path = tmp_path / "v.star"
    path.write_bytes(text.replace("\n", "\r\n").encode() if variant == "crlf" else text.encode())
    got = _both_paths(path)
    assert bulk_calls == bulk
    assert len(got["p"]) == 59 and got["tail"]["rlnFinalResolution"].tolist() == [3.5]


@pytest.mark.parametrize("permissive", [False, True])
def test_ragged_rows_and_later_errors_report_the_same_lines(tmp_path: Path, permissive: bool) -> None:
    rows = [f"{i} {i / 7!r}" for i in range(200)]
    rows[150] = "150"  # one value short: the bulk path hands the body back line by line
    text = "data_a\nloop_\n_rlnA #1\n_rlnB #2\n" + "\n".join(rows) + "\n"
    path = tmp_path / "ragged.star"
    path.write_text(text)
    if permissive:
        assert _both_paths(path, permissive=True)["a"].attrs["star_skipped_lines"] == [155]
    else:
        with pytest.raises(InputError, match="line 155: 1 values for 2 columns"):
            star_module._read_star(path, permissive=False, min_bulk=0)
    # an error after a body that was read in bulk names the right line too
    path.write_text(text.replace("\n150\n", "\n150 1.5\n") + "data_b\n_rlnZ\n")
    for min_bulk in (0, -1):
        with pytest.raises(InputError, match="line 206: label rlnZ has no value"):
            star_module._read_star(path, permissive=permissive, min_bulk=min_bulk)


_SPECIAL_TOKENS = [
    "nan", "-nan", "NaN", "inf", "-Infinity", "iNf", "+inf", "nan(1)", "infin", "1_000", "1_0.5",
    "True", "false", "TRUE", "-0", "+5", "007", "1.", ".5", "1e5", "1E+05", "1e", "e5", ".", "-",
    "+", "0x1F", "1,5", "NA", "null", "None", "18446744073709551616", "9223372036854775808",
    "-9223372036854775809", "1e400", "abc", "x_y", "000123@Particles/a.mrcs", "data_x", "loop_",
    "_rlnX",
]
_COLUMN_KINDS = {
    "int": st.integers(-(2**40), 2**40).map(str),
    "float": st.floats(width=64).map(repr),
    "number": st.one_of(st.integers(-(2**70), 2**70).map(str), st.floats(width=64).map(repr)),
    "special": st.one_of(st.sampled_from(_SPECIAL_TOKENS), st.integers(-99, 99).map(str)),
    "chars": st.text(alphabet="0123456789+-.eE_naifNIFxT", min_size=1, max_size=5),
}


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_property_bulk_equals_line_by_line(data: st.DataObject) -> None:
    import tempfile

    n_rows = data.draw(st.integers(1, 12), label="rows")
    kinds = data.draw(st.lists(st.sampled_from(sorted(_COLUMN_KINDS)), min_size=1, max_size=5))
    text_column = data.draw(st.integers(-1, len(kinds) - 1), label="Name column")
    labels = ["rlnMicrographName" if j == text_column else f"rlnV{j}" for j in range(len(kinds))]
    columns = [data.draw(st.lists(_COLUMN_KINDS[k], min_size=n_rows, max_size=n_rows)) for k in kinds]
    lines = []
    for row in zip(*columns, strict=True):
        sep = data.draw(st.sampled_from([" ", "  ", "\t", " \t "]))
        lead = data.draw(st.sampled_from(["", " ", "\t  "]))
        lines.append(lead + sep.join(row) + data.draw(st.sampled_from(["", " "])))
        if data.draw(st.booleans()):
            lines.append(data.draw(st.sampled_from(["", "   ", "\t"])))
    if data.draw(st.booleans()):  # a ragged row
        k = data.draw(st.integers(0, len(lines) - 1))
        lines[k] = lines[k] + " 7" if data.draw(st.booleans()) else lines[k].strip().rpartition(" ")[0]
    tail = data.draw(st.sampled_from(["", "data_t\n_rlnZ 1\n", "data_t\n_rlnZ\n", "loop_\n", "data_\n"]))
    text = "data_x\nloop_\n" + "".join(f"_{lab} #{i}\n" for i, lab in enumerate(labels, 1))
    text += "\n".join(lines) + "\n" + tail
    permissive = data.draw(st.booleans(), label="permissive")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.star"
        path.write_text(text)
        outcomes: list[dict[str, pd.DataFrame] | str] = []
        for min_bulk in (0, -1):
            try:
                outcomes.append(star_module._read_star(path, permissive=permissive, min_bulk=min_bulk))
            except InputError as exc:
                outcomes.append(str(exc))
    if isinstance(outcomes[0], str) or isinstance(outcomes[1], str):
        assert outcomes[0] == outcomes[1]
    else:
        _assert_identical(outcomes[0], outcomes[1])


@pytest.mark.shared_data
@pytest.mark.parametrize("name", _all_star_files())
def test_bulk_and_line_by_line_agree_on_every_shared_file(name: str) -> None:
    _both_paths(require_shared_data("star", "relion", name))
