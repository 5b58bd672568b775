"""The pandas-free reader/writers of the extract command's fast path equal the full ones."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.io import coords, cryovirusdb, lean, particles, star
from cryoset.testing import require_shared_data


def _assert_same_blocks(path: Path) -> None:
    """``read_star_blocks`` and ``read_star`` give the same blocks, labels, dtypes and values."""
    full = star.read_star(path)
    mine = lean.read_star_blocks(path)
    assert list(mine) == list(full)
    for name, df in full.items():
        block = mine[name]
        assert block.labels == [str(c) for c in df.columns], name
        assert block.loop == bool(df.attrs.get(star.LOOP_ATTR, True)), name
        for label in block.labels:
            ours, theirs = block.columns[label], df[label]
            if isinstance(ours, list):
                assert not pd.api.types.is_numeric_dtype(theirs.dtype), (name, label)
                assert ours == [str(v) for v in theirs.tolist()], (name, label)
            else:
                assert ours.dtype == theirs.dtype, (name, label, ours.dtype, theirs.dtype)
                # bit-exact, NaN included
                np.testing.assert_array_equal(ours.view(np.uint64 if ours.dtype == np.float64 else np.int64),
                                              theirs.to_numpy().view(np.uint64 if ours.dtype == np.float64
                                                                     else np.int64))


def test_equals_read_star_on_every_shared_star_file() -> None:
    root = require_shared_data()
    files = sorted(root.rglob("*.star"))
    assert len(files) >= 10
    for path in files:
        _assert_same_blocks(path)


TRICKY = {
    "comments_quotes_pairs": (
        "# a comment before anything\n"
        "data_general\n\n"
        "_rlnFinalResolution   3.5   # trailing comment\n"
        "_rlnMaskName  'with space.mrc'\n"
        "_rlnNrClasses 4\n\n"
        "data_particles\n"
        "loop_\n"
        "_rlnImageName #1\n"
        "_rlnCoordinateX #2\n"
        "_rlnMicrographName #3\n"
        "_rlnClassNumber #4\n"
        "# comment between labels and rows\n"
        "000001@a.mrcs 1.5 \"mic one.mrc\" 1\n"
        "\t000002@a.mrcs   2.25 'it''s.mrc' 2   # comment after a row\n"
        "\n"
        "000003@a.mrcs 1e-3 123 3\n"
    ),
    "ints_floats_text": (
        "data_\nloop_\n_rlnA\n_rlnB\n_rlnC\n_rlnD\n_rlnE\n"
        "1 1.0 nan 99999999999999999999999 x\n"
        "-2 +3 inf 1 2\n"
        "3 .5 -inf 2 3.0\n"
    ),
    "crlf_and_blank_lines": "data_optics\r\n\r\nloop_\r\n_rlnOpticsGroup #1\r\n_rlnVoltage #2\r\n1 300\r\n2 200.5\r\n",
    "empty_loop_then_block": "data_a\nloop_\n_rlnX #1\n\ndata_b\n_rlnY 2\n",
    "names_stay_text": "data_\nloop_\n_rlnMicrographName\n_rlnOpticsGroupName\n001 1\n002 2\n",
    "no_trailing_newline": "data_x\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 2\n3 4",
    "underscore_value_in_rows": "data_\nloop_\n_rlnA\n1\n_rlnB\n",
    "unicode": "data_x\nloop_\n_rlnMicrographName\n_rlnCoordinateX\nmicrographé.mrc 1\n",
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_equals_read_star_on_tricky_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.star"
    path.write_bytes(TRICKY[name].encode("utf-8"))
    _assert_same_blocks(path)


BAD = {
    "wrong_count": "data_\nloop_\n_rlnA\n_rlnB\n1 2\n3\n",
    "repeated_label": "data_\nloop_\n_rlnA\n_rlnA\n1 2\n",
    "text_before_data": "_rlnA 1\ndata_\n",
    "two_loops": "data_\nloop_\n_rlnA\n1\nloop_\n_rlnB\n2\n",
    "repeated_block": "data_a\n_rlnA 1\ndata_a\n_rlnA 2\n",
    "no_block": "# nothing\n",
    "pair_without_value": "data_\n_rlnA\n",
    "mixed": "data_\n_rlnA 1\nloop_\n_rlnB\n2\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_strict_errors_are_read_stars(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.star"
    path.write_text(BAD[name])
    with pytest.raises(InputError) as full:
        star.read_star(path)
    with pytest.raises(InputError) as mine:
        lean.read_star_blocks(path)
    assert str(mine.value) == str(full.value)


def test_format_star_loops_equals_format_star() -> None:
    texts = ["plain", "with space", "", "_under", "#hash", "loop_", "data_x", "quo\"te", "tab\there"]
    floats = [1.0, 0.1, 5.360000133514404, float("nan"), -0.0, 1e300, 123456789.125, float("inf"), 2.5]
    ints = list(range(len(texts)))
    df = pd.DataFrame({"rlnMicrographName": texts, "rlnCoordinateX": floats, "rlnClassNumber": ints})
    df.attrs[star.LOOP_ATTR] = True
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0]})
    optics.attrs[star.LOOP_ATTR] = True
    comment = 'cryoset provenance: {"a": "b c"}'
    expected = star.format_star({"optics": optics, "particles": df}, comment=comment, version=30001)
    got = lean.format_star_loops(
        [("optics", ["rlnOpticsGroup", "rlnVoltage"], [["1"], lean.float_tokens([300.0])]),
         ("particles", ["rlnMicrographName", "rlnCoordinateX", "rlnClassNumber"],
          [[lean.star_text_token(t) for t in texts], lean.float_tokens(floats), [str(i) for i in ints]])],
        comment=comment, version=30001)
    assert got == expected


@pytest.mark.parametrize("values", [[1.0, 2.0, float("nan")], [1.5, 2.0], [], [float("nan")],
                                    [1e17, 3.0], [-0.0, 0.1 + 0.2]])
def test_cvdb_tokens_equal_the_pandas_writer(values: list[float]) -> None:
    s = pd.Series(values, dtype=np.float64)
    for whole in (True, False):
        assert lean.cvdb_number_tokens(np.array(values), whole) == cryovirusdb._format_numbers(s, whole).tolist()


def test_format_csv_equals_to_csv() -> None:
    cols = [["a.mrc", "b,c.mrc", 'q"uote.mrc', ""], ["1", "", "2.5", ""], ["", "", "", "x y"]]
    header = ["Micrographs Filename", "X-Coordinate", "Reason"]
    buf = io.StringIO()
    pd.DataFrame(dict(zip(header, cols, strict=True))).to_csv(buf, index=False)
    assert lean.format_csv(header, cols) == buf.getvalue().encode("utf-8")
    assert lean.format_csv(header, [[], [], []]) == b"Micrographs Filename,X-Coordinate,Reason\n"


def test_constants_and_names_match_the_full_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert lean.COORDINATE_SUFFIXES == coords.COORDINATE_SUFFIXES
    assert particles.relion_path is lean.relion_path
    monkeypatch.chdir(tmp_path)
    assert lean.relion_path(tmp_path / "a" / "b.mrcs", tmp_path / "a" / "p.star") == "a/b.mrcs"
    assert lean.relion_path(tmp_path / "a" / "b.mrcs", tmp_path / "c" / "p.star", "star") == "../a/b.mrcs"
