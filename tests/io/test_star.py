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
from cryoset.io.star import LOOP_ATTR, read_star, write_star
from cryoset.testing import require_program, require_shared_data


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
        @property
        def columns(self):  # type: ignore[override]
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
